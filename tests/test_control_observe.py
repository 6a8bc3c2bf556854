"""Observed tool calls (pure bookkeeping, no kernel): nothing stops a process between its exec and
user space's verdict, so a relaunch of the agent may fork before it is known as the agent. Its
children still start tool calls, and every event's `tool_call` is the bookkeeping's answer, never
a relaunch's or a helper's stale kernel call id."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vigild.bpf.effects_events import FileOpen
from vigild.bpf.events import TRACK_OBSERVED, ExecEvent, ExitEvent, ForkEvent, TrackedInfoC
from vigild.correlate.process_tree import ProcessTable
from vigild.daemon.tools.control_loop import CallPolicy, ToolCallControl

NODE = "/usr/bin/node"
AGENT = "/opt/agent/bundle/gemini.js"
COMMON: dict[str, Any] = {"session_id": 5, "cgroup_id": 1, "uid": 0}


@dataclass
class KernelMaps:
    """The lineage sensor's tracked map, as a dict: what _adopt writes is what the test reads."""

    tracked: dict[int, TrackedInfoC] = field(default_factory=dict)

    def tracked_info(self, pid: int) -> TrackedInfoC | None:
        return self.tracked.get(pid)

    def track(self, pid: int, session_id: int, root_pid: int | None = None, depth: int = 0, flags: int = 0) -> None:
        self.tracked[pid] = TrackedInfoC(session_id=session_id, root_pid=root_pid or pid, depth=depth, flags=flags)

    def release_held(self, pid: int) -> bool:
        raise AssertionError(f"observing never holds, yet pid {pid} was released")


def _feed(control: ToolCallControl, table: ProcessTable, event: Any) -> list[Any]:
    found = control.observe(event)
    if isinstance(event, ExecEvent | ForkEvent | ExitEvent):
        table.apply(event)
    return found


def test_children_a_relaunch_forked_before_its_verdict_are_tool_calls() -> None:
    maps = KernelMaps()
    control = ToolCallControl(None, maps, CallPolicy())  # type: ignore[arg-type]  (the maps it touches)
    table = ProcessTable()
    control.process_of = table.get
    assert control.observe_only and control.root_flags == TRACK_OBSERVED
    maps.track(100, 5, flags=TRACK_OBSERVED)
    table.apply(ExecEvent(ts_ns=1, pid=100, ppid=1, tid=100, comm="node", filename=NODE, argv=["node", AGENT],
                          **COMMON))
    _feed(control, table, ForkEvent(ts_ns=2, pid=200, ppid=100, tid=200, comm="node", **COMMON))
    maps.track(200, 5, root_pid=100, depth=1)
    relaunch = ExecEvent(ts_ns=3, pid=200, ppid=100, tid=200, comm="node", filename=NODE,
                         argv=["node", "--expose-gc", AGENT], call_start=True, tool_call=200, **COMMON)
    assert _feed(control, table, relaunch) == []
    assert relaunch.agent_role == "relaunch" and relaunch.tool_call is None
    assert maps.tracked[200].flags == TRACK_OBSERVED  # its later children are marked by the kernel
    # Forked (and exec'd) before the verdict: the kernel gave it the relaunch's call id, no mark.
    _feed(control, table, ForkEvent(ts_ns=4, pid=300, ppid=200, tid=300, comm="node", tool_call=200, **COMMON))
    tool = ExecEvent(ts_ns=5, pid=300, ppid=200, tid=300, comm="sh", filename="/bin/sh",
                     argv=["sh", "-c", "echo hi > out"], tool_call=200, **COMMON)
    (start,) = _feed(control, table, tool)
    assert start.call.id == 300 and tool.tool_call == 300 and start.hold_ms is None and start.cgroup is None
    write = FileOpen(ts_ns=6, pid=300, ppid=200, tid=300, comm="sh", path="/w/out", write=True, tool_call=200,
                     **COMMON)
    _feed(control, table, write)
    assert write.tool_call == 300
    relaunch_io = FileOpen(ts_ns=7, pid=200, ppid=100, tid=200, comm="node", path="/w/cache", tool_call=200,
                           **COMMON)
    _feed(control, table, relaunch_io)
    assert relaunch_io.tool_call is None  # the agent's own, not a call
    exit_event = ExitEvent(ts_ns=8, pid=300, ppid=200, tid=300, comm="sh", exit_code=0, tool_call=200, **COMMON)
    (end,) = _feed(control, table, exit_event)
    assert exit_event.tool_call == 300 and end.call.id == 300 and end.outcome == "ok"
    # a later exec of the relaunch's child (not its first) is no new call
    _feed(control, table, ForkEvent(ts_ns=9, pid=301, ppid=200, tid=301, comm="node", **COMMON))
    first = ExecEvent(ts_ns=10, pid=301, ppid=200, tid=301, comm="sh", filename="/bin/sh", argv=["sh"],
                      call_start=True, tool_call=301, **COMMON)
    again = ExecEvent(ts_ns=11, pid=301, ppid=200, tid=301, comm="ls", filename="/bin/ls", argv=["ls"],
                      tool_call=301, **COMMON)
    assert len(_feed(control, table, first)) == 1 and _feed(control, table, again) == []
    assert again.tool_call == 301
