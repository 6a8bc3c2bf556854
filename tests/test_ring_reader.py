"""The shared event ring under a burst, with the real lineage and effects programs: a burst wakes
its consumer once, not once per record (bpf/common.bpf.h, wakeup_flag), and the pipeline's reader
keeps a burst's backlog in user space up to its bound, counting every byte it holds until the
record is decoded, then leaves the rest in the ring, in order (daemon/pipeline/reader.py). Root
only; every count is of this test's own tracked process."""

from __future__ import annotations

import ctypes
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.require import need
from vigild.bpf.clock import BootClock
from vigild.bpf.effects import LIFECYCLE_RESERVE, EffectsSensor, register_effects
from vigild.bpf.effects_events import FileOpen
from vigild.bpf.events import HEADER_SIZE, EventDecoder, EventHeader, Kind
from vigild.bpf.lineage import LineageSensor
from vigild.bpf.loader import RingBuffer
from vigild.daemon.launch import spawn_gated
from vigild.daemon.pipeline import Pipeline
from vigild.daemon.pipeline.reader import CHUNK_BYTES, MIN_BACKLOG_BYTES, RingReader

pytestmark = pytest.mark.usefixtures("root")

OPENS = 20_000
OPENER = """
import os, sys
for _ in range(int(sys.argv[2])):
    os.close(os.open(sys.argv[1], os.O_RDONLY))
"""
SESSION = 4_242


@pytest.fixture
def sensors() -> Iterator[tuple[LineageSensor, EffectsSensor]]:
    lineage = LineageSensor()
    effects = EffectsSensor(lineage.shared_maps, fold_opens=False, wakeup_bytes=64 << 10)
    yield lineage, effects
    effects.close()
    lineage.close()


