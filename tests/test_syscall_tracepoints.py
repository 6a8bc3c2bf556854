"""The effects sensor on the per-syscall tracepoints: the syscall table in Python matches the
one in effects.bpf.c, tracefs is mounted where it is absent, the sensor loads and sees effects
through them, and a host without tracefs falls back to the raw sys_enter/sys_exit and says so.

Run on the host and in the pure cgroup v2 guests (6.1, 6.12) like tests/test_bpf_kernels.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from vigild.bpf import syscall_tracepoints
from vigild.bpf.effects import PROGRAMS, EffectsSensor, open_effects
from vigild.bpf.features import FEATURES, Features
from vigild.bpf.lineage import LineageSensor
from vigild.bpf.syscall_tracepoints import ENTER_SYSCALLS, EXIT_SYSCALLS, tracefs_root

BPF_SOURCES = Path(str(resources.files("vigild.bpf")))
# tracepoint name -> the x86-64 syscall name effects_syscalls.bpf.h gives its number
TRACEPOINT_ALIASES = {"sendfile64": "sendfile"}


def _c_block(source: str, start: str, end: str) -> str:
    text = (BPF_SOURCES / source).read_text()
    return text[text.index(start):text.index(end, text.index(start))]


def test_exit_table_matches_the_bpf_switch() -> None:
    """A syscall added to interesting_exit() but not to EXIT_SYSCALLS would never be attached:
    its effects would vanish with no error."""
    block = _c_block("effects_syscalls.bpf.h", "interesting_exit(long nr)", "return 0;")
    in_c = set(re.findall(r"case NR_(\w+):", block))
    assert in_c == {TRACEPOINT_ALIASES.get(name, name) for name in EXIT_SYSCALLS}


def test_enter_table_matches_the_bpf_filter() -> None:
    block = _c_block("effects.bpf.c", "on_enter_nr(struct pt_regs", "return 0;")
    assert set(re.findall(r"nr != NR_(\w+)", block)) == set(ENTER_SYSCALLS)


@pytest.fixture(scope="module")
def shared() -> Iterator[LineageSensor]:
    sensor = LineageSensor()
    yield sensor
    sensor.close()


@pytest.mark.usefixtures("root")
def test_per_syscall_programs_load_and_attach_to_every_syscall_of_the_table(shared: LineageSensor) -> None:
    root = tracefs_root()
    sensor = EffectsSensor(shared.shared_maps, tracefs=root)
    try:
        assert sensor.per_syscall and sensor.missing == {}
        assert sensor.attached == list(PROGRAMS)
        # one link per syscall the kernel has, plus sched_process_exit
        expected = len(EXIT_SYSCALLS) + len(ENTER_SYSCALLS) - len(sensor.absent_syscalls) + 1
        assert len(sensor.obj.links) == expected
        assert set(sensor.absent_syscalls) <= {"fchmodat2"}  # added in 6.6; every other one is older
    finally:
        sensor.close()


@pytest.mark.usefixtures("root")
def test_without_tracefs_the_raw_tracepoints_serve_and_it_is_said(
        shared: LineageSensor, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No tracefs and nowhere to mount one (the directory does not exist): the effects still
    load, on tp_btf/sys_enter and sys_exit, and the feature line says why not the cheap way."""
    monkeypatch.setattr(syscall_tracepoints, "TRACEFS", tmp_path / "absent")
    monkeypatch.setattr(syscall_tracepoints, "DEBUGFS_TRACING", tmp_path / "absent-too")
    said: list[str] = []
    features = Features(said.append)
    sensor = open_effects(shared.shared_maps, features)
    assert sensor is not None
    try:
        assert not sensor.per_syscall and sensor.attached == list(PROGRAMS)
        assert features.state("effects").available
        state = features.state("syscall_tracepoints")
        assert state is not None and not state.available
        assert state.reason == f"{tmp_path / 'absent'} does not exist (kernel built without tracefs?)"
        assert said == [f"syscall_tracepoints unavailable: {state.reason}; lost: "
                        f"{FEATURES['syscall_tracepoints']}"]
    finally:
        sensor.close()


MOUNT_CHECK = """
import logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(message)s")
from vigild.bpf import syscall_tracepoints as st
st.TRACEFS = Path(sys.argv[1])
st.DEBUGFS_TRACING = Path(sys.argv[1]) / "no-debugfs"
root = st.tracefs_root()
print(root, (root / "events" / "syscalls" / "sys_exit_openat").is_dir())
"""


@pytest.mark.usefixtures("root")
def test_tracefs_is_mounted_where_absent(tmp_path: Path) -> None:
    """In a private mount namespace (nothing leaks to the host), an empty directory standing for
    /sys/kernel/tracing gets tracefs mounted on it, and the log says so."""
    target = tmp_path / "tracing"
    target.mkdir()
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", MOUNT_CHECK,
                             str(target)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(target), "True"]
    assert f"effects: mounted tracefs at {target} for the per-syscall tracepoints" in result.stderr
    assert not any(target.iterdir())  # the host's view: still the empty directory
