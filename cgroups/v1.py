"""cgroup v1 backend: one directory per group in each managed controller hierarchy.

A group is the same relative path below the configured parent of every hierarchy (memory,
pids, cpu — possibly the joined ``cpu,cpuacct`` mount — and freezer). v1 differs from v2 in
ways callers must know, since they cannot be papered over:

* ``memory_high`` becomes ``memory.soft_limit_in_bytes``: v1 has no throttling limit, the soft
  limit only ranks groups for reclaim under global memory pressure.
* there is no ``memory.oom.group``: an OOM kills the largest process of the group, not all.
* there is no ``cgroup.kill``: killing loops SIGKILL over ``cgroup.procs`` (and thaws, since
  frozen tasks cannot die).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from vigild.cgroups.base import (
    AGENT,
    TOOLS,
    CgroupBackend,
    CgroupError,
    CgroupUnavailable,
    Limits,
    MemoryStats,
    OomNotifier,
    PidsStats,
    retry_busy,
    wait_until,
)
from vigild.cgroups.fs import GuardedFs, RawFs, join_group, os_errors
from vigild.cgroups.limits import KNOBS
from vigild.cgroups.spare import Spare

# Values at or above this mean "unlimited" (the kernel shows PAGE_COUNTER_MAX * PAGE_SIZE).
_UNLIMITED_BYTES = 1 << 62


def weight_to_shares(weight: int) -> int:
    """v2 cpu.weight (default 100) to v1 cpu.shares (default 1024), as systemd maps it."""
    return max(2, min(262144, weight * 1024 // 100))


def shares_to_weight(shares: int) -> int:
    """Inverse of ``weight_to_shares`` (exact for the default and multiples of 1024/100)."""
    return max(1, min(10000, round(shares * 100 / 1024)))


class V1Backend(CgroupBackend):
    """Groups below a per-controller parent directory in v1 hierarchies.

    ``parents`` maps controller name to the parent directory in that controller's hierarchy,
    e.g. ``{"memory": "/sys/fs/cgroup/memory/x/vigil", "pids": "/sys/fs/cgroup/pids/vigil"}``.
    Controllers sharing a mount (``cpu,cpuacct``) map to the same directory and are handled once.
    """

    version = 1

    def __init__(self, parents: Mapping[str, Path | str], fs: RawFs | None = None,
                 mounts: Mapping[str, Path | str] | None = None) -> None:
        """``mounts`` (controller -> mount point) is only needed by ``remove_namesakes``."""
        if not parents:
            raise ValueError("V1Backend needs at least one controller hierarchy")
        self.parents = {c: Path(p) for c, p in parents.items()}
        self.controllers = frozenset(self.parents)
        self._roots = sorted(set(self.parents.values()))
        self.fs = GuardedFs(self._roots, fs)
        # The enclosing groups (where the parents sit): only their cgroup.procs is written, by evict.
        self._enclosing = GuardedFs([root.parent for root in self._roots], self.fs.raw)
        self.mounts = {c: Path(m) for c, m in (mounts or {}).items()}
        self._init_spares()

    def __repr__(self) -> str:
        return f"V1Backend({ {c: str(p) for c, p in sorted(self.parents.items())} })"

    def path(self, group: str, controller: str | None = None) -> Path:
        if controller is None:
            controller = "memory" if "memory" in self.parents else min(self.parents)
        if controller not in self.parents:
            raise CgroupUnavailable(f"the {controller} controller is not managed by this backend")
        return join_group(self.parents[controller], group)

    def _file(self, controller: str, group: str, name: str) -> Path:
        return self.path(group, controller) / name

    def _dirs(self, group: str) -> list[Path]:
        """The group's directory in each distinct hierarchy."""
        return [join_group(root, group) for root in self._roots]

    # -- layout -------------------------------------------------------------------------

    def ensure_layout(self, adopt_members: bool = False) -> None:
        for root in self._roots:
            if not os.path.isdir(root):
                self.fs.mkdir(root)
        self.create(AGENT)
        self.create(TOOLS)
        if adopt_members:
            for pid in self.processes(""):
                try:
                    self.add_process(AGENT, pid)
                except CgroupError as exc:
                    if exc.errno != errno.ESRCH:
                        raise

    renames = True

    def _rename(self, group: str, new: str) -> None:
        """rename(2) in each hierarchy (cgroup1_rename: within the same parent only). A failure
        half way puts the renamed ones back, so the group has one name everywhere."""
        done: list[tuple[Path, Path]] = []
        try:
            for old_dir, new_dir in zip(self._dirs(group), self._dirs(new), strict=True):
                self.fs.rename(old_dir, new_dir)
                done.append((old_dir, new_dir))
        except CgroupError:
            for old_dir, new_dir in reversed(done):
                self.fs.rename(new_dir, old_dir)
            raise

    def _make_spare(self, group: str) -> Spare:
        return Spare.prepare(self.fs, group, self._dirs(group))

    def exists(self, group: str) -> bool:
        return all(self.fs.isdir(d) for d in self._dirs(group))

    def create(self, group: str) -> None:
        for directory in self._dirs(group):
            if not self.fs.isdir(directory):
                self.fs.mkdir(directory)

    # -- limits and stats ---------------------------------------------------------------

    def set_limits(self, group: str, limits: Limits) -> None:
        self._require_controllers(limits)
        missing = [k.name for k in KNOBS if k.v1 is None and k.name != "cpu_weight" and getattr(limits, k.name) is not None]
        if missing:
            raise CgroupUnavailable(f"cgroup v1 has no equivalent of {', '.join(missing)}")
        if limits.cpu_weight is not None:
            self.fs.write(self._file("cpu", group, "cpu.shares"), str(weight_to_shares(limits.cpu_weight)))
        # Period before quota: the kernel checks quota against the period in force.
        for knob in sorted((k for k in KNOBS if k.v1 is not None), key=lambda k: k.name == "cpu_quota_us"):
            value = getattr(limits, knob.name)
            if value is not None:
                self.fs.write(self._file(knob.controller, group, knob.v1), str(value))

    def _read_bytes_limit(self, group: str, name: str) -> int | None:
        value = self.fs.read_int(self._file("memory", group, name))
        return None if value is None or value >= _UNLIMITED_BYTES else value

    def read_limits(self, group: str) -> Limits:
        values: dict[str, int | None] = {}
        for knob in KNOBS:
            if knob.v1 is None or knob.controller not in self.controllers:
                continue
            values[knob.name] = (self._read_bytes_limit(group, knob.v1) if knob.unit == "size"
                                 else self.fs.read_int(self._file(knob.controller, group, knob.v1)))
        if "cpu" in self.controllers:
            values["cpu_weight"] = shares_to_weight(self.fs.read_int(self._file("cpu", group, "cpu.shares")) or 1024)
            quota = values["cpu_quota_us"]
            values["cpu_quota_us"] = None if quota is None or quota < 0 else quota
        return Limits(**values)

    def memory_stats(self, group: str) -> MemoryStats:
        oom = self.fs.read_keyed(self._file("memory", group, "memory.oom_control"))
        return MemoryStats(
            current=self.fs.read_int(self._file("memory", group, "memory.usage_in_bytes")) or 0,
            peak=self.fs.read_int(self._file("memory", group, "memory.max_usage_in_bytes")),
            oom_kills=oom.get("oom_kill", 0),
            max_events=self.fs.read_int(self._file("memory", group, "memory.failcnt")) or 0,
            high_events=None,
            oom_events=None,
            oom_group_kills=None,
            under_oom=bool(oom.get("under_oom", 0)),
        )

    def pids_stats(self, group: str) -> PidsStats:
        return PidsStats(
            current=self.fs.read_int(self._file("pids", group, "pids.current")) or 0,
            max_events=self.fs.read_keyed(self._file("pids", group, "pids.events")).get("max", 0),
        )

    def oom_notifier(self, group: str) -> OomNotifier:
        """Register an eventfd for ``memory.oom_control`` through ``cgroup.event_control``."""
        control = self._file("memory", group, "cgroup.event_control")
        with os_errors("create an eventfd for OOM notification", control):
            efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        ofd = -1
        try:
            ofd = self.fs.open_fd(self._file("memory", group, "memory.oom_control"))
            self.fs.write(control, f"{efd} {ofd}")
        except BaseException:
            os.close(efd)
            if ofd >= 0:
                os.close(ofd)
            raise
        return V1OomNotifier(efd, ofd)

    # -- members ------------------------------------------------------------------------

    def add_process(self, group: str, pid: int) -> None:
        for directory in self._dirs(group):
            self.fs.write(directory / "cgroup.procs", str(pid))

    def processes(self, group: str) -> list[int]:
        found: set[int] = set()
        for directory in self._dirs(group):
            if self.fs.isdir(directory):
                found.update(self.fs.read_pids(directory / "cgroup.procs"))
        return sorted(found)

    def _children(self, group: str) -> list[str]:
        names: set[str] = set()
        for directory in self._dirs(group):
            names.update(self.fs.subdirs(directory))
        return sorted(names)

    def _subgroups(self, group: str) -> list[str]:
        out: list[str] = []
        for child in self._children(group):
            out.extend(self._subgroups(f"{group}/{child}" if group else child))
        out.append(group)
        return out

    def _freezer_state(self, group: str) -> Path:
        if "freezer" not in self.parents:
            raise CgroupUnavailable("freezing needs the v1 freezer hierarchy, which is not managed")
        return self._file("freezer", group, "freezer.state")

    def freeze(self, group: str, timeout: float = 5.0) -> None:
        state = self._freezer_state(group)
        self.fs.write(state, "FROZEN")
        wait_until(lambda: self.is_frozen(group), timeout, "the group to freeze", state)

    def thaw(self, group: str, timeout: float = 5.0) -> None:
        state = self._freezer_state(group)
        self.fs.write(state, "THAWED")
        wait_until(lambda: self.fs.read(state).strip() == "THAWED", timeout, "the group to thaw", state)

    def is_frozen(self, group: str) -> bool:
        return self.fs.read(self._freezer_state(group)).strip() == "FROZEN"

    def kill(self, group: str, timeout: float = 5.0) -> None:
        self._kill_loop(group, timeout)

    def _after_kill_signal(self, group: str) -> None:
        """A frozen task never reaches its pending SIGKILL; thaw so it can die."""
        if "freezer" in self.parents and self.fs.isdir(self.path(group, "freezer")):
            state = self._file("freezer", group, "freezer.state")
            if self.fs.read(state).strip() != "THAWED":
                self.fs.write(state, "THAWED")

    # -- removal ------------------------------------------------------------------------

    def remove(self, group: str, *, kill: bool = False, timeout: float = 5.0) -> None:
        if not any(self.fs.isdir(d) for d in self._dirs(group)):
            return
        if kill:
            self.kill(group, timeout)
        for sub in self._subgroups(group):
            for directory in self._dirs(sub):
                if self.fs.isdir(directory):
                    retry_busy(partial(self.fs.rmdir, directory), timeout)

    # -- siblings -----------------------------------------------------------------------

    def siblings(self, prefix: str) -> list[str]:
        names: set[str] = set()
        for root in self._roots:
            names.update(n for n in self._enclosing.subdirs(root.parent) if n.startswith(prefix))
        return sorted(names)

    def sibling(self, name: str) -> V1Backend:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"invalid sibling name {name!r}")
        return V1Backend({c: p.parent / name for c, p in self.parents.items()}, self.fs.raw, self.mounts)

    def evict(self, pid: int) -> None:
        for root in self._roots:
            try:
                self._enclosing.write(root.parent / "cgroup.procs", str(pid))
            except CgroupError as exc:
                if exc.errno != errno.ESRCH:
                    raise

    def remove_namesakes(self, name: str, max_depth: int = 4) -> list[Path]:
        """Remove empty groups called ``name`` anywhere in the managed hierarchies, ``max_depth``
        levels deep: a dead run's groups sit below *its* cgroups, which need not be ours (another
        login, another service). A group that still holds processes is left and named in the
        CgroupError raised after the others were removed."""
        removed: list[Path] = []
        busy: list[Path] = []
        for mount in sorted(set(self.mounts.values())):
            fs = GuardedFs([mount], self.fs.raw)
            for found in self._find_named(fs, mount, name, max_depth):
                tree = V1Backend({"memory": found}, self.fs.raw)
                if tree.processes_recursive(""):
                    busy.append(found)
                    continue
                tree.remove("", timeout=1.0)
                removed.append(found)
        if busy:
            raise CgroupError(f"stale groups still hold processes, left in place: {[str(b) for b in busy]}",
                              busy[0], errno.EBUSY)
        return removed

    @staticmethod
    def _find_named(fs: GuardedFs, top: Path, name: str, max_depth: int) -> list[Path]:
        found: list[Path] = []
        level = [top]
        for _ in range(max_depth):
            below = []
            for directory in level:
                for child in fs.subdirs(directory):
                    (found if child == name else below).append(directory / child)
            level = below
        return found


class V1OomNotifier(OomNotifier):
    """An eventfd the memory controller signals on each OOM in the group.

    The kernel also signals it when the group is removed, so a caller who needs certainty
    confirms with ``memory_stats().oom_kills``. Closing the eventfd unregisters the event.
    """

    def __init__(self, efd: int, ofd: int) -> None:
        self._efd = efd
        self._ofd = ofd

    def fileno(self) -> int:
        return self._efd

    def fired(self) -> bool:
        try:
            return os.eventfd_read(self._efd) > 0
        except BlockingIOError:
            return False

    def close(self) -> None:
        for fd in (self._efd, self._ofd):
            if fd >= 0:
                os.close(fd)
        self._efd = self._ofd = -1
