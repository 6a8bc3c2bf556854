"""Run a pinned real agent under `vigil trace`/`vigil run` from a test and read what came out.

    run = run_agent("gemini", "run", tmp_path, command="echo hi > out.txt")
    run.events          # vigil's JSON events
    run.exchanges       # what the fake model received and answered
    run.file("out.txt") # the tool's output file, in the agent's working directory

The agent, the fake model server and vigil all run inside one `unshare -n` network namespace
with only loopback (netns.py), so nothing the agent tries leaves the machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.helpers import VIGIL, parse_json_lines

from realagents.agents import Agent, agent

TESTS_DIR = Path(__file__).resolve().parent.parent
# The agent's own timeout (netns.py) plus room for vigil to start and drain; slow guests raise it.
RUN_TIMEOUT_S = float(os.environ.get("VIGIL_AGENT_TIMEOUT", "240")) + 120.0
EVENT_START = re.compile(r'(?<=[^\n])(?=\{"type": ")')


@dataclass
class RealRun:
    agent: Agent
    returncode: int
    events: list[dict[str, Any]]
    exchanges: list[dict[str, Any]]
    server_errors: list[str]
    stderr: str
    workdir: Path

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def file(self, name: str) -> Path:
        return self.workdir / name

    def llm_exchanges(self) -> list[dict[str, Any]]:
        return [e for e in self.exchanges if e["provider"] is not None]


def missing_prerequisite(name: str) -> str | None:
    """Why this agent cannot run here, or None."""
    if not agent(name).installed:
        return f"{name} is not installed: run tests/realagents/install.sh"
    for tool in ("unshare", "ip", "node"):
        if shutil.which(tool) is None:
            return f"{tool} is missing"
    return None


def run_agent(name: str, mode: str, out: Path, command: str, extra: list[str] | None = None,
              prompt: str | None = None) -> RealRun:
    """Drive agent `name` through one shell tool call running `command`, under `vigil MODE -o json`
    (mode "trace" or "run"; extra: more vigil options), or on its own (mode "bare": a vigild
    watches it). prompt: the agent's prompt, e.g. with a token a vigild config matches."""
    wrapper = [*VIGIL, mode, "-o", "json", *(extra or []), "--"] if mode != "bare" else []
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))
    if prompt is not None:
        env["VIGIL_AGENT_PROMPT"] = prompt
    proc = subprocess.run(["unshare", "-n", "--", sys.executable, "-m", "realagents.netns", name, str(out), command,
                           *wrapper], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    text = (out / "stdout").read_text() if (out / "stdout").exists() else ""
    # The agent shares vigil's stdout and may end its own output without a newline.
    events, _other = parse_json_lines(EVENT_START.sub("\n", text))
    record = json.loads((out / "exchanges.json").read_text()) if (out / "exchanges.json").exists() else {}
    stderr = proc.stderr + ((out / "stderr").read_text() if (out / "stderr").exists() else "")
    return RealRun(agent(name), proc.returncode, events, record.get("exchanges", []), record.get("errors", []),
                   stderr, out / "work")
