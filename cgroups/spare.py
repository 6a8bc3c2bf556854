"""A spare tool-call group made ahead, with what its placement needs already resolved and opened.

Placing a held process in a v1 spare is one rename(2) and one write(2) of the pid per hierarchy,
each ~10-60 µs in the kernel. Made the general way (through GuardedFs: path objects, the
confinement check of each path, the bookkeeping of checked directories, opening and closing
`cgroup.procs`) it cost ~100 µs of Python per syscall, ~0.6 ms of a placement
(bench/placement_breakdown.py). So when the spare is made, on the teardown thread, each
hierarchy's directory is resolved and confined once and kept as bytes, and its `cgroup.procs`
is opened; the hot path renames it to a sibling name in the same confined parent and writes the
pid into the open descriptors, which stay on the group through the rename (a kernfs file
belongs to its node, not to its name).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from vigild.cgroups import gil_held
from vigild.cgroups.fs import GuardedFs, OsFs, os_errors

log = logging.getLogger(__name__)


class Spare:
    """One spare group: its name, and on a real cgroupfs its confined directories and open
    `cgroup.procs` descriptors (one per hierarchy). A spare over another RawFs (the tests'
    fakes, which simulate the kernel behind paths) is by name only: ``prepared`` is False and
    the backend renames and moves through its GuardedFs."""

    def __init__(self, group: str, dirs: tuple[bytes, ...] = (), procs: tuple[int, ...] = ()) -> None:
        self.group = group
        self._dirs = dirs
        self._parents = tuple(d[: d.rindex(b"/") + 1] for d in dirs)  # each ends with "/"
        self._procs = procs

    @classmethod
    def prepare(cls, fs: GuardedFs, group: str, dirs: list[Path]) -> Spare:
        """Resolve and confine ``dirs`` (the group in each hierarchy) and open their
        `cgroup.procs`; ``fs`` forgets them (they change name behind its back)."""
        if not isinstance(fs.raw, OsFs):
            return cls(group)
        real = tuple(os.fsencode(fs.resolve(d)) for d in dirs)
        procs: list[int] = []
        try:
            for directory in dirs:
                procs.append(fs.open_fd(directory / "cgroup.procs", os.O_WRONLY))
        except BaseException:
            for fd in procs:
                os.close(fd)
            raise
        for directory in dirs:
            fs.forget(directory)
        return cls(group, real, tuple(procs))

    @property
    def prepared(self) -> bool:
        return bool(self._dirs)

    def rename(self, name: str) -> None:
        """rename(2) in each hierarchy to the sibling ``name`` (one path component: the kernel
        renames v1 groups within their parent only). A failure half way puts the renamed ones
        back, so the group keeps one name everywhere; raises CgroupError."""
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"invalid group name {name!r}")
        encoded = os.fsencode(name)
        done: list[bytes] = []
        old = self._dirs[0]
        try:  # one handler for the loop (os_errors in it cost more than the renames, run cold)
            for old, parent in zip(self._dirs, self._parents, strict=True):
                new = parent + encoded
                gil_held.rename(old, new)
                done.append(new)
        except OSError as exc:
            for back, new in zip(self._dirs, done):
                try:
                    gil_held.rename(new, back)
                except OSError as undo:
                    log.warning("cannot give %s its name back: %s", os.fsdecode(new), undo)
            with os_errors(f"rename the cgroup directory to {name}", os.fsdecode(old)):
                raise exc
        self._dirs = tuple(done)

    def add(self, pid: int) -> None:
        """Move ``pid`` (the whole process) into the group in every hierarchy; raises CgroupError."""
        data = str(pid).encode()
        directory = self._dirs[0]
        try:
            for fd, directory in zip(self._procs, self._dirs, strict=True):
                gil_held.write_fd(fd, data)
        except OSError as exc:
            with os_errors("move the process into the group", os.fsdecode(directory) + "/cgroup.procs"):
                raise exc

    def close(self) -> None:
        """Close the `cgroup.procs` descriptors (the group itself stays)."""
        procs, self._procs = self._procs, ()
        for fd in procs:
            gil_held.close(fd)
