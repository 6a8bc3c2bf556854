"""The C↔Python ABI: every ctypes mirror and the Kind table against the BTF of every shipped
object and of the headers, and proof that the check sees drift on either side.

Needs clang and bpftool (build tools), not root and not a BPF-capable kernel."""

from __future__ import annotations

import ctypes
import platform
import shutil
import subprocess
from enum import IntEnum
from pathlib import Path

import pytest
from vigild.bpf import abi, effects_events, events
from vigild.bpf.build import find_clang
from vigild.bpf.objects import object_path

DATA = Path(__file__).parent / "data"
HEADERS = object_path("events.h").parent
SHIPPED = sorted(p.name for p in HEADERS.glob("*.bpf.o"))


def _compile_layout(tmp_path: Path, include: Path) -> Path:
    obj = tmp_path / "layout.bpf.o"
    multiarch = f"-I/usr/include/{platform.machine()}-linux-gnu"  # asm/types.h on Debian
    subprocess.run([find_clang(), "-target", "bpf", "-O2", "-g", multiarch, f"-I{include}", "-c",
                    str(DATA / "layout.bpf.c"), "-o", str(obj)], check=True)
    return obj


@pytest.fixture(scope="module")
def layout_btf(tmp_path_factory: pytest.TempPathFactory) -> abi.Btf:
    return abi.Btf.of_object(_compile_layout(tmp_path_factory.mktemp("layout"), HEADERS))


