"""A full disk under the store: one line per state change, counted losses, tracing goes on, and
the store recovers when space returns. A real tmpfs of a few MiB, filled for real."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from vigild.correlate.process_tree import ProcessTable
from vigild.daemon.sinks.record import record_of
from vigild.daemon.events import LostEvent
from vigild.daemon.sinks import StoreSink
from vigild.daemon.store import Store


@pytest.fixture
def small_disk(tmp_path: Path, root: None) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _event(i: int) -> LostEvent:
    # Any event type serves: what matters is a row of a few hundred bytes per event.
    return LostEvent(ts_ns=time.time_ns(), kind="file_open" + "x" * 300, count=i, total=i)


def test_full_disk_is_one_line_counted_and_recovers(small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Store(small_disk / "vigil.db")
    sink = StoreSink(store, ProcessTable())
    sink.RETRY_S = 0.3
    filler = small_disk / "filler"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    with open(filler, "wb") as f:  # leave ~256 KiB for the database
        f.write(b"\0" * (free - (256 << 10)))
    caplog.set_level(logging.WARNING, logger="vigild.store")

    handled = 0
    for batch in range(60):  # far more than fits: the disk fills during this loop
        for _ in range(200):
            sink.handle(event := _event(handled), record_of(event))
            handled += 1
        sink.flush()
    assert sink.failing and not sink.health()["store_writable"]
    assert sink.errors >= 1 and sink.health()["store_events_dropped"] > 0
    assert len(caplog.records) <= 5, [r.getMessage() for r in caplog.records]
    assert "cannot be written" in caplog.records[0].getMessage()

    filler.unlink()  # space returns
    time.sleep(sink.RETRY_S + 0.1)
    before = store.db.execute("SELECT count(*) FROM events").fetchone()[0]
    for _ in range(50):
        sink.handle(event := _event(handled), record_of(event))
        handled += 1
    sink.flush()
    after = store.db.execute("SELECT count(*) FROM events").fetchone()[0]
    assert not sink.failing
    assert after >= before + 49  # the first event after the pause may be the retry that found space
    assert any("writable again" in r.getMessage() for r in caplog.records)
    assert len(caplog.records) <= 5
    sink.close()
