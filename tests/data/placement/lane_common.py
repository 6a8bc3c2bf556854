"""What the held-lane scripts beside this file share (lane_only.py, lane_boost.py): `vigil run`'s
machine built in one process around a gated agent (`lane_rig`), a sink that keeps the events,
and polling the pipeline until something was seen."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from vigild.bpf.lineage import LineageSensor
from vigild.cgroups import Limits
from vigild.daemon.launch import GatedChild, spawn_gated
from vigild.daemon.pipeline.core import Pipeline
from vigild.daemon.pipeline.held_lane import HeldLane
from vigild.daemon.tools.control_loop import CallPolicy, ToolCallControl, open_run_control
from vigild.daemon.tools.watchdog import start_watchdog


class Collect:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def handle(self, event: Any, record: Any) -> None:
        self.events.append(event)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def poll_until(pipeline: Pipeline, done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pipeline.run_once(20)
        if done():
            return True
    return False


@dataclass
class LaneRig:
    """The machine `lane_rig` built; `lane` is the caller's to set, and is stopped with the rest."""

    lineage: LineageSensor
    control: ToolCallControl
    pipeline: Pipeline
    sink: Collect
    agent: GatedChild
    go_w: int  # a byte written here lets the agent start its tool call
    done_r: int  # readable once the tool call ended: the agent writes its pid
    agent_exec_seen: bool = False
    lane: HeldLane | None = None

    def stop_lane(self) -> None:
        if self.lane is not None:
            self.lane.stop()
            self.lane = None


@contextmanager
def lane_rig(agent_code: str, *agent_args: str) -> Iterator[LaneRig]:
    """Lineage, tool control on the host's cgroups, the pipeline and the watchdog, with an agent
    (`agent_code`, run as `python -c agent_code GO_FD DONE_FD *agent_args`) known as a controlled
    root and its own exec seen; everything is stopped and released when the block ends."""
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
    agent = spawn_gated([sys.executable, "-c", agent_code, str(go_r), str(done_w), *agent_args])
    rig = LaneRig(lineage, control, pipeline, sink, agent, go_w, done_r)
    try:
        pipeline.add_pending_root(agent.pid, agent.argv, os.getcwd(), os.getuid(), controlled=True)
        control.place_agent(agent.pid)
        agent.release()
        root = lambda: (info := pipeline.processes.get(agent.pid)) is not None and bool(info.filename)  # noqa: E731
        rig.agent_exec_seen = poll_until(pipeline, root, 30)
        yield rig
    finally:
        rig.stop_lane()
        os.waitpid(agent.pid, 0)
        pipeline.stop()
        control.release_resources()
        watchdog.stop()
