"""Sinks that record events: JSON Lines to a stream, and the SQLite store."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from typing import Any, TextIO

from vigild.bpf.events import ProcessEvent
from vigild.correlate.process_tree import ProcessTable
from vigild.daemon.events import Event, SessionStart, event_json
from vigild.daemon.store import Store

log = logging.getLogger("vigild.store")


class JsonLinesSink:
    """One JSON object per line, flushed after each pipeline batch (every poll, ≤ 10 ms apart while
    events flow), so `| jq` and tests see events as they happen without a write(2) per event.
    `owned`: the sink closes the stream when the pipeline stops (a file of `-w`)."""

    def __init__(self, stream: TextIO, owned: bool = False) -> None:
        self.stream = stream
        self.owned = owned

    def handle(self, event: Event) -> None:
        self.stream.write(json.dumps(event_json(event), default=str) + "\n")

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.flush()
        if self.owned:
            self.stream.close()


class OnlySink:
    """`--only`: passes the chosen event types to the sink it wraps, and always the session
    frame and losses (a filtered view must still say where it starts, ends and what it missed)."""

    ALWAYS = frozenset({"session_start", "session_end", "lost"})

    def __init__(self, sink: Any, types: frozenset[str]) -> None:
        self.sink = sink
        self.types = types | self.ALWAYS

    def handle(self, event: Event) -> None:
        if event.type in self.types:
            self.sink.handle(event)

    def flush(self) -> None:
        self.sink.flush()

    def close(self) -> None:
        self.sink.close()


class StoreSink:
    """Writes sessions, processes and events to the store; commits once per pipeline batch.

    A store that cannot be written (disk full, I/O error, a read-only file system) must cost the
    history, not the tracing: the first failure is logged once, further events are counted and
    dropped without touching SQLite, a write is retried every RETRY_S, and the recovery is logged
    once too. `errors`, `events_dropped` and `store.rows_lost` are served as metrics.
    """

    RETRY_S = 5.0

    def __init__(self, store: Store, processes: ProcessTable) -> None:
        self.store = store
        self.processes = processes
        self.errors = 0
        self.events_dropped = 0
        self._failing_since: float | None = None
        self._retry_at = 0.0

    @property
    def failing(self) -> bool:
        return self._failing_since is not None

    def handle(self, event: Event) -> None:
        if self._failing_since is not None and time.monotonic() < self._retry_at:
            self.events_dropped += 1
            return
        try:
            if isinstance(event, SessionStart):  # and SessionEnd
                self.store.upsert_session(event.session)
            elif isinstance(event, ProcessEvent):
                info = self.processes.get(event.pid)
                if info is not None:
                    self.store.upsert_process(info)
            self.store.add_event(event_json(event))
        except (sqlite3.Error, OSError) as exc:
            self.events_dropped += 1
            self._failed(exc)

    def flush(self) -> None:
        try:
            self.store.commit()
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)
            return
        if self._failing_since is not None and time.monotonic() >= self._retry_at:
            log.warning("store %s writable again after %.0f s; %d events were not recorded",
                        self.store.path, time.monotonic() - self._failing_since, self.events_dropped)
            self._failing_since = None

    def health(self) -> dict[str, Any]:
        """The store's side of `Pipeline.health()`: served as vigil_store_* metrics."""
        return {"store_errors": self.errors, "store_writable": not self.failing,
                "store_events_dropped": self.events_dropped + self.store.rows_lost}

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            log.error("store %s cannot be written (%s); tracing goes on, events are counted and not recorded "
                      "until it can", self.store.path, exc)
        self._retry_at = now + self.RETRY_S

    def close(self) -> None:
        try:
            self.store.end_recorded(time.time_ns(), "stopped: vigil stopped recording while the session ran")
            self.store.close()
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)


class JournalSink:
    """vigild's story in its log, one structured line per session start and end and per
    detection (key=value pairs the journal and log shippers can split), nothing per event."""

    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger

    def handle(self, event: Event) -> None:
        kind = event.type
        if kind not in ("session_start", "session_end", "detection"):
            return
        d = event.to_dict()
        if kind == "session_start":
            self.log.info("session_start session=%s agent=%s pid=%s cmd=%s", d.get("session_id"),
                          d.get("agent") or "-", d.get("pid"), json.dumps(" ".join(d.get("argv") or [])[:200]))
        elif kind == "session_end":
            started, ended = d.get("started_ns"), d.get("ended_ns") or d.get("ts_ns")
            seconds = (ended - started) / 1e9 if started and ended else None
            self.log.info("session_end session=%s agent=%s pid=%s exit=%s signal=%s duration_s=%s",
                          d.get("session_id"), d.get("agent") or "-", d.get("pid"), d.get("exit_code"),
                          d.get("signal"), f"{seconds:.1f}" if seconds is not None else "-")
        else:
            self.log.warning("detection name=%s session=%s pid=%s tool_call=%s reason=%s", d.get("name"),
                             d.get("session_id"), d.get("pid"), d.get("tool_call"), json.dumps(d.get("reason", "")))

    def flush(self) -> None:
        """Lines are written as they come."""

    def close(self) -> None:
        """Nothing held."""
