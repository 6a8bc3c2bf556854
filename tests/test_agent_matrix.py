"""The issue's "must hold" for the pinned agents vigil reads through a located TLS stack (Claude
Code and opencode: Bun's BoringSSL; Codex given a CA bundle: rustls, its records' functions
located), under `vigil trace` and `vigil run`, in a loopback-only network
namespace: every call the server answered is in the session with its tool call; under `run` the
model's shell command is the one tool call, linked to its id where the model's call was read, with
its file; no process of the agent or of its housekeeping is a tool call or flagged by a detection.
(Gemini CLI and qwen-code: test_real_agents.py; Codex's two TLS paths on three releases:
test_codex_real.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.require import need
from realagents.harness import RealRun, missing_prerequisite, run_agent

from vigild.correlate.tool_calls import command_is

pytestmark = pytest.mark.usefixtures("root")

COMMAND = "echo matrix-ok > tool-out.txt"
TELEMETRY = ("claude", "codex")  # agents whose --agent-telemetry reports each call: checked against TLS


def _run(name: str, mode: str, tmp_path: Path) -> RealRun:
    reason = missing_prerequisite(name)
    need(reason is None, reason or "")
    run = run_agent(name, mode, tmp_path / f"{name}-{mode}", COMMAND, extra=["--agent-telemetry"])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.server_errors == []
    assert run.file("tool-out.txt").read_text() == "matrix-ok\n", "the agent did not run the tool"
    return run


def _pids_of(run: RealRun, role: str) -> set[int]:
    pids = {e["pid"] for e in run.of_type("exec") if e.get("agent_role") == role}
    if role == "housekeeping":  # and what those forked
        for fork in run.of_type("fork"):
            if fork["ppid"] in pids:
                pids.add(fork["pid"])
    return pids


def _every_call_in_the_session(run: RealRun, name: str) -> list[dict[str, Any]]:
    sent = run.llm_exchanges()
    calls = sorted(run.of_type("llm_call"), key=lambda c: c["ts_ns"])
    assert len(sent) >= 2 and len(calls) == len(sent), (calls, run.stderr[-2000:])
    assert {c["source"] for c in calls} == {"tls"}
    assert all(c["status"] == 200 and c["input_tokens"] and c["output_tokens"] for c in calls)
    asked = [(t["id"], t["name"]) for e in sent for t in e["tool_calls"]]
    assert [(t["id"], t["name"]) for c in calls for t in c["tool_calls"]] == asked
    assert [c["model"] for c in calls] == [s.get("model") or c["model"] for s, c in zip(sent, calls)]
    assert not run.of_type("capture_blind")
    assert len(run.of_type("telemetry_check")) == (len(sent) if name in TELEMETRY else 0)
    assert all(c["agree"] for c in run.of_type("telemetry_check"))
    return calls


@pytest.mark.parametrize("mode", ["trace", "run"])
@pytest.mark.parametrize("name", ["claude", "opencode", "codex"])
def test_agent_seen_whole(name: str, mode: str, tmp_path: Path) -> None:
    run = _run(name, mode, tmp_path)
    calls = _every_call_in_the_session(run, name)
    agent = {e["pid"] for e in run.of_type("session_start")} | _pids_of(run, "relaunch")
    housekeeping = _pids_of(run, "housekeeping")
    if name in ("claude", "codex"):
        assert housekeeping, "these agents run helpers of their own; they must be recognised"
    starts = run.of_type("tool_start")
    assert not (agent | housekeeping) & {s["pid"] for s in starts}
    own = [e for e in run.events if e.get("pid") in agent and e["type"] in ("exec", "fork", "exit", "mem_spike")]
    assert own and all(e.get("tool_call") is None for e in own), "the agent is never in a tool call"
    assert run.of_type("detection") == [] and run.of_type("alert_retracted") == []
    if mode == "trace":
        return
    (start,) = starts
    assert command_is(COMMAND, start["argv"]) and start["cgroup"].startswith("tools/call-")
    # the model's call was read before its command ran
    (tool,) = [t for c in calls for t in c["tool_calls"]]  # opencode's first call names the session
    assert (start["tool_call_id"], start["match"], start["unrequested"]) == (tool["id"], "command", False)
    assert run.of_type("tool_linked") == []
    writes = [e for e in run.of_type("file_open") if e["path"] == str(run.file("tool-out.txt")) and e["write"]]
    assert writes and {w["tool_call"] for w in writes} == {start["tool_call"]}
    (end,) = [e for e in run.of_type("tool_end") if e["tool_call"] == start["tool_call"]]
    assert end["outcome"] == "ok"
