"""Tool-call groups inside an agent's container, so the container's limits stay in force above
the per-call ones (cgroup-notes: moving a tool into vigild's own subtree would lift them).

On cgroup v2 the container's own cgroup is the agent's cgroup, and ``AgentCgroups`` puts a tree
below it; a container cgroup counts as vigild's to use even without systemd's delegation mark,
since the runtime made it for the container's processes alone. Whether the runtime passed the
controllers down is then the kernel's to say (``cgroup.controllers``), and the fallback says it.

On a hybrid or v1 host each controller has its own hierarchy, and the container has a cgroup in
each (``/proc/PID/cgroup`` lists them). A v1 tree is the container's group in every hierarchy
vigild's limits need, plus ``<parent_name>/{agent,tools/call-<id>}`` below it; memory accounting
is hierarchical on v1 too (``memory.use_hierarchy`` is always 1 since 5.x), so the container's
``memory.limit_in_bytes`` applies above every call.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from vigild.cgroups import CgroupBackend, HostCgroups
from vigild.cgroups.v1 import V1Backend
from vigild.correlate.containers import Container, parse_cgroup_path


class NotInContainer(LookupError):
    """Why a process's calls cannot go in its container's groups (said in vigild's log)."""


def v1_container_tree(pid: int, host: HostCgroups, parent_name: str, controllers: Iterable[str]) -> tuple[Container, CgroupBackend]:
    """The container of `pid` and a v1 backend rooted at ``<its group>/<parent_name>`` in each of
    `controllers`' hierarchies. NotInContainer when the process is not in a container in one of
    them (its runtime made no group there: the container has no limit of that kind to keep)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError as exc:
        raise NotInContainer(f"process {pid} is gone") from exc
    paths: dict[str, str] = {}
    for line in lines:
        hid, names, path = (line.split(":", 2) + ["", ""])[:3]
        if hid != "0":
            for name in names.split(","):
                paths[name] = path
    parents: dict[str, Path] = {}
    mounts: dict[str, Path] = {}
    found: Container | None = None
    for controller in sorted(set(controllers)):
        hierarchy = host.hierarchy_for(controller)
        if hierarchy is None or hierarchy.version != 1:
            raise NotInContainer(f"the {controller} controller is not on cgroup v1")
        container = parse_cgroup_path(paths.get(controller, "/"))
        if container is None:
            raise NotInContainer(f"its {controller} group ({paths.get(controller, '?')}) is no container's")
        if found is not None and container.id != found.id:
            raise NotInContainer(f"its {controller} group belongs to container {container.id[:12]}, "
                                 f"not {found.id[:12]}")
        found = container
        parents[controller] = hierarchy.mount / container.cgroup.lstrip("/") / parent_name
        mounts[controller] = hierarchy.mount
    if found is None:
        raise NotInContainer("no controller asked for")
    return found, V1Backend(parents, mounts=mounts)


def is_container_cgroup(directory: Path, mount: Path) -> bool:
    """Whether a v2 cgroup directory is a container's own (or below one), by its path."""
    try:
        relative = directory.relative_to(mount)
    except ValueError:
        return False
    return parse_cgroup_path("/" + str(relative)) is not None


ENCLOSING_MEMORY_MAX = "enclosing memory.max"


def memory_limit_hit(max_events: int, peak: int | None, own_max: int | None) -> str:
    """Which memory limit stopped an OOM-killed call: its own ``memory.max``, or one above it (its
    container's, its unit's). The kernel counts a charge failure (v1 failcnt, v2 ``max``) in the
    group whose limit refused it and the kill in the victim's group and those above, so a call
    killed by its container's limit has a kill but no failure of its own, and a peak below its
    own limit."""
    if max_events or own_max is None or (peak is not None and peak >= own_max - (1 << 20)):
        return "memory.max"
    return ENCLOSING_MEMORY_MAX
