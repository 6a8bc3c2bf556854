"""Python mirror of effects.h and the decoders from effect records to typed events.

The ctypes structures must match the C layout exactly; tests/test_bpf_abi.py checks them (BTF_MIRRORS)
against the BTF of effects.bpf.o. Paths a process named are joined to the directory the kernel
resolved and normalised here (`..` is folded lexically, as the process's string read).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import ipaddress
import posixpath
import socket
from ctypes import c_char, c_int32, c_int64, c_uint8, c_uint16, c_uint32, c_uint64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from vigild.bpf.clock import rfc3339
from vigild.bpf.events import (
    DecodeError,
    EventDecoder,
    HEADER,
    EventHeader,
    Header,
    Kind,
    ProcessEvent,
    fixed_part,
)
from vigild.bpf.layout import Layout
from vigild.bpf.record import Record

EFFECT_KIND_NAMES = {kind.value: kind.label for kind in Kind if Kind.FILE_OPEN <= kind < Kind.SOCK_DATA}

EFFECT_PATH_MAX = 4096
EFFECT_PATH_STEPS = 512
EFFECT_PATH_PARTS = 4
NET_PATH_MAX = 108
DNS_CAPTURE_MAX = 512

FILE_PATH_TRUNCATED = 1 << 0
FILE_PATH2_TRUNCATED = 1 << 1
FILE_CREATED = 1 << 2
FILE_IS_DIR = 1 << 3
FILE_PATH_STALE = 1 << 4
EFFECT_NOT_AGGREGATED = 1 << 5
FILE_PATH_UNREADABLE = 1 << 6
FILE_OPEN_FOLDED = 1 << 7
NET_UNIX_ABSTRACT = 1 << 0

FLUSH_REASONS = {0: "close", 1: "exit", 2: "exec", 3: "replaced", 4: "call", 5: "evicted", 6: "count", 7: "age",
                 8: "change"}
# First-open paths a FileDecoder remembers to name folded records by.
OPEN_PATHS_MAX = 65536

O_ACCMODE = 0o3
O_WRONLY = 0o1
O_RDWR = 0o2
O_CREAT = 0o100
O_TRUNC = 0o1000


class FileEventC(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("ret", c_int64),
        ("bytes", c_uint64),
        ("calls", c_uint64),
        ("first_ns", c_uint64),
        ("last_ns", c_uint64),
        ("ino", c_uint64),
        ("dev", c_uint32),
        ("fd", c_int32),
        ("open_flags", c_uint32),
        ("mode", c_uint32),
        ("reason", c_uint32),
        ("len", c_uint16 * EFFECT_PATH_PARTS),
        ("_pad", c_uint32),
        ("data", c_char * (EFFECT_PATH_PARTS * EFFECT_PATH_MAX)),
    ]


class NetEventC(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("ret", c_int64),
        ("sock_id", c_uint64),
        ("bytes_sent", c_uint64),
        ("bytes_received", c_uint64),
        ("sends", c_uint64),
        ("recvs", c_uint64),
        ("fd", c_int32),
        ("reason", c_uint32),
        ("family", c_uint16),
        ("sock_type", c_uint16),
        ("protocol", c_uint16),
        ("lport", c_uint16),
        ("rport", c_uint16),
        ("path_len", c_uint16),
        ("laddr", c_uint8 * 16),
        ("raddr", c_uint8 * 16),
        ("path", c_char * NET_PATH_MAX),
    ]


class DnsEventC(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("fd", c_int32),
        ("family", c_uint16),
        ("rport", c_uint16),
        ("raddr", c_uint8 * 16),
        ("len", c_uint32),
        ("msg_len", c_uint32),
        ("data", c_char * DNS_CAPTURE_MAX),
    ]


class EffectsConfigC(ctypes.Structure):
    _fields_ = [
        ("wakeup_bytes", c_uint32),
        ("aggregate", c_uint32),
        ("files", c_uint32),
        ("net", c_uint32),
        ("dns", c_uint32),
        ("max_queued_bytes", c_uint32),
        ("fold_opens", c_uint32),
        ("chain_sock", c_uint32),
    ]


BTF_MIRRORS: dict[str, type[ctypes.Structure]] = {
    "file_event": FileEventC, "net_event": NetEventC, "dns_event": DnsEventC, "effects_config": EffectsConfigC,
}

FILE_DATA_OFFSET = FileEventC.data.offset
DNS_DATA_OFFSET = DnsEventC.data.offset
NET_PATH_OFFSET = NetEventC.path.offset


# ---- typed events ------------------------------------------------------------------------------

@dataclass
class FileEffect(ProcessEvent):
    """A file effect. `path` is absolute as the process sees it (relative to its root);
    path_truncated: the kernel kept only the last 4096 bytes / 512 walk steps of it."""

    type: ClassVar[str] = "file_effect"
    kind: int = 0
    path: str = ""
    path_truncated: bool = False
    ret: int = 0  # the syscall's result: fd or 0 on success, -errno on failure


@dataclass
class FileOpen(FileEffect):
    type: ClassVar[str] = "file_open"
    fd: int = -1
    flags: int = 0  # O_* as passed
    read: bool = False
    write: bool = False
    create: bool = False  # O_CREAT asked
    truncate: bool = False  # O_TRUNC asked
    created: bool = False  # this open created the file
    mode: int = 0
    ino: int = 0
    dev: int = 0
    # Repeated read-only opens of a file by one thread are folded in the kernel: the first is a
    # record of its own (opens=1), the rest come as records with folded=True and `opens` the count
    # they stand for, between first_ts_ns and last_ts_ns, written out for `reason` (evicted,
    # count, age, change, exec, exit). Summing `opens` counts every successful open.
    opens: int = 1
    folded: bool = False
    first_ts_ns: int = 0
    last_ts_ns: int = 0
    reason: str = ""
    path_unknown: bool = False  # folded, and the thread's first record of the file was not seen


@dataclass
class FileWrite(FileEffect):
    """Bytes written to one open file, summed in the kernel over `writes` calls between the
    first call (first_ts_ns) and `reason` (close, exit, exec, replaced; `call` with aggregation
    off, then every record is one call)."""

    type: ClassVar[str] = "file_write"
    fd: int = -1
    bytes: int = 0
    writes: int = 0
    first_ts_ns: int = 0
    reason: str = "close"
    aggregated: bool = True
    path_stale: bool = False  # the fd held another file at flush: path unknown
    ino: int = 0
    dev: int = 0


@dataclass
class FileUnlink(FileEffect):
    type: ClassVar[str] = "file_unlink"
    directory: bool = False


@dataclass
class FileRename(FileEffect):
    type: ClassVar[str] = "file_rename"
    new_path: str = ""
    new_path_truncated: bool = False
    flags: int = 0  # renameat2 RENAME_*


@dataclass
class FileMkdir(FileEffect):
    type: ClassVar[str] = "file_mkdir"
    mode: int = 0


@dataclass
class FileChmod(FileEffect):
    type: ClassVar[str] = "file_chmod"
    mode: int = 0
    fd: int = -1  # fchmod


@dataclass
class NetEffect(ProcessEvent):
    """A socket effect. Addresses are text (IPv4 / IPv6), ports host order; Unix sockets give
    unix_path (abstract names without their leading NUL, unix_abstract set)."""

    type: ClassVar[str] = "net_effect"
    kind: int = 0
    ret: int = 0
    fd: int = -1
    sock_id: int = 0
    family: str = ""
    sock_type: str = ""
    protocol: int = 0
    local_addr: str | None = None
    local_port: int | None = None
    remote_addr: str | None = None
    remote_port: int | None = None
    unix_path: str | None = None
    unix_abstract: bool = False


@dataclass
class NetConnect(NetEffect):
    type: ClassVar[str] = "net_connect"


@dataclass
class NetAccept(NetEffect):
    type: ClassVar[str] = "net_accept"


@dataclass
class NetBind(NetEffect):
    type: ClassVar[str] = "net_bind"


@dataclass
class NetClose(NetEffect):
    """A socket's traffic, summed in the kernel from the process's send/receive calls."""

    type: ClassVar[str] = "net_close"
    bytes_sent: int = 0
    bytes_received: int = 0
    sends: int = 0
    recvs: int = 0
    reason: str = "close"
    aggregated: bool = True


@dataclass
class NetBytes(NetClose):
    """One send or receive call (aggregation off)."""

    type: ClassVar[str] = "net_bytes"


@dataclass
class DnsQuery(ProcessEvent):
    """A DNS question the process sent over UDP to port 53, parsed from the datagram."""

    type: ClassVar[str] = "dns_query"
    kind: int = Kind.DNS_QUERY
    fd: int = -1
    server: str = ""
    server_port: int = 53
    query_id: int | None = None
    name: str | None = None  # None when the datagram is not a parsable query
    qtype: str | None = None
    datagram_bytes: int = 0
    captured_bytes: int = 0


# ---- decoding ----------------------------------------------------------------------------------

def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace")


def _parts(rec: Any, raw: bytes) -> list[bytes]:
    """The four strings of a file record's tail, by the lengths its fixed part gives."""
    a = FILE_DATA_OFFSET
    b = a + rec.len_0
    c = b + rec.len_1
    d = c + rec.len_2
    e = d + rec.len_3
    if e > len(raw):
        raise DecodeError("file record shorter than its path lengths")
    return [raw[a:b], raw[b:c], raw[c:d], raw[d:e]]


