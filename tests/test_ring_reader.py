"""The shared event ring under a burst, with the real lineage and effects programs: a burst wakes
its consumer once, not once per record (bpf/common.bpf.h, wakeup_flag), and the pipeline's reader
keeps a burst's backlog in user space up to its bound, then leaves the rest in the ring, in order
(daemon/pipeline/reader.py). Root only; every count is of this test's own tracked process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.require import need
from vigild.bpf.effects import LIFECYCLE_RESERVE, EffectsSensor
from vigild.bpf.events import HEADER_SIZE, EventHeader, Kind
from vigild.bpf.lineage import LineageSensor
from vigild.daemon.launch import spawn_gated
from vigild.daemon.pipeline.reader import RingReader

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
    """A drain moves what the ring holds into the backlog only while the backlog is under its
    bound; what it leaves stays in the ring, and a poll hands over the backlog first, in order."""
    lineage, _ = sensors
    target = tmp_path / "opened.txt"
    target.write_text("x")
    argv = [sys.executable, "-S", "-c", OPENER, str(target), str(OPENS)]
    closed = RingReader(lineage.events, backlog_bytes=0)
    try:
        closed.poll(0)
        first = run_tracked(lineage, argv)
        closed.drain()
        assert closed.peak_backlog == 0, "a drain with no room took records out of the ring"
        assert opens_of(closed.poll(0), target) == [first] * OPENS
    finally:
        closed.free()
    bounded = RingReader(lineage.events, backlog_bytes=1 << 20)
    try:
        bounded.poll(0)
        first = run_tracked(lineage, argv)
        bounded.drain()
        taken = bounded.peak_backlog
        assert taken >= OPENS * 64, f"the first drain took {taken} bytes for {OPENS} records"
        second = run_tracked(lineage, argv)
        bounded.drain()  # the backlog is past its 1 MiB bound: the second burst stays in the ring
        assert bounded.peak_backlog == taken
        order = opens_of(bounded.poll(0), target)
    finally:
        bounded.free()
    assert order == [first] * OPENS + [second] * OPENS


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
