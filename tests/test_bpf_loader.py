"""The libbpf binding and the event mirror, against real objects and the real kernel."""

from __future__ import annotations

import ctypes
import json
import platform
import subprocess
from pathlib import Path

import pytest

from vigild.bpf import events
from vigild.bpf.build import find_clang
from vigild.bpf.loader import BpfError, BpfObject, BpfUnavailable, check_host
from vigild.bpf.objects import object_path

DATA = Path(__file__).parent / "data"

MIRRORS = {
    "event_header": events.EventHeader,
    "fork_event": events.ForkEventC,
    "exec_event": events.ExecEventC,
    "exit_event": events.ExitEventC,
    "kind_stats": events.KindStatsC,
    "tracked_info": events.TrackedInfoC,
    "lineage_config": events.LineageConfigC,
}


def _btf_structs(obj: Path) -> dict[str, dict]:
    dump = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(obj)], capture_output=True, text=True,
                          check=True).stdout
    return {t["name"]: t for t in json.loads(dump)["types"] if t.get("kind") == "STRUCT"}


def _compile(source: Path, obj: Path, *include: Path) -> None:
    multiarch = f"-I/usr/include/{platform.machine()}-linux-gnu"  # asm/types.h on Debian
    subprocess.run([find_clang(), "-target", "bpf", "-O2", "-g", multiarch, *(f"-I{d}" for d in include),
                    "-c", str(source), "-o", str(obj)], check=True)


def _assert_mirrors(structs: dict[str, dict], names: list[str]) -> None:
    for name in names:
        mirror = MIRRORS[name]
        btf = structs[name]
        assert btf["size"] == ctypes.sizeof(mirror), name
        btf_members = [(m["name"], m["bits_offset"] // 8) for m in btf["members"]]
        py_members = [(f[0], getattr(mirror, f[0]).offset) for f in mirror._fields_]
        assert btf_members == py_members, name


def test_python_mirror_matches_events_h(tmp_path: Path) -> None:
    obj = tmp_path / "layout.bpf.o"
    _compile(DATA / "layout.bpf.c", obj, object_path("events.h").parent)
    _assert_mirrors(_btf_structs(obj), list(MIRRORS))


def test_python_mirror_matches_the_shipped_object() -> None:
    structs = _btf_structs(object_path("lineage.bpf.o"))
    present = [name for name in MIRRORS if name in structs]
    assert {"event_header", "exec_event", "tracked_info", "lineage_config", "kind_stats"} <= set(present)
    _assert_mirrors(structs, present)


def test_check_host_explains_missing_btf_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(BpfUnavailable) as info:
        check_host(tmp_path / "vmlinux")
    assert "\n" not in str(info.value)
    assert "no BTF" in str(info.value)


def test_open_failure_names_the_step(tmp_path: Path) -> None:
    bogus = tmp_path / "not-elf.bpf.o"
    bogus.write_bytes(b"this is not an ELF file")
    with pytest.raises(BpfError) as info:
        BpfObject(bogus)
    assert info.value.step == "open not-elf.bpf.o"
    assert info.value.errno != 0


@pytest.mark.usefixtures("root")
def test_verifier_rejection_carries_the_log(tmp_path: Path) -> None:
    obj = tmp_path / "unbounded.bpf.o"
    _compile(DATA / "unbounded.bpf.c", obj)
    with BpfObject(obj) as bpf, pytest.raises(BpfError) as info:
        bpf.load()
    err = info.value
    assert err.step == "load unbounded.bpf.o"
    assert err.errno == 13  # EACCES: the verifier said no
    assert "invalid access to map value" in err.log or "unbounded" in err.log


@pytest.mark.usefixtures("root")
def test_rodata_config_must_fit() -> None:
    class TooBig(ctypes.Structure):
        _fields_ = [("x", ctypes.c_char * 4096)]

    with BpfObject(object_path("lineage.bpf.o")) as bpf, pytest.raises(BpfError) as info:
        bpf.set_rodata(TooBig())
    assert "set config" in info.value.step