def join_path(base: bytes, name: bytes) -> str:
    """An absolute path from a resolved directory and a name (absolute names stand alone).

    A name with no empty, `.` or `..` component joined to a directory with none either needs no
    normalising: the directory's text (remembered: a burst's files share a few directories) and
    the name's are joined as they are, ~0.5 µs for a file never seen (a clone's, an install's)
    where remembering whole paths cost ~2.5 µs a miss. Anything else goes through normpath."""
    if not name:
        return _text(base)
    if base and name[0] != 0x2F:  # not "/": relative to base
        directory = _directory(base)
        # tested as text: `bytes in bytes` first tries its operand as an integer, and builds the
        # TypeError that says it is not one (~1,800 instructions a test)
        text = name.decode("utf-8", "backslashreplace")
        if (directory is not None and text[0] != "." and "/." not in text and "//" not in text
                and text[-1] != "/"):  # no leading ".", no "/.", "//" or trailing "/"
            return directory + "/" + text
        path = _text(base.rstrip(b"/") + b"/" + name)
    else:
        path = _text(name)
    if path.startswith("/") and "//" not in path and "/." not in path and not path.endswith("/"):
        return path  # no empty, `.` or `..` component: normpath would return it as it is
    norm = posixpath.normpath(path)
    return "/" + norm.lstrip("/") if norm.startswith("//") else norm


