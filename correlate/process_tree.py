"""The table of tracked processes, built from lineage events (and /proc for those that predate us).

Pure bookkeeping over decoded events: no kernel access, so it is tested with plain dataclasses.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from vigild.bpf.events import ExecEvent, ExitEvent, ForkEvent, ProcessEvent

LIFECYCLE = (ForkEvent, ExecEvent, ExitEvent)  # the events that change a process's row


@dataclass
class ProcessInfo:
    pid: int
    ppid: int
    session_id: int
    comm: str
    start_ns: int
    depth: int = 0
    filename: str = ""
    argv: list[str] = field(default_factory=list)
    exit_ns: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    children: list[int] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.exit_ns is None

    @property
    def duration_ms(self) -> float | None:
        if self.exit_ns is None:
            return None
        return (self.exit_ns - self.start_ns) / 1e6


class ProcessTable:
    """Live view of every tracked process, by pid; a process is its (pid, start time).

    Exited processes stay for `keep_exited` entries so late lookups (e.g. an event about a child
    that arrives after its parent's exit) still find them; the oldest are forgotten first. A pid
    the kernel reuses is a new process: a fork or exec for an exited entry's pid starts a new
    entry, which inherits nothing (session, argv, children)."""

    def __init__(self, keep_exited: int = 4096) -> None:
        self.processes: dict[int, ProcessInfo] = {}
        self._exited: deque[tuple[int, int]] = deque()  # (pid, start_ns), oldest exit first
        self.keep_exited = keep_exited

    def get(self, pid: int) -> ProcessInfo | None:
        return self.processes.get(pid)

    def depth(self, pid: int) -> int:
        info = self.processes.get(pid)
        return info.depth if info else 0

    def seed(self, info: ProcessInfo) -> None:
        """Add a process that existed before tracing started (read from /proc by the caller)."""
        self.processes[info.pid] = info
        parent = self.processes.get(info.ppid)
        if parent and info.pid not in parent.children:
            parent.children.append(info.pid)

    def apply(self, event: ProcessEvent) -> ProcessInfo:
        """Fold one event into the table and return the process it concerns."""
        if not isinstance(event, LIFECYCLE):  # an effect of a known process changes nothing (most events)
            info = self.processes.get(event.pid)
            if info is not None:
                return info
        if isinstance(event, ForkEvent):
            return self._fork(event)
        info = self.processes.get(event.pid)
        if info is None or (not info.alive and isinstance(event, ExecEvent)):
            # unknown, or its pid reused by a process we did not see fork (a root found by name);
            # other events of an exited pid are its own late ones (effects reported at its exit)
            info = self._unknown(event)
        if isinstance(event, ExecEvent):
            info.comm = event.comm
            info.filename = event.filename
            info.argv = event.argv
        elif isinstance(event, ExitEvent):
            info.exit_ns = event.ts_ns
            info.exit_code = event.exit_code
            info.signal = event.signal
            self._remember_exit(info)
        return info

    def _fork(self, event: ForkEvent) -> ProcessInfo:
        info = self._new(event)
        parent = self.processes.get(event.ppid)
        if parent is not None and parent.alive:  # an exited namesake is not the parent
            info.filename, info.argv = parent.filename, list(parent.argv)  # a fork runs its parent's image
            parent.children.append(event.pid)
        return info

    def _unknown(self, event: ProcessEvent) -> ProcessInfo:
        # A process whose fork we did not see: a root found by comm match, or one tracked by pid.
        return self._new(event)

    def _new(self, event: ProcessEvent) -> ProcessInfo:
        parent = self.processes.get(event.ppid)
        same_session = parent is not None and parent.alive and parent.session_id == event.session_id
        info = ProcessInfo(pid=event.pid, ppid=event.ppid, session_id=event.session_id, comm=event.comm,
                           start_ns=event.ts_ns, depth=parent.depth + 1 if parent and same_session else 0)
        self.processes[event.pid] = info
        return info

    def _remember_exit(self, info: ProcessInfo) -> None:
        self._exited.append((info.pid, info.start_ns))
        while len(self._exited) > self.keep_exited:
            pid, start_ns = self._exited.popleft()
            old = self.processes.get(pid)
            if old is not None and not old.alive and old.start_ns == start_ns:  # not a later process on that pid
                del self.processes[pid]
