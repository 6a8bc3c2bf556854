"""The v1 backend against the real kernel (this host's memory controller is v1).

Every group lives below the test process's own cgroup in each hierarchy, under a unique
``vigil-test-<pid>-<n>`` parent, and the fixture destroys that parent on the way out
(killing any member) without relying on the backend under test.
"""

from __future__ import annotations

import errno
import itertools
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cgroup_teardown import HOG, destroy
from vigild.cgroups import Limits, MoveError, OutsideParentError, V1Backend, detect, open_backend
from vigild.daemon.tools.teardown import Teardown

LIMIT = 64 << 20
_names = itertools.count()

@pytest.fixture
def cg(root: None) -> Iterator[V1Backend]:
    host = detect()
    memory = host.hierarchy_for("memory")
    if memory is None or memory.version != 1:
        pytest.skip(f"host has no cgroup v1 memory hierarchy (mode {host.mode}); "
                    "test_cgroups_v2_real.py covers this host")
    name = f"vigil-test-{os.getpid()}-{next(_names)}"
    backend = open_backend(name, ("memory", "pids", "cpu"), host=host)
    assert isinstance(backend, V1Backend)
    assert backend.parents["memory"].parent == memory.own_dir  # only below our own cgroup
    try:
        backend.ensure_layout()
        yield backend
    finally:
        for parent in set(backend.parents.values()):
            destroy(parent)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    """Children started by a test; killed and reaped at teardown whatever happened."""
    children: list[subprocess.Popen] = []
    yield children
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait()


def start_in(cg: V1Backend, group: str, procs: list, argv: list[str], **kw) -> subprocess.Popen:
    """Start ``argv`` already inside ``group``: the move happens between fork and exec."""
    # preexec_fn is safe here: the test process starts no threads, and the child only writes
    # its pid to cgroup.procs before exec, so it is charged to the group from its first byte.
    child = subprocess.Popen(argv, preexec_fn=lambda: cg.add_process(group, os.getpid()), **kw)  # noqa: PLW1509
    procs.append(child)
    return child


def test_memory_max_oom_kills_the_tool_and_notifies(cg: V1Backend, procs: list) -> None:
    group = cg.create_call("oom", Limits(memory_max=LIMIT))
    with cg.oom_notifier(group) as notifier:
        child = start_in(cg, group, procs, [sys.executable, "-c", HOG], stdout=subprocess.PIPE)
        out, _ = child.communicate(timeout=60)
        assert child.returncode == -signal.SIGKILL and b"survived" not in out
        assert notifier.wait(5.0)
    stats = cg.memory_stats(group)
    assert stats.oom_kills >= 1
    assert stats.max_events > 0
    assert stats.peak is not None and 0.9 * LIMIT <= stats.peak <= LIMIT
    assert cg.processes(group) == []


def test_no_oom_no_notification(cg: V1Backend, procs: list) -> None:
    group = cg.create_call("fits", Limits(memory_max=LIMIT))
    with cg.oom_notifier(group) as notifier:
        child = start_in(cg, group, procs, [sys.executable, "-c", "b = b'x' * (8 << 20)"])
        assert child.wait(timeout=30) == 0
        assert not notifier.wait(0.3)
    stats = cg.memory_stats(group)
    assert stats.oom_kills == 0 and stats.under_oom is False
    assert stats.peak is not None and stats.peak >= 8 << 20


def test_pids_max_stops_a_fork_loop(cg: V1Backend, procs: list, tmp_path: Path) -> None:
    group = cg.create_call("forks", Limits(pids_max=20))
    report = tmp_path / "report"
    script = f"""
import os, time
fails, kids = 0, 0
for _ in range(50):
    try:
        pid = os.fork()
    except BlockingIOError:
        fails += 1
        continue
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    kids += 1
open({str(report)!r}, "w").write(f"{{fails}} {{kids}}")
"""
    child = start_in(cg, group, procs, [sys.executable, "-c", script])
    assert child.wait(timeout=30) == 0
    fails, kids = map(int, report.read_text().split())
    assert kids == 19 and fails == 31  # the loop's own process counts against pids.max
    assert cg.pids_stats(group).max_events >= fails
    assert len(cg.processes(group)) == kids
    cg.kill(group)
    assert cg.processes(group) == []