@functools.lru_cache(maxsize=4096)
def _directory(base: bytes) -> str | None:
    """A resolved directory's text without its trailing "/" ("" for the root) when it is absolute
    with no empty, `.` or `..` component (what the kernel's walk gives); None when not."""
    stripped = base.rstrip(b"/")
    if not stripped:
        return ""
    text = _text(stripped)
    return text if text.startswith("/") and "//" not in text and "/." not in text else None


FileBuilder = Callable[[Any, list[bytes], dict[str, Any]], FileEffect]
# A file record's header and fixed part, read in one unpack (fields `hdr_kind`, ..., `ret`, ...).
FILE_RECORD = Layout(FileEventC, FILE_DATA_OFFSET)
_unpack_file = FILE_RECORD.struct.unpack_from
# The order FileDecoder._file_open unpacks a record's fields in: a mirror that changes it fails here,
# at import, not by reading one field as another.
FILE_OPEN_FIELDS = ("hdr_kind", "hdr_flags", "hdr_ts_ns", "hdr_session_id", "hdr_cgroup_id", "hdr_pid", "hdr_tid",
                    "hdr_ppid", "hdr_uid", "hdr_comm", "hdr_call_id", "ret", "bytes", "calls", "first_ns", "last_ns",
                    "ino", "dev", "fd", "open_flags", "mode", "reason", "len_0", "len_1", "len_2", "len_3")
if FILE_RECORD.tuple._fields != FILE_OPEN_FIELDS:
    raise ImportError(f"FileEventC's fields are {FILE_RECORD.tuple._fields}, not those _file_open unpacks")
# The header's fields lead the record's, in EventHeader's order: FileDecoder.decode hands that
# slice of the unpacked values to EventDecoder.common as a Header.
_HEADER_FIELDS = len(HEADER.tuple._fields)
if FILE_OPEN_FIELDS[:_HEADER_FIELDS] != tuple(f"hdr_{name}" for name in HEADER.tuple._fields):
    raise ImportError("FileEventC no longer starts with EventHeader's fields, which FileDecoder.decode reads as one")


# A first (unfolded) file open's record as FileDecoder._file_open starts it: `type`, `ts`, then
# every field of FileOpen in order with its default (None where it has none); the decoder sets
# what differs per record. Built from the dataclass, so a field added to it is never missing.
_FILE_OPEN_RECORD = Record({"type": FileOpen.type, "ts": None, **{
    f.name: f.default if f.default is not dataclasses.MISSING else None for f in dataclasses.fields(FileOpen)}})
