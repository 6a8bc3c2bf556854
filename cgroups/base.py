"""The one cgroup interface every caller uses, and the types it speaks.

Like psutil, the version-specific backend (v1 or v2) is chosen once (see ``detect.open_backend``);
callers never branch on the cgroup version. A backend manages one *configured parent* and the
layout below it::

    <parent>/agent/            the agent runtime itself
    <parent>/tools/call-<id>/  one group per tool call, with its own limits

Groups are named by their path relative to the parent (``"tools/call-42"``); on v1 the same
relative path exists in every managed controller hierarchy.
"""

from __future__ import annotations

import errno as errno_mod
import logging
import os
import select
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self

from vigild.cgroups.limits import KNOBS, Limits

if TYPE_CHECKING:
    from vigild.cgroups.spare import Spare

log = logging.getLogger(__name__)

AGENT = "agent"
TOOLS = "tools"
CALL_PREFIX = "call-"
SPARE_INFIX = "spare-"
"""Spare groups are ``tools/call-spare-<n>``: a crashed run's spares go with its stale calls."""
LEAF = "supervisor"
"""On v2, the leaf of the enclosing (delegated) cgroup that its own processes move into, so that
cgroup may enable controllers for its children (no internal processes)."""


class CgroupError(Exception):
    """A cgroup operation failed; says what was attempted, on which file, and the errno."""

    def __init__(self, message: str, path: Path | str | None = None, errno: int | None = None) -> None:
        self.message = message
        self.path = Path(path) if path is not None else None
        self.errno = errno
        super().__init__(str(self))

    def __str__(self) -> str:
        text = self.message
        if self.path is not None:
            text += f" [{self.path}]"
        if self.errno is not None:
            text += f" ({errno_mod.errorcode.get(self.errno, self.errno)}: {os.strerror(self.errno)})"
        return text


class CgroupUnavailable(CgroupError):
    """A needed controller is not mounted, not enabled, or not delegated to us."""


class MoveError(CgroupError):
    """The call's group was made but its first process could not be moved in (``group``)."""

    def __init__(self, group: str, cause: CgroupError) -> None:
        super().__init__(cause.message, cause.path, cause.errno)
        self.group = group


class OutsideParentError(CgroupError):
    """A path resolved outside the configured parent; nothing was written."""


@dataclass(frozen=True)
class MemoryStats:
    """Memory accounting of one group. ``None`` means this cgroup version does not report it.

    max_events: v2 ``memory.events`` max (times usage hit memory.max); v1 ``memory.failcnt``
    (times a charge hit the limit). oom_events: v2 only. under_oom: v1 only.
    """

    current: int
    peak: int | None
    oom_kills: int
    max_events: int
    high_events: int | None
    oom_events: int | None
    oom_group_kills: int | None
    under_oom: bool | None

    @property
    def killed_processes(self) -> int:
        """Processes the OOM killer killed, each once. v2 ``oom_kill`` counts a group kill's
        chosen victim twice: once when it is chosen, and again while the kernel kills every
        member of the ``memory.oom.group`` (mm/oom_kill.c oom_kill_process: the member scan
        includes the victim, whose mm is still there). So one group kill of one process reads
        oom_kill 2, oom_group_kill 1. If the victim lost its mm before the scan it is counted
        once, and this may read one low: the oom:mark_victim tracepoint (once per process)
        stays the exact source."""
        return max(0, self.oom_kills - (self.oom_group_kills or 0))


@dataclass(frozen=True)
class PidsStats:
    """``pids.current`` and how often a fork was refused by ``pids.max`` (pids.events max)."""

    current: int
    max_events: int