def test_cpu_quota_throttles(cg: V1Backend, procs: list) -> None:
    group = cg.create_call("cpu", Limits(cpu_weight=50, cpu_quota_us=10000, cpu_period_us=100000))
    assert (cg.path(group, "cpu") / "cpu.shares").read_text().strip() == "512"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = start_in(cg, group, procs, [sys.executable, "-c",
                                        "import time\nt = time.time()\nwhile time.time() - t < 1: pass"])
    assert child.wait(timeout=30) == 0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert used < 0.35, f"10% quota over 1 s wall but the child used {used:.2f} s of CPU"
    stat = dict(line.split() for line in (cg.path(group, "cpu") / "cpu.stat").read_text().splitlines())
    assert int(stat["nr_throttled"]) > 0


def test_freeze_stops_and_thaw_resumes(cg: V1Backend, procs: list, tmp_path: Path) -> None:
    group = cg.create_call("freeze")
    counter = tmp_path / "counter"
    script = f"""
import os, time
fd = os.open({str(counter)!r}, os.O_WRONLY | os.O_CREAT)
i = 0
while True:
    i += 1
    os.pwrite(fd, b"%016d" % i, 0)
    time.sleep(0.01)
"""
    child = start_in(cg, group, procs, [sys.executable, "-c", script])

    def ticks() -> int:
        text = counter.read_text() if counter.exists() else ""
        return int(text) if text else 0

    deadline = time.monotonic() + 10
    while ticks() < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ticks() >= 3
    cg.freeze(group)
    assert cg.is_frozen(group)
    frozen_at = ticks()
    time.sleep(0.3)
    assert ticks() == frozen_at
    cg.thaw(group)
    assert not cg.is_frozen(group)
    time.sleep(0.3)
    assert ticks() > frozen_at
    cg.freeze(group)
    cg.kill(group)  # frozen tasks cannot die: kill must thaw them
    assert child.wait(timeout=5) == -signal.SIGKILL


def test_kill_reaches_grandchildren(cg: V1Backend, procs: list) -> None:
    group = cg.create_call("kill")
    shell = start_in(cg, group, procs, ["sh", "-c", "sleep 60 & sleep 60 & wait"])
    others = [start_in(cg, group, procs, ["sleep", "60"]) for _ in range(2)]
    deadline = time.monotonic() + 5
    while len(cg.processes(group)) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(cg.processes(group)) == 5
    cg.kill(group)
    assert [c.wait(timeout=5) for c in [shell, *others]] == [-signal.SIGKILL] * 3
    assert cg.processes_recursive(group) == []


def test_remove_leaves_nothing_in_any_hierarchy(cg: V1Backend, procs: list) -> None:
    group = cg.create_call("gone", Limits(memory_max=LIMIT, pids_max=50))
    cg.create(f"{group}/inner")
    start_in(cg, f"{group}/inner", procs, ["sleep", "60"])
    dirs = [cg.path(group, c) for c in cg.parents]
    assert all(d.is_dir() for d in dirs) and len(set(dirs)) == 4  # memory pids cpu freezer
    cg.remove(group, kill=True)
    assert [d for d in dirs if d.exists()] == []
    assert cg.exists("tools") and cg.exists("agent")


def test_cleanup_stale_after_a_crash(cg: V1Backend, procs: list) -> None:
    for call in ("a", "b"):
        group = cg.create_call(call, Limits(pids_max=10))
        start_in(cg, group, procs, ["sleep", "60"])
    restarted = V1Backend(cg.parents)
    assert restarted.cleanup_stale() == ["tools/call-a", "tools/call-b"]
    assert [c.wait(timeout=5) for c in procs] == [-signal.SIGKILL] * 2
    assert [d for c in cg.parents for d in cg.path("tools", c).iterdir() if d.is_dir()] == []
    assert restarted.exists("agent")


def test_refuses_to_leave_the_parent(cg: V1Backend) -> None:
    with pytest.raises(OutsideParentError):
        cg.remove("..", kill=True)
    with pytest.raises(OutsideParentError):
        cg.set_limits("../..", Limits(pids_max=1))
    assert all(p.is_dir() for p in cg.parents.values())