def run_tracked(lineage: LineageSensor, argv: list[str]) -> int:
    """Run argv tracked from its first instruction (nobody reads the ring meanwhile); its pid."""
    child = spawn_gated(argv)
    lineage.track(child.pid, SESSION)
    child.release()
    _, status = os.waitpid(child.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return child.pid


def opens_of(records: list[bytes], target: Path) -> list[int]:
    """The pids of the file_open records of target among records, in ring order."""
    path = str(target).encode()
    return [header.pid for raw in records if path in raw
            for header in [EventHeader.from_buffer_copy(raw[:HEADER_SIZE])] if header.kind == Kind.FILE_OPEN]


def test_a_burst_wakes_its_consumer_once_not_per_record(sensors: tuple[LineageSensor, EffectsSensor],
                                                         tmp_path: Path) -> None:
    """20,000 opens, nobody draining: once 64 KiB wait, the consumer blocked in its wait must be
    woken (it waits 30 s otherwise), and the opener must not take an IRQ work interrupt for every
    record after that (it took 0.7-0.8 per open before: each a wakeup nobody waited on)."""
    perf = shutil.which("perf")
    need(perf is not None and subprocess.run([perf, "stat", "-e", "irq_vectors:irq_work_entry", "--", "true"],
                                             capture_output=True).returncode == 0,
         "perf cannot count irq_vectors:irq_work_entry here")
    lineage, _ = sensors
    reader = RingReader(lineage.events)
    try:
        reader.poll(0)  # what the ring held before
        woken: list[float] = []
        waiter = threading.Thread(target=lambda: (reader.ring.wait(30_000), woken.append(time.monotonic())))
        waiter.start()
        target, counts = tmp_path / "opened.txt", tmp_path / "perf.csv"
        target.write_text("x")
        started = time.monotonic()
        run_tracked(lineage, [perf, "stat", "-x,", "-o", str(counts), "-e", "irq_vectors:irq_work_entry", "--",
                                    sys.executable, "-S", "-c", OPENER, str(target), str(OPENS)])
        waiter.join(timeout=40)
        assert woken and woken[0] - started < 20, "the consumer was not woken by a burst past wakeup_bytes"
        records = reader.poll(0)
    finally:
        reader.free()
    opener = opens_of(records, target)
    assert len(opener) == OPENS, f"{len(opener)} file_open records of {OPENS} opens"
    line = next(x for x in counts.read_text().splitlines() if "irq_work_entry" in x)
    interrupts = int(line.split(",")[0])
    assert interrupts < OPENS // 100, f"{interrupts} IRQ work interrupts for {OPENS} opens: a wakeup per record"


def test_the_backlog_holds_records_up_to_its_bound_then_leaves_them_in_the_ring(
        sensors: tuple[LineageSensor, EffectsSensor], tmp_path: Path) -> None:
    """A drain copies what the ring holds only until the reader holds its bound (plus the record
    that reached it); what it leaves stays in the ring, a drain at the bound takes nothing, and
    the batches hand everything over in ring order as the bound frees up."""
    lineage, _ = sensors
    target = tmp_path / "opened.txt"
    target.write_text("x")
    argv = [sys.executable, "-S", "-c", OPENER, str(target), str(OPENS)]
    assert RingReader(lineage.events, backlog_bytes=0).backlog_bytes == MIN_BACKLOG_BYTES  # one chunk at least
    reader = RingReader(lineage.events, backlog_bytes=MIN_BACKLOG_BYTES)
    try:
        consume_all(reader)
        first = run_tracked(lineage, argv)  # 20,000 records, ~4.5 MiB: all in the ring, 4 x the bound
        reader.drain()
        taken = reader.peak_backlog
        assert MIN_BACKLOG_BYTES <= taken <= MIN_BACKLOG_BYTES + MAX_RECORD, f"the first drain held {taken} bytes"
        assert reader.held == taken
        reader.drain()  # at the bound: the rest stays in the ring
        assert reader.held == taken and reader._positions.pending()
        handed = list(reader.poll(0))
        assert reader.held == 0
        started = time.monotonic()
        waited = reader.poll(20_000)  # the ring sends no wakeup for what it already held
        assert time.monotonic() - started < 5, "a poll waited for a wakeup with records in the ring"
        order = opens_of(handed + list(waited) + consume_all(reader, check=MIN_BACKLOG_BYTES), target)
    finally:
        reader.free()
    assert order == [first] * OPENS
    assert reader.peak_backlog <= MIN_BACKLOG_BYTES + MAX_RECORD, f"the reader held {reader.peak_backlog} bytes at most"


MAX_RECORD = 8 << 10  # more than any record a file open makes


def consume_all(reader: RingReader, check: int | None = None) -> list[bytes]:
    """Poll until the ring and the backlog are empty, draining between records as the pipeline
    does (core.py run_once); with `check`, assert between records that the reader never holds
    more than that bound plus one record. The records, in the order handed over."""
    out: list[bytes] = []
    while True:
        batch = reader.poll(0)
        if not batch:
            return out
        for i, raw in enumerate(batch):
            out.append(raw)
            if i % 256 == 255:
                reader.drain()
                if check is not None:
                    assert reader.held <= check + MAX_RECORD, f"the reader holds {reader.held} bytes, bound {check}"


def test_a_burst_past_a_small_bound_is_shed_by_the_kernel_while_the_reader_stays_at_its_bound(
        tmp_path: Path) -> None:
    """50,000 opens (~11 MiB of records) while this thread, like a pipeline stalled behind a slow
    sink, takes one batch and decodes it only once the opener is done, then the rest as the
    pipeline does: the reader holds no more than its 1 MiB bound plus one record (the batch
    being decoded counted), the kernel sheds what neither holds and counts it, and every record
    that was not shed comes out once, in order, and decodes whole."""
    opens = 50_000
    lineage = LineageSensor()
    effects = EffectsSensor(lineage.shared_maps, fold_opens=False, max_queued_bytes=2 << 20, wakeup_bytes=64 << 10)
    reader = RingReader(lineage.events, backlog_bytes=MIN_BACKLOG_BYTES)
    decoder = EventDecoder(BootClock(samples=1))
    register_effects(decoder)
    target = tmp_path / "opened.txt"
    target.write_text("x")
    try:
        consume_all(reader)
        before = lineage.stats().get("file_open", (0, 0))
        child = spawn_gated([sys.executable, "-S", "-c", OPENER, str(target), str(opens)])
        lineage.track(child.pid, SESSION)
        child.release()
        first = reader.poll(30_000)  # what the opener wrote by the time the poll woke
        os.waitpid(child.pid, 0)
        reader.drain()  # the batch in hand is counted: at the bound, nothing more comes out of the ring
        assert reader.held <= MIN_BACKLOG_BYTES + MAX_RECORD, f"the reader holds {reader.held} bytes"
        records: list[bytes] = []
        batch = first
        while batch:
            for i, raw in enumerate(batch):
                decoder.decode(raw)  # the pipeline's first step
                records.append(raw)
                if i % 256 == 255:
                    reader.drain()
                    assert reader.held <= MIN_BACKLOG_BYTES + MAX_RECORD, f"the reader holds {reader.held} bytes"
            batch = reader.poll(0)
        emitted, dropped = (a - b for a, b in zip(lineage.stats().get("file_open", (0, 0)), before))
    finally:
        reader.free()
        effects.close()
        lineage.close()
    assert dropped > 0, f"{emitted} file_open records and none shed: the burst did not outrun the reader"
    assert MIN_BACKLOG_BYTES <= reader.peak_backlog <= MIN_BACKLOG_BYTES + MAX_RECORD, \
        f"the reader's peak says {reader.peak_backlog} bytes for a bound of {MIN_BACKLOG_BYTES}"
    assert reader.held == 0, f"{reader.held} bytes still counted with nothing held"
    opens_seen = [event for event in map(decoder.decode, records)
                  if isinstance(event, FileOpen) and event.pid == child.pid]
    assert len(opens_seen) == emitted, f"{len(opens_seen)} file_open records of the {emitted} the kernel kept"
    shed_from_the_burst = opens - sum(e.path == str(target) for e in opens_seen)
    assert shed_from_the_burst == dropped, f"{shed_from_the_burst} of the burst's opens missing, {dropped} shed"
    stamps = [EventHeader.from_buffer_copy(raw[:HEADER_SIZE]).ts_ns for raw in records]
    assert stamps == sorted(stamps), "records came out of ring order"


def test_the_pipeline_reports_the_bound_it_kept_and_the_loss_the_kernel_counted(tmp_path: Path) -> None:
    """The whole pipeline (its own thread, core.py's run_once) under the same burst and stall: its health
    says the bound, a peak that reached it and did not pass it by more than a record, the
    kernel's file_open losses, and every file_open the kernel kept was dispatched."""
    opens = 50_000
    lineage = LineageSensor()
    effects = EffectsSensor(lineage.shared_maps, fold_opens=False, max_queued_bytes=2 << 20, wakeup_bytes=64 << 10)
    target = tmp_path / "opened.txt"
    target.write_text("x")
    try:
        pipeline = Pipeline(lineage, [], sensors=[effects], backlog_bytes=MIN_BACKLOG_BYTES)
        before = lineage.stats().get("file_open", (0, 0))
        pipeline.start()
        try:
            argv = [sys.executable, "-S", "-c", OPENER, str(target), str(opens)]
            child = spawn_gated(argv)
            pipeline.add_pending_root(child.pid, argv, os.getcwd(), 0)
            with pipeline.lock:  # the pipeline stalls after one poll (as behind a slow sink) until the opener is done
                child.release()
                os.waitpid(child.pid, 0)
            assert pipeline.wait_exit(child.pid, timeout=300), "the opener's exit was never dispatched"
        finally:
            pipeline.stop()
        health = pipeline.health()
        emitted, dropped = (a - b for a, b in zip(lineage.stats().get("file_open", (0, 0)), before))
    finally:
        effects.close()
        lineage.close()
    assert health["ring_backlog_limit_bytes"] == MIN_BACKLOG_BYTES
    peak = health["ring_backlog_peak_bytes"]
    assert MIN_BACKLOG_BYTES <= peak <= MIN_BACKLOG_BYTES + MAX_RECORD, f"peak {peak} for a bound of {MIN_BACKLOG_BYTES}"
    assert dropped > 0 and health["drops_by_kind"]["file_open"] >= dropped
    assert health["events_dispatched"]["file_open"] == emitted, \
        f"{health['events_dispatched']['file_open']} file_open events dispatched of {emitted} the kernel kept"


def feed(reader: RingReader, records: list[bytes]) -> int:
    """Hand records to the reader's ring callback as libbpf does (an address and a size), until
    it says stop; how many it took."""
    for n, raw in enumerate(records, 1):
        buffer = ctypes.create_string_buffer(raw, len(raw))
        if reader._copy(ctypes.addressof(buffer), len(raw)) == RingBuffer.STOP:
            return n
    return len(records)


def test_records_come_out_byte_identical_in_order_across_chunks_and_an_abandoned_batch(
        sensors: tuple[LineageSensor, EffectsSensor]) -> None:
    """Records of many sizes, some larger than a chunk, copied in through the ring's callback:
    each comes out byte for byte, in order; a batch its consumer stops early hands the rest over
    first in the next; the count is back to 0 once all are decoded."""
    lineage, _ = sensors
    rng = random.Random(14)
    records = [rng.randbytes(CHUNK_BYTES + 7 if n % 100 == 99 else rng.choice([3, 64, 200, 1500]))
               for n in range(3_000)]
    reader = RingReader(lineage.events, backlog_bytes=4 * CHUNK_BYTES)
    try:
        consume_all(reader)
        out: list[bytes] = []
        fed = 0
        while fed < len(records):
            took = feed(reader, records[fed:])
            assert reader.held <= reader.backlog_bytes + len(records[fed + took - 1]) + 4
            fed += took
            batch = reader.poll(0)
            for i, raw in enumerate(batch):
                out.append(raw)
                if i == len(batch) // 2:
                    break  # the consumer fails midway: the rest must come first in the next batch
            out += list(reader.poll(0))
        assert out == records
        assert reader.held == 0
    finally:
        reader.free()


def test_a_reordered_batch_is_handed_over_in_its_new_order_and_counted(
        sensors: tuple[LineageSensor, EffectsSensor]) -> None:
    """held_first's reordering (core.py, when a held exec waits) re-packs the batch: the records
    come out in the new order, the peak counts them while they were bytes objects too, and
    nothing stays counted after."""
    lineage, _ = sensors
    records = [bytes([n % 256]) * (100 + n) for n in range(500)]
    reader = RingReader(lineage.events)
    try:
        consume_all(reader)
        feed(reader, records)
        batch = reader.poll(0)
        assert len(batch) == len(records)
        batch.reorder(lambda rs: rs[::-1])
        assert reader.peak_backlog >= sum(map(len, records)), "the re-packing's bytes objects went uncounted"
        assert list(batch) == records[::-1]
        assert reader.held == 0
    finally:
        reader.free()


def test_the_ring_size_is_set_and_effects_queue_all_of_it_but_the_reserve() -> None:
    lineage = LineageSensor(ring_bytes=32 << 20)
    try:
        assert lineage.events.max_entries == 32 << 20
        effects = EffectsSensor(lineage.shared_maps)
        try:
            assert effects.config.max_queued_bytes == (32 << 20) - LIFECYCLE_RESERVE
        finally:
            effects.close()
    finally:
        lineage.close()


@pytest.mark.parametrize("size", [0, 3 << 20, 1 << 32])
def test_a_ring_size_the_kernel_refuses_is_refused_before_loading(size: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        LineageSensor(ring_bytes=size)
