"""cgroup v2 (unified hierarchy) backend: one directory per group, controllers via subtree_control."""

from __future__ import annotations

import errno
import os
import select
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path

from vigild.cgroups import gil_held
from vigild.cgroups.base import (
    AGENT,
    LEAF,
    TOOLS,
    CgroupBackend,
    CgroupError,
    CgroupUnavailable,
    Limits,
    MemoryStats,
    MoveError,
    OomNotifier,
    PidsStats,
    retry_busy,
    wait_until,
)
from vigild.cgroups.fs import GuardedFs, OsFs, RawFs, join_group, os_errors
from vigild.cgroups.limits import KNOBS

DEFAULT_CONTROLLERS = ("memory", "pids", "cpu")
DEFAULT_CPU_PERIOD_US = 100_000  # a fresh group's cpu.max period (the kernel's default)
ENABLE_ATTEMPTS = 5  # a process forked into the enclosing cgroup between our move and our enable

DELEGATE_HINT = ("run vigil where they are delegated: a systemd service with Delegate=yes, a scope made with "
                 "`systemd-run --scope -p Delegate=yes -- vigil run ...`, or a container whose runtime "
                 "delegates its cgroup (cgroupns with a writable /sys/fs/cgroup)")

_ENABLE_HINTS = {
    errno.EBUSY: "the group holds processes of its own (no-internal-process rule); move them "
    "into agent/ (ensure_layout(adopt_members=True))",
    errno.ENOTSUP: "the controller cannot be enabled here (threaded subtree, or not delegated)",
    errno.ENOENT: "the parent does not pass this controller down (not delegated)",
    errno.EACCES: "the cgroup is not delegated to this user",
    errno.EPERM: "the cgroup is not delegated to this user",
}