_FILE_OPEN_RECORD["kind"] = int(Kind.FILE_OPEN)


class FileDecoder:
    """The file kinds' decoder of one EventDecoder (one pipeline), with what a folded open needs:
    the paths of the files whose repeated opens the kernel may still be folding, by (pid, dev,
    ino). A folded record written out at exit, exec, eviction or a change has no fd of the file
    left to walk, so it is named from the thread's first record of it. Bounded (OPEN_PATHS_MAX) in
    two generations: when the newer holds half of it, it becomes the older and the older one
    goes whole, so the newest OPEN_PATHS_MAX / 2 paths are always kept. (One dict with its
    oldest deleted at each insert, as it was, made `next(iter())` walk the deleted slots in front
    of the first live one: ~350k instructions per distinct open once it was full, more than the
    whole rest of the pipeline, after 65,536 files opened in a daemon's life.) A record whose
    first is gone (lost, or pushed out) keeps an empty path and says so (path_unknown). Per
    decoder, not per module: two pipelines in one process (a test, a benchmark's replay) never
    name each other's records."""

    def __init__(self, events: EventDecoder) -> None:
        self.events = events
        self.open_paths: dict[tuple[int, int, int], str] = {}
        self.older_paths: dict[tuple[int, int, int], str] = {}
        # Every file kind has its own builder: a kind missing here is refused, so no record is
        # ever decoded as another kind.
        self._builders: dict[int, FileBuilder] = {Kind.FILE_OPEN: self._folded_open, **FILE_BUILDERS}

    def decode(self, raw: bytes) -> FileEffect:
        """A whole file record (header included) as its event."""
        if len(raw) < FILE_RECORD.size:
            raise DecodeError(f"FileEventC record of {len(raw)} bytes is shorter than {FILE_RECORD.size}")
        values = _unpack_file(raw)
        kind = values[0]
        if kind == Kind.FILE_OPEN and not values[1] & FILE_OPEN_FOLDED:
            return self._file_open(values, raw)
        rec = FILE_RECORD.named(values)
        builder = self._builders.get(kind)
        if builder is None:
            raise DecodeError(f"event kind {kind} is not a file effect", "unknown_kind")
        parts = _parts(rec, raw)
        base = self.events.common(HEADER.named(values[:_HEADER_FIELDS]))  # the header's part of the one unpack
        base["kind"] = kind
        base["path"] = join_path(parts[0], parts[1])
        base["path_truncated"] = bool(rec.hdr_flags & FILE_PATH_TRUNCATED)
        base["ret"] = rec.ret
        return builder(rec, parts, base)

    def _file_open(self, values: tuple[Any, ...], raw: bytes) -> FileOpen:
        """Most of a burst: the record's fields unpacked into locals at once (FILE_OPEN_FIELDS,
        checked against the layout at import) rather than read by name one by one. Its instance
        dict is its record (bpf/record.py): `type`, RFC 3339 `ts`, then the fields in FileOpen's
        order (tests/test_effects_layout.py holds it to the dataclass), copied from a template;
        record_of hands it to the sinks as it is, with what the pipeline set on the event since.
        Building the fields once, not into the instance and again into a record, is ~14k of the
        ~150k instructions a distinct file's open cost the pipeline (bench/README.md)."""
        (kind, hflags, ts_ns, session_id, cgroup_id, pid, tid, ppid, uid, comm, call_id, ret, _bytes, _calls,
         _first_ns, _last_ns, ino, dev, fd, flags, mode, _reason, len_0, len_1, len_2, len_3) = values
        a = FILE_DATA_OFFSET
        b = a + len_0
        c = b + len_1
        if c + len_2 + len_3 > len(raw):
            raise DecodeError("file record shorter than its path lengths")
        path = join_path(raw[a:b], raw[b:c])
        if ino and ret >= 0:
            open_paths = self.open_paths
            if len(open_paths) >= OPEN_PATHS_MAX // 2:
                self.older_paths, open_paths = open_paths, {}
                self.open_paths = open_paths
            open_paths[(pid, dev, ino)] = path
        acc = flags & O_ACCMODE
        events = self.events
        ts_ns += events.clock.offset_ns
        # The template's copy (its table copied whole), then the values that differ: a literal
        # of this size is built key by key, in two halves merged (~2x the time).
        record = Record(_FILE_OPEN_RECORD)
        record["ts"] = rfc3339(ts_ns)
        record["ts_ns"] = ts_ns
        record["session_id"] = session_id
        record["cgroup_id"] = cgroup_id
        record["pid"] = pid
        record["tid"] = tid
        record["ppid"] = ppid
        record["uid"] = uid
        record["comm"] = events.comm(comm)
        record["tool_call"] = call_id or None
        record["path"] = path
        record["path_truncated"] = bool(hflags & FILE_PATH_TRUNCATED)
        record["ret"] = ret
        record["fd"] = fd
        record["flags"] = flags
        record["read"] = acc == 0 or acc == O_RDWR
        record["write"] = acc == O_WRONLY or acc == O_RDWR
        record["create"] = bool(flags & O_CREAT)
        record["truncate"] = bool(flags & O_TRUNC)
        record["created"] = bool(hflags & FILE_CREATED)
        record["mode"] = mode
        record["ino"] = ino
        record["dev"] = dev
        event = FileOpen.__new__(FileOpen)
        event.__dict__ = record
        return event

    def _folded_open(self, rec: Any, parts: list[bytes], base: dict[str, Any]) -> FileOpen:
        """A count of a thread's repeated opens of one file; named from its first record when the
        kernel sent no path (`path_unknown` when that record was not seen)."""
        unknown = False
        if not base["path"]:
            key = (rec.hdr_pid, rec.dev, rec.ino)
            path = self.open_paths.get(key)
            base["path"] = path if path is not None else self.older_paths.get(key, "")
            unknown = not base["path"]
        ts = base["ts_ns"]
        return FileOpen(**base, flags=rec.open_flags, read=True, ino=rec.ino, dev=rec.dev, opens=rec.calls,
                        folded=True, first_ts_ns=ts - (rec.hdr_ts_ns - rec.first_ns),
                        last_ts_ns=ts - (rec.hdr_ts_ns - rec.last_ns),
                        reason=FLUSH_REASONS.get(rec.reason, str(rec.reason)), path_unknown=unknown)


