"""The pipeline's reader of the shared event ring: records are copied out into a backlog in
user space, and the pipeline drains the ring again between the records of a batch.

Why: decoding and recording a record costs the pipeline 15-20 us, so a burst of 100k records/s
outruns it for as long as the burst lasts. Before, the ring was drained only between batches,
so the whole backlog of a burst had to wait in the ring, whose effects share is 8 MiB (~38k
records): the rest was shed. The ring cannot simply be made bigger: every consumer maps all of it
twice and the kernel fills the mapping at once, so a 64 MiB ring adds 128 MiB to vigild's RSS
even when idle. A backlog in user space costs memory only while a burst lasts, and is bounded:
past `backlog_bytes` the reader stops draining between records, the ring fills, and the kernel
sheds effects and counts them as before (the loss is reported as ever)."""

from __future__ import annotations

from vigild.bpf.loader import Map, RingBuffer, RingPositions

DEFAULT_BACKLOG_BYTES = 128 << 20  # a 5 s burst of 100k records/s at ~200 bytes a record, with room


class RingReader:
    """Reads the event ring for one pipeline thread. `poll` hands over everything waiting (the
    backlog first, in order); `drain`, called between the records of a batch, moves what the
    ring holds into the backlog while the backlog is under its bound. Not thread-safe: the
    pipeline's thread is its one user (wake() excepted)."""

    def __init__(self, events: Map, backlog_bytes: int = DEFAULT_BACKLOG_BYTES) -> None:
        if backlog_bytes < 0:
            raise ValueError(f"a backlog bound cannot be negative: {backlog_bytes}")
        self.backlog_bytes = backlog_bytes
        self.ring = RingBuffer()
        self._records: list[bytes] = []
        self.ring.add(events, self._records.append)
        self._positions = RingPositions(events)
        self._backlog = 0  # ring bytes (records with their headers) copied out and not yet handed over
        self.peak_backlog = 0  # the most the backlog held, in the same bytes: what a burst cost

    def poll(self, timeout_ms: int) -> list[bytes]:
        """Wait up to timeout_ms for records (not at all while a backlog waits), then return
        every record waiting, the backlog's first."""
        if self._records:
            self._consume()
        else:
            self.ring.wait(timeout_ms)
            self._consume()
        batch, self._records[:] = list(self._records), []
        self._backlog = 0
        return batch

    def drain(self) -> None:
        """Between records: copy what the ring holds into the backlog, unless the backlog is
        at its bound (then the records stay in the ring, which sheds what does not fit)."""
        if self._backlog < self.backlog_bytes and self._positions.pending():
            self._consume()

    def _consume(self) -> None:
        before = self._positions.consumed
        self.ring.consume()
        self._backlog += self._positions.consumed - before
        self.peak_backlog = max(self.peak_backlog, self._backlog)

    def free(self) -> None:
        self._positions.close()
        self.ring.free()
