"""The hand-written ELF symbol reader behind per-process TLS links agrees with pyelftools (what
libbpf resolves for the global uprobes) on the libraries vigil hooks, and refuses what it cannot
read with a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from vigild.bpf.tls import LIBRARIES, _ldconfig_libraries
from vigild.bpf.uprobe_multi import symbol_offsets


def _reference(path: str, names: list[str]) -> dict[str, int]:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        found: dict[str, int] = {}
        for sym in elf.get_section_by_name(".dynsym").iter_symbols():
            name = sym.name.split("@", 1)[0]
            if name in names and sym["st_shndx"] != "SHN_UNDEF" and name not in found:
                seg = next(s for s in loads if s["p_vaddr"] <= sym["st_value"] < s["p_vaddr"] + s["p_memsz"])
                found[name] = sym["st_value"] - seg["p_vaddr"] + seg["p_offset"]
    return found


LIBS = _ldconfig_libraries()


@pytest.mark.parametrize(("path", "lib"), LIBS, ids=[Path(p).name for p, _ in LIBS])
def test_offsets_match_pyelftools(path: str, lib: int) -> None:
    _name, calls, free_symbol = LIBRARIES[lib]
    names = [c[0] for c in calls] + [free_symbol]
    got = symbol_offsets(path, names)
    assert got == _reference(path, names)
    assert len(set(got.values())) == len(names)  # distinct functions, none left at 0


def test_the_system_has_a_tls_library() -> None:
    assert LIBS, "ldconfig lists no libssl or libgnutls"


def test_missing_symbol_and_non_elf_are_refused(tmp_path: Path) -> None:
    path = next(p for p, _ in LIBS)
    with pytest.raises(KeyError, match="no_such_function"):
        symbol_offsets(path, ["no_such_function"])
    text = tmp_path / "script.py"
    text.write_text("print('not an ELF file')\n")
    with pytest.raises(ValueError, match="not a little-endian ELF64"):
        symbol_offsets(str(text), ["main"])
    # another ELF than the TLS libraries: this process's libc (an interpreter may export no `main`)
    libc = next(line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
                if "/libc.so" in line or "/libc-" in line)
    assert symbol_offsets(libc, ["malloc"])["malloc"] > 0
