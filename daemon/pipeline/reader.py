"""The pipeline's reader of the shared event ring: records are copied out into a backlog in
user space, and the pipeline drains the ring again between the records of a batch.

Why: decoding and recording a record costs the pipeline 15-20 us, so a burst of 100k records/s
outruns it for as long as the burst lasts. Before, the ring was drained only between batches,
so the whole backlog of a burst had to wait in the ring, whose effects share is 8 MiB (~38k
records): the rest was shed. The ring cannot simply be made bigger: every consumer maps all of it
twice and the kernel fills the mapping at once, so a 64 MiB ring adds 128 MiB to vigild's RSS
even when idle. A backlog in user space costs memory only while a burst lasts, and is bounded.

The bound is on every byte the reader holds, from a record's copy-out until the pipeline has
decoded it: the batch being decoded included. Records are copied into large chunks (an anonymous
mapping each, with an `array` of where each record ends) rather than one bytes object each, which
cost ~1.3x their size in objects and list slots and, being small, stayed in the allocator's arenas
after a burst. A chunk is filled until it is full or a batch starts, each record is sliced out of
it (a bytes object) as the pipeline decodes it, and the chunk is unmapped once its last record is
decoded: its memory goes back to the system at once, which malloc'd chunks would not reliably do
(glibc raises its mmap threshold past a freed chunk's size, and later ones come from the heap).
A copy that brings the backlog to its bound ends the ring's drain there (the record copied is
kept: the bound may be passed by one record); the rest stays in the ring, which sheds effects past
its own share and counts them (the loss is reported as ever)."""

from __future__ import annotations

import ctypes
import mmap
import sys
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice

from vigild.bpf.loader import Map, RingBuffer, RingPositions

DEFAULT_BACKLOG_BYTES = 128 << 20  # a 5 s burst of 100k records/s at ~200 bytes a record, with room
CHUNK_BYTES = 1 << 20  # ~5,000 records a chunk: one mmap and munmap for them, its slack small
MIN_BACKLOG_BYTES = CHUNK_BYTES  # smaller, batches of a few records would each pay a batch's work (flushes)
# Chunks kept mapped once decoded, for the next ones: a fresh chunk costs a page fault every
# ~20 records as it is filled (~40-280 ns a record, measured), a reused one none. Outside the
# bound (they hold no records): at most this many MiB stay resident after a burst.
SPARE_CHUNKS = 4
_ENDS = "I"  # a record's end in its chunk: chunks stay under 4 GiB (a record is at most the ring's size)

_OBJECT_BYTES = sys.getsizeof(b"") + 8  # a record as a bytes object of its own, and its list slot
# libc's memcpy with its types declared: 80-500 ns a call less than ctypes.memmove (a function
# pointer whose c_void_p result Python must box; measured on a loaded machine), on every record.
_memcpy = ctypes.CDLL(None).memcpy
_memcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
_memcpy.restype = None


class Batch:
    """The records waiting when `RingReader.poll` was called, in ring order, handed over one at
    a time as they are iterated and let go as they are decoded. Iterate it once; records a
    batch did not hand over (its consumer failed) come first in the next poll's."""

    __slots__ = ("_reader", "_count")

    def __init__(self, reader: RingReader, count: int) -> None:
        self._reader = reader
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[bytes]:
        return self._reader._iterate()

    def reorder(self, order: Callable[[list[bytes]], list[bytes]]) -> None:
        """Hand the records over in `order(records)`'s order instead (held_lane.held_first)."""
        self._reader._reorder(order)


