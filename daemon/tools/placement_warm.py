"""Keeping the kernel's cgroup-move path warm while a tool call is about to be placed.

A held tool call's move into its group waits one RCU grace period (~10 ms here) when no other
cgroup move happened in the last grace period or so (vigild.cgroups.warm says why). The warmer
makes a no-op move every `PERIOD_S` on a thread of its own while warm is wanted, so the
placement that follows takes tens of microseconds:

- from the moment a governed session's model asks for a tool call (its LLM call decoded, before
  the agent spawns the tool) for `INTENT_S`;
- for `TAIL_S` after each placement: agents run tool calls in loops, the next one is near.

Otherwise it writes nothing and its thread sleeps on an event (idle costs nothing). The cost
while warm: the thread's wakeups (~0.2 ms of CPU each, ~3% of a core), and every fork and exit on
the host takes the rwsem's slower reader path (bench/README.md has the figures). A refused write (a
delegated cgroup, `nsdelegate`) stops the warmer for good, said once in the log and in
`health()`; placement works as before, only slower.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from vigild.cgroups import CgroupError
from vigild.cgroups.warm import NoopMove, noop_move_for
from vigild.daemon.realtime import run_realtime

log = logging.getLogger("vigild.tools")

PERIOD_S = 0.005   # below one grace period: the rcu_sync never returns to idle between two writes
INTENT_S = 2.0     # a tool call the model asked for is spawned well within this, or not soon at all
TAIL_S = 1.5       # after a placement: the agent's next call of a loop
MODES = ("auto", "off")


class PlacementWarmer:
    """The warm-wanted window and the thread that writes no-op moves inside it."""

    def __init__(self, move: NoopMove | None, period_s: float = PERIOD_S, refused: str | None = None) -> None:
        """`move` None: the warmer cannot run here (`refused` says why) and writes nothing."""
        self._move = move
        self._period_s = period_s
        self._until = 0.0  # monotonic: warm is wanted until then
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.writes = 0
        self.windows = 0
        self.warm_s = 0.0
        self.refused = refused

    def start(self) -> None:
        if self._move is None:
            return
        self._thread = threading.Thread(target=self._run, name="vigil-warm", daemon=True)
        self._thread.start()

    def want(self, seconds: float) -> None:
        """Keep warm for at least `seconds` from now (any thread; cheap: no syscall when the
        thread is already warming)."""
        until = time.monotonic() + seconds
        if until > self._until:
            self._until = until
        if not self._wake.is_set():
            self._wake.set()

    def cool(self) -> None:
        """End the window now (bench/cgroup_move.py's cold rounds)."""
        self._until = 0.0

    @property
    def warm(self) -> bool:
        return self.refused is None and time.monotonic() < self._until

    def stop(self) -> None:
        """Stop writing, before vigil's own layout moves its process (never race a real move)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.windows:
            log.info("placement warmer: %d no-op cgroup moves in %d windows (%.1f s warm)",
                     self.writes, self.windows, self.warm_s)

    def health(self) -> dict[str, Any]:
        return {"placement_warm_writes": self.writes, "placement_warm_windows": self.windows,
                "placement_warm_refused": self.refused}

    def _run(self) -> None:
        move = self._move
        assert move is not None  # start() runs no thread without one
        run_realtime()  # a late wakeup lets the rcu_sync go idle; refused, the held lane says so in the log
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set() or time.monotonic() >= self._until:
                continue
            self.windows += 1
            started = time.monotonic()
            fd = -1
            try:
                fd = move.open()  # where this process is now: nothing moves it while the warmer runs
                while not self._stop.is_set() and time.monotonic() < self._until:
                    move.write(fd)
                    self.writes += 1
                    self._stop.wait(self._period_s)
            except CgroupError as exc:
                self._refuse(str(exc))
                return
            finally:
                if fd >= 0:
                    os.close(fd)
                self.warm_s += time.monotonic() - started

    def _refuse(self, why: str) -> None:
        self.refused = why
        _say_off(why)


def open_warmer(version: int, controllers: frozenset[str]) -> PlacementWarmer:
    """The warmer for a backend of this cgroup version and these controllers, started; one that
    writes nothing (and says why, once) where this process's own group cannot be found."""
    try:
        move = noop_move_for(version, controllers)
    except CgroupError as exc:
        _say_off(str(exc))
        return PlacementWarmer(None, refused=str(exc))
    warmer = PlacementWarmer(move)
    warmer.start()
    return warmer


def _say_off(why: str) -> None:
    log.warning("placement warmer off: %s; a tool call placed after a pause waits one RCU grace period "
                "(~10 ms here) for its cgroup move", why)

