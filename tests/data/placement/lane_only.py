"""Run by tests/test_placement_lane.py in its own process group: `vigil run`'s machine built in
one process (lineage, tool control on the host's cgroups, the pipeline, the watchdog), with the
pipeline polled only until the agent's own exec is known; then the agent starts a tool call while
nobody polls the shared ring buffer, so only the held lane can place and release it. Prints one
JSON object with what happened."""

from __future__ import annotations

import json
import os
import select
import sys
from typing import Any

from vigild.bpf.lineage import LineageSensor
from vigild.cgroups import Limits
from vigild.daemon.launch import spawn_gated
from vigild.daemon.pipeline.core import Pipeline
from vigild.daemon.pipeline.held_lane import HeldLane
from vigild.daemon.tools.control_loop import CallPolicy, open_run_control
from vigild.daemon.tools.watchdog import start_watchdog

from lane_common import Collect, poll_until  # beside this script (sys.path[0])

AGENT = """
import os, sys
go, done, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
os.read(go, 1)
pid = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", "cat /proc/self/cgroup > " + out], os.environ)
os.waitpid(pid, 0)
os.write(done, str(pid).encode())
"""


def main() -> None:
    out = sys.argv[1]
    lineage = LineageSensor()
    watchdog = start_watchdog(lineage.held.fd)
    control = open_run_control(lineage, CallPolicy(Limits(pids_max=64)), spike_bytes=100 << 20,
                               spike_window_ns=1_000_000_000, delay_accounting=False)
    sink = Collect()
    pipeline = Pipeline(lineage, [sink], control=control)
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    os.set_inheritable(go_r, True)
    os.set_inheritable(done_w, True)
    agent = spawn_gated([sys.executable, "-c", AGENT, str(go_r), str(done_w), out])
    result: dict[str, Any] = {}
    lane: HeldLane | None = None
    try:
        pipeline.add_pending_root(agent.pid, agent.argv, os.getcwd(), os.getuid(), controlled=True)
        control.place_agent(agent.pid)
        agent.release()
        root = lambda: (info := pipeline.processes.get(agent.pid)) is not None and bool(info.filename)  # noqa: E731
        result["agent_exec_seen"] = poll_until(pipeline, root, 30)
        lane = HeldLane(lineage, pipeline.clock, control.place_held)
        lane.start()
        os.write(go_w, b"g")
        ready, _, _ = select.select([done_r], [], [], 30)  # nobody polls the shared ring buffer now
        result["released_by_lane"] = bool(ready)
        result["tool_pid"] = int(os.read(done_r, 32)) if ready else None
        result["lane_placed"] = lane.placed
        result["placed_early"] = control.placed_early
        lane.stop()
        lane = None
        ended = lambda: any(e.type == "tool_end" for e in sink.events)  # noqa: E731
        result["tool_end_seen"] = poll_until(pipeline, ended, 30)
        result["tool_start"] = [{"pid": e.call.pid, "cgroup": e.cgroup, "held": e.call.held, "hold_ms": e.hold_ms,
                                 "placement_error": e.placement_error}
                                for e in sink.events if e.type == "tool_start"]
        result["tool_end"] = [{"pid": e.call.pid, "outcome": e.outcome} for e in sink.events if e.type == "tool_end"]
    finally:
        if lane is not None:
            lane.stop()
        os.waitpid(agent.pid, 0)
        pipeline.stop()
        control.release_resources()
        watchdog.stop()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
