"""The scripted agent of the effects and observation tests, under `vigil run` or `vigil trace`.

An agent on the official anthropic SDK (tests/data/control/llm_agent.py) asks the fake model once,
runs each bash tool call it is given, then one process nobody asked for. Its HOME holds a fake SSH
key, so a tool call can read a secret."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from fakellm import FakeLLMServer, Reply, Scenario, ToolCallSpec, client_env
from support.helpers import VIGIL, parse_json_lines

AGENT = Path(__file__).resolve().parent.parent / "data" / "control" / "llm_agent.py"


def run_scripted_agent(tmp_path: Path, command: str, commands: list[str],
                       *extra: str) -> tuple[list[dict[str, Any]], Path]:
    """`vigil COMMAND -o json --db DB [extra] -- agent` whose model asks for `commands` in one
    turn; returns the events printed and the store's path."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n")
    work = tmp_path / "work"
    work.mkdir()
    scenario = Scenario("steal", default_reply=Reply(
        text="Let me check.", tool_calls=tuple(ToolCallSpec("bash", {"command": c}) for c in commands)))
    db = tmp_path / "vigil.db"
    with FakeLLMServer(scenarios={"steal": scenario}, default_scenario="steal") as server:
        env = {**client_env(server), "HOME": str(home)}
        proc = subprocess.run([*VIGIL, command, "-o", "json", "--db", str(db), *extra, "--", sys.executable,
                               str(AGENT)], env=env, cwd=work, capture_output=True, text=True, timeout=180,
                              check=False)
        assert server.errors == []
    assert proc.returncode == 0, proc.stderr
    events, _ = parse_json_lines(proc.stdout)
    return events, db
