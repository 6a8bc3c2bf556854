"""Find out once what cgroup setup the host has, and pick the backend for a set of controllers.

Three shapes exist in the wild: pure v2 (``/sys/fs/cgroup`` is cgroup2), hybrid (v1 controller
hierarchies plus a cgroup2 mount that may carry no controllers at all) and pure v1. A controller
lives in exactly one place, so the backend follows the controllers: memory on a v1 hierarchy
means the v1 backend, however present cgroup2 is.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vigild.cgroups.base import LEAF, CgroupBackend, CgroupUnavailable
from vigild.cgroups.fs import RawFs
from vigild.cgroups.v1 import V1Backend
from vigild.cgroups.v2 import DEFAULT_CONTROLLERS, V2Backend

# v1 hierarchies joined to the backend when present: freezing needs its own hierarchy.
V1_COMPANIONS = ("freezer",)
DELEGATE_XATTRS = ("trusted.delegate", "user.delegate")  # systemd's marks (system / user manager)


@dataclass(frozen=True)
class Hierarchy:
    """One mounted hierarchy and where the calling process sits in it."""

    version: int
    mount: Path
    controllers: frozenset[str]
    own_path: str
    """The process's cgroup relative to the mount, e.g. ``/process_api/6eae``."""

    @property
    def own_dir(self) -> Path:
        return self.mount / self.own_path.lstrip("/")


@dataclass(frozen=True)
class HostCgroups:
    """What ``detect`` found. ``mode`` is ``v2``, ``hybrid``, ``v1`` or ``none``."""

    mode: str
    v1: tuple[Hierarchy, ...]
    v2: Hierarchy | None

    def hierarchy_for(self, controller: str) -> Hierarchy | None:
        for hierarchy in self.v1:
            if controller in hierarchy.controllers:
                return hierarchy
        if self.v2 is not None and controller in self.v2.controllers:
            return self.v2
        return None


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _known_subsystems(proc: Path) -> set[str] | None:
    try:
        lines = (proc / "cgroups").read_text().splitlines()
    except OSError:
        return None
    return {line.split()[0] for line in lines if line and not line.startswith("#")}


def _own_paths(proc: Path) -> tuple[dict[str, str], str | None]:
    """From /proc/self/cgroup: v1 controller -> path, and the v2 path (``0::``)."""
    v1: dict[str, str] = {}
    v2 = None
    for line in (proc / "self" / "cgroup").read_text().splitlines():
        hier_id, controllers, path = line.split(":", 2)
        if hier_id == "0" and controllers == "":
            v2 = path
        else:
            for controller in controllers.split(","):
                v1[controller] = path
    return v1, v2


def _relative(path: str, mount_root: str) -> str:
    """A /proc/self/cgroup path made relative to what is mounted (bind-mounted subtrees)."""
    if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
        return path[len(mount_root):] or "/"
    return path


def detect(proc: Path | str = "/proc") -> HostCgroups:
    """Read ``/proc/self/mountinfo``, ``/proc/self/cgroup`` and ``/proc/cgroups``."""
    proc = Path(proc)
    known = _known_subsystems(proc)
    own_v1, own_v2 = _own_paths(proc)
    v1: list[Hierarchy] = []
    v2: Hierarchy | None = None
    for line in (proc / "self" / "mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        fstype, mount_root, mount = tail[0], _unescape(fields[3]), Path(_unescape(fields[4]))
        if fstype == "cgroup2" and v2 is None and own_v2 is not None:
            try:
                controllers = frozenset((mount / "cgroup.controllers").read_text().split())
            except OSError:
                controllers = frozenset()
            v2 = Hierarchy(2, mount, controllers, _relative(own_v2, mount_root))
        elif fstype == "cgroup":
            options = set(tail[2].split(","))
            controllers = frozenset(options & known if known is not None else
                                    {o for o in options if o not in ("rw", "ro") and "=" not in o})
            if not controllers or any(controllers & h.controllers for h in v1):
                continue  # a named hierarchy (name=systemd) or a second mount of the same one
            own = next((own_v1[c] for c in controllers if c in own_v1), "/")
            v1.append(Hierarchy(1, mount, controllers, _relative(own, mount_root)))
    if v1:
        mode = "hybrid" if v2 is not None else "v1"
    else:
        mode = "v2" if v2 is not None else "none"
    return HostCgroups(mode, tuple(v1), v2)


def _parent_dir(hierarchy: Hierarchy, parent: str) -> Path:
    """An absolute ``parent`` is taken from the hierarchy root, a relative one from the
    calling process's own cgroup in that hierarchy. On v2, a process already sitting in the
    ``LEAF`` of its cgroup (moved there by an earlier run) counts as being in that cgroup."""
    if parent.startswith("/"):
        return hierarchy.mount / parent.lstrip("/")
    own = hierarchy.own_dir
    if hierarchy.version == 2 and own.name == LEAF and own != hierarchy.mount:
        own = own.parent
    return own / parent


def open_backend(parent: str, controllers: Iterable[str] = DEFAULT_CONTROLLERS, *,
                 host: HostCgroups | None = None, fs: RawFs | None = None) -> CgroupBackend:
    """The backend that owns all wanted ``controllers``, rooted at ``parent`` in each hierarchy.

    Raises CgroupUnavailable naming the controllers that are mounted nowhere, or when they are
    split between v1 and v2 (one backend cannot span both).
    """
    wanted = sorted(set(controllers))
    if not wanted:
        raise ValueError("open_backend needs at least one controller")
    host = host if host is not None else detect()
    where = {c: host.hierarchy_for(c) for c in wanted}
    missing = [c for c, h in where.items() if h is None]
    if missing:
        raise CgroupUnavailable(f"controllers {missing} are not mounted on this host (mode {host.mode})")
    versions = {h.version for h in where.values() if h is not None}
    located = {c: h for c, h in where.items() if h is not None}
    if versions == {2}:
        return V2Backend(_parent_dir(located[wanted[0]], parent), wanted, fs)
    if versions == {1}:
        parents = {c: _parent_dir(h, parent) for c, h in located.items()}
        mounts = {c: h.mount for c, h in located.items()}
        for companion in V1_COMPANIONS:
            hierarchy = host.hierarchy_for(companion)
            if hierarchy is not None and hierarchy.version == 1:
                parents.setdefault(companion, _parent_dir(hierarchy, parent))
                mounts.setdefault(companion, hierarchy.mount)
        return V1Backend(parents, fs, mounts)
    split = {c: f"v{h.version}" for c, h in located.items()}
    raise CgroupUnavailable(f"wanted controllers are split between cgroup v1 and v2: {split}")


def delegated(directory: Path, mount: Path) -> bool:
    """Whether systemd marked ``directory`` or a cgroup above it (below ``mount``) delegated: it
    sets these xattrs on the cgroup of a unit with ``Delegate=yes`` (systemd >= 251), whose
    subtree then belongs to the unit's processes, not to systemd. ``user@UID.service`` is marked
    too, but below it the user's own systemd manages every unit: that mark does not count."""
    for candidate in (directory, *directory.parents):
        if candidate == mount or mount not in candidate.parents:
            return False
        if candidate.name.startswith("user@") and candidate.name.endswith(".service"):
            return False
        for attribute in DELEGATE_XATTRS:
            try:
                if os.getxattr(candidate, attribute) == b"1":
                    return True
            except OSError:
                continue
    return False
