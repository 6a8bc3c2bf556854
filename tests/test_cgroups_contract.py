"""One contract, both backends: v1 and v2 run against a fake cgroupfs in tmp_path.

``FakeCgroupFs`` plays the kernel's part on a plain directory tree: mkdir populates the control
files a real kernel would show, rmdir refuses busy groups, writes to cgroup.procs move a
process, cgroup.kill kills, subtree_control enforces delegation and the no-internal-process
rule, and ``trigger_oom`` bumps the counters and signals registered eventfds.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from pathlib import Path

import pytest
from vigild.cgroups import (
    CgroupBackend,
    CgroupError,
    CgroupUnavailable,
    Limits,
    MemoryStats,
    OutsideParentError,
    V1Backend,
    V2Backend,
)

UNLIMITED_V1 = "9223372036854771712"

V2_CORE = {
    "cgroup.procs": "", "cgroup.subtree_control": "", "cgroup.events": "populated 0\nfrozen 0\n",
    "cgroup.freeze": "0", "cgroup.kill": "", "cgroup.type": "domain",
}
V2_CONTROLLER_FILES = {
    "memory": {
        "memory.current": "0", "memory.peak": "0", "memory.high": "max", "memory.max": "max",
        "memory.oom.group": "0", "memory.swap.max": "max", "memory.swap.events": "high 0\nmax 0\nfail 0\n",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
    },
    "pids": {"pids.max": "max", "pids.current": "0", "pids.events": "max 0\n"},
    "cpu": {"cpu.weight": "100", "cpu.max": "max 100000", "cpu.stat": "usage_usec 0\n"},
}
V1_CORE = {"cgroup.procs": "", "tasks": "", "notify_on_release": "0", "cgroup.clone_children": "0"}
V1_CONTROLLER_FILES = {
    "memory": {
        "memory.limit_in_bytes": UNLIMITED_V1, "memory.soft_limit_in_bytes": UNLIMITED_V1,
        "memory.usage_in_bytes": "0", "memory.max_usage_in_bytes": "0", "memory.failcnt": "0",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        "memory.use_hierarchy": "1", "cgroup.event_control": "",
    },
    "pids": {"pids.max": "max", "pids.current": "0", "pids.events": "max 0\n"},
    "cpu": {"cpu.shares": "1024", "cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"},
    "cpuacct": {"cpuacct.usage": "0"},
    "freezer": {"freezer.state": "THAWED"},
}
V1_MOUNTS = ("memory", "pids", "cpu,cpuacct", "freezer")


def _alive(pid: int) -> bool:
    """Exited tasks leave cgroup.procs at exit, before they are reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class FakeCgroupFs:
    """A ``RawFs`` over ``tmp_path`` that simulates cgroupfs semantics for one version."""

    def __init__(self, base: Path, version: int, *, delegated: bool = True, has_kill: bool = True,
                 enclosing: str = "") -> None:
        """``enclosing``: the cgroup (below the root) the backend's parent sits in, as vigil's
        own login scope or service would be; by default the parent is a child of the root."""
        self.base = base
        self.enclosing = enclosing
        self.version = version
        self.has_kill = has_kill
        self.readonly = False
        self.registrations: dict[Path, list[int]] = {}
        if version == 2:
            self.mounts = {base / "unified": frozenset(("cpu", "memory", "pids"))}
            root = base / "unified"
            root.mkdir()
            self._files(root, {"cgroup.procs": "", "cgroup.controllers": "cpu memory pids",
                               "cgroup.subtree_control": "cpu memory pids" if delegated else ""})
        else:
            self.mounts = {base / m: frozenset(m.split(",")) for m in V1_MOUNTS}
            for mount in self.mounts:
                mount.mkdir()
                self._files(mount, V1_CORE)
        if enclosing:
            for mount in self.mounts:
                self.mkdir(mount / enclosing)

    # -- what a test configures a backend with --------------------------------------------

    def backend(self, controllers: tuple[str, ...] = ("memory", "pids", "cpu")) -> CgroupBackend:
        if self.version == 2:
            return V2Backend(self.base / "unified" / self.enclosing / "vigil", controllers, fs=self)
        parents, mounts = {}, {}
        for mount, names in self.mounts.items():
            for name in names:
                if name in controllers or name == "freezer":
                    parents[name] = mount / self.enclosing / "vigil"
                    mounts[name] = mount
        return V1Backend(parents, fs=self, mounts=mounts)

    def group_dirs(self, group: str) -> list[Path]:
        return [mount / self.enclosing / "vigil" / group for mount in self.mounts]

    def enclosing_dirs(self) -> list[Path]:
        return [mount / self.enclosing for mount in self.mounts]

    # -- RawFs ------------------------------------------------------------------------------

    def mkdir(self, path: Path) -> None:
        self._check_writable()
        os.mkdir(path)
        self._populate(path)

    def rmdir(self, path: Path) -> None:
        self._check_writable()
        if any(p.is_dir() for p in path.iterdir()) or self._live(path):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
        for f in path.iterdir():
            f.unlink()
        os.rmdir(path)

    def rename(self, path: Path, new: Path) -> None:
        self._check_writable()
        if self.version == 2:  # cgroup2 has no rename operation
            raise OSError(errno.EPERM, os.strerror(errno.EPERM), str(path))
        os.rename(path, new)

    def read(self, path: Path) -> str:
        if path.name == "cgroup.procs":
            return "".join(f"{pid}\n" for pid in self._live(path.parent))
        return path.read_text()

    def write(self, path: Path, data: str) -> None:
        self._check_writable()
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        handler = getattr(self, "_write_" + path.name.replace(".", "_"), None)
        if handler is not None:
            handler(path.parent, data.strip())
        else:
            path.write_text(data)

    # -- kernel side effects ------------------------------------------------------------------

    def trigger_oom(self, group_dir: Path) -> None:
        """What the kernel does when the group's limit is hit and the OOM killer runs."""
        if self.version == 2:
            self._bump(group_dir / "memory.events", "max", "oom", "oom_kill")
        else:
            self._bump(group_dir / "memory.oom_control", "oom_kill")
            failcnt = group_dir / "memory.failcnt"
            failcnt.write_text(str(int(failcnt.read_text()) + 1))
            for efd in self.registrations.get(group_dir, []):
                try:
                    os.eventfd_write(efd, 1)
                except OSError:
                    pass  # the notifier was closed, which unregisters it

    def _bump(self, path: Path, *keys: str) -> None:
        lines = []
        for line in path.read_text().splitlines():
            key, value = line.split()
            lines.append(f"{key} {int(value) + 1 if key in keys else value}")
        path.write_text("\n".join(lines) + "\n")

    def _check_writable(self) -> None:
        if self.readonly:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    def _mount_of(self, path: Path) -> Path:
        return next(m for m in self.mounts if m == path or m in path.parents)

    def _files(self, directory: Path, files: dict[str, str]) -> None:
        for name, content in files.items():
            if not (directory / name).exists():
                (directory / name).write_text(content)

    def _populate(self, directory: Path) -> None:
        mount = self._mount_of(directory)
        if self.version == 1:
            self._files(directory, V1_CORE)
            for controller in self.mounts[mount]:
                self._files(directory, V1_CONTROLLER_FILES[controller])
            return
        enabled = (directory.parent / "cgroup.subtree_control").read_text().split()
        files = dict(V2_CORE, **{"cgroup.controllers": " ".join(enabled)})
        if not self.has_kill:
            del files["cgroup.kill"]
        self._files(directory, files)
        (directory / "cgroup.controllers").write_text(" ".join(enabled))
        for controller in enabled:
            self._files(directory, V2_CONTROLLER_FILES[controller])

    def _live(self, directory: Path) -> list[int]:
        text = (directory / "cgroup.procs").read_text()
        return [pid for pid in map(int, text.split()) if _alive(pid)]

    def _write_cgroup_procs(self, directory: Path, data: str) -> None:
        pid = int(data)
        if not _alive(pid):
            raise ProcessLookupError(errno.ESRCH, os.strerror(errno.ESRCH))
        mount = self._mount_of(directory)
        if self.version == 2 and directory != mount and \
                (directory / "cgroup.subtree_control").read_text().split():
            raise OSError(errno.EBUSY, "no internal processes")
        for procs in mount.rglob("cgroup.procs"):
            pids = [p for p in map(int, procs.read_text().split()) if p != pid]
            procs.write_text("".join(f"{p}\n" for p in pids))
        with open(directory / "cgroup.procs", "a") as f:
            f.write(f"{pid}\n")

    def _write_cgroup_subtree_control(self, directory: Path, data: str) -> None:
        enabled = set((directory / "cgroup.subtree_control").read_text().split())
        available = set((directory / "cgroup.controllers").read_text().split())
        for token in data.split():
            name = token[1:]
            if name not in available:
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
            if token[0] == "+":
                if directory != self._mount_of(directory) and self._live(directory):
                    raise OSError(errno.EBUSY, "no internal processes")
                enabled.add(name)
            else:
                if any(name in (c / "cgroup.subtree_control").read_text().split()
                       for c in directory.iterdir() if c.is_dir()):
                    raise OSError(errno.EBUSY, "a child still enables it for its children")
                enabled.discard(name)
        (directory / "cgroup.subtree_control").write_text(" ".join(sorted(enabled)))
        for child in directory.iterdir():
            if child.is_dir():
                self._populate(child)

    def _write_cgroup_kill(self, directory: Path, data: str) -> None:
        for procs in [directory / "cgroup.procs", *directory.rglob("*/cgroup.procs")]:
            for pid in self._live(procs.parent):
                os.kill(pid, signal.SIGKILL)

    def _write_cgroup_freeze(self, directory: Path, data: str) -> None:
        (directory / "cgroup.freeze").write_text(data)
        (directory / "cgroup.events").write_text(f"populated 0\nfrozen {data}\n")

    def _write_freezer_state(self, directory: Path, data: str) -> None:
        if data not in ("FROZEN", "THAWED"):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        (directory / "freezer.state").write_text(data)

    def _write_cgroup_event_control(self, directory: Path, data: str) -> None:
        efd, ofd = map(int, data.split()[:2])
        os.fstat(ofd)  # the kernel insists on a valid control-file descriptor
        self.registrations.setdefault(directory, []).append(efd)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def fake(request: pytest.FixtureRequest, tmp_path: Path) -> FakeCgroupFs:
    return FakeCgroupFs(tmp_path, request.param)


