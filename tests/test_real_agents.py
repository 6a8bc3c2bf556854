"""The real coding agents, pinned (tests/realagents/pins.txt), seen whole by `vigil trace` and
`vigil run`: driven by the fake model through one call of their own shell tool that writes a
file, inside a loopback-only network namespace.

Gemini CLI and qwen-code (Node: their TLS is decoded) end to end: every LLM call decoded, the
tool call linked to the model's tool call, its processes and its file; the agent and its
relaunched self never a tool call; no housekeeping flagged. Claude Code, Codex and opencode (TLS
not decoded yet: Bun's BoringSSL, rustls): their housekeeping helpers are neither tool calls nor
alerts, and the one tool call runs the model's command. vigild governing Gemini CLI and qwen-code
found by name: the same, with the call in its cgroup.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from support.require import need
from realagents.harness import RealRun, missing_prerequisite, run_agent
from support.vigild_proc import Vigild

from vigild.correlate.tool_calls import command_is
from vigild.daemon.store import Store

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
        assert start["cgroup"].startswith("tools/call-")
    else:
        assert start["cgroup"] is None and start["held"] is False  # observed: marked, never stopped


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


@pytest.mark.parametrize("governed", [True, False], ids=["governing", "observing"])
@pytest.mark.parametrize("name", ["gemini", "qwen"])
def test_vigild_governs_a_relaunching_agent(name: str, governed: bool, tmp_path: Path) -> None:
    """vigild with [tools] enabled, the agent found by its process name: the relaunch is the
    agent, the model's command runs as the one tool call, in its own cgroup, linked. Observing
    ([tools] enabled = false): the same story, the call in no cgroup and never held. The agent's
    prompt carries a token the config matches, so no other agent on the host is governed."""
    reason = missing_prerequisite(name)
    need(reason is None, reason or "")
    token = f"agentshape-{uuid.uuid4().hex[:12]}"
    config = (f'[discovery]\ndefault_agents = false\nscan_running = false\n\n[[agents]]\nname = "{name}"\n'
              f'comm = "{name}"\nargs = "*{token}*"\n\n[tools]\nenabled = {str(governed).lower()}\nmemory_max = "512M"\n')
    daemon = Vigild(tmp_path, config).start()
    try:
        run = run_agent(name, "bare", tmp_path / name, COMMAND, prompt=f"{token}: run the test command, then say done.")
        assert run.returncode == 0, run.stderr[-3000:]
        assert run.file("tool-out.txt").read_text() == "agentshape-ok\n"
        store = Store(daemon.db)
        deadline = time.monotonic() + 20
        while not [s for s in store.sessions() if s["agent"] == name and s["ended_ns"]]:
            assert time.monotonic() < deadline, daemon.log[-20:]
            time.sleep(0.2)
            store.close()
            store = Store(daemon.db)
        (session,) = [s for s in store.sessions() if s["agent"] == name]
        events = store.events(session["id"])
        store.close()
    finally:
        assert daemon.stop() == 0, daemon.log[-20:]
    execs = [e for e in events if e["type"] == "exec"]
    assert [e for e in execs if e.get("agent_role") == "relaunch"]
    starts = [e for e in events if e["type"] == "tool_start"]
    assert len(starts) == 1 and command_is(COMMAND, starts[0]["argv"]), [s["argv"][:3] for s in starts]
    assert starts[0]["unrequested"] is False and starts[0]["match"] == "command"
    if governed:
        assert starts[0]["cgroup"].startswith("tools/call-")
    else:
        assert starts[0]["cgroup"] is None and starts[0]["held"] is False
    llm = [e for e in events if e["type"] == "llm_call"]
    assert starts[0]["tool_call_id"] == next(tc for e in llm for tc in e.get("tool_calls") or []).get("id")
    assert len(llm) == len(run.llm_exchanges())
    assert not [d for d in events if d["type"] == "detection" and d["name"] == "unrequested"]
