"""Find OpenSSL's plaintext functions inside a stripped, statically linked executable.

Codex (a static-pie Rust binary, no symbols) carries a whole OpenSSL 3 for its native-tls path.
Its functions have no names left, but OpenSSL 3 raises errors with ``ERR_raise``, which passes
``__func__`` as a string: ``ssl_write_internal`` and ``ssl_read_internal`` each appear once in
.rodata, and the only code that loads their address (a RIP-relative ``lea``) is the function of
that name. ``SSL_write``/``SSL_write_ex``/``SSL_read``/``SSL_read_ex`` all go through them, with
the caller's ``SSL*`` as first argument, so hooking them sees every plaintext byte, keyed by the
same ``SSL*`` the library-wide hooks use. Nothing here depends on a release's offsets: a new
build is located the same way, and any doubt (a string missing or twice, references from more
than one function, no function bounds) refuses the binary instead of guessing.

The ELF and .eh_frame_hdr parsing is hand-written on purpose: we need two sections, the program
headers and the sorted function table of .eh_frame_hdr, which pyelftools does not expose (a full
CFI parse of Codex's 300k FDEs takes minutes); and the scan for one instruction form over 250 MB
of code is a regular expression, where a disassembler would be far too slow.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import mmap
import os
import re
import struct
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vigild.bpf.static_rustls import RustlsSites

# __func__ of OpenSSL 3's internal write/read (ssl/ssl_lib.c), and their argument layout:
# ssl_write_internal(SSL *s, const void *buf, size_t num, uint64_t flags, size_t *written)
# ssl_read_internal(SSL *s, void *buf, size_t num, size_t *readbytes)
WRITE_FUNC = b"ssl_write_internal"
READ_FUNC = b"ssl_read_internal"
SOURCE_FILE = b"ssl/ssl_lib.c"
# lea r64, [rip + disp32]: REX.W (48, or 4c for r8-r15), 8d, ModRM with mod=00 rm=101.
_LEA_RIP = re.compile(rb"[\x48\x4c]\x8d[\x05\x0d\x15\x1d\x25\x2d\x35\x3d]", re.DOTALL)
_RUSTLS_PATH = re.compile(rb"/rustls-(\d+\.\d+\.\d+)/src/")
CACHE_VERSION = 1
NO_OPENSSL = "no OpenSSL 3 (no ssl/ssl_lib.c error sites)"


class LocateError(Exception):
    """The binary cannot be hooked safely: the reason says why."""


@dataclass(frozen=True)
class OpensslSites:
    """File offsets (for uprobes) of the two functions, and how the build was identified."""

    build_key: str
    version: str | None
    write_offset: int
    read_offset: int


@dataclass(frozen=True)
class _Section:
    name: str
    addr: int
    offset: int
    size: int


class _Elf:
    def __init__(self, data: mmap.mmap) -> None:
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1 or struct.unpack_from("<H", data, 18)[0] != 62:
            raise LocateError("not a little-endian x86-64 ELF64 file")
        self.data = data
        phoff, shoff = struct.unpack_from("<QQ", data, 32)
        phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", data, 54)
        self.segments = []  # (vaddr, offset, filesz) of PT_LOAD
        for i in range(phnum):
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
            if p_type == 1:
                self.segments.append((p_vaddr, p_offset, p_filesz))
        raw = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
        if not raw or shstrndx >= len(raw):
            raise LocateError("no section headers (a packed or stripped-to-the-bone binary)")
        names_off = raw[shstrndx][4]
        self.sections: dict[str, _Section] = {}
        for name_idx, _type, _flags, addr, offset, size in raw:
            end = data.find(b"\0", names_off + name_idx)
            name = data[names_off + name_idx:end].decode(errors="replace")
            self.sections[name] = _Section(name, addr, offset, size)

    def section(self, name: str) -> _Section:
        sec = self.sections.get(name)
        if sec is None:
            raise LocateError(f"no {name} section")
        return sec

    def file_offset(self, vaddr: int) -> int:
        for seg_vaddr, seg_offset, size in self.segments:
            if seg_vaddr <= vaddr < seg_vaddr + size:
                return vaddr - seg_vaddr + seg_offset
        raise LocateError(f"address {vaddr:#x} is in no loaded segment")

    def build_key(self) -> str:
        """The GNU build-id when there is one; else a digest of the size and the function
        table, which changes with any change of code (Codex's musl builds carry no build-id)."""
        note = self.sections.get(".note.gnu.build-id")
        if note is not None and note.size > 16:
            return "build-id:" + self.data[note.offset + 16:note.offset + note.size].hex()
        hdr = self.section(".eh_frame_hdr")
        digest = hashlib.sha256(self.data[hdr.offset:hdr.offset + hdr.size])
        digest.update(str(len(self.data)).encode())
        return "eh-frame-hdr:" + digest.hexdigest()[:32]

    def function_starts(self) -> list[int]:
        """Sorted start addresses of every function with unwind info (.eh_frame_hdr's table)."""
        hdr = self.section(".eh_frame_hdr")
        version, _ptr_enc, count_enc, table_enc = self.data[hdr.offset:hdr.offset + 4]
        if version != 1 or count_enc != 0x03 or table_enc != 0x3B:
            raise LocateError(f".eh_frame_hdr encoding {count_enc:#x}/{table_enc:#x} not handled")
        (count,) = struct.unpack_from("<I", self.data, hdr.offset + 8)
        table = struct.unpack_from(f"<{2 * count}i", self.data, hdr.offset + 12)
        return sorted(hdr.addr + table[i] for i in range(0, 2 * count, 2))


def _unique_string(elf: _Elf, text: bytes) -> int:
    """Virtual address of the NUL-terminated string `text` in .rodata; exactly one copy."""
    ro = elf.section(".rodata")
    view = elf.data
    hits = []
    start = ro.offset
    needle = b"\0" + text + b"\0"
    while True:
        pos = view.find(needle, start, ro.offset + ro.size)
        if pos < 0:
            break
        hits.append(ro.addr + pos + 1 - ro.offset)
        start = pos + 1
    if len(hits) != 1:
        raise LocateError(f"string {text.decode()!r} found {len(hits)} times in .rodata (want 1)")
    return hits[0]


def _referencing_functions(elf: _Elf, targets: dict[int, bytes], starts: list[int]) -> dict[bytes, set[int]]:
    """For each target address, the start of every function holding a RIP-relative lea of it."""
    text = elf.section(".text")
    found: dict[bytes, set[int]] = {name: set() for name in targets.values()}
    data = elf.data
    base = text.addr - text.offset
    for m in _LEA_RIP.finditer(data, text.offset, text.offset + text.size):
        pos = m.start()
        (disp,) = struct.unpack_from("<i", data, pos + 3)
        name = targets.get(base + pos + 7 + disp)
        if name is None:
            continue
        i = bisect.bisect_right(starts, base + pos) - 1
        if i < 0:
            raise LocateError(f"a reference to {name.decode()} lies before every known function")
        found[name].add(starts[i])
    return found


def locate(path: str) -> OpensslSites:
    """Find ssl_write_internal and ssl_read_internal in the ELF file at path, or raise
    LocateError saying why it cannot be done safely."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        elf = _Elf(data)
        if data.find(b"\0" + SOURCE_FILE + b"\0") < 0:
            raise LocateError(NO_OPENSSL)
        key = elf.build_key()
        targets = {_unique_string(elf, WRITE_FUNC): WRITE_FUNC, _unique_string(elf, READ_FUNC): READ_FUNC}
        starts = elf.function_starts()
        funcs = _referencing_functions(elf, targets, starts)
        offsets = {}
        for name, where in funcs.items():
            if len(where) != 1:
                raise LocateError(f"{name.decode()} is referenced from {len(where)} functions (want 1)")
            offsets[name] = elf.file_offset(where.pop())
        version = re.search(rb"OpenSSL (\d+\.\d+\.\d+)[^\0]{0,40}\0", data)
        return OpensslSites(build_key=key, version=version.group(1).decode() if version else None,
                            write_offset=offsets[WRITE_FUNC], read_offset=offsets[READ_FUNC])


def rustls_version(data: mmap.mmap) -> str | None:
    """The rustls release compiled in (from its panic-location paths), or None."""
    m = _RUSTLS_PATH.search(data)
    return m.group(1).decode() if m else None


@dataclass(frozen=True)
class StaticTls:
    """What a static executable carries: OpenSSL sites (or why they cannot be used), the rustls
    release and its record functions (or why they cannot be used)."""

    build_key: str
    openssl: OpensslSites | None
    openssl_error: str | None
    rustls: str | None
    rustls_sites: RustlsSites | None = None
    rustls_error: str | None = None


def examine(path: str) -> StaticTls:
    """Locate OpenSSL and rustls in the executable at path (a few seconds for Codex)."""
    from vigild.bpf.static_rustls import locate_rustls  # imports this module: not at the top

    rustls_sites, rustls_error = None, None
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        key = _Elf(data).build_key()
        rustls = rustls_version(data)
        if rustls is not None:
            try:
                rustls_sites = locate_rustls(data)
            except LocateError as exc:
                rustls_error = str(exc)
    try:
        return StaticTls(key, locate(path), None, rustls, rustls_sites, rustls_error)
    except LocateError as exc:
        return StaticTls(key, None, str(exc), rustls, rustls_sites, rustls_error)


def _from_entry(entry: dict[str, Any]) -> StaticTls:
    from vigild.bpf.static_rustls import Encrypter, RustlsSites

    sites, rustls = entry.get("openssl"), entry.get("rustls_sites")
    return StaticTls(entry["build_key"], OpensslSites(**sites) if sites else None, entry.get("openssl_error"),
                     entry.get("rustls"),
                     RustlsSites(tuple(Encrypter(**e) for e in rustls["encrypters"]), tuple(rustls["decrypters"]))
                     if rustls else None, entry.get("rustls_error"))


def quick_key(path: str) -> str | None:
    """The build key without the scan (cheap: the headers and .eh_frame_hdr), or None when the
    file is not an ELF this module can read."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _Elf(data).build_key()
    except (OSError, ValueError, LocateError, struct.error):
        return None


def is_static_executable(path: str) -> bool:
    """An x86-64 ELF executable without a program interpreter (static or static-pie): the only
    kind whose TLS library cannot show up in /proc/PID/maps."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or struct.unpack_from("<H", head, 18)[0] != 62:
                return False
            phoff = struct.unpack_from("<Q", head, 32)[0]
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    types = [struct.unpack_from("<I", table, i * phentsize)[0] for i in range(len(table) // max(phentsize, 1))]
    return 3 not in types and 1 in types  # PT_INTERP absent, PT_LOAD present


class SiteCache:
    """What examine() found, by build key, in one JSON file: a second run, or the same build at
    another path, skips the scan."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()  # the pipeline and the locator threads look up concurrently
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.exists():
            try:
                loaded = json.loads(self.path.read_text())
                if loaded.get("version") == CACHE_VERSION:
                    self.entries = dict(loaded.get("builds", {}))
            except (OSError, ValueError, AttributeError):
                self.entries = {}  # a damaged cache costs a rescan, nothing else

    def known(self, path: str) -> bool:
        key = quick_key(path)
        return key is not None and key in self.entries

    def lookup(self, path: str) -> tuple[StaticTls, bool]:
        """What the binary at path carries, and whether it came from the cache."""
        key = quick_key(path)
        entry = self.entries.get(key) if key else None
        # an entry written before rustls was located is examined again; older readers ignore the
        # added keys, so one cache file serves both
        if entry is not None and not (entry.get("rustls") and "rustls_sites" not in entry):
            return _from_entry(entry), True
        try:
            found = examine(path)
        except (OSError, ValueError, struct.error, LocateError) as exc:
            return StaticTls(key or "", None, f"cannot read {path}: {exc}", None), False
        with self._lock:
            self.entries[found.build_key] = asdict(found)
            self._save()
        return found, False

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"version": CACHE_VERSION, "builds": self.entries}, indent=1))
            os.replace(tmp, self.path)
        except OSError:
            pass  # an unwritable cache directory only costs a rescan next time
