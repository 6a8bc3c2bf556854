"""Host detection over fake /proc trees shaped like the three real-world setups, plus this host."""

from __future__ import annotations

from pathlib import Path

import pytest
from vigild.cgroups import CgroupUnavailable, V1Backend, V2Backend, detect, open_backend

PROC_CGROUPS = """#subsys_name	hierarchy	num_cgroups	enabled
cpuset	3	1	1
cpu	1	1	1
cpuacct	1	1	1
memory	4	18	1
freezer	6	1	1
pids	8	1	1
"""


def fake_proc(tmp_path: Path, mounts: list[tuple[str, str, str, str]], self_cgroup: str,
              v2_controllers: str = "") -> Path:
    """mounts: (fstype, mount root, mount point relative to tmp_path, super options)."""
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "cgroups").write_text(PROC_CGROUPS)
    (proc / "self" / "cgroup").write_text(self_cgroup)
    lines = []
    for n, (fstype, root, point, options) in enumerate(mounts):
        mount = tmp_path / point
        mount.mkdir(parents=True, exist_ok=True)
        if fstype == "cgroup2":
            (mount / "cgroup.controllers").write_text(v2_controllers)
        lines.append(f"{30 + n} 23 0:{28 + n} {root} {mount} rw,relatime shared:9 - {fstype} cgroup {options}")
    (proc / "self" / "mountinfo").write_text("\n".join(lines) + "\n")
    return proc


def hybrid_like_this_host(tmp_path: Path) -> Path:
    return fake_proc(tmp_path, [
        ("cgroup", "/", "cg/cpu,cpuacct", "rw,cpu,cpuacct"),
        ("cgroup", "/", "cg/memory", "rw,memory"),
        ("cgroup", "/", "cg/pids", "rw,pids"),
        ("cgroup", "/", "cg/freezer", "rw,freezer"),
        ("cgroup", "/", "cg/systemd", "rw,xattr,name=systemd"),
        ("cgroup2", "/", "cg/unified", "rw,nsdelegate"),
    ], "9:name=systemd:/\n8:pids:/\n6:freezer:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/\n",
        v2_controllers="hugetlb")


def test_hybrid_picks_v1_for_memory(tmp_path: Path) -> None:
    host = detect(hybrid_like_this_host(tmp_path))
    assert host.mode == "hybrid"
    assert {h.mount.name for h in host.v1} == {"cpu,cpuacct", "memory", "pids", "freezer"}
    assert host.hierarchy_for("memory").own_dir == tmp_path / "cg/memory/process_api/abc"
    backend = open_backend("vigil", host=host)
    assert isinstance(backend, V1Backend)
    assert backend.parents == {
        "memory": tmp_path / "cg/memory/process_api/abc/vigil",
        "pids": tmp_path / "cg/pids/vigil",
        "cpu": tmp_path / "cg/cpu,cpuacct/vigil",
        "freezer": tmp_path / "cg/freezer/vigil",
    }


def test_absolute_parent_starts_at_the_hierarchy_root(tmp_path: Path) -> None:
    backend = open_backend("/vigil", ("memory",), host=detect(hybrid_like_this_host(tmp_path)))
    assert backend.path("", "memory") == tmp_path / "cg/memory/vigil"


def test_hybrid_with_v2_controllers_unused_still_needs_no_v2(tmp_path: Path) -> None:
    host = detect(hybrid_like_this_host(tmp_path))
    assert host.v2 is not None and host.v2.controllers == {"hugetlb"}
    assert isinstance(open_backend("v", ("pids",), host=host), V1Backend)


def test_pure_v2(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, [("cgroup2", "/", "cg", "rw,nsdelegate,memory_recursiveprot")],
                     "0::/user.slice/agent.service\n", v2_controllers="cpuset cpu io memory hugetlb pids")
    host = detect(proc)
    assert host.mode == "v2" and host.v1 == ()
    backend = open_backend("vigil", host=host)
    assert isinstance(backend, V2Backend)
    assert backend.parent == tmp_path / "cg/user.slice/agent.service/vigil"
    assert backend.controllers == {"memory", "pids", "cpu"}


def test_v2_process_in_the_leaf_counts_as_in_its_cgroup(tmp_path: Path) -> None:
    """After a run moved a service's processes into its leaf, the next run's parent still goes
    beside the first, not inside the leaf."""
    proc = fake_proc(tmp_path, [("cgroup2", "/", "cg", "rw,nsdelegate")],
                     "0::/system.slice/vigild.service/supervisor\n", v2_controllers="cpu memory pids")
    backend = open_backend("vigil-run-7", host=detect(proc))
    assert isinstance(backend, V2Backend)
    assert backend.parent == tmp_path / "cg/system.slice/vigild.service/vigil-run-7"
    assert backend.enclosing == tmp_path / "cg/system.slice/vigild.service"


def test_pure_v1_with_bind_mounted_subtree(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, [
        ("cgroup", "/docker/c1", "cg/memory", "rw,memory"),
        ("cgroup", "/docker/c1", "cg/pids", "rw,pids"),
        ("cgroup", "/", "cg/cpu", "rw,cpu,cpuacct"),
    ], "4:memory:/docker/c1/sub\n8:pids:/docker/c1\n1:cpu,cpuacct:/\n")
    host = detect(proc)
    assert host.mode == "v1" and host.v2 is None
    assert host.hierarchy_for("memory").own_dir == tmp_path / "cg/memory/sub"
    assert host.hierarchy_for("pids").own_dir == tmp_path / "cg/pids"
    backend = open_backend("v", ("memory", "pids", "cpu", "cpuacct"), host=host)
    assert backend.path("g", "cpu") == backend.path("g", "cpuacct")  # joined mount, one directory
    with pytest.raises(CgroupUnavailable):
        backend.freeze("g")  # no freezer mounted


def test_missing_controller_is_unavailable(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, [("cgroup2", "/", "cg", "rw")], "0::/\n", v2_controllers="cpu pids")
    with pytest.raises(CgroupUnavailable) as info:
        open_backend("v", host=detect(proc))
    assert "memory" in str(info.value)


def test_controllers_split_across_versions_are_refused(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, [("cgroup", "/", "cg/pids", "rw,pids"), ("cgroup2", "/", "cg/u", "rw")],
                     "8:pids:/\n0::/\n", v2_controllers="memory cpu")
    with pytest.raises(CgroupUnavailable) as info:
        open_backend("v", host=detect(proc))
    assert "split" in str(info.value)


def test_this_host() -> None:
    host = detect()
    assert host.mode in ("v2", "hybrid", "v1")
    memory = host.hierarchy_for("memory")
    assert memory is not None and memory.own_dir.is_dir()
    assert (memory.own_dir / "cgroup.procs").is_file()
