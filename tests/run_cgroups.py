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
    """The tool-call groups of those runs, in the memory hierarchy."""
    memory = detect().hierarchy_for("memory")
    return sorted(call for run in run_groups(pid) if memory is not None and memory.mount in run.parents
                  for call in (run / "tools").glob("call-*"))


def leftovers() -> list[Path]:
    """What runs must not leave: their parents, and on v2 the leaf they moved processes into
    (given back when the last run ends)."""
    return run_groups() + [d / LEAF for d in enclosing_dirs() if (d / LEAF).is_dir()]
