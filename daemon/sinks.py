"""Sinks that record events: JSON Lines to a stream, and the SQLite store."""

from __future__ import annotations

import json
from typing import TextIO

from vigild.bpf.events import ProcessEvent
from vigild.correlate.process_tree import ProcessTable
from vigild.daemon.events import Event, SessionStart, event_json
from vigild.daemon.store import Store


class JsonLinesSink:
    """One JSON object per line, flushed per line so `| jq` and tests see events as they happen."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def handle(self, event: Event) -> None:
        self.stream.write(json.dumps(event_json(event), default=str) + "\n")
        self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.flush()


class StoreSink:
    """Writes sessions, processes and events to the store; commits once per pipeline batch."""

    def __init__(self, store: Store, processes: ProcessTable) -> None:
        self.store = store
        self.processes = processes

    def handle(self, event: Event) -> None:
        if isinstance(event, SessionStart):  # and SessionEnd
            self.store.upsert_session(event.session)
        elif isinstance(event, ProcessEvent):
            info = self.processes.get(event.pid)
            if info is not None:
                self.store.upsert_process(info)
        self.store.add_event(event_json(event))

    def flush(self) -> None:
        self.store.commit()

    def close(self) -> None:
        self.store.close()