def _file_write(rec: Any, parts: list[bytes], base: dict[str, Any]) -> FileWrite:
    return FileWrite(**base, fd=rec.fd, bytes=rec.bytes, writes=rec.calls,
                     first_ts_ns=base["ts_ns"] - (rec.hdr_ts_ns - rec.first_ns) if rec.first_ns else 0,
                     reason=FLUSH_REASONS.get(rec.reason, str(rec.reason)),
                     aggregated=not rec.hdr_flags & EFFECT_NOT_AGGREGATED,
                     path_stale=bool(rec.hdr_flags & FILE_PATH_STALE), ino=rec.ino, dev=rec.dev)


def _file_unlink(rec: Any, parts: list[bytes], base: dict[str, Any]) -> FileUnlink:
    return FileUnlink(**base, directory=bool(rec.hdr_flags & FILE_IS_DIR))


def _file_rename(rec: Any, parts: list[bytes], base: dict[str, Any]) -> FileRename:
    return FileRename(**base, new_path=join_path(parts[2], parts[3]),
                      new_path_truncated=bool(rec.hdr_flags & FILE_PATH2_TRUNCATED), flags=rec.open_flags)


def _file_mkdir(rec: Any, parts: list[bytes], base: dict[str, Any]) -> FileMkdir:
    return FileMkdir(**base, mode=rec.mode)


def _file_chmod(rec: Any, parts: list[bytes], base: dict[str, Any]) -> FileChmod:
    return FileChmod(**base, mode=rec.mode, fd=rec.fd)


# The file kinds whose builders need nothing but the record (a file open's are FileDecoder's own).
FILE_BUILDERS: dict[int, FileBuilder] = {
    Kind.FILE_WRITE: _file_write, Kind.FILE_UNLINK: _file_unlink, Kind.FILE_RENAME: _file_rename,
    Kind.FILE_MKDIR: _file_mkdir, Kind.FILE_CHMOD: _file_chmod,
}
FILE_KINDS = frozenset({Kind.FILE_OPEN, *FILE_BUILDERS})


NET_CLASSES: dict[Kind, type[NetEffect]] = {
    Kind.NET_CONNECT: NetConnect, Kind.NET_ACCEPT: NetAccept, Kind.NET_BIND: NetBind, Kind.NET_CLOSE: NetClose,
    Kind.NET_BYTES: NetBytes,
}

FAMILIES = {socket.AF_INET: "inet", socket.AF_INET6: "inet6", socket.AF_UNIX: "unix"}
SOCK_TYPES = {socket.SOCK_STREAM: "stream", socket.SOCK_DGRAM: "dgram", socket.SOCK_SEQPACKET: "seqpacket",
              socket.SOCK_RAW: "raw"}