def test_every_sensor_object_is_shipped() -> None:
    assert SHIPPED == ["control.bpf.o", "effects.bpf.o", "lineage.bpf.o", "sockdata.bpf.o", "tls.bpf.o"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_object_agrees_with_every_mirror_it_carries(name: str) -> None:
    btf = abi.Btf.of_object(object_path(name))
    problems, checked = abi.object_problems(btf, abi.shipped_mirrors(), abi.shipped_enums())
    assert problems == []
    assert "struct kind_stats" in checked and "struct tracked_info" in checked
    if btf.struct("event_header") is not None:  # every object that writes records carries the kinds
        assert "enum event_kind" in checked


def test_headers_agree_with_every_mirror(layout_btf: abi.Btf) -> None:
    problems, checked = abi.object_problems(layout_btf, abi.shipped_mirrors(), abi.shipped_enums())
    assert problems == []
    assert checked == {f"struct {n}" for n in abi.shipped_mirrors()} | {"enum event_kind"}


def test_the_shipped_objects_carry_the_records_they_emit() -> None:
    carried: set[str] = set()
    for name in SHIPPED:
        carried |= abi.object_problems(abi.Btf.of_object(object_path(name)), abi.shipped_mirrors(),
                                       abi.shipped_enums())[1]
    # The rest are built on the stack of inlined code and leave no type: the headers cover them.
    assert {"struct event_header", "struct exec_event", "struct tls_data_event", "struct file_event",
            "struct net_event", "struct dns_event", "struct effects_config", "struct lineage_config",
            "struct control_config", "struct tls_config", "struct exe_key", "enum event_kind"} <= carried


def test_kind_names_are_the_c_enumerators(layout_btf: abi.Btf) -> None:
    enum = layout_btf.enum("event_kind")
    assert enum is not None
    c_names = {v["val"]: v["name"].removeprefix("EVENT_").lower() for v in enum["values"]}
    del c_names[events.EVENT_KIND_MAX]
    assert events.KIND_NAMES == c_names
    assert all(events.kind_name(k) == n for k, n in c_names.items())
    assert events.kind_name(31) == "unknown_kind_31"


# ---- drift is seen ------------------------------------------------------------------------------

def _perturbed_copy(mirror: type[ctypes.Structure], field: str, ctype: type) -> type[ctypes.Structure]:
    fields = [(n, ctype if n == field else t) for n, t in mirror._fields_]
    return type(f"Drifted{mirror.__name__}", (ctypes.Structure,), {"_fields_": fields})


def test_a_widened_member_is_seen(layout_btf: abi.Btf) -> None:
    drifted = _perturbed_copy(events.EventHeader, "flags", ctypes.c_uint64)
    problems = abi.struct_problems(layout_btf, "event_header", drifted)
    assert any("event_header.flags: offset 4 size 4 in C, offset 8 size 8" in p for p in problems), problems
    assert any("event_header.ts_ns" in p for p in problems), problems


def test_a_narrowed_last_member_hidden_by_padding_is_seen(layout_btf: abi.Btf) -> None:
    # Narrowing the last member keeps every offset and, through alignment, the struct's size:
    # only the member sizes tell.
    drifted = _perturbed_copy(events.ExitEventC, "_pad", ctypes.c_uint16)
    assert ctypes.sizeof(drifted) == ctypes.sizeof(events.ExitEventC)
    problems = abi.struct_problems(layout_btf, "exit_event", drifted)
    assert problems == ["struct exit_event._pad: offset 76 size 4 in C, offset 76 size 2 in DriftedExitEventC"]


def test_a_renamed_or_reordered_member_is_seen(layout_btf: abi.Btf) -> None:
    fields = list(effects_events.DnsEventC._fields_)
    fields[1], fields[2] = fields[2], fields[1]
    drifted = type("DriftedDns", (ctypes.Structure,), {"_fields_": fields})
    problems = abi.struct_problems(layout_btf, "dns_event", drifted)
    assert any(p.startswith("struct dns_event: members ['hdr', 'fd', 'family'") for p in problems), problems


def test_a_drifted_kind_table_is_seen(layout_btf: abi.Btf) -> None:
    members = {k.name: k.value for k in events.Kind}
    moved = IntEnum("MovedKind", {**members, "NET_BIND": 30})
    problems = abi.enum_problems(layout_btf, "event_kind", moved, "EVENT_", {"EVENT_KIND_MAX": events.EVENT_KIND_MAX})
    assert problems == ["enum event_kind: EVENT_NET_BIND = 24 in C, 30 in MovedKind"]
    short = IntEnum("ShortKind", {k: v for k, v in members.items() if k != "DNS_QUERY"})
    problems = abi.enum_problems(layout_btf, "event_kind", short, "EVENT_", {"EVENT_KIND_MAX": events.EVENT_KIND_MAX})
    assert problems == ["enum event_kind: EVENT_DNS_QUERY = 27 in C, missing in ShortKind"]
    extra = IntEnum("ExtraKind", {**members, "HTTP_DATA": 10})
    problems = abi.enum_problems(layout_btf, "event_kind", extra, "EVENT_", {"EVENT_KIND_MAX": events.EVENT_KIND_MAX})
    assert problems == ["enum event_kind: EVENT_HTTP_DATA = 10 in ExtraKind, missing in C"]


def test_a_drifted_header_is_seen(tmp_path: Path) -> None:
    """The C side drifts: a copy of the headers with one member widened and one kind renumbered."""
    include = tmp_path / "include"
    include.mkdir()
    for header in ("events.h", "effects.h"):
        shutil.copy(HEADERS / header, include / header)
    text = (include / "effects.h").read_text()
    assert "\t__u32 mode;        /* open with O_CREAT" in text
    (include / "effects.h").write_text(text.replace("\t__u32 mode;        /* open with O_CREAT",
                                                    "\t__u64 mode;        /* open with O_CREAT"))
    text = (include / "events.h").read_text()
    assert "EVENT_OOM_KILL = 8," in text
    (include / "events.h").write_text(text.replace("EVENT_OOM_KILL = 8,", "EVENT_OOM_KILL = 9,"))
    btf = abi.Btf.of_object(_compile_layout(tmp_path, include))
    problems, _ = abi.object_problems(btf, abi.shipped_mirrors(), abi.shipped_enums())
    assert "enum event_kind: EVENT_OOM_KILL = 9 in C, 8 in Kind" in problems
    assert any(p.startswith("struct file_event.mode: offset 136 size 8 in C, offset 132 size 4") for p in problems), problems
    assert any(p.startswith("struct file_event: ") and "bytes in C" in p for p in problems), problems


def test_an_object_without_btf_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bpf.o"
    junk.write_bytes(b"not an ELF object")
    with pytest.raises(abi.BtfError, match="could not read the BTF of .*junk.bpf.o"):
        abi.Btf.of_object(junk)
