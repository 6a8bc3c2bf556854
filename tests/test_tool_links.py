"""Late links as pure logic: an intent that arrives after its tool ran (the agent's telemetry, a
response read late) links the unrequested call it names, by the rules TLS-linked calls follow;
a blind session's `unrequested` alert waits for that link, one already out is retracted; the
history applies the links (vigil show, vigil sessions, the OTLP export)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigild.bpf.events import ExecEvent
from vigild.correlate.detections import AlertRetracted, Detection, DetectionConfig, Detector
from vigild.correlate.timeline import build_timeline, summary
from vigild.correlate import tool_calls
from vigild.correlate.tool_calls import ToolCallBook, ToolLinked
from vigild.correlate.tool_links import apply_links

SESSION = 7
NS = 1_000_000_000
TREES: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "agents" / "process_trees.json").read_text())
CODEX = TREES["codex@0.171.0"]


def spawn(book: ToolCallBook, pid: int, argv: list[str], ts: int, session: int = SESSION) -> Any:
    return book.start(ExecEvent(ts_ns=ts, session_id=session, cgroup_id=0, pid=pid, tid=pid, ppid=100, uid=0,
                                comm=argv[0], filename=argv[0], argv=argv, call_start=True, held=True))


def asked(book: ToolCallBook, ts: int, *calls: tuple[str, str], source: str = "telemetry",
          session: int = SESSION) -> list[Any]:
    return book.llm_call(session, ts, [{"id": i, "name": "exec_command", "arguments": {"cmd": c}} for i, c in calls],
                         None, source=source)


def test_telemetry_links_codexs_recorded_tool_calls_after_they_ran() -> None:
    """Codex's real tool command lines (its process-setup re-exec, the shell snapshot, `exec
    bash -c`), started and ended before its telemetry names them: each is linked to its id."""
    tools = [c for c in CODEX["children"] if c["role"] == "tool"]
    book = ToolCallBook()
    calls = []
    for n, child in enumerate(tools):
        call = spawn(book, 500 + n, child["argv"], ts=(20 + n) * NS)
        assert call.unrequested  # nothing asked for it yet: the telemetry has not arrived
        book.exit(call.pid, (20 + n) * NS + 1, 0, None)
        calls.append(call)
    for command in CODEX["commands"]:
        (linked,) = asked(book, 10 * NS, (f"call_{command[:8]}", command))
        assert linked.match == "command" and linked.link_source == "telemetry"
        assert linked.intent is not None and linked.intent.tool_call_id == f"call_{command[:8]}"
    assert all(not c.unrequested for c in calls if any(c.intent and c.intent.arguments["cmd"] == cmd
                                                       for cmd in CODEX["commands"]))
    event = ToolLinked(ts_ns=30 * NS, call=calls[0]).to_dict()
    assert event["type"] == "tool_linked" and event["unrequested"] is False and event["ended"] is True
    assert event["source"] == "telemetry" and event["tool_call"] == calls[0].id


def test_a_late_link_is_exact_and_never_by_containment_or_order() -> None:
    book = ToolCallBook()
    wide = spawn(book, 200, ["bash", "-c", "ls -la /tmp"], ts=11 * NS)
    exact = spawn(book, 201, ["bash", "-lc", "ls -la"], ts=12 * NS)
    stranger = spawn(book, 202, ["curl", "evil"], ts=13 * NS)
    (linked,) = asked(book, 10 * NS, ("c1", "ls -la"))
    assert linked is exact  # not the one that merely contains it, though it started first
    assert asked(book, 10 * NS, ("c2", "ls -la /tm")) == []  # a part of a command line is no link
    assert asked(book, 10 * NS, ("c3", "make")) == []  # nothing names make: no link by order
    assert wide.unrequested and stranger.unrequested
    # the linked intent is consumed: a later spawn of the same command is not given it
    again = spawn(book, 203, ["ls", "-la"], ts=14 * NS)
    assert again.intent is None or again.intent.tool_call_id != "c1"


def test_ended_unrequested_calls_are_kept_for_the_last_sessions_only() -> None:
    book = ToolCallBook()
    for session in range(tool_calls.SESSIONS_KEPT + 5):
        call = spawn(book, 1000 + session, ["ls"], ts=12 * NS, session=session)
        book.exit(call.pid, 13 * NS, 0, None)
    assert len(book.ended_unrequested) == tool_calls.SESSIONS_KEPT and 0 not in book.ended_unrequested
    assert asked(book, 10 * NS, ("c1", "ls"), session=tool_calls.SESSIONS_KEPT + 4) != []
    assert asked(book, 10 * NS, ("c2", "ls"), session=0) == []  # forgotten


def test_no_late_link_before_the_request_in_another_session_or_over_tls() -> None:
    book = ToolCallBook()
    before = spawn(book, 200, ["ls", "-la"], ts=5 * NS)  # ran before the model was asked
    skewed = spawn(book, 202, ["ls"], ts=9 * NS)  # 1 s before, within the agent's clock's slack
    (linked,) = asked(book, 10 * NS, ("c0", "ls"))
    assert linked is skewed
    other = spawn(book, 201, ["ls", "-la"], ts=12 * NS, session=8)
    assert asked(book, 10 * NS, ("c1", "ls -la")) == []
    assert before.unrequested and other.unrequested
    # TLS read the call before the spawn: linked at its start, telemetry changes nothing
    book = ToolCallBook()
    asked(book, 10 * NS, ("c1", "ls -la"), source="tls")
    call = spawn(book, 300, ["bash", "-lc", "ls -la"], ts=11 * NS)
    assert call.intent is not None and call.intent.tool_call_id == "c1" and call.link_source is None
    assert asked(book, 10 * NS, ("c1", "ls -la")) == []
    assert call.intent.tool_call_id == "c1" and call.link_source is None


# ---- the unrequested alert of a blind session ----

def ev(kind: str, ts: float, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "ts_ns": int(ts * NS), "session_id": SESSION, **fields}


def blind_session(d: Detector) -> None:
    d.observe(ev("session_start", 0, cwd="/work"))
    d.observe(ev("capture_blind", 1, pid=100, stack="rustls", binary="/opt/codex"))


START = ev("tool_start", 2, tool_call=300, pid=300, argv=["bash", "-lc", "ls"], unrequested=True)
LINK = ev("tool_linked", 9, tool_call=300, pid=300, tool_call_id="call_1", tool_name="exec_command",
          match="command", unrequested=False, source="telemetry")
LLM = ev("llm_call", 1.5, pid=100, host="", source="telemetry",
         tool_calls=[{"id": "call_1", "name": "exec_command"}])


def test_a_blind_sessions_alert_waits_and_is_dropped_when_the_link_comes() -> None:
    d = Detector(DetectionConfig(unrequested_grace_s=5))
    blind_session(d)
    assert d.observe(START) == []
    assert d.observe(ev("tool_end", 3, tool_call=300, pid=300)) == []
    assert d.expire(int(7.9 * NS)) == []  # within the grace past the tool's end
    assert d.observe(LLM) == [] and d.observe(LINK) == []
    assert d.expire(100 * NS) == [] and d.flush() == []


def test_a_blind_sessions_alert_stands_once_the_grace_is_over() -> None:
    d = Detector(DetectionConfig(unrequested_grace_s=5))
    blind_session(d)
    d.observe(LLM)  # the session has talked to a model (its telemetry says so)
    d.observe(START)
    d.observe(ev("session_end", 3.5))  # the agent is gone; its alert still waits
    d.observe(ev("tool_end", 3, tool_call=300, pid=300))
    assert d.expire(int(7.9 * NS)) == []
    (alert,) = d.expire(8 * NS)
    assert isinstance(alert, Detection) and alert.name == "unrequested" and alert.tool_call == 300
    assert d.expire(9 * NS) == [] and d.flush() == []


def test_a_session_linked_then_ended_is_forgotten() -> None:
    d = Detector(DetectionConfig(unrequested_grace_s=5))
    blind_session(d)
    d.observe(LLM)
    d.observe(START)
    d.observe(LINK)
    d.observe(ev("session_end", 10))
    assert d.expire(100 * NS) == [] and d.flush() == [] and d._sessions == {}


def test_held_alerts_are_raised_at_the_end_only_if_a_model_was_talked_to() -> None:
    d = Detector()
    blind_session(d)
    d.observe(START)
    assert d.flush() == []  # no model call at all (telemetry off): a plain blind run
    d = Detector()
    blind_session(d)
    d.observe(LLM)
    d.observe(START)
    assert [a.name for a in d.flush()] == ["unrequested"]


def test_an_alert_already_out_is_retracted_by_a_late_link() -> None:
    d = Detector()
    d.observe(ev("session_start", 0, cwd="/work"))
    d.observe(ev("llm_call", 1, pid=100, host="api.openai.com"))  # readable: alerts go out at once
    (alert,) = d.observe(START)
    (retracted,) = d.observe(LINK)
    assert isinstance(retracted, AlertRetracted) and retracted.name == "unrequested"
    assert (retracted.tool_call, retracted.alert_ts_ns) == (300, alert.ts_ns)
    assert "call_1" in retracted.reason and "telemetry" in retracted.reason
    assert d.observe(LINK) == []  # retracted once


# ---- what the history tells ----

def test_the_history_puts_a_linked_call_under_its_llm_call_and_drops_the_retracted_alert() -> None:
    alert = Detection(ts_ns=START["ts_ns"], session_id=SESSION, pid=300, tool_call=300, name="unrequested",
                      reason="r", evidence=()).to_dict()
    retraction = AlertRetracted(ts_ns=LINK["ts_ns"], session_id=SESSION, pid=300, tool_call=300,
                                name="unrequested", alert_ts_ns=alert["ts_ns"], reason="r").to_dict()
    other = {**alert, "tool_call": 301, "ts_ns": alert["ts_ns"] + 1}  # another call's alert stays
    end = ev("tool_end", 3, tool_call=300, pid=300, unrequested=True, tool_call_id=None, outcome="ok")
    events = [ev("session_start", 0), START, alert, other, end, LLM, LINK, retraction]
    applied = apply_links(events)
    start, end_after = (e for e in applied if e["type"] in ("tool_start", "tool_end"))
    assert (start["tool_call_id"], start["unrequested"], start["linked_by"]) == ("call_1", False, "telemetry")
    assert end_after["tool_call_id"] == "call_1" and events[1]["unrequested"] is True  # the input is kept
    assert [e for e in applied if e["type"] == "detection"] == [other]
    assert summary(events)["unrequested"] == 0 and summary(events)["detections"] == 1
    tree = build_timeline({"id": SESSION}, [], events)
    assert [node["tool_call"] for node in tree["unrequested"]] == [301]  # only the other call's
    (entry,) = tree["timeline"]
    assert [node["tool_call"] for node in entry["tool_calls"]] == [300]


def test_a_retraction_is_counted_beside_the_alert_it_withdraws() -> None:
    from prometheus_client import generate_latest
    from support.vigild_proc import metric_value
    from vigild.daemon.sinks.metrics import build_registry

    @dataclass
    class Ev:
        type: str
        fields: dict[str, Any]

    registry, sink = build_registry(lambda: {}, frozenset())
    for event in (Ev("session_start", {"session_id": SESSION, "agent": "codex"}),
                  Ev("detection", {"session_id": SESSION, "name": "unrequested"}),
                  Ev("alert_retracted", {"session_id": SESSION, "name": "unrequested"})):
        sink.handle(event, {"type": event.type, **event.fields})  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert metric_value(text, "vigil_unrequested_processes_total", agent="codex") == 1
    assert metric_value(text, "vigil_detections_retracted_total", agent="codex", kind="unrequested") == 1
