"""Python mirror of events.h and the decoder from raw ring-buffer records to typed events.

The ctypes structures must match the C layout exactly: BTF_MIRRORS names the C struct each one
mirrors, and tests/test_bpf_abi.py checks every member's name, offset and size, and the Kind
table, against the BTF clang wrote into the compiled objects.
"""

from __future__ import annotations

import ctypes
import functools
import operator
import signal as signal_mod
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from ctypes import c_char, c_uint32, c_uint64
from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any, ClassVar

from vigild.bpf.clock import BootClock
from vigild.bpf.layout import Layout

TASK_COMM_LEN = 16
FILENAME_MAX_LEN = 4096
ARGS_MAX_LEN = 65536
KERNEL_SESSION_BIT = 1 << 52  # events.h: every session id stays below 2^53
COMMS_REMEMBERED = 4096  # decoded process names kept by the decoder


class Kind(IntEnum):
    """THE table of event kinds, whichever sensor emits them: the values of events.h's enum
    event_kind (tests/test_bpf_abi.py checks both ways against the BTF of every object that
    carries it) and, as `label`, the one name lost events, metric labels and logs use."""

    FORK = 1
    EXEC = 2
    EXIT = 3
    TLS_DATA = 4
    TLS_CLOSE = 5
    TLS_BUSY = 6
    MEM_SPIKE = 7
    OOM_KILL = 8
    FILE_OPEN = 16
    FILE_WRITE = 17
    FILE_UNLINK = 18
    FILE_RENAME = 19
    FILE_MKDIR = 20
    FILE_CHMOD = 21
    NET_CONNECT = 22
    NET_ACCEPT = 23
    NET_BIND = 24
    NET_CLOSE = 25
    NET_BYTES = 26
    DNS_QUERY = 27
    EFFECTS_FD_FULL = 28
    EFFECTS_BUSY = 29
    # plain socket payload (sockdata.bpf.c): the TLS data/close layouts under kinds of their own
    SOCK_DATA = 32
    SOCK_CLOSE = 33
    SOCK_BUSY = 34
    SOCK_CAPPED = 35
    RUSTLS_UNREAD = 36  # stats only: a rustls record tls.bpf.c saw but could not read
    TLS_MAPPED = 37

    @property
    def label(self) -> str:
        return self.name.lower()


EVENT_KIND_MAX = 40  # enum event_kind's EVENT_KIND_MAX: the size of the per-kind stats array
KIND_NAMES = {kind.value: kind.label for kind in Kind}


def kind_name(kind: int) -> str:
    """The name of a kind number. A number outside the table (an object newer than this mirror,
    which the ABI test rules out for the shipped ones) is still named, never a bare number."""
    return KIND_NAMES.get(kind, f"unknown_kind_{kind}")


TLS_CHUNK_MAX = 16384
TLS_DIR_WRITE = 0
TLS_DIR_READ = 1
TLS_LIB_OPENSSL = 1
TLS_LIB_GNUTLS = 2
SOCK_LIB_PLAIN = 3  # TlsData.lib of plain socket payload (sockdata.bpf.c)
SOCK_LIB_PIPE = 4  # ... and of pipe payload (MCP over stdio)
TLS_LIB_RUSTLS = 5  # rustls's record functions (conn_id: the connection's encrypter)
TLS_CALL_CAPPED = 1 << 0

EXEC_ARGS_TRUNCATED = 1 << 0
EXEC_FILENAME_TRUNCATED = 1 << 1
EXEC_ARGS_UNREADABLE = 1 << 2
EXEC_NEW_ROOT = 1 << 3
EXEC_CALL_START = 1 << 4
EXEC_HELD = 1 << 5
EXEC_EXE_HELD = 1 << 6

TRACK_CONTROLLED = 1 << 0
TRACK_CALL_CANDIDATE = 1 << 1
TRACK_OBSERVED = 1 << 2
TRACK_CALL_UNHELD = 1 << 3


class EventHeader(ctypes.Structure):
    _fields_ = [
        ("kind", c_uint32),
        ("flags", c_uint32),
        ("ts_ns", c_uint64),
        ("session_id", c_uint64),
        ("cgroup_id", c_uint64),
        ("pid", c_uint32),
        ("tid", c_uint32),
        ("ppid", c_uint32),
        ("uid", c_uint32),
        ("comm", c_char * TASK_COMM_LEN),
        ("call_id", c_uint32),
        ("_reserved", c_uint32),
    ]