@pytest.fixture
def backend(fake: FakeCgroupFs) -> CgroupBackend:
    b = fake.backend()
    b.ensure_layout()
    return b


@pytest.fixture
def spawn():
    """Start ``sleep`` children; every one is killed and reaped at teardown."""
    children: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        child = subprocess.Popen(["sleep", "60"])
        children.append(child)
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait()


# -- the contract ---------------------------------------------------------------------------


def test_layout_exists_in_every_hierarchy(fake: FakeCgroupFs, backend: CgroupBackend) -> None:
    backend.ensure_layout()  # idempotent
    for group in ("agent", "tools"):
        assert backend.exists(group)
        for directory in fake.group_dirs(group):
            assert directory.is_dir(), directory


def test_spare_groups_become_calls_by_rename_where_the_kernel_can(fake: FakeCgroupFs,
                                                                   backend: CgroupBackend) -> None:
    limits = Limits(memory_max=64 << 20, pids_max=20)
    made = backend.fill_spares(limits, 2)
    if fake.version == 2:  # cgroup2 cannot rename: nothing is made ahead, calls are made on demand
        assert made == 0 and backend.spares() == 0
        assert backend._children("tools") == []
    else:
        assert made == 2 and backend._children("tools") == ["call-spare-1", "call-spare-2"]
    group = backend.create_call("7", limits)
    assert group == "tools/call-7" and all(d.is_dir() for d in fake.group_dirs(group))
    assert backend.read_limits(group).memory_max == 64 << 20 and backend.read_limits(group).pids_max == 20
    other = backend.create_call("8", Limits(pids_max=5))  # other limits: made fresh, the spare stays
    assert backend.read_limits(other).pids_max == 5
    expected = ["call-7", "call-8"] + (["call-spare-2"] if fake.version == 1 else [])
    assert backend._children("tools") == expected
    assert backend.fill_spares(Limits(pids_max=5), 1) == (1 if fake.version == 1 else 0)
    assert "call-spare-2" not in backend._children("tools")  # spares of the old limits went
    left = backend._children("tools")
    assert backend.cleanup_stale() == [f"tools/{name}" for name in left]  # spares are removed as stale calls
    assert backend._children("tools") == []


