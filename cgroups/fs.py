"""All cgroupfs I/O goes through here: path confinement and OSError mapping happen in one place.

``RawFs`` is the replaceable bottom layer (``OsFs`` on a real host; tests pass a fake that
simulates the kernel's side effects on a plain directory tree). ``GuardedFs`` wraps it: every
path is resolved and must stay inside one of the configured parent directories, and every
OSError becomes a ``CgroupError`` naming the file and what was attempted.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from vigild.cgroups import gil_held
from vigild.cgroups.base import CgroupError, OutsideParentError

_REASONS = {
    errno.EACCES: "permission denied (not root, or the cgroup is not delegated to this user)",
    errno.EPERM: "operation not permitted (not root, or the cgroup is not delegated to this user)",
    errno.EROFS: "cgroupfs is mounted read-only (inside a container?)",
    errno.ENOENT: "no such file or directory (the group or its parent is gone, or the controller "
    "is not enabled for it)",
    errno.EBUSY: "the cgroup is busy (it still has processes or child groups)",
    errno.ESRCH: "no such process",
    errno.EINVAL: "the kernel rejected the value",
    errno.ENOTSUP: "not supported by this kernel or hierarchy",
    errno.ENOSPC: "no space (cpuset without cpus/mems, or cgroup limits reached)",
}


@contextmanager
def os_errors(action: str, path: Path | str) -> Iterator[None]:
    """Turn any OSError raised inside into a CgroupError: ``could not <action>: <reason>``."""
    try:
        yield
    except OSError as exc:
        reason = _REASONS.get(exc.errno or 0, exc.strerror or "failed")
        raise CgroupError(f"could not {action}: {reason}", path, exc.errno) from exc


class RawFs(Protocol):
    """The cgroupfs mutations/reads a backend needs; swapped for a fake in tests."""

    def mkdir(self, path: Path) -> None: ...

    def rmdir(self, path: Path) -> None: ...

    def read(self, path: Path) -> str: ...

    def write(self, path: Path, data: str) -> None: ...

    def rename(self, path: Path, new: Path) -> None: ...


class OsFs:
    """The real cgroupfs: a mkdir creates the control files, writes never create files. Inside
    `gil_held.keeping_gil()` (the held lane's placement) the mutations keep the GIL."""

    def mkdir(self, path: Path) -> None:
        gil_held.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def rename(self, path: Path, new: Path) -> None:
        gil_held.rename(path, new)

    def read(self, path: Path) -> str:
        with open(path, encoding="ascii") as f:
            return f.read()

    def write(self, path: Path, data: str) -> None:
        gil_held.write_file(path, data.encode("ascii"))  # one write(2) per value


def confine(parents: Iterable[Path], path: Path) -> Path:
    """Resolve ``path`` (symlinks, ``..``) and return it if it lies inside one of ``parents``.

    Raises OutsideParentError otherwise; this is the only gate before any cgroupfs access.
    """
    real = Path(os.path.realpath(path))
    for parent in parents:
        root = Path(os.path.realpath(parent))
        if real == root or root in real.parents:
            return real
    raise OutsideParentError("refusing to touch a path outside the configured parent", path)


def join_group(parent: Path, group: str) -> Path:
    """``parent/group`` for a relative group name; absolute names and ``..`` are refused."""
    if group.startswith("/") or ".." in Path(group).parts:
        raise OutsideParentError(f"group name {group!r} escapes the configured parent", parent / group.lstrip("/"))
    return parent / group if group else parent


class GuardedFs:
    """``RawFs`` confined to ``parents`` with errors mapped; what backends actually call.

    Resolving every path (``realpath``: one lstat per component) on each access was a third
    of a tool call's placement time. So the parents are resolved once and a directory, once
    resolved inside them, is remembered until it is removed through this object; only the
    last component of a path in it is checked again (one lstat: a symlink there is resolved
    and confined in full). A directory never seen before is always resolved in full."""

    def __init__(self, parents: Iterable[Path], raw: RawFs | None = None) -> None:
        self.parents = tuple(Path(p) for p in parents)
        self.raw: RawFs = raw if raw is not None else OsFs()
        self._real_parents: tuple[Path, ...] | None = None
        self._checked: dict[Path, Path] = {}  # directory as named -> its confined real path

    def _confine(self, path: Path) -> Path:
        if path.name in ("", ".", ".."):
            return self._resolve(path)
        directory = self._checked.get(path.parent)
        if directory is None:
            try:
                directory = self._resolve(path.parent)
            except OutsideParentError:  # a parent itself
                return self._resolve(path)
            if directory.is_dir():
                self._checked[path.parent] = directory
        if gil_held.is_link(directory / path.name):
            return self._resolve(path)
        return directory / path.name

    def _resolve(self, path: Path) -> Path:
        """``confine`` in full; the parents are resolved again only while one is missing."""
        if self._real_parents is None or not all(p.exists() for p in self._real_parents):
            self._real_parents = tuple(Path(os.path.realpath(p)) for p in self.parents)
        return confine(self._real_parents, path)

    def resolve(self, path: Path) -> Path:
        """The confined real path of ``path`` (OutsideParentError when it leaves the parents)."""
        return self._confine(path)

    def forget(self, path: Path) -> None:
        """Drop what is remembered of ``path`` and below (a directory renamed behind this object)."""
        self._forget(path)

    def _forget(self, path: Path) -> None:
        """A removed directory (and anything below it) is resolved again if it comes back. The
        teardown thread calls this while the pipeline thread adds entries, hence the copy."""
        # Strings, not Path comparisons or Path.parents: this ran for most of a placement's time.
        name = str(path)
        below = name + "/"
        for known in [k for k in list(self._checked) if (s := str(k)) == name or s.startswith(below)]:
            self._checked.pop(known, None)

    def mkdir(self, path: Path) -> None:
        target = self._confine(path)
        with os_errors("create cgroup directory", target):
            self.raw.mkdir(target)

    def rmdir(self, path: Path) -> None:
        target = self._confine(path)
        self._forget(path)
        with os_errors("remove cgroup directory", target):
            self.raw.rmdir(target)

    def rename(self, path: Path, new: Path) -> None:
        target, renamed = self._confine(path), self._confine(new)
        self._forget(path)
        with os_errors(f"rename the cgroup directory to {renamed.name}", target):
            self.raw.rename(target, renamed)
        if renamed.parent == self._checked.get(new.parent):  # confined a moment ago: its files need no new check
            self._checked[new] = renamed

    def read(self, path: Path) -> str:
        target = self._confine(path)
        with os_errors(f"read {target.name}", target):
            return self.raw.read(target)

    def write(self, path: Path, data: str) -> None:
        target = self._confine(path)
        with os_errors(f"write {data.strip()!r} to {target.name}", target):
            self.raw.write(target, data)

    def open_fd(self, path: Path, flags: int = os.O_RDONLY) -> int:
        """A descriptor (read-only by default, for poll(2) and eventfd registration)."""
        target = self._confine(path)
        with os_errors(f"open {target.name}", target):
            return os.open(target, flags | os.O_CLOEXEC)

    def isdir(self, path: Path) -> bool:
        return self._confine(path).is_dir()

    def exists(self, path: Path) -> bool:
        return self._confine(path).exists()

    def subdirs(self, path: Path) -> list[str]:
        """Names of the child directories (child groups); empty if ``path`` is gone."""
        target = self._confine(path)
        if not target.exists():
            return []
        with os_errors("list child groups", target), os.scandir(target) as it:
            return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))

    def read_int(self, path: Path) -> int | None:
        """An integer file; ``max`` (v2 unlimited) reads as None."""
        text = self.read(path).strip()
        return None if text == "max" else int(text)

    def read_keyed(self, path: Path) -> dict[str, int]:
        """A ``key value`` per line file (memory.events, memory.oom_control, pids.events)."""
        out = {}
        for line in self.read(path).splitlines():
            key, _, value = line.partition(" ")
            if value.strip().lstrip("-").isdigit():
                out[key] = int(value)
        return out

    def read_pids(self, path: Path) -> list[int]:
        return [int(x) for x in self.read(path).split()]
