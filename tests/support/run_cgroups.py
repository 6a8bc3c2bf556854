"""Where `vigil run` (and vigild) put their groups on this host, found from the test's own
cgroups in the hierarchies that really carry memory/pids/cpu (v1 on a hybrid host, the v2 tree on
a pure one): never a host-wide search, and nothing that assumes one cgroup version."""

from __future__ import annotations

from pathlib import Path

from vigild.cgroups import LEAF, detect

MANAGED = frozenset({"memory", "pids", "cpu"})


def memory_version() -> int:
    """The cgroup version of the memory controller: 2 means ``memory.oom.group`` kills whole calls."""
    hierarchy = detect().hierarchy_for("memory")
    assert hierarchy is not None, "no memory controller mounted"
    return hierarchy.version


def enclosing_dirs() -> list[Path]:
    """The test's own cgroup in each managed hierarchy; on v2, the cgroup whose leaf it sits in
    when a run moved it there (that is where runs put their parents)."""
    host = detect()
    out = []
    for hierarchy in (*host.v1, *([host.v2] if host.v2 is not None else [])):
        if not hierarchy.controllers & MANAGED:
            continue
        own = hierarchy.own_dir
        if hierarchy.version == 2 and own.name == LEAF and own != hierarchy.mount:
            own = own.parent
        out.append(own)
    return out


def run_groups(pid: int | str = "*") -> list[Path]:
    """The ``vigil-run-<pid>`` parents beside the test's own cgroups (every run when ``pid`` is *)."""
    return sorted(p for base in enclosing_dirs() for p in base.glob(f"vigil-run-{pid}") if p.is_dir())


def call_groups(pid: int | str = "*") -> list[Path]:
    """The tool-call groups of those runs, in the memory hierarchy (not the spares made ahead,
    `call-spare-<n>`, which hold no call until one is renamed into `call-<id>`)."""
    memory = detect().hierarchy_for("memory")
    return sorted(call for run in run_groups(pid) if memory is not None and memory.mount in run.parents
                  for call in (run / "tools").glob("call-*") if not call.name.startswith("call-spare-"))


def leftovers(*pids: int) -> list[Path]:
    """What the runs of ``pids`` (vigil or vigild processes a test started) left: their parents, and
    on v2 the leaf they moved processes into, given back when the last run there ends (so it only
    counts while no other run, someone else's, is alive beside it)."""
    left = [g for pid in pids for g in run_groups(pid)]
    for directory in enclosing_dirs():
        others = [g for g in directory.glob("vigil-run-*") if Path(f"/proc/{g.name.removeprefix('vigil-run-')}").exists()]
        if (directory / LEAF).is_dir() and not others:
            left.append(directory / LEAF)
    return left