def test_create_call_applies_and_reads_back_limits(fake: FakeCgroupFs, backend: CgroupBackend) -> None:
    limits = Limits(memory_high=32 << 20, memory_max=64 << 20, pids_max=20, cpu_weight=50,
                    cpu_quota_us=20000, cpu_period_us=50000)
    group = backend.create_call("7", limits)
    assert group == "tools/call-7"
    assert all(d.is_dir() for d in fake.group_dirs(group))
    assert backend.read_limits(group) == limits


def test_fresh_group_is_unlimited(backend: CgroupBackend) -> None:
    group = backend.create_call("fresh")
    assert backend.read_limits(group) == Limits(cpu_weight=100, cpu_period_us=100000)


def test_none_leaves_other_limits_alone(backend: CgroupBackend) -> None:
    group = backend.create_call("1", Limits(memory_max=64 << 20, cpu_quota_us=30000))
    backend.set_limits(group, Limits(pids_max=5, cpu_period_us=60000))
    assert backend.read_limits(group) == Limits(memory_max=64 << 20, pids_max=5, cpu_weight=100,
                                                cpu_quota_us=30000, cpu_period_us=60000)


def test_limit_files_per_version(fake: FakeCgroupFs, backend: CgroupBackend) -> None:
    group = backend.create_call("f", Limits(memory_high=1 << 20, memory_max=2 << 20, pids_max=9,
                                            cpu_weight=200, cpu_quota_us=5000))
    memory = backend.path(group, "memory")
    if fake.version == 2:
        expected = {"memory.high": "1048576", "memory.max": "2097152", "memory.oom.group": "1",
                    "pids.max": "9", "cpu.weight": "200", "cpu.max": "5000 100000"}
        files = {name: (memory / name).read_text() for name in expected}
    else:
        expected = {"memory.soft_limit_in_bytes": "1048576", "memory.limit_in_bytes": "2097152",
                    "pids.max": "9", "cpu.shares": "2048", "cpu.cfs_quota_us": "5000"}
        files = {name: (backend.path(group, "cpu" if name.startswith("cpu.") else
                                     "pids" if name.startswith("pids") else "memory") / name).read_text()
                 for name in expected}
    assert files == expected


