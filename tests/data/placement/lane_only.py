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

from vigild.daemon.pipeline.held_lane import HeldLane

from lane_common import lane_rig, poll_until  # beside this script (sys.path[0])

AGENT = """
import os, sys
go, done, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
os.read(go, 1)
pid = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", "cat /proc/self/cgroup > " + out], os.environ)
os.waitpid(pid, 0)
os.write(done, str(pid).encode())
"""


def main() -> None:
    result: dict[str, Any] = {}
    with lane_rig(AGENT, sys.argv[1]) as rig:
        result["agent_exec_seen"] = rig.agent_exec_seen
        rig.lane = HeldLane(rig.lineage, rig.pipeline.clock, rig.control.place_held)
        rig.lane.start()
        os.write(rig.go_w, b"g")
        ready, _, _ = select.select([rig.done_r], [], [], 30)  # nobody polls the shared ring buffer now
        result["released_by_lane"] = bool(ready)
        result["tool_pid"] = int(os.read(rig.done_r, 32)) if ready else None
        result["lane_placed"] = rig.lane.placed
        result["placed_early"] = rig.control.placed_early
        rig.stop_lane()
        ended = lambda: any(e.type == "tool_end" for e in rig.sink.events)  # noqa: E731
        result["tool_end_seen"] = poll_until(rig.pipeline, ended, 30)
        result["tool_start"] = [{"pid": e.call.pid, "cgroup": e.cgroup, "held": e.call.held, "hold_ms": e.hold_ms,
                                 "placement_error": e.placement_error}
                                for e in rig.sink.events if e.type == "tool_start"]
        result["tool_end"] = [{"pid": e.call.pid, "outcome": e.outcome} for e in rig.sink.events if e.type == "tool_end"]
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
