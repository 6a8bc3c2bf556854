"""vigild's story in its log (the journal): sessions and detections, nothing per event."""

from __future__ import annotations

import json
import logging

from vigild.daemon.events import Event
from vigild.daemon.sinks.record import Record


class JournalSink:
    """vigild's story in its log, one structured line per session start and end and per
    detection (key=value pairs the journal and log shippers can split), nothing per event."""

    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger

    def handle(self, event: Event, record: Record) -> None:
        kind = event.type
        if kind not in ("session_start", "session_end", "detection", "alert_retracted"):
            return
        d = record
        if kind == "session_start":
            self.log.info("session_start session=%s agent=%s pid=%s cmd=%s", d.get("session_id"),
                          d.get("agent") or "-", d.get("pid"), json.dumps(" ".join(d.get("argv") or [])[:200]))
        elif kind == "session_end":
            started, ended = d.get("started_ns"), d.get("ended_ns") or d.get("ts_ns")
            seconds = (ended - started) / 1e9 if started and ended else None
            self.log.info("session_end session=%s agent=%s pid=%s exit=%s signal=%s duration_s=%s",
                          d.get("session_id"), d.get("agent") or "-", d.get("pid"), d.get("exit_code"),
                          d.get("signal"), f"{seconds:.1f}" if seconds is not None else "-")
        elif kind == "alert_retracted":
            self.log.warning("alert_retracted name=%s session=%s tool_call=%s reason=%s", d.get("name"),
                             d.get("session_id"), d.get("tool_call"), json.dumps(d.get("reason", "")))
        else:
            self.log.warning("detection name=%s session=%s pid=%s tool_call=%s reason=%s", d.get("name"),
                             d.get("session_id"), d.get("pid"), d.get("tool_call"), json.dumps(d.get("reason", "")))

    def flush(self) -> None:
        """Lines are written as they come."""

    def close(self) -> None:
        """Nothing held."""
