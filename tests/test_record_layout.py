"""The fast record readers (bpf/layout.py) agree with the ctypes mirrors the ABI test holds to the
BTF, field by field; a record's JSON (orjson) reads back as the standard library's would, and what
orjson refuses is still encoded. Pure: no root, no BPF."""

from __future__ import annotations

import ctypes
import json
import random

import pytest
from vigild.bpf import effects_events, events
from vigild.bpf.layout import Layout
from vigild.daemon.sinks.record import Record, json_text

MIRRORS = {**events.BTF_MIRRORS, **effects_events.BTF_MIRRORS}
# where a record's variable tail starts: the fast reader stops there
TAILS = {events.ExecEventC: events.EXEC_DATA_OFFSET, events.TlsDataEventC: events.TLS_DATA_OFFSET,
         effects_events.FileEventC: effects_events.FILE_DATA_OFFSET,
         effects_events.DnsEventC: effects_events.DNS_DATA_OFFSET}


def _ctypes_fields(obj: ctypes.Structure, end: int, base: int = 0, prefix: str = "") -> dict[str, object]:
    """Every field of a ctypes object below `end`, named as Layout names them."""
    out: dict[str, object] = {}
    for name, ctype, *_ in type(obj)._fields_:
        offset = base + getattr(type(obj), name).offset
        if offset >= end or name.startswith("_"):
            continue
        value = getattr(obj, name)
        if isinstance(value, ctypes.Structure):
            out |= _ctypes_fields(value, end, offset, f"{prefix}{name}_")
        elif isinstance(value, bytes):  # a char array: ctypes stops at the first NUL
            out[prefix + name] = bytes(obj)[offset - base:offset - base + ctypes.sizeof(ctype)]
        elif hasattr(ctype, "_length_"):
            element = ctype._type_
            if element is ctypes.c_uint8:
                out[prefix + name] = bytes(value)
            else:
                out |= {f"{prefix}{name}_{i}": v for i, v in enumerate(value)}
        else:
            out[prefix + name] = value
    return out


@pytest.mark.parametrize("name", sorted(MIRRORS))
def test_layout_reads_what_the_ctypes_mirror_reads(name: str) -> None:
    mirror = MIRRORS[name]
    end = TAILS.get(mirror, ctypes.sizeof(mirror))
    layout = Layout(mirror, end)
    rng = random.Random(name)
    for _ in range(20):
        raw = rng.randbytes(ctypes.sizeof(mirror))
        fast = layout.unpack(raw)._asdict()
        assert fast == _ctypes_fields(mirror.from_buffer_copy(raw), end)
        assert len(fast) > 1


def test_layout_stops_at_the_tail_and_refuses_a_field_cut_in_two() -> None:
    layout = Layout(effects_events.FileEventC, effects_events.FILE_DATA_OFFSET)
    assert layout.size == effects_events.FILE_DATA_OFFSET
    with pytest.raises(ValueError, match="crosses the end"):
        Layout(effects_events.FileEventC, effects_events.FileEventC.ret.offset + 4)


def test_a_short_record_is_a_counted_decode_error_not_a_crash() -> None:
    decoder = events.EventDecoder(events.BootClock())
    effects_events.register_effects(decoder)
    hdr = events.EventHeader(kind=events.Kind.FILE_OPEN, pid=7, comm=b"cat")
    with pytest.raises(events.DecodeError):
        decoder.decode(bytes(hdr) + b"\0" * 8)
    assert decoder.errors["short_record"] == 1


@pytest.mark.parametrize("value", [
    {"type": "exec", "argv": ["naïve", "日本"], "n": 2**63 - 1, "none": None, "f": 1.5, "b": True},
    {"type": "x", "big": 2**70},  # orjson refuses integers beyond 64 bits
    {"type": "x", "s": "\udc80"},  # ... and lone surrogates
    {"type": "x", 3: "numbered key", "nested": {4: [1, 2]}},
    {"type": "x", "unknown": object.__new__(type("Opaque", (), {"__str__": lambda self: "opaque"}))},
])
def test_record_json_reads_back_as_the_standard_library_writes_it(value: dict) -> None:
    record = Record(value)
    assert json.loads(record.json()) == json.loads(json.dumps(value, default=str))
    assert record.json() is record.json()  # encoded once
    assert json_text(value) == record.json()


def test_a_layout_from_the_header_on_reads_the_rest_only() -> None:
    """fixed_part skips the header the decoder has already read: the same fields as the whole
    layout, less the header's, read from the same record."""
    mirror, end = effects_events.FileEventC, effects_events.FILE_DATA_OFFSET
    whole, rest = Layout(mirror, end), Layout(mirror, end, start=events.HEADER_SIZE)
    raw = random.Random(3).randbytes(end)
    expected = {k: v for k, v in whole.unpack(raw)._asdict().items() if not k.startswith("hdr_")}
    assert rest.unpack(raw)._asdict() == expected
    assert rest.size == whole.size == end
    with pytest.raises(ValueError, match="crosses the start"):
        Layout(mirror, end, start=effects_events.FileEventC.ret.offset + 4)
