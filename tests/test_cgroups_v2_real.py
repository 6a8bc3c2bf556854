"""The v2 backend against the real kernel; runs only where cgroup2 carries the memory controller.

Hybrid hosts whose memory controller is on v1 legitimately lack it, so these tests are skipped
there even under VIGIL_REQUIRE_BPF=1 (the v1 suite covers such hosts). Where v2 memory exists
but is not delegated to the test's own cgroup, that is a host setup problem: ``need`` fails
under VIGIL_REQUIRE_BPF=1.
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cgroup_teardown import HOG, destroy
from support.require import need
from vigild.cgroups import LEAF, CgroupUnavailable, Limits, MoveError, V2Backend, delegated, detect, open_backend

LIMIT = 64 << 20
_names = itertools.count()

@pytest.fixture
def cg(root: None) -> Iterator[V2Backend]:
    host = detect()
    if host.v2 is None or "memory" not in host.v2.controllers:
        memory = host.hierarchy_for("memory")
        where = "not mounted at all" if memory is None else f"on cgroup v{memory.version}"
        pytest.skip(f"host has no cgroup v2 memory controller (mode {host.mode}, memory is {where}); "
                    "legitimately absent, so skipped even under VIGIL_REQUIRE_BPF=1")
    backend = open_backend(f"vigil-test-{os.getpid()}-{next(_names)}", host=host)
    assert isinstance(backend, V2Backend)
    try:
        try:
            backend.ensure_layout()
        except CgroupUnavailable as exc:
            need(False, f"cgroup v2 memory is not delegated to the test's cgroup: {exc}")
        yield backend
    finally:
        destroy(backend.parent)
        backend.remove_layout()  # gives the enclosing cgroup back (its processes leave the leaf)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    children: list[subprocess.Popen] = []
    yield children
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait()


@pytest.fixture
def core(root: None) -> Iterator[V2Backend]:
    """A controller-less v2 backend: freeze, kill, membership and removal are core cgroup2
    features, so they are tested on the real kernel even on hybrid hosts (no memory on v2)."""
    host = detect()
    if host.v2 is None:
        pytest.skip(f"host has no cgroup2 mount at all (mode {host.mode}); legitimately absent")
    backend = V2Backend(host.v2.own_dir / f"vigil-test-{os.getpid()}-{next(_names)}", controllers=())
    try:
        backend.ensure_layout()
        yield backend
    finally:
        destroy(backend.parent)


def start_in(cg: V2Backend, group: str, procs: list, argv: list[str], **kw) -> subprocess.Popen:
    # preexec_fn is safe here: the test process starts no threads, and the child only writes
    # its pid to cgroup.procs before exec, so it is charged to the group from its first byte.
    child = subprocess.Popen(argv, preexec_fn=lambda: cg.add_process(group, os.getpid()), **kw)  # noqa: PLW1509
    procs.append(child)
    return child


def test_enclosing_cgroup_passes_controllers_down_and_is_given_back(cg: V2Backend) -> None:
    """The test's own cgroup (a login scope or a service in the guest) holds processes: they are
    in its leaf while the layout exists, and back, with the leaf gone, once it is removed. The
    root cgroup may hold processes and enable controllers at once: there nothing moves."""
    enclosing, leaf = cg.enclosing, cg.enclosing / LEAF
    assert {"memory", "pids", "cpu"} <= set((enclosing / "cgroup.subtree_control").read_text().split())
    is_root = not (enclosing / "cgroup.type").exists()
    mine = str(os.getpid())
    assert mine in ((enclosing if is_root else leaf) / "cgroup.procs").read_text().split()
    assert leaf.exists() != is_root
    destroy(cg.parent)
    cg.remove_layout()
    assert not leaf.exists() and mine in (enclosing / "cgroup.procs").read_text().split()
    if not is_root:
        assert (enclosing / "cgroup.subtree_control").read_text().split() == []


def test_memory_max_group_oom_and_notifier(cg: V2Backend, procs: list) -> None:
    group = cg.create_call("oom", Limits(memory_max=LIMIT))
    assert (cg.path(group) / "memory.oom.group").read_text().strip() == "1"
    with cg.oom_notifier(group) as notifier:
        child = start_in(cg, group, procs, [sys.executable, "-c", HOG], stdout=subprocess.PIPE)
        out, _ = child.communicate(timeout=60)
        assert child.returncode == -signal.SIGKILL and b"survived" not in out
        assert notifier.wait(5.0)
    stats = cg.memory_stats(group)
    assert stats.oom_kills >= 1 and stats.max_events > 0 and stats.oom_group_kills >= 1
    assert stats.killed_processes == 1, stats  # memory.events reads oom_kill 2 for this one process
    if stats.peak is not None:  # memory.peak exists from 5.19
        assert 0.9 * LIMIT <= stats.peak <= LIMIT


def test_group_oom_kills_every_member_counted_once(cg: V2Backend, procs: list) -> None:
    """memory.oom.group kills the bystander with the hog: two processes, counted as two."""
    group = cg.create_call("oom2", Limits(memory_max=LIMIT))
    bystander = start_in(cg, group, procs, ["sleep", "60"])
    hog = start_in(cg, group, procs, [sys.executable, "-c", HOG], stdout=subprocess.PIPE)
    hog.communicate(timeout=60)
    assert hog.returncode == -signal.SIGKILL and bystander.wait(timeout=10) == -signal.SIGKILL
    stats = cg.memory_stats(group)
    assert stats.oom_group_kills == 1 and stats.killed_processes == 2, stats


def test_memory_high_throttles_without_killing(cg: V2Backend, procs: list) -> None:
    group = cg.create_call("high", Limits(memory_high=32 << 20))
    child = start_in(cg, group, procs, [sys.executable, "-c", "b = b'x' * (48 << 20)"])
    assert child.wait(timeout=60) == 0
    stats = cg.memory_stats(group)
    assert stats.high_events and stats.high_events > 0 and stats.oom_kills == 0


def test_swap_max_is_written_and_read_back(cg: V2Backend, procs: list) -> None:
    """memory.swap.max on a real v2 kernel: set, read back, and a call that stays in RAM is not
    said to have hit it."""
    group = cg.create_call("swap", Limits(memory_max=LIMIT, memory_swap_max=0))
    assert (cg.path(group) / "memory.swap.max").read_text().strip() == "0"
    assert cg.read_limits(group).memory_swap_max == 0
    child = start_in(cg, group, procs, [sys.executable, "-c", "b = b'x' * (8 << 20)"])
    assert child.wait(timeout=60) == 0
    assert cg.knobs_hit(group) == []


def test_pids_max_stops_a_fork_loop(cg: V2Backend, procs: list) -> None:
    group = cg.create_call("forks", Limits(pids_max=20))
    script = ("import os, time\nfor _ in range(50):\n    try:\n        pid = os.fork()\n"
              "    except BlockingIOError:\n        continue\n    if pid == 0:\n"
              "        time.sleep(60)\n        os._exit(0)\n")
    assert start_in(cg, group, procs, [sys.executable, "-c", script]).wait(timeout=30) == 0
    assert cg.pids_stats(group).max_events >= 30
    cg.kill(group)
    assert cg.processes(group) == []


def test_freeze_thaw_and_kill_frozen(cg: V2Backend, procs: list) -> None:
    group = cg.create_call("freeze")
    child = start_in(cg, group, procs, ["sleep", "60"])
    cg.freeze(group)
    assert cg.is_frozen(group)
    cg.thaw(group)
    assert not cg.is_frozen(group)
    cg.freeze(group)
    cg.kill(group)
    assert child.wait(timeout=5) == -signal.SIGKILL


def test_remove_and_cleanup_stale(cg: V2Backend, procs: list) -> None:
    for call in ("a", "b"):
        start_in(cg, cg.create_call(call), procs, ["sleep", "60"])
    assert V2Backend(cg.parent).cleanup_stale() == ["tools/call-a", "tools/call-b"]
    assert [c.wait(timeout=5) for c in procs] == [-signal.SIGKILL] * 2
    assert not cg.exists("tools/call-a") and not cg.exists("tools/call-b") and cg.exists("agent")


def test_systemd_delegation_mark_is_read(core: V2Backend) -> None:
    """systemd's trusted.delegate xattr on a cgroup (Delegate=yes) marks it and its subtree
    delegated; an unmarked cgroup is not (vigild then keeps tool calls below its own cgroup)."""
    mount = detect().v2.mount
    marked, plain = core.path("agent"), core.path("tools")
    assert not delegated(marked, mount) and not delegated(plain, mount)
    os.setxattr(marked, "trusted.delegate", b"1")
    core.create("agent/inner")
    assert delegated(marked, mount) and delegated(core.path("agent/inner"), mount)
    assert not delegated(plain, mount)
    core.create("tools/user@1000.service")
    core.create("tools/user@1000.service/app.slice")
    os.setxattr(core.path("tools/user@1000.service"), "trusted.delegate", b"1")
    assert not delegated(core.path("tools/user@1000.service/app.slice"), mount)  # the user manager's own


def test_core_membership_freeze_kill(core: V2Backend, procs: list) -> None:
    group = core.create_call("core")
    assert (core.path(group) / "cgroup.kill").exists(), "cgroup.kill needs Linux 5.14+"
    children = [start_in(core, group, procs, ["sleep", "60"]) for _ in range(2)]
    assert core.processes(group) == sorted(c.pid for c in children)
    core.freeze(group)
    assert core.is_frozen(group)
    core.thaw(group)
    assert not core.is_frozen(group)
    core.freeze(group)
    core.kill(group)  # cgroup.kill works on a frozen group
    assert [c.wait(timeout=5) for c in children] == [-signal.SIGKILL] * 2
    assert core.processes(group) == []


def test_core_remove_and_cleanup_stale(core: V2Backend, procs: list) -> None:
    kept = core.create_call("kept")
    core.create(f"{kept}/inner")
    start_in(core, f"{kept}/inner", procs, ["sleep", "60"])
    core.create_call("idle")
    assert V2Backend(core.parent, controllers=()).cleanup_stale() == ["tools/call-idle", "tools/call-kept"]
    assert procs[0].wait(timeout=5) == -signal.SIGKILL
    assert [d for d in core.path("tools").iterdir() if d.is_dir()] == []
    core.remove("", kill=True)
    assert not core.parent.exists()


def _own_group(pid: int) -> str:
    """pid's cgroup2 group path, as /proc says it."""
    return next(line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                if line.startswith("0::"))


