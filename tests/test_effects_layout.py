"""The effects mirror against the BTF of effects.bpf.o, and the user-space halves of decoding
(path joining, DNS question parsing) on fixed inputs."""

from __future__ import annotations

import ctypes
import json
import subprocess

import pytest
from vigild.bpf import effects_events as fx
from vigild.bpf.objects import object_path

MIRRORS = {
    "file_event": fx.FileEventC,
    "net_event": fx.NetEventC,
    "dns_event": fx.DnsEventC,
    "effects_config": fx.EffectsConfigC,
}


def test_python_mirror_matches_effects_object() -> None:
    dump = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(object_path("effects.bpf.o"))],
                          capture_output=True, text=True, check=True).stdout
    structs = {t["name"]: t for t in json.loads(dump)["types"] if t.get("kind") == "STRUCT"}
    for name, mirror in MIRRORS.items():
        btf = structs[name]
        assert btf["size"] == ctypes.sizeof(mirror), name
        btf_members = [(m["name"], m["bits_offset"] // 8) for m in btf["members"]]
        py_members = [(f[0], getattr(mirror, f[0]).offset) for f in mirror._fields_]
        assert btf_members == py_members, name


@pytest.mark.parametrize(("base", "name", "expected"), [
    (b"", b"/etc/passwd", "/etc/passwd"),
    (b"/home/a/b", b"../c/f.txt", "/home/a/c/f.txt"),
    (b"/", b"x", "/x"),
    (b"/w", b"./d/../e", "/w/e"),
    (b"/w", b"/abs/../y", "/y"),
    (b"/w", b"", "/w"),
])
def test_join_path(base: bytes, name: bytes, expected: str) -> None:
    assert fx.join_path(base, name) == expected


def _query(name: str, qtype: int, qid: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00" + \
        qtype.to_bytes(2, "big") + b"\x00\x01"


def test_dns_question_parsed() -> None:
    assert fx.parse_dns_question(_query("api.example.com", 28)) == (0x1234, "api.example.com.", "AAAA")


@pytest.mark.parametrize("payload", [
    b"",
    b"\x12\x34\x81\x80" + b"\x00" * 8,  # a response
    _query("example.com", 1)[:-6],  # name cut short
    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",  # pointer in a query
])
def test_dns_non_queries_are_none(payload: bytes) -> None:
    assert fx.parse_dns_question(payload) is None