class V2Backend(CgroupBackend):
    """Groups below ``parent`` in a cgroup2 mount."""

    version = 2

    def __init__(self, parent: Path | str, controllers: Iterable[str] = DEFAULT_CONTROLLERS,
                 fs: RawFs | None = None) -> None:
        self.parent = Path(parent)
        self.controllers = frozenset(controllers)
        self.fs = GuardedFs([self.parent], fs)
        self.enclosing = self.parent.parent
        """The cgroup the parent sits in (vigil's own, or its container's/unit's): ``ensure_layout``
        has it pass the controllers down, ``remove_layout`` gives that back."""
        self._outer = GuardedFs([self.enclosing], self.fs.raw)
        self._call_plan: tuple[Limits | None, bytes, tuple[tuple[bytes, bytes], ...]] | None = None

    def __repr__(self) -> str:
        return f"V2Backend({str(self.parent)!r}, controllers={sorted(self.controllers)})"

    def path(self, group: str, controller: str | None = None) -> Path:
        return join_group(self.parent, group)

    def _file(self, group: str, name: str) -> Path:
        return self.path(group) / name

    # -- layout -------------------------------------------------------------------------

    def ensure_layout(self, adopt_members: bool = False) -> None:
        self._make_room()
        if not os.path.isdir(self.parent):
            self.fs.mkdir(self.parent)
        available = set(self.fs.read(self._file("", "cgroup.controllers")).split())
        missing = sorted(self.controllers - available)
        if missing:
            raise CgroupUnavailable(
                f"controllers {missing} are not available to the parent cgroup; the grandparent "
                "must enable them in its cgroup.subtree_control (delegation)",
                self._file("", "cgroup.controllers"),
            )
        self.create(AGENT)
        self.create(TOOLS)
        if adopt_members:
            for pid in self.processes(""):
                self._move_if_alive(AGENT, pid)
        self._enable_children("")
        self._enable_children(TOOLS)

    def _make_room(self) -> None:
        """Have the enclosing cgroup enable our controllers for its children.

        It must have them itself (its parent delegates them), and unless it is the root it may not
        enable them while it holds processes (no internal processes): those (vigil itself, the
        login shell, the unit's other processes) move into its leaf ``LEAF`` first, which is what
        systemd and container runtimes expect of a delegated cgroup. Done before the parent exists,
        so a refusal leaves no empty group behind.
        """
        control = self.enclosing / "cgroup.subtree_control"
        wanted = sorted(self.controllers - set(self._outer.read(control).split()))
        if not wanted:
            return
        available = set(self._outer.read(self.enclosing / "cgroup.controllers").split())
        lacking = [c for c in wanted if c not in available]
        if lacking:
            raise CgroupUnavailable(
                f"the {', '.join(lacking)} controller{'s are' if len(lacking) > 1 else ' is'} not delegated to "
                f"{self.enclosing} (its parent does not enable {'them' if len(lacking) > 1 else 'it'} for it); "
                + DELEGATE_HINT, self.enclosing / "cgroup.controllers")
        # Move first: enabling a threaded controller (cpu, pids) in a cgroup with processes works
        # but makes it a thread root, where memory then fails with EOPNOTSUPP.
        if not self._is_root(self.enclosing) and self._outer.read_pids(self.enclosing / "cgroup.procs"):
            self._move_members(self.enclosing, self._make_leaf())
        enabled: list[str] = []
        try:
            for controller in wanted:
                self._enable_in_enclosing(controller)
                enabled.append(controller)
        except CgroupError:
            for controller in enabled:  # no half-configured enclosing cgroup is left behind
                self._outer.write(control, f"-{controller}")
            raise

    def _enable_in_enclosing(self, controller: str) -> None:
        """One controller; EBUSY means a process forked into the enclosing cgroup meanwhile."""
        control = self.enclosing / "cgroup.subtree_control"
        for attempt in range(ENABLE_ATTEMPTS):
            try:
                self._outer.write(control, f"+{controller}")
                return
            except CgroupError as exc:
                if exc.errno != errno.EBUSY or attempt == ENABLE_ATTEMPTS - 1:
                    hint = _ENABLE_HINTS.get(exc.errno or 0, "the kernel refused")
                    raise CgroupUnavailable(f"could not enable the {controller} controller for children of "
                                            f"{self.enclosing}: {hint}", control, exc.errno) from exc
            self._move_members(self.enclosing, self._make_leaf())

    def _is_root(self, directory: Path) -> bool:
        """The root cgroup (exempt from the no-internal-process rule) has no cgroup.type; a
        cgroup namespace's root does, and is not exempt."""
        return not self._outer.exists(directory / "cgroup.type")

    def _leaf(self) -> Path | None:
        """The enclosing cgroup's leaf for its own processes (None when it has none)."""
        leaf = self.enclosing / LEAF
        return leaf if self._outer.isdir(leaf) else None

    def _make_leaf(self) -> Path:
        leaf = self._leaf()
        if leaf is None:
            leaf = self.enclosing / LEAF
            self._outer.mkdir(leaf)
        return leaf

    def _move_members(self, source: Path, target: Path) -> None:
        for pid in self._outer.read_pids(source / "cgroup.procs"):
            try:
                self._outer.write(target / "cgroup.procs", str(pid))
            except CgroupError as exc:
                if exc.errno != errno.ESRCH:
                    raise

    def _release_enclosing(self, timeout: float) -> None:
        """Undo ``_make_room`` once the leaf is the enclosing cgroup's only child (no other run
        of ours still there): disable our controllers, move the leaf's processes back, remove it.
        A controller still in use below (EBUSY) or enabled by someone else leaves it all as is."""
        leaf = self._leaf()
        if leaf is None or self._outer.subdirs(self.enclosing) != [LEAF]:
            return
        control = self.enclosing / "cgroup.subtree_control"
        for controller in sorted(self.controllers & set(self._outer.read(control).split())):
            try:
                self._outer.write(control, f"-{controller}")
            except CgroupError as exc:
                if exc.errno == errno.EBUSY:
                    return
                raise
        if self._outer.read(control).split():
            return
        self._move_members(leaf, self.enclosing)
        retry_busy(partial(self._outer.rmdir, leaf), timeout)

    def _move_if_alive(self, group: str, pid: int) -> None:
        try:
            self.add_process(group, pid)
        except CgroupError as exc:
            if exc.errno != errno.ESRCH:
                raise

    def _enable_children(self, group: str) -> None:
        """Enable each managed controller for the group's children, naming the one that fails."""
        control = self._file(group, "cgroup.subtree_control")
        enabled = set(self.fs.read(control).split())
        for controller in sorted(self.controllers - enabled):
            try:
                self.fs.write(control, f"+{controller}")
            except CgroupError as exc:
                hint = _ENABLE_HINTS.get(exc.errno or 0, "the kernel refused")
                raise CgroupUnavailable(
                    f"could not enable the {controller} controller for children of "
                    f"{self.path(group)}: {hint}", control, exc.errno,
                ) from exc

    def exists(self, group: str) -> bool:
        return self.fs.isdir(self.path(group))

    def create(self, group: str) -> None:
        if not self.exists(group):
            self.fs.mkdir(self.path(group))

    def _make_call(self, name: str, limits: Limits | None, pid: int | None) -> None:
        """cgroup2 cannot rename, so a call's group is made while its process is held: a mkdir,
        its files written, the pid moved in. Through GuardedFs that was ~100 µs of Python per
        syscall; on a real cgroupfs the confined `tools/` directory and the files and values a
        call's limits need are worked out once (`_plan`), and the call is one libc call per
        file on paths below it (the new group's name is one path component: place_call checked
        it). A name already taken (a reused call id whose old group is not removed yet) or
        another RawFs takes the general way."""
        plan = self._plan(limits) if isinstance(self.fs.raw, OsFs) else None
        if plan is None:
            super()._make_call(name, limits, pid)
            return
        tools, writes = plan
        directory = tools + os.fsencode(name)
        try:
            gil_held.mkdir(directory)
        except FileExistsError:
            super()._make_call(name, limits, pid)
            return
        except OSError as exc:
            with os_errors("create cgroup directory", os.fsdecode(directory)):
                raise exc
        target = directory
        try:
            for file, value in writes:
                target = directory + file
                gil_held.write_file(target, value)
        except OSError as exc:
            with os_errors(f"write {value.decode()!r} to {os.path.basename(os.fsdecode(target))}", os.fsdecode(target)):
                raise exc
        if pid is None:
            return
        target = directory + b"/cgroup.procs"
        try:
            gil_held.write_file(target, str(pid).encode())
        except OSError as exc:
            try:
                with os_errors("move the process into the group", os.fsdecode(target)):
                    raise exc
            except CgroupError as error:
                raise MoveError(f"{TOOLS}/{name}", error) from exc

    def _plan(self, limits: Limits | None) -> tuple[bytes, tuple[tuple[bytes, bytes], ...]]:
        """The confined `tools/` path (ending with "/") and the (``/file``, value) writes of a
        fresh call group with ``limits``, in `set_limits`'s order; remembered for the last limits.
        A fresh group's cpu.max period is the kernel's default, so a quota alone needs no read."""
        known = self._call_plan
        if known is not None and known[0] == limits:
            return known[1], known[2]
        writes: list[tuple[bytes, bytes]] = []
        if "memory" in self.controllers:
            writes.append((b"/memory.oom.group", b"1"))
        if limits is not None:
            fresh_cpu_max = ("max", str(DEFAULT_CPU_PERIOD_US))
            writes.extend((f"/{file}".encode(), value.encode())
                          for file, value in self._limit_writes(limits, lambda: fresh_cpu_max))
        tools = os.fsencode(self.fs.resolve(self.path(TOOLS))) + b"/"
        self._call_plan = (limits, tools, tuple(writes))
        return tools, tuple(writes)

    def _prepare_call(self, group: str) -> None:
        """An OOM in a tool call kills the whole call, not one random process of it."""
        if "memory" in self.controllers:
            self.fs.write(self._file(group, "memory.oom.group"), "1")

    # -- limits and stats ---------------------------------------------------------------

    def set_limits(self, group: str, limits: Limits) -> None:
        for file, value in self._limit_writes(limits, lambda: self.fs.read(self._file(group, "cpu.max")).split()):
            self.fs.write(self._file(group, file), value)

    def _limit_writes(self, limits: Limits, cpu_max: Callable[[], Sequence[str]]) -> Iterator[tuple[str, str]]:
        """The (file, value) writes that set ``limits``, in order: `set_limits` writes them into a
        group, `_plan` keeps them for fresh call groups. ``cpu_max`` gives the group's current
        cpu.max quota and period, asked (after the other writes, as a generator) only when a limit
        changes one of the two: the file holds both."""
        self._require_controllers(limits)
        for knob in KNOBS:
            value = getattr(limits, knob.name)
            if knob.v2 is not None and value is not None:
                yield knob.v2, str(value)
        if limits.cpu_quota_us is not None or limits.cpu_period_us is not None:
            quota, period = cpu_max()
            if limits.cpu_quota_us is not None:
                quota = str(limits.cpu_quota_us)
            if limits.cpu_period_us is not None:
                period = str(limits.cpu_period_us)
            yield "cpu.max", f"{quota} {period}"

    def read_limits(self, group: str) -> Limits:
        # A knob file this kernel lacks (memory.swap.max without swap support) reads as None:
        # nothing set there. Writing one fails with the file named.
        values: dict[str, int | None] = {knob.name: self.fs.read_int(self._file(group, knob.v2)) for knob in KNOBS
                                         if knob.v2 is not None and knob.controller in self.controllers
                                         and self.fs.exists(self._file(group, knob.v2))}
        if "cpu" in self.controllers:
            quota, period = self.fs.read(self._file(group, "cpu.max")).split()
            values["cpu_quota_us"] = None if quota == "max" else int(quota)
            values["cpu_period_us"] = int(period)
        return Limits(**values)

    def knobs_hit(self, group: str) -> list[str]:
        hit = []
        for knob in KNOBS:
            if knob.v2_events is None or knob.controller not in self.controllers:
                continue
            name, key = knob.v2_events
            events = self._file(group, name)
            if self.fs.exists(events) and self.fs.read_keyed(events).get(key, 0):
                hit.append(knob.v2 or knob.name)
        return hit

    def memory_stats(self, group: str) -> MemoryStats:
        events = self.fs.read_keyed(self._file(group, "memory.events"))
        peak_file = self._file(group, "memory.peak")
        return MemoryStats(
            current=self.fs.read_int(self._file(group, "memory.current")) or 0,
            peak=self.fs.read_int(peak_file) if self.fs.exists(peak_file) else None,
            oom_kills=events.get("oom_kill", 0),
            max_events=events.get("max", 0),
            high_events=events.get("high", 0),
            oom_events=events.get("oom", 0),
            oom_group_kills=events.get("oom_group_kill", 0),
            under_oom=None,
        )

    def pids_stats(self, group: str) -> PidsStats:
        return PidsStats(
            current=self.fs.read_int(self._file(group, "pids.current")) or 0,
            max_events=self.fs.read_keyed(self._file(group, "pids.events")).get("max", 0),
        )

    def oom_notifier(self, group: str) -> OomNotifier:
        path = self._file(group, "memory.events")
        return V2OomNotifier(self.fs.open_fd(path), path)

    # -- members ------------------------------------------------------------------------

    def add_process(self, group: str, pid: int) -> None:
        self.fs.write(self._file(group, "cgroup.procs"), str(pid))

    def processes(self, group: str) -> list[int]:
        return sorted(self.fs.read_pids(self._file(group, "cgroup.procs")))

    def _children(self, group: str) -> list[str]:
        return self.fs.subdirs(self.path(group))

    def _subgroups(self, group: str) -> list[str]:
        out: list[str] = []
        for child in self._children(group):
            out.extend(self._subgroups(f"{group}/{child}" if group else child))
        out.append(group)
        return out

    def _require_file(self, group: str, name: str, why: str) -> Path:
        path = self._file(group, name)
        if not self.fs.exists(path):
            raise CgroupUnavailable(f"{name} is missing: {why}", path, errno.ENOENT)
        return path

    def freeze(self, group: str, timeout: float = 5.0) -> None:
        path = self._require_file(group, "cgroup.freeze", "the kernel predates 5.2")
        self.fs.write(path, "1")
        wait_until(lambda: self.is_frozen(group), timeout, "the group to freeze", path)

    def thaw(self, group: str, timeout: float = 5.0) -> None:
        path = self._require_file(group, "cgroup.freeze", "the kernel predates 5.2")
        self.fs.write(path, "0")
        wait_until(lambda: not self.is_frozen(group), timeout, "the group to thaw", path)

    def is_frozen(self, group: str) -> bool:
        return self.fs.read_keyed(self._file(group, "cgroup.events")).get("frozen") == 1

    def kill(self, group: str, timeout: float = 5.0) -> None:
        """``cgroup.kill`` (5.14+) kills the subtree atomically, even frozen; the loop then only
        waits for it to empty (and is the whole mechanism on older kernels)."""
        kill_file = self._file(group, "cgroup.kill")
        if self.fs.exists(kill_file):
            self.fs.write(kill_file, "1")
        self._kill_loop(group, timeout)

    # -- removal ------------------------------------------------------------------------

    def remove(self, group: str, *, kill: bool = False, timeout: float = 5.0) -> None:
        if not self.exists(group):
            return
        if kill:
            self.kill(group, timeout)
        for sub in self._subgroups(group):
            retry_busy(partial(self.fs.rmdir, self.path(sub)), timeout)

    # -- siblings -----------------------------------------------------------------------

    def siblings(self, prefix: str) -> list[str]:
        return [n for n in self._outer.subdirs(self.enclosing) if n.startswith(prefix)]

    def sibling(self, name: str) -> V2Backend:
        if not name or "/" in name or name in (".", "..") or name == LEAF:
            raise ValueError(f"invalid sibling name {name!r}")
        return V2Backend(self.enclosing / name, self.controllers, self.fs.raw)

    def evict(self, pid: int) -> None:
        """To the enclosing cgroup's leaf when it has (or, with controllers enabled for its
        children, needs) one: then the enclosing cgroup itself may hold no process."""
        target = self._leaf() or self.enclosing
        try:
            self._outer.write(target / "cgroup.procs", str(pid))
            return
        except CgroupError as exc:
            if exc.errno == errno.ESRCH:
                return
            if exc.errno != errno.EBUSY or target != self.enclosing:
                raise
        try:
            self._outer.write(self._make_leaf() / "cgroup.procs", str(pid))
        except CgroupError as exc:
            if exc.errno != errno.ESRCH:
                raise


class V2OomNotifier(OomNotifier):
    """Watches ``memory.events``: the kernel signals POLLPRI on it when a counter changes.

    Reading through the same descriptor re-arms the notification, so ``fired()`` re-reads it
    and reports whether the oom/oom_kill/oom_group_kill counters moved since the last look.
    """

    poll_events = select.POLLPRI | select.POLLERR

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self._path = path
        self._seen = self._counters()

    def _counters(self) -> tuple[int, int, int]:
        with os_errors("read memory.events", self._path):
            os.lseek(self._fd, 0, os.SEEK_SET)
            text = os.read(self._fd, 4096).decode("ascii")
        values = dict(line.split() for line in text.splitlines() if line.count(" ") == 1)
        oom, oom_kill, group_kill = (int(values.get(k, 0)) for k in ("oom", "oom_kill", "oom_group_kill"))
        return oom, oom_kill, group_kill

    def fileno(self) -> int:
        return self._fd

    def fired(self) -> bool:
        now = self._counters()
        changed = any(n > s for n, s in zip(now, self._seen))
        self._seen = now
        return changed

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
