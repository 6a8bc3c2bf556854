"""The SQLite store as a sink: sessions, processes and events, committed once per pipeline batch."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import OrderedDict
from typing import Any

from vigild.bpf.events import ProcessEvent
from vigild.correlate.process_tree import LIFECYCLE, ProcessTable
from vigild.daemon.events import Event, SessionStart
from vigild.daemon.sinks.record import Record
from vigild.daemon.store import EventRow, Store

log = logging.getLogger("vigild.store")


class StoreSink:
    """Writes sessions, processes and events to the store; commits once per pipeline batch.

    Event rows (tuples, see Store.row) wait for the batch's flush and go in with one statement; a
    process row is written when the process is first seen and at its fork, exec and exit (an
    effect changes nothing of it), not once per event.

    A store that cannot be written (disk full, I/O error, a read-only file system) must cost the
    history, not the tracing: the first failure is logged once, further events are counted and
    dropped without touching SQLite, a write is retried every RETRY_S, and the recovery is logged
    once too. `errors`, `events_dropped` and `store.rows_lost` are served as metrics.
    """

    RETRY_S = 5.0
    PROCESSES_REMEMBERED = 65536  # process rows known written; an older one is simply written again

    def __init__(self, store: Store, processes: ProcessTable) -> None:
        self.store = store
        self.processes = processes
        self.errors = 0
        self.events_dropped = 0
        self._failing_since: float | None = None
        self._retry_at = 0.0
        self._pending: list[EventRow] = []
        self._written: OrderedDict[tuple[int, int], None] = OrderedDict()  # (pid, start_ns) with a row

    @property
    def failing(self) -> bool:
        return self._failing_since is not None

    def handle(self, event: Event, record: Record) -> None:
        if self._failing_since is not None and time.monotonic() < self._retry_at:
            self.events_dropped += 1
            return
        try:
            if isinstance(event, ProcessEvent):  # most events: tested first
                self._process_row(event)
            elif isinstance(event, SessionStart):  # and SessionEnd
                self.store.upsert_session(event.session)
            row = self.store.row(record)
        except (sqlite3.Error, OSError) as exc:
            self.events_dropped += 1
            self._failed(exc)
            return
        self._pending.append(row)

    def _process_row(self, event: ProcessEvent) -> None:
        info = self.processes.processes.get(event.pid)
        if info is None:
            return
        key = (info.pid, info.start_ns)
        if key in self._written and not isinstance(event, LIFECYCLE):
            return
        self.store.upsert_process(info)
        self._written[key] = None
        self._written.move_to_end(key)
        while len(self._written) > self.PROCESSES_REMEMBERED:
            self._written.popitem(last=False)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        try:
            if pending:
                self.store.add_rows(pending)
            self.store.commit()
        except (sqlite3.Error, OSError) as exc:
            self.events_dropped += len(pending)
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
        self.flush()  # rows of a last batch the pipeline did not flush
        try:
            self.store.end_recorded(time.time_ns(), "stopped: vigil stopped recording while the session ran")
            self.store.close()
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)
