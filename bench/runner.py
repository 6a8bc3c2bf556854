"""Running a benchmark workload untraced or as a tracked root, timed the same way both times."""

from __future__ import annotations

import os
import subprocess
import time

from vigild.daemon.launch import spawn_gated
from vigild.daemon.pipeline import Pipeline


def run_plain(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - start


def run_tracked(argv: list[str], pipeline: Pipeline, drain_timeout: float = 30.0) -> float:
    """Start argv already tracked (held until the kernel tracks it); time from release to exit,
    then wait until the pipeline has seen its exit."""
    child = spawn_gated(argv)
    pipeline.add_pending_root(child.pid, argv, os.getcwd(), 0)
    start = time.perf_counter()
    child.release()
    os.waitpid(child.pid, 0)
    elapsed = time.perf_counter() - start
    pipeline.wait_exit(child.pid, timeout=drain_timeout)
    return elapsed
