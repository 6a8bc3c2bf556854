"""Tool-call bookkeeping without the kernel: membership, call ends, outcomes, intent matching."""

from __future__ import annotations

from vigild.bpf.events import ExecEvent
from vigild.correlate.tool_calls import ToolCallBook, ToolEnd, command_matches, outcome

SESSION = 7
NS = 1_000_000_000


def exec_event(pid: int, argv: list[str], ts: int = 10 * NS, session: int = SESSION, held: bool = True) -> ExecEvent:
    return ExecEvent(ts_ns=ts, session_id=session, cgroup_id=0, pid=pid, tid=pid, ppid=100, uid=0, comm=argv[0],
                     filename=argv[0], argv=argv, call_start=True, held=held)


def llm(book: ToolCallBook, *calls: tuple[str, str, dict], ts: int = 9 * NS, session: int = SESSION) -> None:
    book.llm_call(session, ts, [{"id": i, "name": n, "arguments": a} for i, n, a in calls], response_id=f"msg_{ts}")


def test_descendants_belong_to_the_call_and_it_ends_with_the_last_exit() -> None:
    book = ToolCallBook()
    call = book.start(exec_event(200, ["bash", "-c", "bash -c 'python alloc.py'"]))
    assert book.fork(201, 200) is call and book.fork(202, 201) is call
    assert book.fork(300, 100) is None  # the agent's own child, not in a call
    assert book.exit(200, 11 * NS, 137, None) is None  # children still alive
    assert book.exit(202, 11 * NS, None, 9) is None
    ended = book.exit(201, 12 * NS, 0, None)
    assert ended is call and call.end_ns == 12 * NS and call.all_pids == {200, 201, 202}
    assert call.exit_code == 137 and book.calls == {} and book.member == {}


def test_outcomes_come_from_kernel_facts_not_exit_137() -> None:
    book = ToolCallBook()
    call = book.start(exec_event(200, ["python", "x.py"]))
    book.exit(200, 11 * NS, None, 9)
    assert outcome(call, oom_kills=0) == "signal"  # SIGKILL without an OOM kill is not an OOM
    assert outcome(call, oom_kills=1) == "oom_killed"
    call.timed_out = True
    assert outcome(call, oom_kills=1) == "timeout"
    other = book.start(exec_event(300, ["false"]))
    book.exit(300, 11 * NS, 1, None)
    assert outcome(other, 0) == "exit"
    ok = book.start(exec_event(400, ["true"]))
    book.exit(400, 11 * NS, 0, None)
    assert outcome(ok, 0) == "ok"


def test_oom_and_spikes_are_counted_per_call() -> None:
    book = ToolCallBook()
    call = book.start(exec_event(200, ["python"]))
    book.note_oom(200, victim=201)
    book.note_spike(200, 300 << 20)
    book.note_oom(999, victim=1)  # an unknown call is ignored
    assert call.oom_kills == 1 and call.oom_victims == [201] and call.mem_spikes == 1
    assert call.max_call_rss == 300 << 20


def test_command_matching() -> None:
    assert command_matches("ls -la", ["bash", "-c", "ls -la"])
    assert command_matches("ls -la", ["ls", "-la"])
    assert command_matches("grep 'a b' f", ["grep", "a b", "f"])
    assert command_matches("/etc/hostname", ["cat", "/etc/hostname"])
    assert not command_matches("ls -la", ["bash", "-c", "rm -rf /tmp/x"])
    assert not command_matches("ls", [])


def test_intent_by_command_first_then_by_order_then_unrequested() -> None:
    book = ToolCallBook()
    llm(book, ("t1", "bash", {"command": "ls -la"}), ("t2", "bash", {"command": "pwd"}))
    first = book.start(exec_event(200, ["bash", "-c", "pwd"]))
    assert first.intent is not None and first.intent.tool_call_id == "t2" and first.match == "command"
    second = book.start(exec_event(201, ["sh", "-c", "something else"]))
    assert second.intent is not None and second.intent.tool_call_id == "t1" and second.match == "order"
    third = book.start(exec_event(202, ["true"]))
    assert third.unrequested and third.match is None


def test_order_fallback_only_uses_the_last_llm_call() -> None:
    book = ToolCallBook()
    llm(book, ("old", "bash", {"command": "make"}), ts=5 * NS)
    llm(book, ("new", "read_file", {"path": "/etc/hostname"}), ts=9 * NS)
    call = book.start(exec_event(200, ["python", "-c", "print(1)"]))
    assert call.intent is not None and call.intent.tool_call_id == "new"
    # ... but an older tool call still matches by its command
    make = book.start(exec_event(201, ["make"]))
    assert make.intent is not None and make.intent.tool_call_id == "old"


def test_intents_of_other_sessions_and_after_the_spawn_do_not_match() -> None:
    book = ToolCallBook()
    llm(book, ("x", "bash", {"command": "ls"}), session=99)
    llm(book, ("late", "bash", {"command": "ls"}), ts=20 * NS)
    call = book.start(exec_event(200, ["ls"]))
    assert call.unrequested


def test_tool_end_fields() -> None:
    book = ToolCallBook()
    llm(book, ("t1", "bash", {"command": "ls"}))
    call = book.start(exec_event(200, ["ls"]))
    book.exit(200, 10 * NS + 5_000_000, 0, None)
    d = ToolEnd(ts_ns=call.end_ns or 0, call=call, outcome="ok", limits={"memory_max": 1}, limits_hit=[],
                peak_memory_bytes=4096, oom_kills=0, processes=1,
                delays={"cpu_delay_ms": 0.5, "blkio_delay_ms": 0.0, "reclaim_delay_ms": 0.0,
                        "thrashing_delay_ms": 0.0}).to_dict()
    assert d["type"] == "tool_end" and d["tool_call"] == 200 and d["duration_ms"] == 5.0
    assert d["tool_call_id"] == "t1" and d["tool_name"] == "bash" and d["unrequested"] is False
    for key in ("argv", "outcome", "exit_code", "signal", "limits_hit", "limits", "peak_memory_bytes",
                "cpu_delay_ms", "blkio_delay_ms", "reclaim_delay_ms", "thrashing_delay_ms"):
        assert key in d
