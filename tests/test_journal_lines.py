"""vigild's log tells the story an operator greps for: one line per session start and end and per
detection, key=value, and nothing per ordinary event (pure: the sink alone)."""

from __future__ import annotations

import logging

import pytest
from vigild.correlate.detections import Detection
from vigild.daemon.sinks.record import record_of
from vigild.correlate.sessions import Session
from vigild.daemon.events import SessionEnd, SessionStart
from vigild.daemon.sinks import JournalSink


def test_one_line_per_session_edge_and_detection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.sessions")
    sink = JournalSink(logging.getLogger("test.sessions"))
    session = Session(id=42, root_pid=1234, started_ns=1_000_000_000, argv=["claude", "-p", "fix it"],
                      agent="claude-code")
    sink.handle(event := SessionStart(ts_ns=1_000_000_000, session=session), record_of(event))
    sink.handle(event := Detection(ts_ns=2_000_000_000, session_id=42, pid=1300, tool_call=1299, name="secret_read",
                          reason="read ~/.ssh/id_rsa", evidence=()), record_of(event))
    session.ended_ns, session.exit_code = 31_500_000_000, 0
    sink.handle(event := SessionEnd(ts_ns=31_500_000_000, session=session), record_of(event))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("session_start session=42 agent=claude-code pid=1234 cmd=\"claude -p fix it\"")
    assert lines[1].startswith("detection name=secret_read session=42 pid=1300 tool_call=1299")
    assert lines[2] == "session_end session=42 agent=claude-code pid=1234 exit=0 signal=None duration_s=30.5"
    assert len(lines) == 3