def test_swap_max_is_a_v2_knob(fake: FakeCgroupFs, backend: CgroupBackend) -> None:
    """memory.swap.max is written and read back on v2 and its events say when it was hit; v1 has
    no equivalent (memsw counts memory and swap together) and refuses it instead of dropping it."""
    if fake.version == 1:
        with pytest.raises(CgroupUnavailable, match="memory_swap_max"):
            backend.create_call("swap", Limits(memory_swap_max=0))
        return
    group = backend.create_call("swap", Limits(memory_max=64 << 20, memory_swap_max=16 << 20))
    assert (backend.path(group) / "memory.swap.max").read_text() == str(16 << 20)
    assert backend.read_limits(group).memory_swap_max == 16 << 20
    assert backend.knobs_hit(group) == []
    (backend.path(group) / "memory.swap.events").write_text("high 0\nmax 3\nfail 1\n")
    assert backend.knobs_hit(group) == ["memory.swap.max"]


def test_memory_and_pids_stats(fake: FakeCgroupFs, backend: CgroupBackend) -> None:
    group = backend.create_call("s")
    fresh = backend.memory_stats(group)
    assert (fresh.current, fresh.oom_kills, fresh.max_events) == (0, 0, 0)
    fake.trigger_oom(backend.path(group, "memory"))
    after = backend.memory_stats(group)
    assert after.oom_kills == 1 and after.max_events == 1
    assert (after.under_oom is None) == (fake.version == 2)
    assert backend.pids_stats(group).max_events == 0