def test_place_call_makes_the_group_limits_it_and_moves_the_process(cg: V2Backend, procs: list) -> None:
    """The held call's path on cgroup2 (no rename): its group made, oom.group set, the limits
    written (a quota alone gets the kernel's default period), the process moved in, all through
    paths worked out once for these limits."""
    limits = Limits(memory_max=LIMIT, pids_max=16, cpu_quota_us=30000)
    for call_id in ("81", "82"):  # the second from the remembered plan
        child = subprocess.Popen(["sleep", "60"])
        procs.append(child)
        group = cg.place_call(call_id, limits, child.pid)
        assert group == f"tools/call-{call_id}"
        assert _own_group(child.pid).endswith(f"/tools/call-{call_id}")
        read = cg.read_limits(group)
        assert (read.memory_max, read.pids_max, read.cpu_quota_us, read.cpu_period_us) == (LIMIT, 16, 30000, 100000)
        assert (cg.path(group) / "memory.oom.group").read_text().strip() == "1"
    other = cg.place_call("83", Limits(pids_max=5), None)  # other limits: planned anew
    assert cg.read_limits(other).pids_max == 5 and cg.read_limits(other).memory_max is None


def test_place_call_of_a_group_name_still_there_and_a_failed_move(core: V2Backend, procs: list) -> None:
    """A call id whose old group is still there takes the general way (the group is kept, the
    process moved in); a process gone before its move raises MoveError naming the group made."""
    core.create("tools/call-91")
    child = subprocess.Popen(["sleep", "60"])
    procs.append(child)
    assert core.place_call("91", None, child.pid) == "tools/call-91"
    assert _own_group(child.pid).endswith("/tools/call-91")
    gone = subprocess.Popen(["true"])
    gone.wait()
    with pytest.raises(MoveError) as info:
        core.place_call("92", None, gone.pid)
    assert info.value.group == "tools/call-92" and info.value.errno == errno.ESRCH
    assert core.exists("tools/call-92")
    with pytest.raises(ValueError):
        core.place_call("../x", None, None)