class ForkEventC(ctypes.Structure):
    _fields_ = [("hdr", EventHeader)]


class ExecEventC(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("old_pid", c_uint32),
        ("filename_len", c_uint32),
        ("args_len", c_uint32),
        ("args_total", c_uint32),
        ("data", c_char * (FILENAME_MAX_LEN + ARGS_MAX_LEN)),
    ]


class ExitEventC(ctypes.Structure):
    _fields_ = [("hdr", EventHeader), ("exit_code", c_uint32), ("_pad", c_uint32)]


class KindStatsC(ctypes.Structure):
    _fields_ = [("emitted", c_uint64), ("dropped", c_uint64)]


class TrackedInfoC(ctypes.Structure):
    _fields_ = [("session_id", c_uint64), ("root_pid", c_uint32), ("depth", c_uint32), ("flags", c_uint32),
                ("call_id", c_uint32)]


class TlsDataEventC(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("conn_id", c_uint64),
        ("call_id", c_uint64),
        ("direction", c_uint32),
        ("lib", c_uint32),
        ("call_len", c_uint32),
        ("offset", c_uint32),
        ("len", c_uint32),
        ("peer_ino", c_uint32),
        ("data", c_char * TLS_CHUNK_MAX),
    ]


class TlsCloseEventC(ctypes.Structure):
    _fields_ = [("hdr", EventHeader), ("conn_id", c_uint64), ("lib", c_uint32), ("_pad", c_uint32)]


class TlsConfigC(ctypes.Structure):
    _fields_ = [("wakeup_bytes", c_uint32), ("max_call_bytes", c_uint32)]


class MemSpikeEventC(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("call_id", c_uint32),
        ("_pad", c_uint32),
        ("growth_bytes", c_uint64),
        ("call_rss_bytes", c_uint64),
        ("rss_bytes", c_uint64),
        ("window_ns", c_uint64),
    ]


class OomKillEventC(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("call_id", c_uint32),
        ("_pad", c_uint32),
        ("rss_bytes", c_uint64),
        ("total_vm_bytes", c_uint64),
    ]


class ControlConfigC(ctypes.Structure):
    _fields_ = [("spike_bytes", c_uint64), ("spike_window_ns", c_uint64), ("wakeup_bytes", c_uint32),
                ("page_shift", c_uint32)]


class LineageConfigC(ctypes.Structure):
    _fields_ = [("session_base", c_uint64), ("wakeup_bytes", c_uint32), ("match_comm", c_uint32),
                ("hold_new_exe", c_uint32), ("_pad", c_uint32)]


class ExeKeyC(ctypes.Structure):
    _fields_ = [("ino", c_uint64), ("dev", c_uint32), ("_pad", c_uint32)]


class TlsLinkKeyC(ctypes.Structure):
    _fields_ = [("tgid", c_uint32), ("_pad", c_uint32), ("file", ExeKeyC)]


class TlsMappedEventC(ctypes.Structure):
    _fields_ = [("hdr", EventHeader), ("file", ExeKeyC), ("held", c_uint32), ("_pad", c_uint32)]


# C struct name -> its mirror, for the ABI test; every mirror module has one.
BTF_MIRRORS: dict[str, type[ctypes.Structure]] = {
    "event_header": EventHeader, "fork_event": ForkEventC, "exec_event": ExecEventC, "exit_event": ExitEventC,
    "kind_stats": KindStatsC, "tracked_info": TrackedInfoC, "tls_data_event": TlsDataEventC,
    "tls_close_event": TlsCloseEventC, "tls_config": TlsConfigC, "mem_spike_event": MemSpikeEventC,
    "oom_kill_event": OomKillEventC, "control_config": ControlConfigC, "lineage_config": LineageConfigC,
    "exe_key": ExeKeyC, "tls_link_key": TlsLinkKeyC, "tls_mapped_event": TlsMappedEventC,
}

EXEC_DATA_OFFSET = ExecEventC.data.offset
TLS_DATA_OFFSET = TlsDataEventC.data.offset


# ---- typed events ------------------------------------------------------------------------------

