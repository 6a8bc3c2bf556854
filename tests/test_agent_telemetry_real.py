"""Claude Code's and Gemini CLI's own telemetry with the real pinned agents: `vigil trace` and
`vigil run --agent-telemetry` turn it on, vigil's receiver gets it (Gemini CLI from its relaunched
child), and every call the fake model answered is checked field by field against the TLS decode;
with Claude Code's TLS not located (blind), the telemetry stands in for every call. A vigild with
`[telemetry]` on does the same for an agent it tracks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from support.require import need
from realagents.harness import RUN_TIMEOUT_S, TESTS_DIR as TESTS, RealRun, missing_prerequisite, run_agent

pytestmark = pytest.mark.usefixtures("root")

COMMAND = "echo telemetry-ok > tool-out.txt"


def _run(name: str, mode: str, tmp_path: Path, *extra: str) -> RealRun:
    reason = missing_prerequisite(name)
    need(reason is None, reason or "")
    run = run_agent(name, mode, tmp_path / f"{name}-{mode}", COMMAND, extra=["--agent-telemetry", *extra])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.server_errors == []
    assert run.file("tool-out.txt").read_text() == "telemetry-ok\n", "the agent did not run the tool"
    assert "telemetry requests came from no traced process" not in run.stderr
    return run


@pytest.mark.parametrize("mode", ["trace", "run"])
@pytest.mark.parametrize("name", ["claude", "gemini"])
def test_telemetry_agrees_with_every_decoded_call(name: str, mode: str, tmp_path: Path) -> None:
    run = _run(name, mode, tmp_path)
    sent = run.llm_exchanges()
    calls = run.of_type("llm_call")
    assert len(sent) >= 2 and [c["source"] for c in calls] == ["tls"] * len(sent), calls
    checks = run.of_type("telemetry_check")
    assert len(checks) == len(sent), (checks, run.stderr[-2000:])
    assert all(c["agree"] for c in checks), [c["mismatches"] for c in checks]
    assert {c["agent"] for c in checks} == {name}
    # each check names the TLS call it was set against, and the process that made it
    assert sorted(c["response_id"] for c in checks) == sorted(c["response_id"] for c in calls)
    assert {c["pid"] for c in checks} == {c["pid"] for c in calls}
    for check in checks:
        assert {"status", "model", "input_tokens", "output_tokens"} <= set(check["compared"])
        assert ("tool_names" if name == "gemini" else "tool_call_ids") in check["compared"]


@pytest.mark.parametrize("mode", ["trace", "run"])
def test_claude_code_blind_telemetry_fills_every_call(mode: str, tmp_path: Path) -> None:
    run = _run("claude", mode, tmp_path, "--no-tls-locate")
    sent = run.llm_exchanges()
    calls = run.of_type("llm_call")
    assert len(sent) >= 2 and len(calls) == len(sent), (calls, run.stderr[-2000:])
    assert {c["source"] for c in calls} == {"telemetry"} and run.of_type("telemetry_check") == []
    assert run.of_type("capture_blind"), "blind is said, telemetry or not"
    for call in calls:
        assert call["provider"] == "anthropic" and call["status"] == 200 and call["model"] == "claude-sonnet-4-5"
        assert call["input_tokens"] > 0 and call["output_tokens"] > 0 and call["cost_usd"] > 0
        assert call["request_id"].startswith("req_")
    asked = [(t["id"], t["name"]) for e in sent for t in e["tool_calls"]]
    filled = [(t["id"], t["name"]) for c in sorted(calls, key=lambda c: c["ts_ns"]) for t in c["tool_calls"]]
    assert filled == asked and all(t["success"] for c in calls for t in c["tool_calls"])


@pytest.mark.parametrize("name", ["claude", "gemini"])
def test_vigild_with_telemetry_on_checks_a_tracked_agents_calls(name: str, tmp_path: Path) -> None:
    """vigild with `[telemetry] receive`, the agent found by name (its prompt carries a token the
    config matches) and exporting to it: the agent's session holds a check per call."""
    reason = missing_prerequisite(name)
    need(reason is None, reason or "")
    token = f"telemetry-{uuid.uuid4().hex[:12]}"
    config = (f'[discovery]\ndefault_agents = false\nscan_running = false\n\n[[agents]]\nname = "{name}"\n'
              f'comm = "{name}"\nargs = "*{token}*"\n\n[telemetry]\nreceive = "127.0.0.1:{{port}}"\n')
    out = tmp_path / name
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
               VIGIL_AGENT_PROMPT=f"{token}: run the test command, then say done.")
    proc = subprocess.run(["unshare", "-n", "--", sys.executable, "-m", "realagents.vigild_netns", name, str(out),
                           COMMAND, config], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          check=False)
    result = json.loads((out / "vigild.json").read_text()) if (out / "vigild.json").exists() else {}
    assert proc.returncode == 0, (proc.stderr[-2000:], (out / "stderr").read_text()[-2000:])
    assert result["stopped"] == 0, result["log"][-20:]
    sent = [e for e in json.loads((out / "exchanges.json").read_text())["exchanges"] if e["provider"]]
    events = [e for s in result["sessions"] for e in s["events"]]
    calls = [e for e in events if e["type"] == "llm_call"]
    checks = [e for e in events if e["type"] == "telemetry_check"]
    assert len(sent) >= 2 and len(calls) == len(sent) and {c["source"] for c in calls} == {"tls"}, calls
    assert len(checks) == len(sent) and all(c["agree"] for c in checks), (checks, result["log"][-20:])