def _addr(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    return str(ipaddress.IPv6Address(raw[:16]))


def _unix_path(fixed: Any, record: bytes, flags: int) -> tuple[str | None, bool]:
    if not fixed.path_len:
        return None, False
    raw = record[NET_PATH_OFFSET:NET_PATH_OFFSET + fixed.path_len]  # not fixed.path: ctypes stops at a NUL
    if flags & NET_UNIX_ABSTRACT:
        return _text(raw[1:]), True
    return _text(raw.split(b"\0", 1)[0]), False


def _decode_net(hdr: Header, raw: bytes, common: dict[str, Any]) -> NetEffect:
    cls = NET_CLASSES.get(hdr.kind)
    if cls is None:
        raise DecodeError(f"event kind {hdr.kind} is not a network effect", "unknown_kind")
    fixed = fixed_part(raw, NetEventC)
    fields: dict[str, Any] = {
        **common, "kind": hdr.kind, "ret": fixed.ret, "fd": fixed.fd, "sock_id": fixed.sock_id,
        "family": FAMILIES.get(fixed.family, str(fixed.family)),
        "sock_type": SOCK_TYPES.get(fixed.sock_type, str(fixed.sock_type)), "protocol": fixed.protocol,
    }
    if fixed.family in (socket.AF_INET, socket.AF_INET6):
        fields.update(local_addr=_addr(fixed.family, bytes(fixed.laddr)), local_port=fixed.lport,
                      remote_addr=_addr(fixed.family, bytes(fixed.raddr)), remote_port=fixed.rport)
    elif fixed.family == socket.AF_UNIX:
        fields["unix_path"], fields["unix_abstract"] = _unix_path(fixed, raw, hdr.flags)
    if issubclass(cls, NetClose):
        return cls(**fields, bytes_sent=fixed.bytes_sent, bytes_received=fixed.bytes_received, sends=fixed.sends,
                   recvs=fixed.recvs, reason=FLUSH_REASONS.get(fixed.reason, str(fixed.reason)),
                   aggregated=not hdr.flags & EFFECT_NOT_AGGREGATED)
    return cls(**fields)


QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV",
          64: "SVCB", 65: "HTTPS", 255: "ANY"}


def parse_dns_question(payload: bytes) -> tuple[int, str, str] | None:
    """(id, name, type) of the first question of a DNS query datagram, or None when it is not
    one (a response, no question, a malformed or cut name)."""
    if len(payload) < 12:
        return None
    qid = int.from_bytes(payload[0:2], "big")
    if payload[2] & 0x80 or int.from_bytes(payload[4:6], "big") == 0:
        return None
    labels, pos = [], 12
    while True:
        if pos >= len(payload):
            return None
        n = payload[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0 or pos + 1 + n > len(payload):
            return None  # queries carry no compression pointers
        labels.append(payload[pos + 1:pos + 1 + n].decode("ascii", errors="backslashreplace"))
        pos += 1 + n
    if pos + 2 > len(payload):
        return None
    qtype = int.from_bytes(payload[pos:pos + 2], "big")
    return qid, ".".join(labels) + ".", QTYPES.get(qtype, f"TYPE{qtype}")


def _decode_dns(hdr: Header, raw: bytes, common: dict[str, Any]) -> DnsQuery:
    fixed = fixed_part(raw, DnsEventC, DNS_DATA_OFFSET)
    payload = raw[DNS_DATA_OFFSET:DNS_DATA_OFFSET + fixed.len]
    if len(payload) != fixed.len:
        raise DecodeError("dns record shorter than its declared length")
    question = parse_dns_question(payload)
    qid, name, qtype = question if question else (None, None, None)
    return DnsQuery(**common, fd=fixed.fd, server=_addr(fixed.family, bytes(fixed.raddr)), server_port=fixed.rport,
                    query_id=qid, name=name, qtype=qtype, datagram_bytes=fixed.msg_len, captured_bytes=fixed.len)


def register_effects(decoder: EventDecoder) -> None:
    """Teach a decoder the effect kinds, each to the decoder that knows it."""
    files = FileDecoder(decoder)
    for kind in FILE_KINDS:
        decoder.register_record(kind, files.decode)
    for kind in NET_CLASSES:
        decoder.register(kind, _decode_net)
    decoder.register(Kind.DNS_QUERY, _decode_dns)
