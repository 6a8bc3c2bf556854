"""Every shipped BPF object loads and attaches on the running kernel, and a traced write is seen.

Run on the host (6.18) and in the pure cgroup v2 guests on Debian's 6.1 and 6.12 kernels
(shared/v2-guest/run-in-guest.sh), where the effects object once failed the verifier's stack limit
and the control object a structure that changed in 6.2. Each object is loaded the way vigil does
it, through its sensor against lineage's shared maps, and its load+attach time is printed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from support.helpers import vigil_trace
from vigild.bpf.control import PROGRAMS as CONTROL_PROGRAMS
from vigild.bpf.control import ControlSensor
from vigild.bpf.effects import PROGRAMS as EFFECTS_PROGRAMS
from vigild.bpf.effects import EffectsSensor
from vigild.bpf.lineage import PROGRAMS as LINEAGE_PROGRAMS
from vigild.bpf.lineage import LineageSensor
from vigild.bpf.sockdata import SockDataSensor
from vigild.bpf.syscall_tracepoints import tracefs_root
from vigild.bpf.tls import TlsSensor

pytestmark = pytest.mark.usefixtures("root")

SHIPPED = sorted(p.name for p in Path(str(resources.files("vigild.bpf"))).glob("*.bpf.o"))


def _lineage(_shared: LineageSensor) -> tuple[Any, list[str]]:
    sensor = LineageSensor()
    return sensor, sensor.attached


def _tls(shared: LineageSensor) -> tuple[Any, list[str]]:
    """On 6.6+ the libraries are hooked per tracked process: the mmap hold is attached, and a link
    set is made (and closed) for this process to prove the kernel takes them."""
    sensor = TlsSensor(shared.shared_maps)
    hooked = sensor.attach_system_libraries()
    assert sensor.attach_failed == {}, sensor.files
    assert any("libssl.so" in path for path in hooked), hooked
    assert sensor.uprobe_mode == ("per-process" if _kernel() >= (6, 6) else "global"), sensor.mode_reason
    attached = [link.description for link in sensor.obj.links]
    for key, lib_file in sensor.lib_files.items():
        assert sensor.link_process(os.getpid(), key), sensor.link_failed
        attached.append(f"{len(sensor.proc_links[os.getpid()][key])} uprobe_multi links on {lib_file.path}")
    sensor.unlink_process(os.getpid())
    sensor.close_exited_links(wait=True)
    return sensor, attached


def _kernel() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int(minor)


def _effects(shared: LineageSensor) -> tuple[Any, list[str]]:
    """Both ways in: the per-syscall tracepoints vigil prefers, and the raw ones it falls back to
    (a refusal of the first is only said, so the host's trace tests would not catch it)."""
    per_syscall = EffectsSensor(shared.shared_maps, tracefs=tracefs_root())
    try:
        assert per_syscall.missing == {}
    finally:
        per_syscall.close()
    sensor = EffectsSensor(shared.shared_maps)
    assert sensor.missing == {}
    # one default, effects.bpf.c's: half the 16 MiB ring for effects, the rest for lifecycle events
    assert sensor.config.max_queued_bytes == 8 * 1024 * 1024
    return sensor, sensor.attached


def _control(shared: LineageSensor) -> tuple[Any, list[str]]:
    sensor = ControlSensor(shared.shared_maps)
    assert sensor.refused == {}
    return sensor, [p for p in CONTROL_PROGRAMS if p not in sensor.refused]


def _sockdata(shared: LineageSensor) -> tuple[Any, list[str]]:
    tracefs_root()
    sensor = SockDataSensor(shared.shared_maps)
    return sensor, [link.description for link in sensor.links]


LOADERS: dict[str, tuple[Callable[[LineageSensor], tuple[Any, list[str]]], tuple[str, ...]]] = {
    "lineage.bpf.o": (_lineage, LINEAGE_PROGRAMS),
    "tls.bpf.o": (_tls, ()),
    "effects.bpf.o": (_effects, tuple(EFFECTS_PROGRAMS)),
    "control.bpf.o": (_control, CONTROL_PROGRAMS),
    "sockdata.bpf.o": (_sockdata, ()),
}


@pytest.fixture(scope="module")
def shared() -> Iterator[LineageSensor]:
    sensor = LineageSensor()
    yield sensor
    sensor.close()


def test_every_shipped_object_is_checked() -> None:
    """A new object in bpf/ must get a loader here, or this file would stop proving anything."""
    assert SHIPPED == sorted(LOADERS)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_object_loads_and_attaches(name: str, shared: LineageSensor, capsys: pytest.CaptureFixture[str]) -> None:
    load, programs = LOADERS[name]
    start = time.perf_counter()
    sensor, attached = load(shared)
    elapsed = time.perf_counter() - start
    try:
        assert attached, f"{name}: nothing attached"
        assert set(programs) <= set(attached), (programs, attached)
    finally:
        sensor.close()
    with capsys.disabled():
        print(f"\n{name}: loaded and attached {len(attached)} programs/uprobes in {elapsed * 1000:.0f} ms", end="")


def test_traced_echo_reports_its_file_write(tmp_path: Path) -> None:
    """The must-hold on every kernel: `vigil trace -- bash -c 'echo x > FILE'` reports the
    file_write of FILE (two bytes, summed in the kernel, written out at close)."""
    target = tmp_path / "written.txt"
    result = vigil_trace(["--", "bash", "-c", f"echo x > {target}"], timeout=300)
    assert result.returncode == 0, result.stderr
    assert "unavailable" not in result.stderr, result.stderr
    writes = [e for e in result.of_type("file_write") if e["path"] == str(target)]
    assert len(writes) == 1, result.of_type("file_write")
    assert writes[0]["bytes"] == 2 and writes[0]["writes"] == 1
    assert target.read_text() == "x\n"
