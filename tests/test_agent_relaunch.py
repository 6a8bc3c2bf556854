"""A Node agent that re-executes itself (tests/data/agents/relaunch_agent.js, installed where
Gemini CLI's bundle lives so its profile applies): the relaunched process is the agent under
`vigil run` and under `vigil trace -p` attached after the relaunch; its own children are tool
calls or housekeeping, never buried in a call of the relaunch. A language runtime's helper
(Python ctypes' `ldconfig -p`) under an agent vigil has no profile of is housekeeping too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.require import need
from support.helpers import VIGIL, parse_json_lines, vigil_trace

pytestmark = pytest.mark.usefixtures("root")

SCRIPT = Path(__file__).parent / "data" / "agents" / "relaunch_agent.js"


@pytest.fixture
def agent_js(tmp_path: Path) -> Path:
    need(shutil.which("node") is not None, "node is missing")
    target = tmp_path / "node_modules" / "@google" / "gemini-cli" / "bundle" / "gemini.js"
    target.parent.mkdir(parents=True)
    shutil.copy(SCRIPT, target)
    return target


def _check(events: list[dict], out: Path) -> None:
    relaunch = [e for e in events if e["type"] == "exec" and e.get("agent_role") == "relaunch"]
    housekeeping = [e for e in events if e["type"] == "exec" and e.get("agent_role") == "housekeeping"]
    starts = [e for e in events if e["type"] == "tool_start"]
    assert len(relaunch) == 1 and relaunch[0]["argv"][1] == "--expose-gc" and relaunch[0]["tool_call"] is None
    assert [h["argv"] for h in housekeeping] == [["git", "rev-parse", "--show-toplevel"]]
    assert [s["argv"] for s in starts] == [["sh", "-c", f"echo tool > {out}"]]
    assert starts[0]["ppid"] == relaunch[0]["pid"]
    writes = [e for e in events if e["type"] == "file_open" and e["path"] == str(out) and e["write"]]
    assert writes and all(w["tool_call"] == starts[0]["tool_call"] for w in writes)
    assert out.read_text() == "tool\n"


def test_relaunch_under_run(agent_js: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    proc = subprocess.run([*VIGIL, "run", "-o", "json", "--", "node", str(agent_js), str(out)],
                          capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    events, _ = parse_json_lines(proc.stdout)
    _check(events, out)
    assert [e for e in events if e["type"] == "tool_start"][0]["cgroup"].startswith("tools/call-")


def test_relaunch_under_trace_of_a_known_agent(agent_js: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    result = vigil_trace(["--", "node", str(agent_js), str(out)], timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _check(result.events, out)
    assert result.of_type("tool_start")[0]["cgroup"] is None


def test_trace_attached_after_the_relaunch(agent_js: Path, tmp_path: Path) -> None:
    out, go = tmp_path / "out.txt", tmp_path / "go"
    agent = subprocess.Popen(["node", str(agent_js), str(out)], cwd=tmp_path, env=dict(os.environ, AGENT_GO=str(go)))
    try:
        ready = Path(f"{out}.ready")
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline and agent.poll() is None, "the agent did not relaunch"
            time.sleep(0.05)
        tracer = subprocess.Popen([*VIGIL, "trace", "-o", "json", "-p", str(agent.pid)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        assert tracer.stdout is not None
        first = tracer.stdout.readline()  # the session_start: the tree is tracked from here on
        assert '"session_start"' in first, tracer.stderr.read() if tracer.stderr else ""
        go.touch()
        assert agent.wait(timeout=60) == 0
        rest, stderr = tracer.communicate(timeout=60)
    finally:
        agent.kill()
    events, _ = parse_json_lines(first + rest)
    assert tracer.returncode == 0, stderr
    starts = [e for e in events if e["type"] == "tool_start"]
    assert [s["argv"] for s in starts] == [["sh", "-c", f"echo tool > {out}"]]
    assert starts[0]["ppid"] == int(ready.read_text())
    assert not [e for e in events if e["type"] == "exec" and e["argv"][:1] == ["git"] and e.get("tool_call")]
    assert out.read_text() == "tool\n"


def test_a_runtime_helper_under_any_agent_is_not_a_tool_call(tmp_path: Path) -> None:
    """Python's ctypes runs `/sbin/ldconfig -p` for find_library, in any Python agent."""
    agent = tmp_path / "agent.py"
    agent.write_text("import ctypes.util, subprocess\nctypes.util.find_library('ssl')\n"
                     "subprocess.run(['sh', '-c', 'echo tool'], check=True)\n")
    proc = subprocess.run([*VIGIL, "run", "-o", "json", "--", sys.executable, str(agent)], capture_output=True, text=True,
                          timeout=120, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    events, _ = parse_json_lines(proc.stdout)
    helpers = [e for e in events if e["type"] == "exec" and e.get("agent_role") == "housekeeping"]
    assert [h["argv"] for h in helpers] == [["/sbin/ldconfig", "-p"]] and helpers[0]["tool_call"] is None
    assert [s["argv"] for s in events if s["type"] == "tool_start"] == [["sh", "-c", "echo tool"]]
