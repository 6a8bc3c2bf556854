"""The held-exec lane: a tool call's first process, stopped at its exec, is placed without
waiting for the effects queued in front of it.

Its own ring buffer and thread: the kernel writes a second copy of each exec it held for
placement alone (lineage.bpf.c, `held_events`, woken at once), and `HeldLane` hands it to tool
control (`place_held`), which puts the process in its group and lets it go. This thread never
decodes an effect, and never takes the pipeline's lock: a flood of file events decoding on the
pipeline thread costs the held process a wait for the interpreter (bounded by the switch
interval set below), not for the flood. The pipeline still handles the exec in ring order (its
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
import os
import sys
import threading
from collections.abc import Callable

from vigild.bpf.clock import BootClock
from vigild.bpf.events import EXEC_HELD, DecodeError, EventDecoder, EventHeader, ExecEvent, Kind
from vigild.bpf.lineage import LineageSensor
from vigild.bpf.loader import RingBuffer
from vigild.daemon.pipeline.scrub import scrub

log = logging.getLogger("vigild.pipeline")

# How long a thread that wants the interpreter waits for a busy one to yield it (CPython's
# default: 5 ms). The lane's few syscalls each give the interpreter up and take it back, so under
# a decoding flood the default alone would cost a held process several times 5 ms.
SWITCH_INTERVAL_S = 0.0002
GATE_TIMEOUT_S = 0.05  # the longest the pipeline waits for one batch of placements
IDLE_POLL_MS = 1000  # the lane's wait when no held exec comes (stop() wakes it at once)
RT_PRIORITY = 1  # the lowest real-time priority: above every normal thread, below the kernel's own

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
    """The thread that places held execs from their own ring buffer (see the module's doc).

    `place` is tool control's `place_held`; whatever it raises is logged and counted, and the
    process stays held for the pipeline's placement: the lane can only make a call start sooner."""

    def __init__(self, lineage: LineageSensor, clock: BootClock, place: Callable[[ExecEvent], bool]) -> None:
        self._place = place
        self._decoder = EventDecoder(clock)  # the pipeline's is its thread's alone
        self._raw: list[bytes] = []
        self._ring = RingBuffer()
        self._ring.add(lineage.held_events, self._raw.append)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Clear while the lane places: the pipeline thread waits at its next record rather than
        # take the GIL back from the lane every switch interval (see `gate`).
        self._clear = threading.Event()
        self._clear.set()
        self.placed = 0
        self.errors = 0
        self.priority = "normal"  # what `_raise_priority` got for the lane's thread

    def start(self) -> None:
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._thread = threading.Thread(target=self._run, name="vigil-held", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; the pipeline places whatever is still held."""
        self._stop.set()
        self._ring.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._ring.free()

    def _run(self) -> None:
        self.priority = _raise_priority()
        while not self._stop.is_set():
            try:
                self.run_once(IDLE_POLL_MS)
            except Exception:  # the pipeline still places every held exec: a failure costs time only
                self.errors += 1
                log.exception("held lane step failed; continuing")

    def gate(self) -> None:
        """Called by the pipeline thread between records: while the lane places, wait for it
        (bounded: a lane that hangs slows the pipeline, never stops it). Otherwise the two
        threads trade the GIL every switch interval, and on a loaded machine each trade waits
        for the scheduler: milliseconds the held process spends stopped."""
        if not self._clear.is_set():
            self._clear.wait(GATE_TIMEOUT_S)

    def run_once(self, timeout_ms: int) -> int:
        """Wait for held execs and place them; returns how many were placed."""
        self._ring.poll(timeout_ms, keep_gil=True)  # from the wakeup to the SIGCONT: one GIL take
        if not self._raw:
            return 0
        self._clear.clear()
        try:
            return self._place_batch()
        finally:
            self._clear.set()

    def _place_batch(self) -> int:
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
    """Run the calling thread (the lane) before normal threads when it wakes: on a loaded machine
    a woken normal thread waits milliseconds for a CPU, which the held process waits too. It sleeps
    in epoll but for ~0.1 ms of work per tool call, and the kernel caps real-time threads at 95 %
    of a CPU (sched_rt_runtime_us) should one ever spin. Without CAP_SYS_NICE (or where the cpu
    cgroup gives real-time threads no runtime) it stays normal, which is said once."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
        return f"SCHED_FIFO {RT_PRIORITY}"
    except OSError as exc:
        log.info("the held lane runs at normal priority (%s): under load, held tool calls wait for a CPU",
                 exc.strerror)
        return "normal"
