"""Convert the kernel's event timestamps (CLOCK_BOOTTIME ns) to wall-clock time."""

from __future__ import annotations

import time
from datetime import datetime, timezone


class BootClock:
    """Maps bpf_ktime_get_boot_ns() values to Unix-epoch nanoseconds.

    The offset is measured once, taking the tightest of a few samples so a preemption between the
    two clock reads does not skew every event."""

    def __init__(self, samples: int = 5) -> None:
        best: tuple[int, int] | None = None
        for _ in range(samples):
            before = time.time_ns()
            boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            after = time.time_ns()
            width = after - before
            if best is None or width < best[0]:
                best = (width, (before + after) // 2 - boot)
        assert best is not None
        self.offset_ns = best[1]

    def wall_ns(self, boot_ns: int) -> int:
        return boot_ns + self.offset_ns

    def now_boot_ns(self) -> int:
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def rfc3339(wall_ns: int) -> str:
    """RFC 3339 UTC with microseconds, e.g. 2026-11-24T18:47:39.123456Z. Every event's record
    carries one: a burst's thousands of events share a few seconds, whose date and time are
    remembered (strftime is most of a timestamp's cost), and %-formatting the rest takes half
    the time of an f-string's format spec."""
    seconds, rest = divmod(wall_ns, 1_000_000_000)
    # A dict by hand, not functools.lru_cache: a hit is ~65 ns cheaper (measured: 272 against 338 ns
    # per timestamp), and cleared whole when full, so nothing is kept in order.
    head = _SECONDS.get(seconds)
    if head is None:
        if len(_SECONDS) >= SECONDS_REMEMBERED:
            _SECONDS.clear()
        head = _SECONDS[seconds] = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return "%s.%06dZ" % (head, rest // 1000)


SECONDS_REMEMBERED = 64
_SECONDS: dict[int, str] = {}
