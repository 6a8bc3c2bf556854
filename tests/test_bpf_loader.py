"""The libbpf binding against real objects and the real kernel (the mirrors: test_bpf_abi.py)."""

from __future__ import annotations

import ctypes
import platform
import subprocess
from pathlib import Path

import pytest

from vigild.bpf.build import find_clang
from vigild.bpf.loader import BpfError, BpfObject, BpfUnavailable, check_host
from vigild.bpf.objects import object_path

DATA = Path(__file__).parent / "data"

def _compile(source: Path, obj: Path, *include: Path) -> None:
    multiarch = f"-I/usr/include/{platform.machine()}-linux-gnu"  # asm/types.h on Debian
    subprocess.run([find_clang(), "-target", "bpf", "-O2", "-g", multiarch, *(f"-I{d}" for d in include),
                    "-c", str(source), "-o", str(obj)], check=True)


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


def _symbol_file_offset(binary: Path, symbol: str) -> int:
    """File offset of a function, as libbpf wants it for attach by offset: its address minus
    the address of its section, plus the section's offset in the file."""
    symbols = subprocess.run(["readelf", "-sW", str(binary)], capture_output=True, text=True, check=True).stdout
    line = next(ln.split() for ln in symbols.splitlines() if ln.split()[-1:] == [symbol])
    address, section_index = int(line[1], 16), int(line[6])
    sections = subprocess.run(["readelf", "-SW", str(binary)], capture_output=True, text=True, check=True).stdout
    for ln in sections.splitlines():
        fields = ln.replace("[ ", "[").split()
        if fields and fields[0] == f"[{section_index}]":
            section_address, section_offset = int(fields[3], 16), int(fields[4], 16)
            return address - section_address + section_offset
    raise AssertionError(f"section {section_index} of {binary} not found")


@pytest.mark.usefixtures("root")
def test_uprobes_by_symbol_by_offset_and_per_pid(tmp_path: Path) -> None:
    target = tmp_path / "probe_target"
    subprocess.run(["cc", "-O2", "-o", str(target), str(DATA / "probe_target.c")], check=True)
    obj = tmp_path / "uprobe_count.bpf.o"
    _compile(DATA / "uprobe_count.bpf.c", obj)
    first = subprocess.Popen([str(target), "100"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    second = subprocess.Popen([str(target), "7"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    with BpfObject(obj) as bpf:
        bpf.load()
        bpf.attach_uprobe("count", str(target), "vigil_probe_target", cookie=0)  # every process
        offset = _symbol_file_offset(target, "vigil_probe_target")
        bpf.attach_uprobe("count", str(target), None, offset=offset, cookie=1)  # by offset
        bpf.attach_uprobe("count", str(target), "vigil_probe_target", pid=second.pid, cookie=2)  # one pid
        with pytest.raises(BpfError) as missing:
            bpf.attach_uprobe("count", str(target), "no_such_function")
        assert "no_such_function" in missing.value.step
        for proc in (first, second):
            proc.communicate(b"g", timeout=10)
            assert proc.returncode == 0
        calls = bpf.map("calls")
        counts = [int.from_bytes(calls.lookup(ctypes.c_uint32(i)), "little") for i in range(3)]
    assert counts == [107, 107, 7]


def test_build_names_the_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from vigild.bpf.build import BuildError

    monkeypatch.setenv("VIGIL_CLANG", "clang-that-is-not-installed")
    with pytest.raises(BuildError, match="Debian package 'clang-19'"):
        find_clang()
