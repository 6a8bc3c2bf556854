"""JSON Lines to a stream, and `--only`'s filter in front of any sink."""

from __future__ import annotations

from typing import Any, TextIO

from vigild.daemon.events import Event
from vigild.daemon.sinks.record import Record


class JsonLinesSink:
    """One JSON object per line, flushed after each pipeline batch (every poll, ≤ 10 ms apart while
    events flow), so `| jq` and tests see events as they happen without a write(2) per event.
    `owned`: the sink closes the stream when the pipeline stops (a file of `-w`)."""

    def __init__(self, stream: TextIO, owned: bool = False) -> None:
        self.stream = stream
        self.owned = owned

    def handle(self, event: Event, record: Record) -> None:
        self.stream.write(record.json() + "\n")

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

    def handle(self, event: Event, record: Record) -> None:
        if event.type in self.types:
            self.sink.handle(event, record)

    def flush(self) -> None:
        self.sink.flush()

    def close(self) -> None:
        self.sink.close()
