"""The one check of the C↔Python ABI: ctypes mirrors and the Kind table against an object's BTF.

User space reads kernel records through ctypes structures and dispatches on enum event_kind; a
field moved in C and not in Python decodes garbage without any error. clang writes the layout of
every type an object uses into its BTF, so the compiled objects themselves are the reference:
`bpftool btf dump file X.bpf.o` gives it as JSON (bpftool already builds the objects; reading
the .BTF section by hand would duplicate its parser). Mirrors list their C names in BTF_MIRRORS.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from enum import IntEnum
from pathlib import Path
from typing import Any

MirrorMap = Mapping[str, type[ctypes.Structure]]


class BtfError(RuntimeError):
    """bpftool is missing or could not read an object's BTF."""


class Btf:
    """The types of one object's BTF, by id and by (kind, name)."""

    def __init__(self, types: list[dict[str, Any]]) -> None:
        self.by_id = {t["id"]: t for t in types}
        self.named: dict[tuple[str, str], dict[str, Any]] = {}
        for t in types:
            if t.get("name") and t["name"] != "(anon)":
                self.named.setdefault((t["kind"], t["name"]), t)

    @classmethod
    def of_object(cls, obj: Path) -> Btf:
        bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
        try:
            result = subprocess.run([bpftool, "-j", "btf", "dump", "file", str(obj)], capture_output=True,
                                    text=True, check=False)
        except OSError as exc:
            raise BtfError(f"cannot run bpftool to read the BTF of {obj}: {exc}") from exc
        if result.returncode != 0:
            raise BtfError(f"bpftool could not read the BTF of {obj}: {result.stderr.strip()}")
        return cls(json.loads(result.stdout)["types"])

    def struct(self, name: str) -> dict[str, Any] | None:
        return self.named.get(("STRUCT", name))

    def enum(self, name: str) -> dict[str, Any] | None:
        return self.named.get(("ENUM", name)) or self.named.get(("ENUM64", name))

    def size_of(self, type_id: int) -> int:
        """Bytes a member of this type takes: typedefs and qualifiers resolved, arrays multiplied."""
        t = self.by_id[type_id]
        while t["kind"] in ("TYPEDEF", "VOLATILE", "CONST", "RESTRICT", "TYPE_TAG"):
            t = self.by_id[t["type_id"]]
        if t["kind"] == "ARRAY":
            return t["nr_elems"] * self.size_of(t["type_id"])
        if t["kind"] == "PTR":
            return 8
        return int(t["size"])


def struct_problems(btf: Btf, c_name: str, mirror: type[ctypes.Structure]) -> list[str]:
    """How `mirror` differs from struct `c_name` in `btf`: size, member names in order, each
    member's offset and size. Empty when they agree."""
    st = btf.struct(c_name)
    if st is None:
        return [f"struct {c_name}: not in this object's BTF"]
    problems = []
    if st["size"] != ctypes.sizeof(mirror):
        problems.append(f"struct {c_name}: {st['size']} bytes in C, {ctypes.sizeof(mirror)} in {mirror.__name__}")
    c_members = [(m["name"], m["bits_offset"], btf.size_of(m["type_id"])) for m in st["members"]]
    py_members = [(f[0], getattr(mirror, f[0]).offset * 8, getattr(mirror, f[0]).size) for f in mirror._fields_]
    if [m[0] for m in c_members] != [m[0] for m in py_members]:
        problems.append(f"struct {c_name}: members {[m[0] for m in c_members]} in C, "
                        f"{[m[0] for m in py_members]} in {mirror.__name__}")
        return problems
    for (name, c_bits, c_size), (_, py_bits, py_size) in zip(c_members, py_members, strict=True):
        if c_bits % 8:
            problems.append(f"struct {c_name}.{name}: a bit field, which ctypes mirrors do not use")
        elif (c_bits // 8, c_size) != (py_bits // 8, py_size):
            problems.append(f"struct {c_name}.{name}: offset {c_bits // 8} size {c_size} in C, "
                            f"offset {py_bits // 8} size {py_size} in {mirror.__name__}")
    return problems


def enum_problems(btf: Btf, c_name: str, table: type[IntEnum], prefix: str,
                  extra: Mapping[str, int]) -> list[str]:
    """How `table` differs from enum `c_name`: every enumerator is PREFIX + a member name with the
    same value, or one of `extra` (constants that are not members, like a table size), and every
    member is an enumerator. Empty when they agree."""
    en = btf.enum(c_name)
    if en is None:
        return [f"enum {c_name}: not in this object's BTF"]
    c_values = {v["name"]: v["val"] for v in en["values"]}
    py_values = {prefix + m.name: m.value for m in table} | dict(extra)
    problems = [f"enum {c_name}: {name} = {value} in C, {py_values.get(name, 'missing')} in {table.__name__}"
                for name, value in c_values.items() if py_values.get(name) != value]
    problems += [f"enum {c_name}: {name} = {value} in {table.__name__}, missing in C"
                 for name, value in py_values.items() if name not in c_values]
    return problems


def object_problems(btf: Btf, mirrors: MirrorMap, enums: Iterable[tuple[str, type[IntEnum], str, Mapping[str, int]]]
                    ) -> tuple[list[str], set[str]]:
    """Check every mirror and enum this object's BTF carries. Returns the problems and the names
    (struct and enum) that were checked, so a caller can require each to be checked somewhere."""
    problems: list[str] = []
    checked: set[str] = set()
    for c_name, mirror in mirrors.items():
        if btf.struct(c_name) is not None:
            checked.add(f"struct {c_name}")
            problems += struct_problems(btf, c_name, mirror)
    for c_name, table, prefix, extra in enums:
        if btf.enum(c_name) is not None:
            checked.add(f"enum {c_name}")
            problems += enum_problems(btf, c_name, table, prefix, extra)
    return problems, checked


def shipped_mirrors() -> dict[str, type[ctypes.Structure]]:
    """Every mirror of every sensor, by C struct name (each mirror module has BTF_MIRRORS)."""
    from vigild.bpf import effects_events, events  # here: abi is a checker, the mirrors do not need it

    return {**events.BTF_MIRRORS, **effects_events.BTF_MIRRORS}


def shipped_enums() -> list[tuple[str, type[IntEnum], str, Mapping[str, int]]]:
    """Every C enum user space mirrors: (C name, table, enumerator prefix, constants beside it)."""
    from vigild.bpf import events

    return [("event_kind", events.Kind, "EVENT_", {"EVENT_KIND_MAX": events.EVENT_KIND_MAX})]