class OomNotifier(ABC):
    """Tells the caller a group hit OOM: poll ``fileno()`` then call ``fired()``, or ``wait()``."""

    @abstractmethod
    def fileno(self) -> int:
        """A descriptor to register with poll/select (v1: POLLIN on an eventfd; v2: POLLPRI)."""

    @abstractmethod
    def fired(self) -> bool:
        """Non-blocking: True once per OOM notification received since the last call."""

    poll_events: int = select.POLLIN
    """The poll(2) event mask to wait for on ``fileno()``."""

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for an OOM notification.

        The poll is capped at 0.1 s so a missed edge is caught by re-checking ``fired()``.
        """
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(self.fileno(), self.poll_events)
        while True:
            if self.fired():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            poller.poll(min(remaining, 0.1) * 1000)

    @abstractmethod
    def close(self) -> None:
        """Release the descriptors (v1 also unregisters the kernel event)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CgroupBackend(ABC):
    """Mechanism over one configured parent: create, limit, populate, observe, kill, remove."""

    version: int
    controllers: frozenset[str]
    _spares: list[Spare]
    _spares_used: list[Spare]
    _spare_limits: Limits | None
    _spare_seq: int
    _spares_lock: threading.Lock

    def _init_spares(self) -> None:
        """The spare pool's state; backends that rename call this from their constructor."""
        self._spares, self._spare_limits, self._spare_seq = [], None, 0
        self._spares_used = []  # taken; their descriptors are closed off the hot path (fill_spares)
        self._spares_lock = threading.Lock()

    # -- layout -------------------------------------------------------------------------

    @abstractmethod
    def ensure_layout(self, adopt_members: bool = False) -> None:
        """Create the parent (if missing), ``agent/`` and ``tools/``; on v2 enable the managed
        controllers for children of the parent and of ``tools/``.

        v2 forbids processes in an inner node with controllers enabled, so a parent that holds
        processes (e.g. the agent's own cgroup) needs ``adopt_members=True``: they are moved into
        ``agent/`` first. Raises CgroupUnavailable when a controller is missing or not delegated.
        """

    @abstractmethod
    def path(self, group: str, controller: str | None = None) -> Path:
        """The group's directory (in ``controller``'s hierarchy on v1; default memory)."""

    @abstractmethod
    def exists(self, group: str) -> bool:
        """Whether the group directory exists (in every managed hierarchy on v1)."""

    @abstractmethod
    def create(self, group: str) -> None:
        """Create the group (on v1 in every managed hierarchy); existing dirs are kept."""

    renames = False
    """Whether a group can be renamed (v1 only: cgroup2 has no rename operation), which is what
    lets a spare group made ahead of need become a call's ``tools/call-<id>``."""

    def create_call(self, call_id: str, limits: Limits | None = None) -> str:
        """Create ``tools/call-<call_id>`` with ``limits``; returns the group name. A spare made
        with the same limits (``fill_spares``) is renamed instead: one rename per hierarchy in
        place of a mkdir and the limit writes."""
        return self.place_call(call_id, limits, None)

    def place_call(self, call_id: str, limits: Limits | None, pid: int | None) -> str:
        """``create_call``, then ``pid`` (when given) moved in: into a taken spare through the
        `cgroup.procs` descriptors it opened when it was made (see vigild.cgroups.spare). A move
        that fails raises MoveError, which names the group made."""
        if not call_id or "/" in call_id or call_id in (".", ".."):
            raise ValueError(f"invalid call id {call_id!r}")
        name = f"{CALL_PREFIX}{call_id}"
        group = f"{TOOLS}/{name}"
        spare = self._take_spare(limits)
        if spare is not None:
            try:
                if spare.prepared:
                    spare.rename(name)
                else:
                    self._rename(spare.group, group)
            except CgroupError as exc:  # said, then made the slow way
                log.warning("cannot use the spare group %s: %s", spare.group, exc)
                spare.close()
            else:
                try:
                    if pid is not None:
                        self._move_in(group, pid, spare)
                finally:
                    with self._spares_lock:
                        self._spares_used.append(spare)
                return group
        self._make_call(name, limits, pid)
        return group

    def _make_call(self, name: str, limits: Limits | None, pid: int | None) -> None:
        """``tools/<name>`` made, set up, limited, and ``pid`` moved in (MoveError)."""
        group = f"{TOOLS}/{name}"
        self.create(group)
        self._prepare_call(group)
        if limits is not None:
            self.set_limits(group, limits)
        if pid is not None:
            self._move_in(group, pid, None)

    def _move_in(self, group: str, pid: int, spare: Spare | None) -> None:
        """``add_process``, through the spare's open descriptors when it has them; MoveError."""
        try:
            if spare is not None and spare.prepared:
                spare.add(pid)
            else:
                self.add_process(group, pid)
        except CgroupError as exc:
            raise MoveError(group, exc) from exc

    def fill_spares(self, limits: Limits | None, count: int) -> int:
        """Make spare call groups with ``limits`` until ``count`` wait (none where groups cannot
        be renamed); spares with other limits go. Run off the hot path (the teardown thread);
        returns how many were made. ``cleanup_stale`` and ``remove_layout`` remove spares too."""
        if not self.renames:
            return 0
        with self._spares_lock:
            stale: list[Spare] = []
            if limits != self._spare_limits:
                stale, self._spares, self._spare_limits = self._spares, [], limits
            wanted = count - len(self._spares)
            used, self._spares_used = self._spares_used, []
        for spare in used:
            spare.close()
        for spare in stale:
            spare.close()
            self.remove(spare.group, timeout=1.0)
        made = 0
        for _ in range(wanted):
            with self._spares_lock:
                self._spare_seq += 1
                group = f"{TOOLS}/{CALL_PREFIX}{SPARE_INFIX}{self._spare_seq}"
            self.create(group)
            self._prepare_call(group)
            if limits is not None:
                self.set_limits(group, limits)
            spare = self._make_spare(group)
            with self._spares_lock:
                kept = limits == self._spare_limits
                if kept:
                    self._spares.append(spare)
                    made += 1
            if not kept:  # the limits changed meanwhile
                spare.close()
                self.remove(group, timeout=1.0)
        return made

    def _drop_spares(self) -> None:
        """Forget the spares (their groups are being removed) and close what they hold open."""
        if not self.renames:
            return
        with self._spares_lock:
            spares, self._spares = self._spares + self._spares_used, []
            self._spares_used = []
        for spare in spares:
            spare.close()

    def spares(self) -> int:
        """How many spare groups wait."""
        return len(self._spares) if self.renames else 0

    def _take_spare(self, limits: Limits | None) -> Spare | None:
        if not self.renames:
            return None
        with self._spares_lock:
            if self._spares and limits == self._spare_limits:
                return self._spares.pop(0)
        return None

    def _rename(self, group: str, new: str) -> None:
        """Rename a group (in every hierarchy); only where ``renames``."""
        raise CgroupUnavailable(f"cgroup v{self.version} cannot rename groups")

    def _make_spare(self, group: str) -> Spare:
        """The made group as a spare, its placement prepared; only where ``renames``."""
        raise CgroupUnavailable(f"cgroup v{self.version} cannot rename groups")

    def _prepare_call(self, group: str) -> None:
        """Version-specific setup of a fresh call group (v2: OOM kills the whole group)."""

    def _require_controllers(self, limits: Limits) -> None:
        """Refuse limits for controllers this backend does not manage, rather than drop them."""
        missing = sorted({knob.controller for knob in KNOBS if getattr(limits, knob.name) is not None}
                         - set(self.controllers))
        if missing:
            raise CgroupUnavailable(f"limits need controllers {missing}, which this backend does not manage")

    # -- limits and stats ---------------------------------------------------------------

    @abstractmethod
    def set_limits(self, group: str, limits: Limits) -> None:
        """Write every non-None field of ``limits``."""

    @abstractmethod
    def read_limits(self, group: str) -> Limits:
        """The limits in force; unlimited values read back as None."""

    def knobs_hit(self, group: str) -> list[str]:
        """Files of the knobs (with a `v2_events` counter) that the group ran into; the ones the
        memory and pids stats tell are not repeated here. v1 keeps no such counters."""
        return []

    @abstractmethod
    def memory_stats(self, group: str) -> MemoryStats:
        """Current/peak usage and OOM/limit event counters."""

    @abstractmethod
    def pids_stats(self, group: str) -> PidsStats:
        """pids.current and pids.events max."""

    @abstractmethod
    def oom_notifier(self, group: str) -> OomNotifier:
        """Arm an OOM notification for ``group``; close it when done."""

    # -- members ------------------------------------------------------------------------

    @abstractmethod
    def add_process(self, group: str, pid: int) -> None:
        """Move ``pid`` (the whole process) into the group. Safe to call from preexec_fn."""

    @abstractmethod
    def processes(self, group: str) -> list[int]:
        """PIDs directly in the group, sorted."""

    def processes_recursive(self, group: str) -> list[int]:
        """PIDs in the group and all its descendants, sorted."""
        found: set[int] = set()
        for sub in self._subgroups(group):
            found.update(self.processes(sub))
        return sorted(found)

    @abstractmethod
    def _subgroups(self, group: str) -> list[str]:
        """``group`` and every descendant group name, deepest first."""

    @abstractmethod
    def freeze(self, group: str, timeout: float = 5.0) -> None:
        """Freeze every task in the group; returns once the kernel reports it frozen."""

    @abstractmethod
    def thaw(self, group: str, timeout: float = 5.0) -> None:
        """Undo ``freeze``."""

    @abstractmethod
    def is_frozen(self, group: str) -> bool:
        """Whether the group is (fully) frozen."""

    @abstractmethod
    def kill(self, group: str, timeout: float = 5.0) -> None:
        """SIGKILL every process in the group and its descendants; return once it is empty."""

    def _kill_loop(self, group: str, timeout: float) -> None:
        """Portable kill: SIGKILL every listed pid until the group (subtree) is empty.

        Repeats because a process may fork between reading cgroup.procs and the kill.
        """
        deadline = time.monotonic() + timeout
        while True:
            pids = self.processes_recursive(group)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._after_kill_signal(group)
            if time.monotonic() > deadline:
                raise CgroupError(
                    f"processes {pids} survived SIGKILL for {timeout}s in group {group!r}",
                    self.path(group), errno_mod.ETIMEDOUT,
                )
            time.sleep(0.01)

    def _after_kill_signal(self, group: str) -> None:
        """Hook run after signalling (v1 thaws, since frozen tasks cannot die)."""

    # -- removal ------------------------------------------------------------------------

    @abstractmethod
    def remove(self, group: str, *, kill: bool = False, timeout: float = 5.0) -> None:
        """Remove the group and its descendants (every hierarchy on v1); a missing group is
        not an error. With ``kill`` the members are killed first; EBUSY is retried until
        ``timeout``."""

    def cleanup_stale(self, timeout: float = 5.0) -> list[str]:
        """Kill and remove leftover ``tools/call-*`` groups (after a daemon crash).

        Returns the removed group names.
        """
        removed = []
        self._drop_spares()
        for name in self._children(TOOLS):
            if name.startswith(CALL_PREFIX):
                group = f"{TOOLS}/{name}"
                self.remove(group, kill=True, timeout=timeout)
                removed.append(group)
        return sorted(removed)

    @abstractmethod
    def _children(self, group: str) -> list[str]:
        """Names of the direct child groups (union over hierarchies on v1)."""

    def remove_layout(self, *, kill: bool = False, timeout: float = 5.0) -> None:
        """Remove the parent and everything below it, then give back what ``ensure_layout``
        changed outside it (v2: the enclosing cgroup's controllers and leaf, once no other
        group of ours needs them)."""
        self._drop_spares()
        self.remove("", kill=kill, timeout=timeout)
        self._release_enclosing(timeout)

    def _release_enclosing(self, timeout: float) -> None:
        """Version-specific undo of the enclosing cgroup's preparation (v1: nothing to undo)."""

    # -- siblings: other runs' parents beside ours ----------------------------------------

    @abstractmethod
    def siblings(self, prefix: str) -> list[str]:
        """Names starting with ``prefix`` of the groups beside the parent (in any hierarchy)."""

    @abstractmethod
    def sibling(self, name: str) -> CgroupBackend:
        """A backend of the same kind and controllers for the group ``name`` beside the parent."""

    @abstractmethod
    def evict(self, pid: int) -> None:
        """Move ``pid`` out of the parent's tree, back to where the enclosing cgroup keeps its own
        processes; a process that exited meanwhile is not an error."""

    def remove_namesakes(self, name: str, max_depth: int = 4) -> list[Path]:
        """Remove empty groups called ``name`` elsewhere in the hierarchies: on v1 a dead run's
        group in one hierarchy may sit below another cgroup than ours. v2 has one tree, and the
        sibling itself is all there is."""
        return []

    def remove_dead_runs(self, prefix: str) -> list[str]:
        """Remove the trees beside the parent named ``<prefix><pid>`` whose process is gone: runs
        (and vigilds) that died without cleaning up (SIGKILL, crash). A tree that cannot go is
        logged and left, so the others still go; the names removed are returned."""
        removed = []
        for name in self.siblings(prefix):
            pid = name.removeprefix(prefix)
            if not pid.isdigit() or int(pid) == os.getpid() or Path(f"/proc/{pid}").exists():
                continue
            try:
                self.sibling(name).remove_abandoned()
                removed.append(name)
            except CgroupError as exc:
                log.warning("cannot remove the stale cgroups %s: %s", name, exc)
                continue
            try:
                self.remove_namesakes(name)
            except CgroupError as exc:
                log.warning("%s", exc)
        return removed

    def remove_abandoned(self, timeout: float = 5.0) -> None:
        """Remove the tree of a run that died without cleaning up: its tool calls are killed, a
        process still alive elsewhere in it (its agent) is moved out first, then all of it goes."""
        self.cleanup_stale(timeout)
        for pid in self.processes_recursive(""):
            self.evict(pid)
        self.remove("", kill=True, timeout=timeout)


def wait_until(check: Callable[[], bool], timeout: float, what: str, path: Path) -> None:
    """Poll ``check`` until true; the kernel completes freezing asynchronously."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise CgroupError(f"timed out after {timeout}s waiting for {what}", path, errno_mod.ETIMEDOUT)
        time.sleep(0.005)


def retry_busy(action: Callable[[], None], timeout: float) -> None:
    """Run ``action`` retrying on EBUSY: rmdir races with exiting tasks being unlinked."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            action()
            return
        except CgroupError as exc:
            if exc.errno != errno_mod.EBUSY or time.monotonic() > deadline:
                raise
        time.sleep(0.02)