@functools.cache
def field_names(cls: type) -> tuple[str, ...]:
    """An event class's field names, in order. Asked for per event (its record, a decoder
    building it from a dict), so answered from a cache, not by dataclasses.fields each time."""
    return tuple(f.name for f in fields(cls))


@functools.cache
def _field_values(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    """One getter of all an event class's field values (a C call, not a Python loop of getattr)."""
    return operator.attrgetter(*field_names(cls))


@dataclass
class ProcessEvent:
    """What every process event carries. ts_ns is wall-clock ns since the Unix epoch."""

    type: ClassVar[str] = "process"
    ts_ns: int
    session_id: int
    cgroup_id: int
    pid: int
    tid: int
    ppid: int
    uid: int
    comm: str
    # The tool call (vigil run) the process belongs to, from the kernel's tracked map, so every
    # event of every sensor is attributed without a user-space race. None outside tool calls.
    tool_call: int | None = field(default=None, kw_only=True)

    def items(self) -> Iterator[tuple[str, Any]]:
        """(name, value) of every field, in order (the record builds itself from these)."""
        cls = type(self)
        return zip(field_names(cls), _field_values(cls)(self))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, `type` first; sinks turn ts_ns into an RFC 3339 `ts`. A shallow
        copy by the class's field names (dataclasses.asdict deep-copies every value, the hot spot
        of a file-open burst); the fields are scalars or lists of strings, which no sink changes."""
        out: dict[str, Any] = {"type": self.type}
        out.update(self.items())
        return out


@dataclass
class ForkEvent(ProcessEvent):
    type: ClassVar[str] = "fork"


@dataclass
class ExecEvent(ProcessEvent):
    type: ClassVar[str] = "exec"
    filename: str = ""
    argv: list[str] = field(default_factory=list)
    argv_truncated: bool = False
    argv_bytes: int = 0
    filename_truncated: bool = False
    new_root: bool = False
    call_start: bool = False  # first exec of a child of a `vigil run` agent: a tool call starts
    held: bool = False  # ... and the kernel stopped it before its first instruction for placement
    # Set by tool-call control when that first exec is the agent's own: "relaunch" (the agent
    # re-executing itself) or "housekeeping" (a helper it runs for itself); None otherwise.
    agent_role: str | None = None
    exe_held: bool = False  # stopped until user space had hooked the TLS its executable carries


@dataclass
class ExitEvent(ProcessEvent):
    type: ClassVar[str] = "exit"
    exit_code: int | None = None
    signal: int | None = None
    signal_name: str | None = None
    core_dumped: bool = False


@dataclass
class TlsData(ProcessEvent):
    """One chunk of plaintext a TLS call moved. Internal: the pipeline feeds these to the stream
    decoder; they are not printed."""

    type: ClassVar[str] = "tls_data"
    conn_id: int = 0
    call_id: int = 0
    direction: int = TLS_DIR_WRITE
    lib: int = TLS_LIB_OPENSSL
    call_len: int = 0
    offset: int = 0
    capped: bool = False
    data: bytes = b""
    peer_ino: int = 0  # pipe payload: the inode of the writer's stdin


@dataclass
class TlsClose(ProcessEvent):
    type: ClassVar[str] = "tls_close"
    conn_id: int = 0
    lib: int = TLS_LIB_OPENSSL


@dataclass
class TlsMapped(ProcessEvent):
    """A tracked process mapped a TLS library it had no per-process uprobe link on; `held`: the
    kernel stopped it until the link is attached (the pipeline attaches it and lets it go)."""

    type: ClassVar[str] = "tls_mapped"
    file_dev: int = 0  # the kernel's s_dev (major << 20 | minor)
    file_ino: int = 0
    held: bool = False


class DecodeError(ValueError):
    """A record that does not match any known layout (counted by `reason`, never fatal)."""

    def __init__(self, message: str, reason: str = "short_record") -> None:
        super().__init__(message)
        self.reason = reason


def _text(raw: bytes) -> str:
    # backslashreplace keeps non-UTF-8 bytes visible and distinct instead of folding them to '?'.
    return raw.decode("utf-8", errors="backslashreplace")


def split_argv(area: bytes) -> list[str]:
    """The argv area is NUL-terminated strings back to back. A cut area ends mid-string: that
    partial last argument is kept, and the event's argv_truncated says so."""
    if not area:
        return []
    if area.endswith(b"\0"):
        area = area[:-1]
    return [_text(p) for p in area.split(b"\0")]


