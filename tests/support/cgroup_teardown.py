"""Test-side cleanup of real cgroups, independent of the backends under test: a failing backend
must not leave groups behind."""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

# Allocates 200 MiB one MiB at a time: OOM-killed under a 64 MiB limit.
HOG = """
chunks = []
for _ in range(200):
    chunks.append(b"x" * (1 << 20))
print("survived")
"""


def destroy(top: Path) -> None:
    """Kill every member and rmdir the tree bottom-up: thaw v1 freezer groups first so killed
    tasks can exit, use cgroup.kill where the kernel has it, else SIGKILL per pid."""
    if not top.exists():
        return
    deadline = time.monotonic() + 10
    for dirpath, _, _ in os.walk(top, topdown=False):
        directory = Path(dirpath)
        state = directory / "freezer.state"
        if state.exists():
            state.write_text("THAWED")
        while True:
            if (directory / "cgroup.kill").exists():
                (directory / "cgroup.kill").write_text("1")
            for pid in (directory / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.rmdir(directory)
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
