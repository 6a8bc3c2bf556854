"""A cgroup move that moves nothing: the calling process written into the group it is already in.

Why it helps: every write to a `cgroup.procs` file takes the kernel's global
`cgroup_threadgroup_rwsem` for writing (cgroup_procs_write_start, before the kernel looks at
where the process is), and a percpu rwsem's writer first waits a full RCU grace period when its
rcu_sync is idle (~10 ms on a 2-vCPU VM). The rcu_sync stays "entered" until one grace period
after its last writer left, so a real move made within that window takes tens of microseconds
instead of a grace period. A no-op write every few milliseconds keeps the window open: the
writer itself pays the grace period once (on its own thread), the moves that follow do not.

The lock is one for all hierarchies (v1 and v2 alike), so the hierarchy written to only has to
be one where this process may write its own pid: its own group in the hierarchy placement uses.
`open` reads that group from /proc/self/cgroup; the caller writes through the descriptor for a
few seconds at most and only while nothing moves this process (vigil moves itself only when it
lays out or removes its groups, before the warmer starts and after it stopped), so every write is
a no-op. One write(2) per no-op move: re-reading the group each time cost ~6 syscalls and ~400 µs
of CPU per move (measured), most of the warmer's cost.
"""

from __future__ import annotations

import os
from pathlib import Path

from vigild.cgroups.base import CgroupError, CgroupUnavailable
from vigild.cgroups.detect import Hierarchy, detect


class NoopMove:
    """Writes this process's pid into its own group's `cgroup.procs` in one hierarchy."""

    def __init__(self, hierarchy: Hierarchy, proc: Path | str = "/proc") -> None:
        self.hierarchy = hierarchy
        self._self_cgroup = Path(proc) / "self" / "cgroup"
        self._pid = str(os.getpid()).encode()
        raw = self._raw_path()
        rel = hierarchy.own_path
        # What /proc/self/cgroup says is relative to the hierarchy's root; the mount may show a
        # subtree of it (a container's bind mount): the part the mount hides is kept to strip it.
        if rel == "/":
            self._hidden = raw
        elif raw.endswith(rel):
            self._hidden = raw[: -len(rel)] or "/"
        else:
            raise CgroupUnavailable(f"cannot tell where {raw} is below {hierarchy.mount}")

    def _raw_path(self) -> str:
        """This process's group in the hierarchy, as /proc/self/cgroup gives it."""
        try:
            lines = self._self_cgroup.read_text().splitlines()
        except OSError as exc:
            raise CgroupUnavailable(f"cannot read {self._self_cgroup}: {exc.strerror}") from exc
        for line in lines:
            hier_id, controllers, path = line.split(":", 2)
            if self.hierarchy.version == 2 and hier_id == "0" and controllers == "":
                return path
            if self.hierarchy.version == 1 and set(controllers.split(",")) & self.hierarchy.controllers:
                return path
        raise CgroupUnavailable(f"{self._self_cgroup} names no group in {self.hierarchy.mount}")

    def target(self) -> Path:
        """The `cgroup.procs` of the group this process is in now."""
        raw = self._raw_path()
        if self._hidden == "/":
            rel = raw
        elif raw == self._hidden or raw.startswith(self._hidden + "/"):
            rel = raw[len(self._hidden):] or "/"
        else:
            raise CgroupUnavailable(f"this process's group {raw} is outside what {self.hierarchy.mount} shows")
        return self.hierarchy.mount / rel.lstrip("/") / "cgroup.procs"

    def open(self) -> int:
        """A descriptor on the `cgroup.procs` of the group this process is in now, for `write`."""
        path = self.target()
        try:
            return os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise CgroupError(f"cannot write this process's pid into its own group: {exc.strerror}", path,
                              exc.errno) from exc

    def write(self, fd: int) -> None:
        """One no-op move through `open`'s descriptor. Blocks for a grace period when the lock's
        rcu_sync is idle (the GIL is given up meanwhile). Raises CgroupError when the kernel
        refuses the write."""
        try:
            os.write(fd, self._pid)
        except OSError as exc:
            raise CgroupError(f"cannot write this process's pid into its own group: {exc.strerror}",
                              self.hierarchy.mount, exc.errno) from exc


def noop_move_for(version: int, controllers: frozenset[str]) -> NoopMove:
    """The no-op move in the hierarchy a backend of this version and these controllers writes to."""
    host = detect()
    if version == 2:
        hierarchy = host.v2
    else:
        hierarchy = next((h for c in sorted(controllers) if (h := host.hierarchy_for(c)) is not None
                          and h.version == 1), None)
    if hierarchy is None:
        raise CgroupUnavailable(f"no cgroup v{version} hierarchy for {sorted(controllers)} is mounted")
    return NoopMove(hierarchy)