def test_oom_notifier_fires_once(fake: FakeCgroupFs, backend: CgroupBackend) -> None:
    group = backend.create_call("n")
    with backend.oom_notifier(group) as notifier:
        assert notifier.fileno() >= 0
        assert not notifier.wait(0.05)
        fake.trigger_oom(backend.path(group, "memory"))
        assert notifier.wait(2.0)
        assert not notifier.fired()


def test_add_list_and_move_processes(backend: CgroupBackend, spawn) -> None:
    one, two = backend.create_call("1"), backend.create_call("2")
    child = spawn()
    backend.add_process(one, child.pid)
    assert backend.processes(one) == [child.pid]
    backend.add_process(two, child.pid)
    assert backend.processes(one) == [] and backend.processes(two) == [child.pid]
    assert backend.processes_recursive("tools") == [child.pid]


def test_add_dead_process_is_a_clear_error(backend: CgroupBackend, spawn) -> None:
    child = spawn()
    child.kill()
    child.wait()
    with pytest.raises(CgroupError) as info:
        backend.add_process(backend.create_call("d"), child.pid)
    assert info.value.errno == errno.ESRCH and "cgroup.procs" in str(info.value)


def test_kill_empties_the_group(backend: CgroupBackend, spawn) -> None:
    group = backend.create_call("k")
    children = [spawn() for _ in range(3)]
    for child in children:
        backend.add_process(group, child.pid)
    backend.kill(group)
    assert [c.wait(timeout=5) for c in children] == [-signal.SIGKILL] * 3
    assert backend.processes(group) == []


def test_freeze_and_thaw(backend: CgroupBackend) -> None:
    group = backend.create_call("z")
    assert not backend.is_frozen(group)
    backend.freeze(group)
    assert backend.is_frozen(group)
    backend.thaw(group)
    assert not backend.is_frozen(group)


def test_remove_kills_and_removes_everywhere(fake: FakeCgroupFs, backend: CgroupBackend, spawn) -> None:
    group = backend.create_call("r")
    backend.create(f"{group}/inner")
    child = spawn()
    backend.add_process(f"{group}/inner", child.pid)
    backend.remove(group, kill=True)
    assert child.wait(timeout=5) == -signal.SIGKILL
    assert not any(d.exists() for d in fake.group_dirs(group))
    assert not backend.exists(group)
    backend.remove(group)  # already gone: not an error


def test_remove_busy_group_without_kill_fails_clearly(backend: CgroupBackend, spawn) -> None:
    group = backend.create_call("b")
    backend.add_process(group, spawn().pid)
    with pytest.raises(CgroupError) as info:
        backend.remove(group, timeout=0.1)
    assert info.value.errno == errno.EBUSY and "busy" in str(info.value)
    assert backend.exists(group)


