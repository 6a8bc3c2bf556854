"""The pipeline's wait between polls: short while a tracked process lives, long when none does."""

from __future__ import annotations

import threading
import time

import pytest

from vigild.bpf.lineage import LineageSensor
from vigild.bpf.loader import RingBuffer
from vigild.correlate.poll_wait import IDLE_WAIT_MS, PollWait
from vigild.correlate.process_tree import ProcessInfo, ProcessTable


def test_nothing_tracked_waits_long() -> None:
    assert PollWait(busy_ms=10)(ProcessTable()) == IDLE_WAIT_MS


def test_a_live_process_keeps_the_short_poll_until_the_last_one_exits() -> None:
    table, wait = ProcessTable(), PollWait(busy_ms=10)
    for pid in (100, 101):
        table.seed(ProcessInfo(pid=pid, ppid=1, session_id=1, comm="agent", start_ns=1))
    assert wait(table) == 10
    table.processes[100].exit_ns = 2  # the remembered live one goes: the other is found
    assert wait(table) == 10
    table.processes[101].exit_ns = 3
    assert wait(table) == IDLE_WAIT_MS
    table.seed(ProcessInfo(pid=102, ppid=1, session_id=2, comm="agent", start_ns=4))
    assert wait(table) == 10


@pytest.mark.usefixtures("root")
def test_wake_ends_a_long_poll_at_once() -> None:
    """A session starting while the pipeline waits idle must not wait out the second: wake()
    from another thread ends a poll on the real ring buffer at once."""
    lineage = LineageSensor()
    rings = RingBuffer()
    try:
        rings.add(lineage.events, lambda _raw: None)
        waker = threading.Timer(0.2, rings.wake)
        waker.start()
        start = time.monotonic()
        rings.poll(10_000)
        waited = time.monotonic() - start
        waker.join()
        assert 0.15 <= waited < 5.0, waited  # woken, not timed out (generous: a loaded host is slow)
    finally:
        rings.free()
        lineage.close()
