"""The held-exec lane: a tool call's first process, stopped at its exec, is placed without
waiting for the effects queued in front of it.

The kernel writes a second copy of each exec it held for placement alone into a ring buffer of
their own (lineage.bpf.c, `held_events`, woken at once), and `HeldLane` hands it to tool control
(`place_held`), which puts the process in its group and lets it go. The shared ring buffer may
hold seconds of a flood's effects in front of the same exec; this one holds nothing else. The
placement's syscalls keep the GIL (vigild.cgroups.gil_held): one take of the interpreter per
placement, not one per syscall. The pipeline still handles the exec in ring order (its
tool_start, its link to the model's tool call): it finds the call placed, or places it itself
when the lane could not (a verdict only the ordered stream gives, a lost copy).

Within one polled batch of the shared ring buffer, `held_first` still lets forks and execs pass
the file and network effects in front of them when a batch holds a held exec: the pipeline's own
placement (the lane's fallback) waits for births before it, not effects. Nothing else is passed,
so every order that means something is kept: births keep their order among themselves and with
exits (pid reuse stays right), and with intent (TLS and socket payload: the LLM call that asked
for a tool is seen before the exec it is linked to). A birth passing an effect only makes a
process known sooner; an exit stays behind its effects, so a call still ends after its last
effects were seen.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable

from vigild.bpf.clock import BootClock
from vigild.bpf.events import EXEC_HELD, DecodeError, EventDecoder, EventHeader, ExecEvent, Kind
from vigild.bpf.lineage import LineageSensor
from vigild.bpf.loader import RingBuffer, RingPositions
from vigild.daemon.pipeline.scrub import scrub
from vigild.daemon.pipeline.gil_boost import MAX_THREADS, BoostError, GilBooster, Raised
from vigild.daemon.realtime import LANE_PRIORITY, RT_PRIORITY, run_realtime

log = logging.getLogger("vigild.pipeline")

# How long a thread that wants the interpreter waits for a busy one to yield it (CPython's
# default: 5 ms): the lane's thread, woken while the pipeline thread runs Python outside its
# records (sinks, housekeeping), waits that long at most before the pipeline must yield.
SWITCH_INTERVAL_S = 0.0005
GATE_TIMEOUT_S = 0.05  # the longest the pipeline waits for the lane's thread to place one batch
IDLE_POLL_MS = 1000  # the lane's wait when no held exec comes (stop() wakes it at once)
FAILURE_PAUSE_S = 0.01

_KIND = slice(EventHeader.kind.offset, EventHeader.kind.offset + 4)
_FLAGS = slice(EventHeader.flags.offset, EventHeader.flags.offset + 4)
_PID = slice(EventHeader.pid.offset, EventHeader.pid.offset + 4)
_HEADER_LEN = EventHeader.pid.offset + 4
_BIRTHS = (Kind.FORK, Kind.EXEC)
_EFFECTS = frozenset(range(Kind.FILE_OPEN, Kind.EFFECTS_BUSY + 1))


def any_held(lineage: LineageSensor) -> bool:
    """Whether the kernel holds a process for placement now: one map syscall, so batches with
    nothing held (all of them under `vigil trace`) are never scanned."""
    return next(lineage.held.keys(), None) is not None


def held_first(batch: list[bytes]) -> list[bytes]:
    """``batch`` with forks and execs moved ahead of the effects before them, when it holds a
    held exec; otherwise as it came."""
    out: list[bytes] = []
    effects: list[bytes] = []
    held = False
    for raw in batch:
        kind = int.from_bytes(raw[_KIND], "little") if len(raw) >= _HEADER_LEN else -1
        if kind in _BIRTHS:
            held = held or (kind == Kind.EXEC and bool(int.from_bytes(raw[_FLAGS], "little") & EXEC_HELD))
            out.append(raw)
        elif kind in _EFFECTS:
            effects.append(raw)
        else:  # a barrier: intent, exits, control events, what the decoder will refuse
            out += effects
            effects.clear()
            out.append(raw)
    return out + effects if held else batch


class HeldLane:
    """Places held execs from their own ring buffer (see the module's doc), from two threads:

    - its own (`start`), woken by the ring at once, which places when the pipeline is idle or
      blocked (and runs real-time where allowed: `_raise_priority`);
    - the pipeline's, through `gate`, between the records it decodes: a look at the ring's
      positions, and when a held exec waits, its placement right there. A busy pipeline thread
      holds the GIL most of the time, and on a loaded machine the scheduler may run it for
      milliseconds before it lets the lane's thread take it; placing inline costs the held
      process the record being decoded instead.

    Whoever drains holds `_lock` (libbpf's consumer state is not thread-safe). `place` is tool
    control's `place_held`; whatever it raises is logged and counted, and the process stays
    held for the pipeline's ordered placement: the lane can only make a call start sooner.

    The threads given to `raise_while_held` (the pipeline's: the GIL's usual holder) run
    real-time, just below the lane, from the ring's wakeup until the lane holds the GIL and
    `_lock` (vigild.daemon.pipeline.gil_boost says why), where the lane itself runs real-time."""

    def __init__(self, lineage: LineageSensor, clock: BootClock, place: Callable[[ExecEvent], bool],
                 raise_holder: bool = False) -> None:
        self._place = place
        self._raise_holder = raise_holder  # `[control] raise_gil_holder` (opt-in); False: nothing is raised
        self._decoder = EventDecoder(clock)  # the pipeline's is for its ordered stream
        self._raw: list[bytes] = []
        self._ring = RingBuffer()
        self._ring.add(lineage.held_events, self._raw.append)
        self._positions = RingPositions(lineage.held_events)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.placed = 0
        self.errors = 0
        self.priority = "normal"  # what `_raise_priority` got for the lane's thread
        self._booster: GilBooster | None = None
        self._raise: tuple[int, ...] = ()  # native ids of the threads raised while a held exec waits
        self.boost = "off: the lane's thread has not started"
        self.boosts = 0  # waits that raised at least one thread
        self.boost_refused = 0  # waits where the kernel refused a raise (then boosting stops)
        self.restore_failures = 0  # raised threads that could not be put back (said each time)

    def start(self) -> None:
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._thread = threading.Thread(target=self._run, name="vigil-held", daemon=True)
        self._thread.start()

    def raise_while_held(self, threads: tuple[int, ...]) -> None:
        """Raise these threads (native ids) while a held exec waits for the lane; any thread."""
        if len(threads) > MAX_THREADS:
            raise ValueError(f"the held lane raises at most {MAX_THREADS} threads, not {len(threads)}")
        self._raise = threads

    def health(self) -> dict[str, object]:
        """The lane's counters, for metrics and status."""
        return {"held_lane_placed": self.placed, "held_lane_errors": self.errors,
                "held_lane_priority": self.priority, "held_lane_boost": self.boost,
                "held_lane_boosts": self.boosts, "held_lane_boost_refused": self.boost_refused,
                "held_lane_restore_failures": self.restore_failures}

    def stop(self) -> None:
        """Stop the thread; the pipeline places whatever is still held."""
        self._stop.set()
        self._ring.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            self._ring.free()
            self._positions.close()

    def gate(self) -> None:
        """Between two records on the pipeline thread: place what waits in the held ring, or
        wait for the lane's thread that is placing it (bounded: a lane that hangs slows the
        pipeline, never stops it)."""
        try:
            if not self._positions.pending() and not self._lock.locked():
                return
        except ValueError:  # stopped (its mappings closed) while a late pipeline batch still ran
            return
        if self._lock.acquire(timeout=GATE_TIMEOUT_S):
            try:
                if not self._stop.is_set():
                    self._drain()
            finally:
                self._lock.release()

    def _run(self) -> None:
        self.priority = _raise_priority()
        self._booster, self.boost = (_open_booster(self._ring, self.priority != "normal") if self._raise_holder
                                     else (None, "off: [control] raise_gil_holder is false"))
        while not self._stop.is_set():
            try:
                self.run_once(IDLE_POLL_MS)
            except Exception:  # the pipeline still places every held exec: a failure costs time only
                self.errors += 1
                log.exception("held lane step failed; continuing")
                time.sleep(FAILURE_PAUSE_S)  # a real-time thread must never spin on a failing step

    def run_once(self, timeout_ms: int) -> int:
        """Wait for held execs and place them; returns how many were placed."""
        raised = self._wait(timeout_ms)
        try:
            if self._stop.is_set():
                return 0
            with self._lock:
                # Kept raised until here: while the pipeline's `gate` holds the lock it is placing,
                # the very work a preemption would delay.
                self._restore(raised)
                return self._drain()
        finally:
            # Always, even when the wait's caller or the placement raised: a pipeline thread left
            # real-time would take a CPU from every normal task on the host for as long as a
            # flood lasts (the kernel's real-time cap leaves them 5 %).
            self._restore(raised)

    def _wait(self, timeout_ms: int) -> Raised | None:
        """The ring's wait; with the booster, the registered threads come back raised when it
        has records."""
        if self._booster is None:
            self._ring.wait(timeout_ms)
            return None
        raised = self._booster.wait(timeout_ms, self._raise)
        if raised is not None:
            if raised.count:
                self.boosts += 1
            if raised.refused is not None:
                self.boost_refused += 1
                self._raise = ()
                self.boost = f"off: {raised.refused}"
                _say_cannot_raise(raised.refused)
        return raised

    def _restore(self, raised: Raised | None) -> None:
        if raised is None or not raised.pending:
            return
        error = raised.restore()
        if error is not None:
            self.restore_failures += 1
            log.warning("a thread the held lane raised could not be put back to its own policy: %s", error)

    def _drain(self) -> int:
        """Consume the held ring and place what it held; under `_lock`, keeping the GIL."""
        self._ring.consume(keep_gil=True)
        batch, self._raw[:] = list(self._raw), []
        placed = 0
        for raw in batch:
            try:
                event = self._decoder.decode(raw)
            except DecodeError as exc:
                self.errors += 1
                log.warning("undecodable held exec record: %s", exc)
                continue
            if not isinstance(event, ExecEvent):
                continue
            scrub(event)
            if self._place(event):
                placed += 1
        self.placed += placed
        return placed


def _raise_priority() -> str:
    """Run the lane's thread before normal threads when it wakes (vigild.daemon.realtime): it
    sleeps in epoll but for ~0.1 ms of work per tool call. Where that is refused it stays normal,
    which is said once."""
    refused = run_realtime(LANE_PRIORITY)
    if refused is None:
        return f"SCHED_FIFO {LANE_PRIORITY}"
    log.info("the held lane runs at normal priority (%s): under load, held tool calls wait for a CPU", refused)
    return "normal"


def _open_booster(ring: RingBuffer, realtime: bool) -> tuple[GilBooster | None, str]:
    """The lane's booster and what it does, or None and why not (said once): raising the GIL's
    holder is only safe above it, so a lane that could not go real-time raises nothing."""
    if not realtime:
        return None, "off: the lane runs at normal priority"
    try:
        booster = GilBooster(*ring.wait_fds(), RT_PRIORITY)
    except BoostError as exc:
        _say_cannot_raise(str(exc))
        return None, f"off: {exc}"
    return booster, f"SCHED_FIFO {RT_PRIORITY} while a held exec waits"


def _say_cannot_raise(why: str) -> None:
    """Said once per lane: the helper could not be used, or the kernel refused its first raise."""
    log.info("the held lane cannot raise the pipeline thread while a held exec waits (%s): under a "
             "flood, held tool calls wait for it to be scheduled again", why)