@pytest.mark.parametrize("enclosing", ["session.scope", ""], ids=["scope", "root"])
@pytest.mark.parametrize("version", [1, 2], ids=["v1", "v2"])
def test_abandoned_sibling_is_removed_and_its_agent_moved_out(tmp_path: Path, version: int, enclosing: str,
                                                               spawn) -> None:
    """What is left of a run that was SIGKILLed: its tool call is killed, its agent survives
    outside (on v2 in the enclosing cgroup's leaf, unless that is the root, which may hold
    processes), and nothing of its tree remains."""
    fake = FakeCgroupFs(tmp_path, version, enclosing=enclosing)
    ours = fake.backend()
    dead = ours.sibling("vigil-run-1")
    dead.ensure_layout()
    ours.ensure_layout()
    agent, tool = spawn(), spawn()
    dead.add_process("agent", agent.pid)
    dead.add_process(dead.create_call("7"), tool.pid)
    assert ours.siblings("vigil-run-") == ["vigil-run-1"]
    dead.remove_abandoned()
    assert tool.wait(timeout=5) == -signal.SIGKILL
    assert agent.poll() is None
    assert ours.siblings("vigil-run-") == [] and ours.exists("tools")
    leaf = fake.enclosing_dirs()[0] / "supervisor"
    home = leaf if fake.version == 2 and enclosing else fake.enclosing_dirs()[0]
    assert str(agent.pid) in fake.read(home / "cgroup.procs").split()
    assert leaf.exists() == (home == leaf)


@pytest.mark.parametrize("version", [1, 2], ids=["v1", "v2"])
def test_dead_runs_are_removed_and_live_ones_kept(tmp_path: Path, version: int, spawn) -> None:
    """Only a tree whose run's pid is gone is removed: ours, a live process's and a name that is
    no pid stay."""
    fake = FakeCgroupFs(tmp_path, version)
    ours = fake.backend()
    gone = spawn()
    gone.kill()
    gone.wait(timeout=5)
    alive = spawn()
    for name in (f"vigil-run-{gone.pid}", f"vigil-run-{alive.pid}", f"vigil-run-{os.getpid()}", "vigil-run-x"):
        ours.sibling(name).ensure_layout()
    assert ours.remove_dead_runs("vigil-run-") == [f"vigil-run-{gone.pid}"]
    assert sorted(ours.siblings("vigil-run-")) == sorted([f"vigil-run-{alive.pid}", f"vigil-run-{os.getpid()}",
                                                          "vigil-run-x"])


def test_v1_namesakes_elsewhere_are_removed_when_empty(tmp_path: Path, spawn) -> None:
    fake = FakeCgroupFs(tmp_path, 1)
    backend = fake.backend()
    for mount in fake.mounts:
        for where in ("other.service", "user.slice/session-3.scope"):
            (mount / where).parent.mkdir(exist_ok=True, parents=True)
            fake._populate((mount / where).parent)
            fake.mkdir(mount / where)
            fake.mkdir(mount / where / "vigil-run-5")
    busy = spawn()
    fake.write(tmp_path / "memory" / "user.slice/session-3.scope/vigil-run-5" / "cgroup.procs", str(busy.pid))
    with pytest.raises(CgroupError) as info:
        backend.remove_namesakes("vigil-run-5")
    assert info.value.errno == errno.EBUSY and "session-3.scope/vigil-run-5" in str(info.value)
    assert not (tmp_path / "memory/other.service/vigil-run-5").exists()
    assert (tmp_path / "memory/user.slice/session-3.scope/vigil-run-5").is_dir()
    assert not (tmp_path / "pids/user.slice/session-3.scope/vigil-run-5").exists()


def test_cleanup_stale_removes_only_call_groups(fake: FakeCgroupFs, backend: CgroupBackend, spawn) -> None:
    backend.create_call("a")
    backend.create_call("b")
    backend.create("tools/keep")
    child = spawn()
    backend.add_process("tools/call-a", child.pid)
    restarted = fake.backend()
    assert restarted.cleanup_stale() == ["tools/call-a", "tools/call-b"]
    assert child.wait(timeout=5) == -signal.SIGKILL
    assert not any(d.exists() for d in fake.group_dirs("tools/call-a") + fake.group_dirs("tools/call-b"))
    assert backend.exists("tools/keep") and backend.exists("agent")


@pytest.mark.parametrize("name", ["../escape", "/etc", "tools/../../escape", "tools/../.."])
def test_names_escaping_the_parent_are_refused(backend: CgroupBackend, tmp_path: Path, name: str) -> None:
    with pytest.raises(OutsideParentError):
        backend.create(name)
    with pytest.raises(OutsideParentError):
        backend.remove(name)
    assert not (tmp_path / "escape").exists()


