"""Real-time scheduling for the daemon's few threads whose lateness a held tool call pays (the
held lane, the placement warmer).

On a loaded machine a woken normal thread waits milliseconds for a CPU, and the held process (or
the rcu_sync the warmer keeps entered) waits with it. These threads sleep but for short work, and
the kernel caps real-time threads at 95 % of a CPU (sched_rt_runtime_us) should one ever spin.
"""

from __future__ import annotations

import os

RT_PRIORITY = 1  # the lowest real-time priority: above every normal thread, below the kernel's own
# The held lane runs one above: a thread it raises while a held process waits for it
# (daemon/pipeline/gil_boost.py, at RT_PRIORITY) must never preempt it.
LANE_PRIORITY = RT_PRIORITY + 1


def run_realtime(priority: int = RT_PRIORITY) -> str | None:
    """Make the calling thread SCHED_FIFO at `priority`; None when done, else why the kernel
    refused (no CAP_SYS_NICE, or a cpu cgroup that gives real-time threads no runtime): the
    thread then stays at normal priority."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
