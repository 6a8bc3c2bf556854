"""WAL checkpoints of the store, run from a thread and connection of their own.

In WAL mode every commit appends pages to the `-wal` file, and some commit has to copy them back
into the database (a checkpoint). Left to SQLite, the writer's own commit does it whenever the WAL
passes `wal_autocheckpoint` pages: ~1.2 µs of the pipeline thread's CPU per event of a burst, a
quarter of what storing an event costs (bench/README.md). Here the writer only signals; this
thread checkpoints (PASSIVE: it never waits for, nor blocks, a reader or the writer) while the
pipeline goes on decoding. SQLite runs a checkpoint without Python's GIL, so on a machine with a
second core it costs the pipeline nothing. The writer keeps a far larger `wal_autocheckpoint` as
a backstop: a checkpointer that cannot keep up (or fails) leaves the WAL bounded all the same.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

log = logging.getLogger("vigild.store")

ROWS_PER_CHECKPOINT = 2000  # ~1-2 MiB of WAL for file-open rows: the default 1000 pages is 4 MiB
SECONDS_PER_CHECKPOINT = 1.0  # a trickle of rows is checkpointed at least this often
BACKSTOP_PAGES = 16384  # the writer's own wal_autocheckpoint (64 MiB of 4 KiB pages)


class WalCheckpointer:
    """Checkpoints the WAL of the database at `path` when told enough rows were committed.

    The thread starts at the first signal (a store opened only to be read starts none) and waits
    on an event between checkpoints: nothing runs while nothing is written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.checkpoints = 0
        self.errors = 0
        self._rows = 0
        self._signalled_at = time.monotonic()
        self._wake = threading.Event()
        # Held while this thread checkpoints: a TRUNCATE checkpoint of the writer's (retention)
        # that met it running would return busy and leave the WAL at its size.
        self.running = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def committed(self, rows: int) -> None:
        """The writer committed `rows` rows (on the writer's thread; cheap: a counter and a clock)."""
        self._rows += rows
        now = time.monotonic()
        if self._rows < ROWS_PER_CHECKPOINT and now - self._signalled_at < SECONDS_PER_CHECKPOINT:
            return
        self._rows = 0
        self._signalled_at = now
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vigild-store-checkpoint", daemon=True)
            self._thread.start()
        self._wake.set()

    def close(self) -> None:
        """Stop the thread (the closing writer's last checkpoint is SQLite's own)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                self._checkpoint(db)
        finally:
            db.close()

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        try:
            with self.running:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except sqlite3.Error as exc:  # the writer's backstop still bounds the WAL
            self.errors += 1
            if self.errors == 1:
                log.warning("store %s: a WAL checkpoint failed (%s); the writer checkpoints itself past %d pages",
                            self.path, exc, BACKSTOP_PAGES)