def test_symlink_escaping_the_parent_is_refused(backend: CgroupBackend, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "pids.max").write_text("untouched")
    (outside / "memory.max").write_text("untouched")
    (outside / "memory.limit_in_bytes").write_text("untouched")
    os.symlink(outside, backend.path("tools", "memory") / "call-evil")
    with pytest.raises(OutsideParentError):
        backend.set_limits("tools/call-evil", Limits(memory_max=1 << 20))
    with pytest.raises(OutsideParentError):
        backend.remove("tools/call-evil", kill=True)
    assert backend.cleanup_stale() == []
    assert {f.read_text() for f in outside.iterdir()} == {"untouched"}


def test_read_only_cgroupfs_gives_a_domain_error(fake: FakeCgroupFs, backend: CgroupBackend) -> None:
    group = backend.create_call("ro")
    fake.readonly = True
    with pytest.raises(CgroupError) as info:
        backend.set_limits(group, Limits(pids_max=3))
    assert not isinstance(info.value, OSError)
    assert info.value.errno == errno.EROFS
    assert "read-only" in str(info.value) and "pids.max" in str(info.value)


def test_missing_control_file_names_the_file(backend: CgroupBackend) -> None:
    group = backend.create_call("m")
    (backend.path(group, "pids") / "pids.max").unlink()
    with pytest.raises(CgroupError) as info:
        backend.set_limits(group, Limits(pids_max=3))
    assert info.value.errno == errno.ENOENT
    assert info.value.path == backend.path(group, "pids") / "pids.max"


def test_unmanaged_controller_is_refused(fake: FakeCgroupFs) -> None:
    backend = fake.backend(("memory",))
    backend.ensure_layout()
    with pytest.raises(CgroupUnavailable):
        backend.set_limits(backend.create_call("u"), Limits(pids_max=3))


@pytest.mark.parametrize("bad", [{"memory_max": -1}, {"cpu_weight": 0}, {"cpu_weight": 10001},
                                 {"cpu_quota_us": 10}, {"cpu_period_us": 2_000_000}])
def test_invalid_limits_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        Limits(**bad)


@pytest.mark.parametrize("call_id", ["", "a/b", ".."])
def test_invalid_call_ids_are_rejected(backend: CgroupBackend, call_id: str) -> None:
    with pytest.raises(ValueError):
        backend.create_call(call_id)


# -- v2 specifics -----------------------------------------------------------------------------


def test_v2_enables_controllers_for_children(tmp_path: Path) -> None:
    fake = FakeCgroupFs(tmp_path, 2)
    backend = fake.backend()
    backend.ensure_layout()
    for group in ("", "tools"):
        assert set((backend.path(group) / "cgroup.subtree_control").read_text().split()) == {"cpu", "memory", "pids"}
    assert (backend.path(backend.create_call("x")) / "memory.max").exists()


def test_v2_without_delegation_says_so_and_leaves_nothing(tmp_path: Path) -> None:
    fake = FakeCgroupFs(tmp_path, 2, delegated=False, enclosing="session.scope")
    backend = fake.backend()
    with pytest.raises(CgroupUnavailable) as info:
        backend.ensure_layout()
    message = str(info.value)
    assert "not delegated" in message and "memory" in message and "Delegate=yes" in message
    assert "systemd-run --scope -p Delegate=yes" in message
    backend.remove_layout(kill=True)
    assert [p.name for p in fake.enclosing_dirs()[0].iterdir() if p.is_dir()] == []