def test_a_spare_becomes_the_call_and_teardown_removes_it_off_thread(cg: V1Backend, procs: list) -> None:
    """The placement fast path on the real kernel: a spare made ahead is renamed into the call's
    group in every hierarchy, with its limits; the teardown thread kills what is left and
    removes it, then makes the spare the next call takes."""
    limits = Limits(memory_max=LIMIT, pids_max=16)
    teardown = Teardown()
    try:
        teardown.refill(cg, limits, 2)
        teardown.drain()
        assert cg.spares() == 2
        group = cg.create_call("41", limits)
        assert cg.spares() == 1 and not any(d.name.startswith("call-spare-1") for d in cg.path("tools").iterdir())
        for controller in ("memory", "pids", "cpu"):
            assert cg.path(group, controller).is_dir()
        assert cg.read_limits(group).memory_max == LIMIT and cg.read_limits(group).pids_max == 16
        child = start_in(cg, group, procs, ["sleep", "60"])
        teardown.remove(cg, group)
        teardown.refill(cg, limits, 2)
        teardown.drain()
        assert child.wait(timeout=5) == -signal.SIGKILL
        assert not cg.exists(group) and cg.spares() == 2 and teardown.failures == 0
    finally:
        teardown.close()


def _group_in(pid: int, hierarchy_root: Path) -> str:
    """The last component of pid's group in the hierarchy whose parent is ``hierarchy_root``."""
    text = Path(f"/proc/{pid}/cgroup").read_text()
    for line in text.splitlines():
        _, _, path = line.split(":", 2)
        if f"/{hierarchy_root.name}/" in path + "/":
            return path.rsplit("/", 1)[-1]
    raise AssertionError(f"pid {pid} is in no group below {hierarchy_root}: {text}")


def test_a_taken_spare_moves_the_process_through_descriptors_opened_ahead(cg: V1Backend, procs: list) -> None:
    """place_call's fast path: the spare's directories were resolved and its cgroup.procs opened
    when it was made; the rename and the pid's write go through them, in every hierarchy, and the
    descriptors are closed by the next fill, off the hot path."""
    limits = Limits(memory_max=LIMIT, pids_max=16)
    assert cg.fill_spares(limits, 1) == 1
    spare = cg._spares[0]
    assert spare.prepared and len(spare._procs) == len(cg._roots)
    held_fds = [Path(f"/proc/self/fd/{fd}").resolve() for fd in spare._procs]
    assert all(str(fd).endswith("/tools/call-spare-1/cgroup.procs") for fd in held_fds)
    child = subprocess.Popen(["sleep", "60"])
    procs.append(child)
    group = cg.place_call("55", limits, child.pid)
    assert group == "tools/call-55"
    for root in cg._roots:
        assert _group_in(child.pid, root) == "call-55"
        assert not (root / "tools" / "call-spare-1").exists()
    assert cg.processes(group) == [child.pid]
    assert cg.read_limits(group).pids_max == 16
    def open_on_the_call() -> int:
        return sum(1 for fd in Path("/proc/self/fd").iterdir()
                   if os.path.realpath(fd).endswith("/tools/call-55/cgroup.procs"))

    assert open_on_the_call() == len(cg._roots)  # still open until the next fill
    cg.fill_spares(limits, 1)
    assert spare._procs == () and cg.spares() == 1 and open_on_the_call() == 0


def test_a_spare_rename_failing_half_way_gives_every_hierarchy_its_name_back(
        cg: V1Backend, procs: list, caplog: pytest.LogCaptureFixture) -> None:
    """A name taken in the last hierarchy: the renames already made are undone, said, and the
    call's group is made the slow way, with the process in it everywhere."""
    limits = Limits(pids_max=16)
    assert cg.fill_spares(limits, 1) == 1
    last = cg._roots[-1]
    (last / "tools" / "call-66").mkdir()  # only there
    child = subprocess.Popen(["sleep", "60"])
    procs.append(child)
    group = cg.place_call("66", limits, child.pid)
    assert "cannot use the spare group tools/call-spare-1" in caplog.text
    for root in cg._roots:
        assert (root / "tools" / "call-spare-1").is_dir()  # its name back, in every hierarchy
        assert _group_in(child.pid, root) == "call-66"
    assert cg.read_limits(group).pids_max == 16


def test_a_failed_move_names_the_group_it_made(cg: V1Backend) -> None:
    """The caller removes what was made for a call whose process could not be moved in."""
    limits = Limits(pids_max=16)
    cg.fill_spares(limits, 1)
    gone = subprocess.Popen(["true"])
    gone.wait()
    with pytest.raises(MoveError) as info:
        cg.place_call("77", limits, gone.pid)
    assert info.value.group == "tools/call-77" and info.value.errno == errno.ESRCH
    assert cg.exists("tools/call-77")
