"""Run by tests/test_held_lane_boost.py in its own process group: the held lane (real lineage,
real tool control, real cgroups) places one tool call while a Python thread spins holding the
GIL, the thread the lane is told to raise (as it is told the pipeline's). That thread samples its
own scheduling policy all the time. Prints one JSON object with what happened.

Modes:
- `boost`: as vigil runs with `[control] raise_gil_holder = true`;
- `raise`: tool control's `place_held` raises (the pipeline then places the call in order);
- `refuse`: the lane's thread loses CAP_SYS_NICE once it is real-time, so the kernel refuses it
  the raise of another thread (as where vigild runs without that capability for others);
- `off`: the lane is told not to raise (`[control] raise_gil_holder` false, the default).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import sys
import threading
import time
from typing import Any

from vigild.daemon.pipeline import gil_boost, held_lane

from lane_common import lane_rig, poll_until  # beside this script (sys.path[0])

AGENT = """
import os, sys
go, done = int(sys.argv[1]), int(sys.argv[2])
os.read(go, 1)
pid = os.posix_spawn("/bin/true", ["/bin/true"], os.environ)
os.waitpid(pid, 0)
os.write(done, str(pid).encode())
"""

CAP_SYS_NICE = 23


class Said(logging.Handler):
    """What the lane logged."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class Holder:
    """A thread that keeps the GIL busy and notes every policy it finds itself running at."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="gil-holder", daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.seen.add(os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK)


def drop_sys_nice() -> None:
    """Drop CAP_SYS_NICE from the calling thread's effective set (capabilities are per thread)."""
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    data[0].effective &= ~(1 << CAP_SYS_NICE)
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def main() -> None:
    mode = sys.argv[1]
    said = Said()
    logging.getLogger("vigild.pipeline").addHandler(said)
    logging.getLogger("vigild.pipeline").setLevel(logging.INFO)
    if mode == "refuse":
        raise_priority = held_lane._raise_priority

        def raise_then_drop() -> str:
            got = raise_priority()
            drop_sys_nice()
            return got

        held_lane._raise_priority = raise_then_drop
    holder = Holder()
    at_placement: list[int] = []
    while_raised: list[int] = []  # the holder's policy read by the lane as its wait returns
    wait = gil_boost.GilBooster.wait

    def wait_seen(self: gil_boost.GilBooster, timeout_ms: int, threads: tuple[int, ...]) -> gil_boost.Raised | None:
        raised = wait(self, timeout_ms, threads)
        if raised is not None:
            while_raised.append(os.sched_getscheduler(holder.thread.native_id or 0) & ~os.SCHED_RESET_ON_FORK)
        return raised

    gil_boost.GilBooster.wait = wait_seen  # type: ignore[method-assign]
    result: dict[str, Any] = {}
    with lane_rig(AGENT) as rig:
        def place(event: Any) -> bool:
            at_placement.append(os.sched_getscheduler(holder.thread.native_id or 0) & ~os.SCHED_RESET_ON_FORK)
            if mode == "raise":
                raise RuntimeError("placement failed on purpose")
            return rig.control.place_held(event)

        try:
            result["agent_exec_seen"] = rig.agent_exec_seen
            lane = rig.lane = held_lane.HeldLane(rig.lineage, rig.pipeline.clock, place, raise_holder=mode != "off")
            holder.thread.start()
            lane.raise_while_held((holder.thread.native_id or 0,))
            lane.start()
            while lane.boost.startswith("off: the lane's thread has not started"):
                time.sleep(0.01)
            result["holder_before"] = sorted(holder.seen)
            os.write(rig.go_w, b"g")
            ready, _, _ = select.select([rig.done_r], [], [], 5 if mode == "raise" else 30)
            result["released_by_lane"] = bool(ready)
            if mode == "raise":  # the call stays held for the pipeline's ordered placement
                ended = lambda: any(e.type == "tool_end" for e in rig.sink.events)  # noqa: E731
                result["placed_by_pipeline"] = poll_until(rig.pipeline, ended, 30)
            result["holder_after"] = os.sched_getscheduler(holder.thread.native_id or 0) & ~os.SCHED_RESET_ON_FORK
            holder.stop.set()
            holder.thread.join()
            result["holder_seen"] = sorted(holder.seen)
            result["at_placement"] = at_placement
            result["while_raised"] = while_raised
            result["health"] = lane.health()
            rig.stop_lane()
            result["said"] = [m for m in said.messages if "raise" in m or "put back" in m]
        finally:
            holder.stop.set()  # before the rig stops the lane: the holder must not spin on
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