def test_v2_processes_of_the_enclosing_cgroup_move_into_its_leaf_and_back(tmp_path: Path, spawn) -> None:
    """A login scope or a service holds processes (vigil among them): they move into its leaf so
    it may enable controllers for its children, and come back when the last run is removed."""
    fake = FakeCgroupFs(tmp_path, 2, enclosing="session.scope")
    scope = fake.enclosing_dirs()[0]
    shell, other = spawn(), spawn()
    for pid in (shell.pid, other.pid):
        fake.write(scope / "cgroup.procs", str(pid))
    first, second = fake.backend(), V2Backend(scope / "vigil-2", fs=fake)
    first.ensure_layout()
    second.ensure_layout()
    assert sorted(map(int, fake.read(scope / "supervisor" / "cgroup.procs").split())) == sorted([shell.pid, other.pid])
    assert fake.read(scope / "cgroup.procs") == ""
    assert set((scope / "cgroup.subtree_control").read_text().split()) == {"cpu", "memory", "pids"}
    assert (first.path(first.create_call("1", Limits(memory_max=1 << 20))) / "memory.max").read_text() == str(1 << 20)
    first.remove_layout()
    assert (scope / "supervisor").is_dir() and second.exists("tools")  # the other run still needs them
    second.remove_layout()
    assert sorted(map(int, fake.read(scope / "cgroup.procs").split())) == sorted([shell.pid, other.pid])
    assert [p for p in scope.iterdir() if p.is_dir()] == []
    assert (scope / "cgroup.subtree_control").read_text().split() == []


def test_v2_a_parent_below_the_root_needs_no_leaf(tmp_path: Path, spawn) -> None:
    """The root cgroup may hold processes and enable controllers: nothing moves there."""
    fake = FakeCgroupFs(tmp_path, 2, delegated=False)
    root = tmp_path / "unified"
    agent = spawn()
    fake.write(root / "cgroup.procs", str(agent.pid))
    backend = fake.backend()
    backend.ensure_layout()
    assert fake.read(root / "cgroup.procs").split() == [str(agent.pid)] and not (root / "supervisor").exists()
    backend.remove_layout()
    assert not backend.path("").exists() and (root / "cgroup.subtree_control").read_text().split() != []


def test_v2_parent_with_processes_needs_adoption(tmp_path: Path, spawn) -> None:
    fake = FakeCgroupFs(tmp_path, 2)
    backend = fake.backend()
    fake.mkdir(backend.path(""))
    agent = spawn()
    backend.add_process("", agent.pid)
    with pytest.raises(CgroupUnavailable) as info:
        backend.ensure_layout()
    assert info.value.errno == errno.EBUSY and "adopt_members" in str(info.value)
    backend.ensure_layout(adopt_members=True)
    assert backend.processes("agent") == [agent.pid] and backend.processes("") == []


def test_v2_kill_without_cgroup_kill_file(tmp_path: Path, spawn) -> None:
    fake = FakeCgroupFs(tmp_path, 2, has_kill=False)
    backend = fake.backend()
    backend.ensure_layout()
    group = backend.create_call("old-kernel")
    assert not (backend.path(group) / "cgroup.kill").exists()
    child = spawn()
    backend.add_process(group, child.pid)
    backend.kill(group)
    assert child.wait(timeout=5) == -signal.SIGKILL


def test_v1_freezer_missing_is_unavailable(tmp_path: Path) -> None:
    fake = FakeCgroupFs(tmp_path, 1)
    backend = V1Backend({"memory": tmp_path / "memory" / "vigil"}, fs=fake)
    backend.ensure_layout()
    with pytest.raises(CgroupUnavailable):
        backend.freeze(backend.create_call("nf"))


@pytest.mark.parametrize(("oom_kill", "group_kills", "processes"), [(2, 1, 1), (3, 1, 2), (1, 0, 1), (0, 0, 0)])
def test_killed_processes_undoes_the_group_kill_double_count(oom_kill: int, group_kills: int, processes: int) -> None:
    """What memory.events reads after a memory.oom.group kill of 1 and 2 processes (measured on
    6.1 and 6.12), and after a v1-style single kill."""
    stats = MemoryStats(current=0, peak=None, oom_kills=oom_kill, max_events=1, high_events=0, oom_events=1,
                        oom_group_kills=group_kills, under_oom=None)
    assert stats.killed_processes == processes
