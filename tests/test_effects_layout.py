"""The user-space halves of effects decoding (path joining, DNS question parsing, kind dispatch)
on fixed inputs; the mirror itself is checked by test_bpf_abi.py."""

from __future__ import annotations

import ctypes
import dataclasses

import pytest
from vigild.bpf import effects_events as fx
from vigild.bpf.clock import BootClock
from vigild.bpf.events import DecodeError, EventDecoder, Kind
from vigild.daemon.sinks.record import record_of


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


def _record(kind: int, struct: type[ctypes.Structure]) -> bytes:
    record = struct()
    record.hdr.kind = kind
    record.hdr.pid = 4242
    return bytes(record)


def _decoder() -> EventDecoder:
    decoder = EventDecoder(BootClock(samples=1))
    fx.register_effects(decoder)
    return decoder


@pytest.mark.parametrize("kind", [k for k in Kind if Kind.FILE_OPEN <= k < Kind.SOCK_DATA and k not in
                                  (Kind.EFFECTS_FD_FULL, Kind.EFFECTS_BUSY)])
def test_every_effect_kind_decodes_as_itself(kind: Kind) -> None:
    struct = (fx.FileEventC if kind in fx.FILE_KINDS else fx.DnsEventC if kind == Kind.DNS_QUERY
              else fx.NetEventC)
    event = _decoder().decode(_record(kind, struct))
    assert (event.type, event.kind, event.pid) == (kind.label, kind, 4242)


@pytest.mark.parametrize("kind", [Kind.EFFECTS_FD_FULL, 30, 31, 200])
def test_a_kind_without_a_decoder_is_a_counted_error(kind: int) -> None:
    decoder = _decoder()
    with pytest.raises(DecodeError, match=f"no decoder for event kind {kind}"):
        decoder.decode(_record(kind, fx.FileEventC))
    assert decoder.errors == {"unknown_kind": 1}


@pytest.mark.parametrize("kind", [30, Kind.FILE_OPEN])
def test_a_kind_routed_to_the_wrong_decoder_is_refused_not_guessed(kind: int) -> None:
    """A file record of a kind the file decoder does not know was once decoded as a chmod."""
    decoder = _decoder()
    if kind == Kind.FILE_OPEN:
        decoder.register(kind, fx._decode_net)
    else:
        decoder.register_record(kind, fx.FileDecoder(decoder).decode)
    with pytest.raises(DecodeError, match=f"event kind {kind} is not a"):
        decoder.decode(_record(kind, fx.FileEventC))
    assert decoder.errors == {"unknown_kind": 1}


def test_a_short_effect_record_is_counted_as_short() -> None:
    decoder = _decoder()
    with pytest.raises(DecodeError):
        decoder.decode(_record(Kind.NET_CONNECT, fx.NetEventC)[:-8])
    assert decoder.errors == {"short_record": 1}


def _file_open_record(name: bytes, open_flags: int = 0o1102, hflags: int = 0) -> bytes:
    record = fx.FileEventC()
    record.hdr.kind, record.hdr.flags, record.hdr.pid, record.hdr.comm, record.hdr.call_id = \
        Kind.FILE_OPEN, hflags, 4242, b"git", 7
    record.hdr.ts_ns = 123_456_789_012
    record.fd, record.open_flags, record.mode, record.ino, record.dev = 5, open_flags, 0o644, 99, 2049
    record.len[1] = len(name)
    return bytes(record)[:fx.FILE_DATA_OFFSET] + name


def test_a_decoded_file_open_is_what_its_dataclass_init_builds() -> None:
    """The file-open decoder builds the instance dict itself (no __init__): `type` and `ts`, then
    every field in the class's order (the record's key order), with the values __init__ would
    have kept; its record is the one the generic path builds from those fields, to the byte."""
    event = _decoder().decode(_file_open_record(b"/work/repo/.git/config"))
    names = [f.name for f in dataclasses.fields(fx.FileOpen)]
    assert list(vars(event)) == ["type", "ts", *names]
    built = fx.FileOpen(**{n: getattr(event, n) for n in names})
    assert event == built
    assert (event.path, event.fd, event.write, event.read, event.create, event.truncate, event.tool_call) == \
        ("/work/repo/.git/config", 5, True, True, True, True, 7)
    assert record_of(event) is vars(event)
    assert list(record_of(event).items()) == list(record_of(built).items())
    assert record_of(event).json() == record_of(built).json()


@pytest.mark.parametrize(("open_flags", "hflags"), [(0, 0), (0o1, fx.FILE_CREATED), (0o2, fx.FILE_PATH_TRUNCATED),
                                                   (0o3 | 0o100, 0), (0o2000000, fx.FILE_CREATED)])
def test_every_decoded_file_open_record_is_the_generic_one(open_flags: int, hflags: int) -> None:
    """Each access mode and flag: the template's copy with the record's values set is what the
    dataclass and the generic record builder make, JSON text included."""
    event = _decoder().decode(_file_open_record(b"src/a.py", open_flags, hflags))
    built = fx.FileOpen(**{f.name: getattr(event, f.name) for f in dataclasses.fields(fx.FileOpen)})
    assert (event.read, event.write, event.created, event.path_truncated) == \
        (open_flags & 3 in (0, 2), open_flags & 3 in (1, 2), bool(hflags & fx.FILE_CREATED),
         bool(hflags & fx.FILE_PATH_TRUNCATED))
    assert record_of(event).json() == record_of(built).json()


