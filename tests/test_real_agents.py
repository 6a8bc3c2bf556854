"""The real coding agents, pinned (tests/realagents/pins.txt), seen whole by `vigil trace` and
`vigil run`: driven by the fake model through one call of their own shell tool that writes a
file, inside a loopback-only network namespace.

Gemini CLI and qwen-code (Node: their TLS is decoded) end to end: every LLM call decoded, the
tool call linked to the model's tool call, its processes and its file; the agent and its
relaunched self never a tool call; no housekeeping flagged. Claude Code, Codex and opencode (TLS
not decoded yet: Bun's BoringSSL, rustls): their housekeeping helpers are neither tool calls nor
alerts, and the one tool call runs the model's command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import need
from realagents.harness import RealRun, missing_prerequisite, run_agent

from vigild.correlate.tool_calls import command_is

pytestmark = pytest.mark.usefixtures("root")

COMMAND = "echo agentshape-ok > tool-out.txt"


def _run(name: str, mode: str, tmp_path: Path) -> RealRun:
    reason = missing_prerequisite(name)
    need(reason is None, reason or "")
    run = run_agent(name, mode, tmp_path / f"{name}-{mode}", COMMAND)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.server_errors == []
    assert run.file("tool-out.txt").read_text() == "agentshape-ok\n", "the agent did not run the tool"
    return run


def _agent_pids(run: RealRun) -> set[int]:
    """The agent: the session's root and every process marked as its relaunch."""
    roots = {e["pid"] for e in run.of_type("session_start")}
    return roots | {e["pid"] for e in run.of_type("exec") if e.get("agent_role") == "relaunch"}


def _housekeeping_pids(run: RealRun) -> set[int]:
    """Housekeeping processes and everything they forked."""
    pids = {e["pid"] for e in run.of_type("exec") if e.get("agent_role") == "housekeeping"}
    for fork in run.of_type("fork"):
        if fork["ppid"] in pids:
            pids.add(fork["pid"])
    return pids


def _the_tool_start(run: RealRun) -> dict[str, Any]:
    starts = run.of_type("tool_start")
    assert len(starts) == 1, [s["argv"][:3] for s in starts]
    assert command_is(COMMAND, starts[0]["argv"])
    return starts[0]


def _no_agent_process_is_a_tool_call(run: RealRun) -> None:
    agents = _agent_pids(run)
    assert not agents & {s["pid"] for s in run.of_type("tool_start")}
    ours = [e for e in run.events if e.get("pid") in agents and e["type"] in ("exec", "fork", "exit", "mem_spike")]
    assert ours and all(e.get("tool_call") is None for e in ours)
    housekeeping = _housekeeping_pids(run)
    assert not housekeeping & {s["pid"] for s in run.of_type("tool_start")}
    alerts = [d for d in run.of_type("detection") if d["name"] == "unrequested"]
    assert not {d["pid"] for d in alerts} & (agents | housekeeping)


@pytest.mark.parametrize("mode", ["trace", "run"])
@pytest.mark.parametrize("name", ["gemini", "qwen"])
def test_node_agent_seen_whole(name: str, mode: str, tmp_path: Path) -> None:
    run = _run(name, mode, tmp_path)
    relaunches = [e for e in run.of_type("exec") if e.get("agent_role") == "relaunch"]
    assert relaunches, "the agent re-executes itself (memory relaunch): it must be seen as the agent"
    _no_agent_process_is_a_tool_call(run)

    # every LLM call decoded, with the tool call the model made
    llm = run.of_type("llm_call")
    sent = run.llm_exchanges()
    assert len(llm) == len(sent) >= 2
    asked = [tc for e in sent for tc in e["tool_calls"]]
    decoded = [tc for e in llm for tc in e.get("tool_calls") or []]
    assert [(t["name"], t["arguments"]) for t in decoded] == [(t["name"], t["arguments"]) for t in asked]

    # the tool call: linked to the model's call by its command, with its processes and its file
    start = _the_tool_start(run)
    assert start["unrequested"] is False and start["match"] == "command"
    assert start["tool_name"] == asked[0]["name"]
    assert start["tool_call_id"] == decoded[0].get("id") == asked[0]["id"]  # Gemini's API has no ids: None
    assert start["response_id"] == next(e["response_id"] for e in llm if e.get("tool_calls"))
    end = next(e for e in run.of_type("tool_end") if e["tool_call"] == start["tool_call"])
    assert end["outcome"] == "ok" and end["tool_call_id"] == start["tool_call_id"]
    writes = [e for e in run.of_type("file_open") if e["path"] == str(run.file("tool-out.txt")) and e["write"]]
    assert writes and all(w["tool_call"] == start["tool_call"] for w in writes)
    assert not [d for d in run.of_type("detection") if d["name"] == "unrequested"]
    if mode == "run":
        assert "tools/call-" in start["cgroup"]
    else:
        assert start["cgroup"] is None and start["held"] is True


@pytest.mark.parametrize("name", ["claude", "codex", "opencode"])
def test_helpers_of_the_other_agents_are_not_tool_calls(name: str, tmp_path: Path) -> None:
    run = _run(name, "run", tmp_path)
    _no_agent_process_is_a_tool_call(run)
    start = _the_tool_start(run)
    if name in ("claude", "codex"):
        assert _housekeeping_pids(run), "these agents run helpers before the tool; they must be recognised"
    linked = [e for e in run.of_type("llm_call") if e.get("tool_calls")]
    if linked:  # once their TLS is decoded, the call is the model's
        assert start["tool_call_id"] == linked[0]["tool_calls"][0]["id"] and start["match"] == "command"