def decode_wait_status(code: int) -> tuple[int | None, int | None, bool]:
    """(exit_code, signal, core_dumped) from the task's exit_code as the kernel stores it."""
    sig = code & 0x7F
    if sig == 0:
        return (code >> 8) & 0xFF, None, False
    return None, sig, bool(code & 0x80)


def signal_name(sig: int) -> str:
    try:
        return signal_mod.Signals(sig).name
    except ValueError:
        return f"SIG{sig}"


HEADER = Layout(EventHeader)
HEADER_SIZE = ctypes.sizeof(EventHeader)

# A record's header as a named tuple with EventHeader's field names (`comm` keeps its NULs).
Header = Any
KindDecoder = Callable[[Header, bytes, dict[str, Any]], ProcessEvent]
RecordDecoder = Callable[[bytes], ProcessEvent]
_KIND = struct.Struct("<I")  # a header's first field: which decoder reads the record
if EventHeader.kind.offset != 0 or EventHeader.kind.size != _KIND.size:
    raise ImportError("EventHeader no longer starts with its 32-bit kind, which decode() reads first")

_LAYOUTS: dict[tuple[type[ctypes.Structure], int | None], Layout] = {}


def fixed_part(raw: bytes, struct: type[ctypes.Structure], data_offset: int | None = None) -> Any:
    """The fixed-size part of a record (up to `data_offset` for records with a variable tail,
    which are emitted with only the bytes used), as a named tuple of its mirror's fields:
    a numeric array's elements as `name_0`, ... (bpf/layout.py). The header the decoder has
    already read is not read again: a record that starts with one has no `hdr_*` fields."""
    layout = _LAYOUTS.get((struct, data_offset))
    if layout is None:
        start = HEADER_SIZE if struct._fields_[0][1] is EventHeader else 0
        layout = _LAYOUTS[(struct, data_offset)] = Layout(struct, data_offset, start)
    if len(raw) < layout.size:
        raise DecodeError(f"{struct.__name__} record of {len(raw)} bytes is shorter than {layout.size}")
    return layout.unpack(raw)


class EventDecoder:
    """Turns ring-buffer records into typed events, dispatching on the header's kind.

    Sensors add the kinds they emit with register(); the lineage and TLS kinds are built in.
    Records it cannot decode raise DecodeError and are counted by reason in `errors`."""

    def __init__(self, clock: BootClock) -> None:
        self.clock = clock
        self.errors: Counter[str] = Counter()
        self._comms: dict[bytes, str] = {}
        self._kinds: dict[int, KindDecoder] = {
            Kind.FORK: lambda hdr, raw, common: ForkEvent(**common),
            Kind.EXEC: _decode_exec,
            Kind.EXIT: _decode_exit,
            Kind.TLS_DATA: _decode_tls_data,
            Kind.TLS_CLOSE: _decode_tls_close,
            Kind.TLS_MAPPED: _decode_tls_mapped,
        }
        self._records: dict[int, RecordDecoder] = {}

    def register(self, kind: int, decoder: KindDecoder) -> None:
        self._kinds[kind] = decoder
        self._records.pop(kind, None)

    def register_record(self, kind: int, decoder: RecordDecoder) -> None:
        """A decoder that reads the whole record, header included, in one unpack (the file kinds,
        most of a burst: ~1 µs less per record than a header read, then the fixed part's). It
        builds the header's fields with `comm()` and `clock`, as `common()` does."""
        self._records[kind] = decoder
        self._kinds.pop(kind, None)

    def comm(self, raw: bytes) -> str:
        """A header's `comm` (NUL-padded bytes) as text; a burst's records share a handful of
        names: each is decoded once."""
        comm = self._comms.get(raw)
        if comm is None:
            if len(self._comms) >= COMMS_REMEMBERED:
                self._comms.clear()
            comm = self._comms[raw] = _text(raw.split(b"\0", 1)[0])
        return comm

    def common(self, hdr: Header) -> dict[str, Any]:
        """The header's fields as keyword arguments of every ProcessEvent."""
        comm = self._comms.get(hdr.comm)
        if comm is None:
            comm = self.comm(hdr.comm)
        return {
            "ts_ns": hdr.ts_ns + self.clock.offset_ns,  # clock.wall_ns, inline: one call less per record
            "session_id": hdr.session_id,
            "cgroup_id": hdr.cgroup_id,
            "pid": hdr.pid,
            "tid": hdr.tid,
            "ppid": hdr.ppid,
            "uid": hdr.uid,
            "comm": comm,
            "tool_call": hdr.call_id or None,
        }

    def decode(self, raw: bytes) -> ProcessEvent:
        if len(raw) < HEADER_SIZE:
            self.errors["short_record"] += 1
            raise DecodeError(f"record of {len(raw)} bytes is shorter than the event header")
        whole = self._records.get(_KIND.unpack_from(raw)[0])
        if whole is not None:
            try:
                return whole(raw)
            except DecodeError as exc:
                self.errors[exc.reason] += 1
                raise
        hdr = HEADER.unpack(raw)
        decoder = self._kinds.get(hdr.kind)
        if decoder is None:
            self.errors["unknown_kind"] += 1
            raise DecodeError(f"no decoder for event kind {hdr.kind} ({kind_name(hdr.kind)})", "unknown_kind")
        try:
            return decoder(hdr, raw, self.common(hdr))
        except DecodeError as exc:
            self.errors[exc.reason] += 1
            raise