class RingReader:
    """Reads the event ring for one pipeline thread. `poll` hands over everything waiting (the
    backlog first, in order) as a Batch; `drain`, called between the records of a batch, copies
    what the ring holds into the backlog while what the reader holds is under its bound. Not
    thread-safe: the pipeline's thread is its one user (wake() excepted)."""

    def __init__(self, events: Map, backlog_bytes: int = DEFAULT_BACKLOG_BYTES) -> None:
        if backlog_bytes < 0:
            raise ValueError(f"a backlog bound cannot be negative: {backlog_bytes}")
        self.backlog_bytes = max(backlog_bytes, MIN_BACKLOG_BYTES)
        self.ring = RingBuffer()
        self.ring.add_raw(events, self._copy)
        self._positions = RingPositions(events)
        # The chunk being filled: its mapping, the ctypes view that pins its address (a buffer
        # export: the mapping cannot be closed under it), that address, its size and how much of
        # it is used.
        self._buffer: mmap.mmap | None = None
        self._pin: ctypes.c_char | None = None
        self._address = 0
        self._capacity = 0
        self._filled = 0
        self._ends = array(_ENDS)
        # Sealed chunks: (data, ends, records of it already handed over, bytes counted for it).
        # The batch's first.
        self._batch: deque[tuple[mmap.mmap | bytes, array[int], int, int]] = deque()
        self._sealed: deque[tuple[mmap.mmap | bytes, array[int], int, int]] = deque()
        self._handing: Iterator[bytes] | None = None
        self._spares: list[mmap.mmap] = []
        self.held = 0  # bytes held: records in chunks (sealed ones by the pages used) and their ends
        self.peak_backlog = 0  # the most `held` has been: what a burst cost

    def poll(self, timeout_ms: int) -> Batch:
        """Wait up to timeout_ms for records (not at all while a backlog waits, in here or in
        the ring), then return every record waiting, the backlog's first."""
        self._stop_handing()
        if not (self._batch or self._sealed or self._filled or self._positions.pending()):
            # Records a drain at the bound left in the ring send no wakeup (the producer wakes
            # its reader on crossing a byte mark, long crossed): a wait would last its timeout.
            self.ring.wait(timeout_ms)
        if self.held < self.backlog_bytes:
            self._consume()
        self._seal()
        self._batch.extend(self._sealed)
        self._sealed.clear()
        return Batch(self, sum(len(ends) - done for _, ends, done, _ in self._batch))

    def drain(self) -> None:
        """Between records: copy what the ring holds into the backlog, unless the reader holds
        its bound already (then the records stay in the ring, which sheds what does not fit)."""
        if self.held < self.backlog_bytes and self._positions.pending():
            self._consume()

    def _consume(self) -> None:
        self.ring.consume()
        if self.held > self.peak_backlog:
            self.peak_backlog = self.held

    def _copy(self, data: int, size: int) -> int:
        """The ring's callback: one record into the chunk being filled (a new one when it does
        not fit); ends the drain once the reader holds its bound."""
        start = self._filled
        end = start + size
        if end > self._capacity:
            self._seal()
            self._open_chunk(size)
            start, end = 0, size
        _memcpy(self._address + start, data, size)
        self._ends.append(end)
        self._filled = end
        self.held += size + 4  # the record, and its end's slot in `_ends`
        return RingBuffer.STOP if self.held >= self.backlog_bytes else 0

    def _open_chunk(self, size: int) -> None:
        # Its pages are backed by memory only as records are written to them: what it holds is
        # counted as it fills, not its size.
        capacity = max(size, CHUNK_BYTES)
        self._buffer = (self._spares.pop() if capacity == CHUNK_BYTES and self._spares
                        else mmap.mmap(-1, capacity))
        self._pin = ctypes.c_char.from_buffer(self._buffer)
        self._address = ctypes.addressof(self._pin)
        self._capacity = capacity

    def _seal(self) -> None:
        """The chunk being filled is filled no more: counted from then on as the pages it used
        (those it did not touch were never backed by memory)."""
        if self._buffer is None:
            return
        used = -(-self._filled // mmap.PAGESIZE) * mmap.PAGESIZE
        self.held += used - self._filled
        self._sealed.append((self._buffer, self._ends, 0, used))
        self._pin, self._buffer, self._address, self._capacity, self._filled = None, None, 0, 0, 0
        self._ends = array(_ENDS)

    def _iterate(self) -> Iterator[bytes]:
        """The batch's records, one slice each; a chunk is let go after its last. If the
        consumer stops early, what it was not handed stays first in line (`_stop_handing`)."""
        self._stop_handing()
        handing = self._hand_over()
        self._handing = handing
        return handing

    def _hand_over(self) -> Iterator[bytes]:
        batch = self._batch
        while batch:
            data, ends, done, used = batch[0]
            start = ends[done - 1] if done else 0
            try:
                for end in islice(ends, done, None) if done else ends:
                    raw = data[start:end]
                    start = end
                    yield raw
            except GeneratorExit:  # records end strictly after one another: those up to `start` went out
                batch[0] = (data, ends, bisect_right(ends, start), used)
                raise
            batch.popleft()
            if isinstance(data, mmap.mmap):
                if len(data) == CHUNK_BYTES and len(self._spares) < SPARE_CHUNKS:
                    self._spares.append(data)
                else:
                    data.close()  # unmapped now, not whenever the last reference goes
            self.held -= used + 4 * len(ends)

    def _stop_handing(self) -> None:
        if self._handing is not None:
            self._handing.close()
            self._handing = None

    def _reorder(self, order: Callable[[list[bytes]], list[bytes]]) -> None:
        """Re-pack the batch's records (those not handed over yet) in the order `order` gives,
        as one chunk. For a moment the records exist as bytes objects too: counted in the peak."""
        held = self.held
        records = list(self._iterate())
        self._handing = None
        ordered = order(records)
        self.peak_backlog = max(self.peak_backlog, held + sum(len(raw) + _OBJECT_BYTES for raw in ordered))
        ends = array(_ENDS)
        end = 0
        for raw in ordered:
            end += len(raw)
            ends.append(end)
        data = b"".join(ordered)
        if ends:
            self._batch.append((data, ends, 0, len(data)))
            self.held += len(data) + 4 * len(ends)

    def free(self) -> None:
        self._stop_handing()
        self._positions.close()
        self.ring.free()