def test_the_record_of_a_decoded_open_carries_what_was_set_on_it_before_dispatch() -> None:
    """The scrubbed path and a relabelled tool call (set on the event after decoding) are in its
    record, and its JSON is encoded afresh; an attribute that is no field (one set later by a
    handler) makes the record be built from the fields instead, without it."""
    event = _decoder().decode(_file_open_record(b"/home/u/.cache/ghp_" + b"a1" * 20))
    first = record_of(event).json()
    event.path, event.tool_call = "/home/u/.cache/[REDACTED]", None
    record = record_of(event)
    assert record["path"] == "/home/u/.cache/[REDACTED]" and record["tool_call"] is None
    assert record.json() != first and "ghp_" not in record.json()
    event.agent_role = "tool"
    apart = record_of(event)
    assert apart is not vars(event) and "agent_role" not in apart
    assert list(apart) == ["type", "ts", *(f.name for f in dataclasses.fields(fx.FileOpen))]


@pytest.mark.parametrize("name", [b"a/b.py", b"./a", b"a/./b", b"a/../b", b"../../x", b"a//b", b"a/", b".hidden/x",
                                  b"a/.", b"a/..", b"/", b"//x", b"///x/./y/", b"/abs/p.py", b"x" * 300,
                                  b"caf\xc3\xa9.py", b"\xa9x/\xff.py", b"a.b/c."])
@pytest.mark.parametrize("base", [b"", b"/", b"/w", b"/w/", b"//srv/share", b"/home/u/.cache", b"/w/caf\xc3",
                                  b"w/rel", b"///"])
def test_join_path_is_normpath_of_the_joined_path(base: bytes, name: bytes) -> None:
    """A joined path with nothing to normalise is returned as it is; every other one as normpath
    gives it (a leading `//` folded to one)."""
    import posixpath
    joined = (name if name.startswith(b"/") or not base else base.rstrip(b"/") + b"/" + name).decode(
        "utf-8", "backslashreplace")
    norm = posixpath.normpath(joined) if name else base.decode("utf-8", "backslashreplace")
    expected = "/" + norm.lstrip("/") if name and norm.startswith("//") else norm
    fx._directory.cache_clear()
    assert fx.join_path(base, name) == expected


def _open_record(pid: int, path: bytes, folded: bool = False) -> bytes:
    record = fx.FileEventC()
    record.hdr.kind, record.hdr.pid, record.hdr.flags = Kind.FILE_OPEN, pid, fx.FILE_OPEN_FOLDED if folded else 0
    record.ino, record.dev, record.fd, record.calls = 77, 2049, 3, 40
    record.len[1] = len(path)
    return bytes(record)[:fx.FILE_DATA_OFFSET] + path


def test_a_folded_open_is_named_by_its_own_decoders_first_open() -> None:
    """The first-open paths live on the decoder (one per pipeline): a second pipeline in the same
    process does not name the first one's folded records, nor they its."""
    first, other = _decoder(), _decoder()
    assert first.decode(_open_record(4242, b"/srv/repo/setup.py")).path == "/srv/repo/setup.py"
    named = first.decode(_open_record(4242, b"", folded=True))
    assert (named.path, named.path_unknown, named.opens, named.folded) == ("/srv/repo/setup.py", False, 40, True)
    unnamed = other.decode(_open_record(4242, b"", folded=True))
    assert (unnamed.path, unnamed.path_unknown) == ("", True)
    assert first.decode(_open_record(4243, b"", folded=True)).path_unknown  # another thread's open


@pytest.mark.parametrize("kind", [Kind.FILE_OPEN, Kind.FILE_RENAME])
def test_a_file_record_cut_before_its_paths_end_is_counted_as_short(kind: Kind) -> None:
    """The lengths in the fixed part promise more path bytes than the record holds: refused and
    counted (the file-open fast path checks them as the other kinds' path does)."""
    record = fx.FileEventC()
    record.hdr.kind, record.hdr.pid = kind, 4242
    record.len[1], record.len[3] = 10, 10
    decoder = _decoder()
    with pytest.raises(DecodeError, match="shorter than its path lengths"):
        decoder.decode(bytes(record)[:fx.FILE_DATA_OFFSET] + b"/srv/x.py" + b"a" * 5)
    assert decoder.errors == {"short_record": 1}


def _open_of(ino: int, name: bytes = b"", folded: bool = False) -> bytes:
    record = fx.FileEventC()
    record.hdr.kind, record.hdr.pid, record.hdr.comm = Kind.FILE_OPEN, 77, b"python3"
    record.hdr.flags = fx.FILE_OPEN_FOLDED if folded else 0
    record.ino, record.dev, record.calls = ino, 2049, 5
    record.len[1] = len(name)
    return bytes(record)[:fx.FILE_DATA_OFFSET] + name


def test_folded_opens_are_named_from_the_newest_half_of_the_first_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first-open paths are bounded in two generations: well past the bound, the newest
    half of the bound are all still there to name folded records, the memory stays within the
    bound, and a folded record of a file whose first open was pushed out says its path is unknown."""
    monkeypatch.setattr(fx, "OPEN_PATHS_MAX", 64)
    decoder = _decoder()
    files = decoder._records[Kind.FILE_OPEN].__self__
    opened = 64 * 5 + 7
    for ino in range(1, opened + 1):
        decoder.decode(_open_of(ino, f"/src/m{ino}.py".encode()))
    assert len(files.open_paths) + len(files.older_paths) <= 64
    for ino in range(opened - 31, opened + 1):
        event = decoder.decode(_open_of(ino, folded=True))
        assert (event.path, event.path_unknown, event.opens, event.folded) == (f"/src/m{ino}.py", False, 5, True)
    gone = decoder.decode(_open_of(1, folded=True))
    assert (gone.path, gone.path_unknown) == ("", True)