def _decode_exit(hdr: Header, raw: bytes, common: dict[str, Any]) -> ExitEvent:
    ev = fixed_part(raw, ExitEventC)
    code, sig, core = decode_wait_status(ev.exit_code)
    return ExitEvent(**common, exit_code=code, signal=sig, signal_name=signal_name(sig) if sig else None,
                     core_dumped=core)


def _decode_tls_close(hdr: Header, raw: bytes, common: dict[str, Any]) -> TlsClose:
    close = fixed_part(raw, TlsCloseEventC)
    return TlsClose(**common, conn_id=close.conn_id, lib=close.lib)


def _decode_tls_mapped(hdr: Header, raw: bytes, common: dict[str, Any]) -> TlsMapped:
    ev = fixed_part(raw, TlsMappedEventC)
    return TlsMapped(**common, file_dev=ev.file_dev, file_ino=ev.file_ino, held=bool(ev.held))


def _decode_tls_data(hdr: Header, raw: bytes, common: dict[str, Any]) -> TlsData:
    fixed = fixed_part(raw, TlsDataEventC, TLS_DATA_OFFSET)
    data = raw[TLS_DATA_OFFSET:TLS_DATA_OFFSET + fixed.len]
    if len(data) != fixed.len:
        raise DecodeError("tls data record shorter than its declared length")
    return TlsData(**common, conn_id=fixed.conn_id, call_id=fixed.call_id, direction=fixed.direction,
                   lib=fixed.lib, call_len=fixed.call_len, offset=fixed.offset,
                   capped=bool(hdr.flags & TLS_CALL_CAPPED), data=data, peer_ino=fixed.peer_ino)


def _decode_exec(hdr: Header, raw: bytes, common: dict[str, Any]) -> ExecEvent:
    ev = fixed_part(raw, ExecEventC, EXEC_DATA_OFFSET)
    data = raw[EXEC_DATA_OFFSET:]
    if ev.filename_len + ev.args_len > len(data):
        raise DecodeError("exec record shorter than its declared lengths")
    filename = data[:ev.filename_len].split(b"\0", 1)[0]
    args = data[ev.filename_len:ev.filename_len + ev.args_len]
    return ExecEvent(
        **common,
        filename=_text(filename),
        argv=split_argv(args),
        argv_truncated=bool(hdr.flags & (EXEC_ARGS_TRUNCATED | EXEC_ARGS_UNREADABLE)),
        argv_bytes=ev.args_total,
        filename_truncated=bool(hdr.flags & EXEC_FILENAME_TRUNCATED),
        new_root=bool(hdr.flags & EXEC_NEW_ROOT),
        call_start=bool(hdr.flags & EXEC_CALL_START),
        held=bool(hdr.flags & EXEC_HELD),
        exe_held=bool(hdr.flags & EXEC_EXE_HELD),
    )
