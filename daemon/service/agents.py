"""Which processes are agents: the user-space half of discovery.

The kernel makes every process that execs a configured name (`AgentSpec.kernel_comm`) a session
root; `AgentMatcher.classify` then checks the executable and command-line globs and names the
agent kind, or returns None so the pipeline untracks it. Agents already running when vigild
starts are found by `running_agents`, a walk over /proc.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import psutil

from vigild.bpf.events import ExecEvent
from vigild.daemon.config import AgentSpec


class AgentMatcher:
    """The classify_root callback of the pipeline. `specs` is replaced whole on reload (one
    attribute store), so the pipeline thread never sees a half-updated list."""

    def __init__(self, specs: Iterable[AgentSpec]) -> None:
        self.specs: tuple[AgentSpec, ...] = tuple(specs)

    def match(self, comm: str, exe: str, argv: list[str]) -> str | None:
        for spec in self.specs:
            if spec.matches(comm, exe, argv):
                return spec.name
        return None

    def classify(self, event: ExecEvent) -> str | None:
        return self.match(event.comm, event.filename, event.argv)


def running_agents(matcher: AgentMatcher, proc_root: Path = Path("/proc")) -> dict[int, str]:
    """pid -> agent kind for matching processes already running, outermost only: an agent's own
    children (a node wrapper's native binary) belong to its session, not to one of their own."""
    found: dict[int, str] = {}
    parents: dict[int, int] = {}
    me = os.getpid()
    for proc in psutil.process_iter(["ppid", "exe", "cmdline"]):
        if proc.pid == me:
            continue
        parents[proc.pid] = proc.info["ppid"] or 0
        try:
            comm = (proc_root / str(proc.pid) / "comm").read_text().rstrip("\n")
        except OSError:
            continue
        agent = matcher.match(comm, proc.info["exe"] or "", proc.info["cmdline"] or [])
        if agent is not None:
            found[proc.pid] = agent
    return {pid: agent for pid, agent in found.items() if not _has_ancestor_in(pid, found, parents)}


def _has_ancestor_in(pid: int, found: dict[int, str], parents: dict[int, int]) -> bool:
    seen = {pid}
    parent = parents.get(pid, 0)
    while parent > 1 and parent not in seen:
        if parent in found:
            return True
        seen.add(parent)
        parent = parents.get(parent, 0)
    return False
