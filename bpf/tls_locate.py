"""Find the plaintext functions of a TLS library compiled into a stripped executable.

Bun single-file executables (Claude Code, opencode) carry BoringSSL with no symbols. Byte patterns
of function prologues change with every compiler and Bun release, so this locator keys on what the
library itself keeps stable: its error sites. Every ``OPENSSL_PUT_ERROR(SSL, reason)`` compiles
to a call of ``ERR_put_error(lib, 0, reason, __FILE__, __LINE__)`` whose arguments are immediates,
and the file argument points at the one string ending in ``ssl/ssl_lib.cc``. The reason codes a
function raises identify it (BoringSSL never renumbers them), and the line numbers order the
functions as they appear in ssl_lib.cc:

- ``ssl_read_impl``: SSL_R_UNINITIALIZED, then SSL_R_SSL_HANDSHAKE_FAILURE;
- ``SSL_read`` = ``SSL_peek`` inlined: ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED, after ssl_read_impl's
  lines and before SSL_write's, and it calls (or contains) ssl_read_impl;
- ``SSL_write``: SSL_R_UNINITIALIZED and SSL_R_BAD_LENGTH (older releases also
  SSL_R_PROTOCOL_IS_SHUTDOWN);
- ``SSL_shutdown`` (what ends a connection; ``SSL_free`` raises nothing to find it by):
  SSL_R_UNINITIALIZED and SSL_R_APPLICATION_DATA_ON_SHUTDOWN.

Each function's entry is the nearest direct call/jump target before its error sites that sits
after inter-function padding, checked by disassembling from it to every site without crossing
padding, and against the unwind table when the executable has one. Anything that does not come
out as exactly one candidate is refused with the reason (``Blind``), never guessed.

The interface is ``locate(path) -> TlsFunctions | Blind | None`` (None: no stack of this kind in
the file). Results are cached by ELF build-id plus the executable section's place and size (two
Bun executables built from one runtime share a build-id), or by content hash without a build-id.
`StackSpec` keeps the library's constants apart so a fork (aws-lc) can reuse the search.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import mmap
import os
import re
import struct
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import capstone

    from vigild.bpf.static_rustls import RustlsSites

log = logging.getLogger("vigild.tls_locate")


# Both libraries are imported when a search runs, not when vigil starts (capstone loads a large
# shared library): most runs find every executable in the cache.
@cache
def _capstone() -> ModuleType:
    # capstone decodes x86-64 instructions (immediates, call targets, instruction boundaries): a
    # hand-written decoder for the variable-length encoding would be longer and less trustworthy.
    import capstone

    return capstone


def _elf_file(file: object) -> object:
    # pyelftools reads section headers and notes; the locator needs no more of ELF than that.
    from elftools.elf.elffile import ELFFile

    return ELFFile(file)


def _elf_errors() -> tuple[type[Exception], ...]:
    from elftools.common.exceptions import ELFError

    return (OSError, ELFError, ValueError)

LOCATOR_VERSION = 1
DEFAULT_CACHE_DIR = Path(os.environ.get("VIGIL_TLS_CACHE", "/var/cache/vigild/tls-locate"))
MAX_FUNCTION_BYTES = 16 * 1024  # an entry further than this before an error site is not searched
SITE_WINDOW = 48  # bytes decoded from the file argument's load to the ERR_put_error call


@dataclass(frozen=True)
class StackSpec:
    """A BoringSSL-family library: where its error sites point and which reason codes it uses."""

    name: str
    source_suffix: bytes
    err_lib: int
    r_should_not_have_been_called: int
    r_uninitialized: int
    r_handshake_failure: int
    r_bad_length: int
    r_application_data_on_shutdown: int


BORINGSSL = StackSpec(
    name="boringssl",
    source_suffix=b"ssl/ssl_lib.cc",
    err_lib=16,                              # ERR_LIB_SSL
    r_should_not_have_been_called=66,        # ERR_R_FATAL | 2
    r_uninitialized=226,
    r_handshake_failure=215,
    r_bad_length=111,
    r_application_data_on_shutdown=291,
)


@dataclass(frozen=True)
class TlsFunctions:
    """Where to attach: file offsets (what uprobes take) of the plaintext functions."""

    path: str
    stack: str
    write: int
    read: int
    close: int | None
    close_name: str
    build_key: str
    how: str = "locator"
    seconds: float = 0.0
    cached: bool = False
    unread: tuple[Blind, ...] = ()  # other TLS stacks in the same executable that stay unread
    rustls: RustlsSites | None = None  # rustls's record functions in the same executable (Codex)


@dataclass(frozen=True)
class Blind:
    """A TLS stack is there but cannot be hooked; `reason` says why, for the operator."""

    path: str
    stack: str
    reason: str
    build_key: str = ""
    seconds: float = 0.0
    cached: bool = False


@dataclass
class _Function:
    entry: int
    sites: list[tuple[int, int, int]] = field(default_factory=list)  # (address, reason, line)

    def reasons(self) -> set[int]:
        return {r for _, r, _ in self.sites}

    def lines(self, reason: int | None = None) -> list[int]:
        return sorted(line for _, r, line in self.sites if reason is None or r == reason)


class _Image:
    """The executable's bytes and layout, mapped read-only (a 400 MB file is not copied)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open(path, "rb")
        try:
            self.map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            self.elf = _elf_file(self._file)
        except BaseException:
            self._file.close()
            raise
        self.pie = self.elf.header["e_type"] == "ET_DYN"
        self.exec_sections: list[tuple[int, int, int]] = []  # (vaddr, file offset, size)
        self.data_sections: list[tuple[int, int, int]] = []
        for sec in self.elf.iter_sections():
            if sec["sh_type"] != "SHT_PROGBITS" or not sec["sh_flags"] & 0x2:  # SHF_ALLOC
                continue
            entry = (sec["sh_addr"], sec["sh_offset"], sec["sh_size"])
            if sec["sh_flags"] & 0x4:  # SHF_EXECINSTR
                self.exec_sections.append(entry)
            elif not sec["sh_flags"] & 0x1:  # read-only data
                self.data_sections.append(entry)

    def build_key(self) -> str:
        text = max(self.exec_sections, key=lambda s: s[2], default=(0, 0, 0))
        for sec in self.elf.iter_sections():
            if sec["sh_type"] == "SHT_NOTE":
                for note in sec.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        return f"build-id:{note['n_desc']}:text@{text[1]:x}+{text[2]:x}"
        digest = hashlib.sha256()
        for start in range(0, len(self.map), 1 << 24):
            digest.update(self.map[start:start + (1 << 24)])
        return f"sha256:{digest.hexdigest()}"

    def file_offset(self, vaddr: int) -> int | None:
        for addr, off, size in self.exec_sections:
            if addr <= vaddr < addr + size:
                return vaddr - addr + off
        return None

    def code(self, vaddr: int, length: int) -> bytes:
        off = self.file_offset(vaddr)
        if off is None:
            return b""
        for addr, _off, size in self.exec_sections:
            if addr <= vaddr < addr + size:
                length = min(length, addr + size - vaddr)  # never past the section's end
        return self.map[off:off + length]

    def close(self) -> None:
        self.map.close()
        self._file.close()


def _string_addresses(img: _Image, suffix: bytes) -> list[int]:
    """Addresses of the NUL-terminated strings that end in suffix (the __FILE__ of the errors)."""
    found = []
    for addr, off, size in img.data_sections:
        pos = off
        end = off + size
        while True:
            pos = img.map.find(suffix + b"\0", pos, end)
            if pos < 0:
                break
            start = img.map.rfind(b"\0", off, pos) + 1 or off
            found.append(addr + (start - off))
            pos += len(suffix)
    return sorted(set(found))


def _reference_sites(img: _Image, targets: list[int]) -> list[int]:
    """Instructions that load one of the target addresses into a register: ``mov r32, imm32`` /
    ``mov r64, imm32`` in fixed-address executables, ``lea r64, [rip+d]`` in position-independent
    ones. Which argument register it is tells the calling convention (`_decode_site`)."""
    cs = _capstone()
    md = cs.Cs(cs.CS_ARCH_X86, cs.CS_MODE_64)
    sites = set()
    wanted = set(targets)
    for addr, off, size in img.exec_sections:
        end = off + size
        for target in targets:
            if target >= 1 << 31:
                continue
            needle = struct.pack("<I", target)
            pos = off
            while (pos := img.map.find(needle, pos, end)) >= 0:
                for back in (1, 2, 3):  # b8+r imm32; 41 b8+r imm32; 48/49 c7 c0+r imm32
                    start = addr + pos - off - back
                    ins = next(md.disasm(img.code(start, back + 4), start), None)
                    if ins is not None and ins.size == back + 4 and ins.mnemonic == "mov":
                        sites.add(start)
                        break
                pos += 1
        if img.pie:
            view = img.map[off:end]
            for m in re.finditer(rb"[\x48\x4c]\x8d[\x05\x0d\x15\x1d\x25\x2d\x35\x3d]", view):
                i = m.start()
                if i + 7 > size:
                    break
                if addr + i + 7 + struct.unpack_from("<i", view, i + 3)[0] in wanted:
                    sites.add(addr + i)
    return sorted(sites)


@cache
def _conventions() -> tuple[dict[int, tuple[int, int, int]], dict[int, int]]:
    """ERR_put_error's two signatures: (lib, reason, file, line) in older BoringSSL, (lib, unused,
    reason, file, line) in newer. The register that receives the file says which one was
    compiled: file register -> (lib, reason, line) registers; and 32-bit names of those."""
    x86 = _capstone().x86
    conventions = {
        x86.X86_REG_RDX: (x86.X86_REG_EDI, x86.X86_REG_ESI, x86.X86_REG_ECX),
        x86.X86_REG_RCX: (x86.X86_REG_EDI, x86.X86_REG_EDX, x86.X86_REG_R8D),
    }
    return conventions, {x86.X86_REG_EDX: x86.X86_REG_RDX, x86.X86_REG_ECX: x86.X86_REG_RCX}


def _decode_site(md: capstone.Cs, img: _Image, site: int) -> tuple[int, int, int, int | None] | None:
    """(library, reason, line, ERR_put_error target) from the immediates set between the file
    argument's load and the call (or the jump to a shared call)."""
    x86 = _capstone().x86
    conventions, wide = _conventions()
    regs: dict[int, int] = {}
    target = None
    file_reg = None
    for ins in md.disasm(img.code(site, SITE_WINDOW), site):
        if file_reg is None:
            if not ins.operands or ins.operands[0].type != x86.X86_OP_REG:
                return None
            file_reg = wide.get(ins.operands[0].reg, ins.operands[0].reg)
            continue
        if ins.mnemonic in ("call", "jmp"):
            op = ins.operands[0] if ins.operands else None
            if op is not None and op.type == x86.X86_OP_IMM:
                target = op.imm
            break
        if ins.mnemonic in ("mov", "xor") and len(ins.operands) == 2 and ins.operands[0].type == x86.X86_OP_REG:
            dst = ins.operands[0].reg
            src = ins.operands[1]
            if ins.mnemonic == "mov" and src.type == x86.X86_OP_IMM:
                regs[dst] = src.imm
            elif ins.mnemonic == "xor" and src.type == x86.X86_OP_REG and src.reg == dst:
                regs[dst] = 0
            else:
                regs.pop(dst, None)
    convention = conventions.get(file_reg)
    if convention is None:
        return None
    lib, reason, line = (regs.get(r) for r in convention)
    if lib is None or reason is None or line is None:
        return None
    return lib, reason, line, target


def _call_targets(img: _Image, windows: list[tuple[int, int]]) -> dict[int, int]:
    """Targets of direct ``call rel32`` instructions that fall in one of the windows, with how
    many sites reach each. Calls, not jumps: a jump's target is as often a loop head inside a
    function as another function. Decoding every instruction of 100+ MB of code is too slow, so
    every e8 byte is read as a call; the false ones are filtered by the checks in `_entry_for`."""
    targets: dict[int, int] = defaultdict(int)
    if not windows:
        return targets
    lo = min(w[0] for w in windows)
    hi = max(w[1] for w in windows)
    for addr, off, size in img.exec_sections:
        view = img.map[off:off + size]
        for m in re.finditer(rb"\xe8", view):
            i = m.start()
            if i + 5 > size:
                break
            tgt = addr + i + 5 + struct.unpack_from("<i", view, i + 1)[0]
            if lo <= tgt < hi:
                targets[tgt] += 1
    return {t: n for t, n in targets.items() if any(a <= t < b for a, b in windows)}


def _eh_frame_starts(img: _Image) -> list[int]:
    """Function starts from .eh_frame_hdr's sorted lookup table (datarel-encoded int32 pairs),
    when the executable has one: an independent check of the entries found by branch targets."""
    sec = img.elf.get_section_by_name(".eh_frame_hdr")
    if sec is None or sec["sh_size"] < 12:
        return []
    data = sec.data()
    version, _ptr_enc, count_enc, table_enc = data[0], data[1], data[2], data[3]
    if version != 1 or count_enc != 0x03 or table_enc != 0x3B:  # udata4 count, datarel sdata4 table
        return []
    count = struct.unpack_from("<I", data, 8)[0]
    base = sec["sh_addr"]
    starts = [base + struct.unpack_from("<i", data, 12 + 8 * k)[0] for k in range(count)]
    return sorted(starts)


def _entry_for(md: capstone.Cs, img: _Image, site: int, targets: list[int]) -> int | None:
    """The nearest call target before site that begins a function: 16-byte aligned (the
    compilers' function alignment), right after padding or an instruction that does not fall
    through, and from which linear disassembly reaches site without crossing padding."""
    k = bisect.bisect_right(targets, site)
    while k > 0:
        k -= 1
        entry = targets[k]
        if site - entry > MAX_FUNCTION_BYTES:
            return None
        if entry % 16 or not _after_boundary(md, img, entry):
            continue
        if _reaches(md, img, entry, site):
            return entry
    return None


_TERMINATORS = {"ret", "jmp", "int3", "ud2", "nop", "hlt"}


def _after_boundary(md: capstone.Cs, img: _Image, entry: int) -> bool:
    """The bytes before entry end a function: padding, or an instruction that ends exactly at
    entry and never falls through (ret, jmp, ud2, ...)."""
    if img.code(entry - 1, 1) in (b"\xcc", b"\x90"):
        return True
    for back in range(2, 16):
        ins = next(md.disasm(img.code(entry - back, back), entry - back), None)
        if ins is not None and ins.size == back and ins.mnemonic in _TERMINATORS:
            return True
    return False


def _reaches(md: capstone.Cs, img: _Image, entry: int, site: int) -> bool:
    for ins in md.disasm(img.code(entry, site - entry + 16), entry):
        if ins.address == site:
            return True
        if ins.address > site or ins.mnemonic == "int3":
            return False
    return False


def _calls_in(md: capstone.Cs, img: _Image, entry: int) -> set[int]:
    """Direct call/jump targets of the function at entry, up to its trailing padding."""
    found = set()
    for ins in md.disasm(img.code(entry, MAX_FUNCTION_BYTES), entry):
        if ins.mnemonic == "int3":
            break
        if ins.mnemonic in ("call", "jmp") and ins.operands and ins.operands[0].type == _capstone().x86.X86_OP_IMM:
            found.add(ins.operands[0].imm)
    return found


class _Refused(Exception):
    pass


def _one(candidates: list[_Function], what: str) -> _Function:
    if len(candidates) != 1:
        where = ", ".join(hex(f.entry) for f in candidates) or "none"
        raise _Refused(f"{what}: {len(candidates)} candidates ({where})")
    return candidates[0]


def _identify(md: capstone.Cs, img: _Image, spec: StackSpec, funcs: list[_Function]) -> tuple[_Function, _Function, _Function | None]:
    r_uninit, r_bad_len = spec.r_uninitialized, spec.r_bad_length
    write = _one([f for f in funcs if {r_uninit, r_bad_len} <= f.reasons()
                  and min(f.lines(r_uninit)) < min(f.lines(r_bad_len))], "SSL_write")
    write_first = min(write.lines())
    # ssl_read_impl may have other functions inlined into it (ssl_do_post_handshake,
    # SSL_renegotiate): only its own two sites, before SSL_write's, are looked at.
    def impl_lines(f: _Function) -> list[int]:
        own = [ln for ln in f.lines(r_uninit) + f.lines(spec.r_handshake_failure) if ln < write_first]
        ok = [ln for ln in f.lines(r_uninit) if ln < write_first] and \
            [ln for ln in f.lines(spec.r_handshake_failure) if ln < write_first]
        return own if ok else []

    impls = [f for f in funcs if f is not write and impl_lines(f)]
    impl = _one(impls, "ssl_read_impl") if impls else None
    impl_last = max(impl_lines(impl)) if impl else 0
    reads = []
    for f in funcs:
        peek_lines = [ln for ln in f.lines(spec.r_should_not_have_been_called) if impl_last < ln < write_first]
        if f is write or not peek_lines:
            continue
        # the call shape: SSL_read runs ssl_read_impl, called or inlined
        inlined = any(r == r_uninit and ln < min(peek_lines) for _, r, ln in f.sites)
        if inlined or (impl is not None and impl.entry in _calls_in(md, img, f.entry)):
            reads.append(f)
    read = _one(reads, "SSL_read")
    shutdowns = [f for f in funcs if {r_uninit, spec.r_application_data_on_shutdown} <= f.reasons()
                 and min(f.lines()) > write_first]
    shutdown = shutdowns[0] if len(shutdowns) == 1 else None
    return write, read, shutdown


# Stacks this locator cannot hook yet, recognised so that what is not seen is said, not silent:
# (stack, marker bytes in a read-only section, why).
UNHOOKABLE = (
    ("go-crypto/tls", b"crypto/tls.(*Conn).Write", "Go crypto/tls is not hooked (no uprobes for Go's TLS yet)"),
    ("rustls", b"rustls", "rustls is statically linked with no symbols to hook"),
)


def _unhookable(img: _Image, path: str, key: str) -> Blind | None:
    for stack, marker, why in UNHOOKABLE:
        for _addr, off, size in img.data_sections:
            if img.map.find(marker, off, off + size) >= 0:
                return Blind(path, stack, why, key)
    return None


def _search(path: str, spec: StackSpec) -> tuple[str, TlsFunctions | Blind | None]:
    img = _Image(path)
    try:
        key = img.build_key()
        strings = _string_addresses(img, spec.source_suffix)
        if not strings:
            return key, _unhookable(img, path, key)
        cs = _capstone()
        md = cs.Cs(cs.CS_ARCH_X86, cs.CS_MODE_64)
        md.detail = True
        sites: list[tuple[int, int, int]] = []
        put_error: dict[int, int] = defaultdict(int)
        for site in _reference_sites(img, strings):
            decoded = _decode_site(md, img, site)
            if decoded is None or decoded[0] != spec.err_lib:
                continue
            sites.append((site, decoded[1], decoded[2]))
            if decoded[3] is not None:
                put_error[decoded[3]] += 1
        if not sites:
            return key, Blind(path, spec.name, f"{spec.name} is compiled in but none of its error sites could be read", key)
        targets = sorted(_call_targets(img, [(s - MAX_FUNCTION_BYTES, s + 1) for s, _, _ in sites]))
        fde_starts = _eh_frame_starts(img)
        by_entry: dict[int, _Function] = {}
        for site, reason, line in sites:
            entry = _entry_for(md, img, site, targets)
            if entry is None:
                continue
            by_entry.setdefault(entry, _Function(entry)).sites.append((site, reason, line))
        try:
            write, read, shutdown = _identify(md, img, spec, list(by_entry.values()))
        except _Refused as exc:
            return key, Blind(path, spec.name, f"{spec.name} functions not located unambiguously: {exc}", key)
        for f in (write, read, shutdown):
            if f is not None and fde_starts:
                _check_fde(f, fde_starts)
        offsets = [img.file_offset(f.entry) if f else None for f in (write, read, shutdown)]
        if offsets[0] is None or offsets[1] is None:
            return key, Blind(path, spec.name, "located functions lie outside executable sections", key)
        return key, TlsFunctions(path=path, stack=spec.name, write=offsets[0], read=offsets[1], close=offsets[2],
                                 close_name="SSL_shutdown", build_key=key)
    except _Refused as exc:
        return "", Blind(path, spec.name, str(exc))
    finally:
        img.close()


def _check_fde(f: _Function, starts: list[int]) -> None:
    """When the unwind table covers a function, it must start where we found the entry."""
    site = f.sites[0][0]
    k = bisect.bisect_right(starts, site) - 1
    if k >= 0 and f.entry <= starts[k] <= site and starts[k] != f.entry:
        raise _Refused(f"entry {f.entry:#x} disagrees with the unwind table ({starts[k]:#x})")


class Locator:
    """locate() with a memory cache by inode and a disk cache by build, so a binary is searched
    once per machine (the first search of a 400 MB executable takes seconds)."""

    def __init__(self, cache_dir: Path | None = DEFAULT_CACHE_DIR, specs: Iterable[StackSpec] = (BORINGSSL,)) -> None:
        self.cache_dir = cache_dir
        self.specs = tuple(specs)
        self._by_inode: dict[tuple[int, int, int, int], TlsFunctions | Blind | None] = {}

    def locate(self, path: str) -> TlsFunctions | Blind | None:
        st = os.stat(path)
        ikey = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if ikey in self._by_inode:
            return _with_path(self._by_inode[ikey], path)
        started = time.monotonic()
        result = self._from_disk(path)
        if result is None:
            result = self._search(path, started)
        self._by_inode[ikey] = result if not isinstance(result, _NoStack) else None
        return _with_path(self._by_inode[ikey], path)

    def _search(self, path: str, started: float) -> TlsFunctions | Blind | _NoStack:
        found: TlsFunctions | Blind | _NoStack = _NoStack("")
        for spec in self.specs:
            try:
                key, result = _search(path, spec)
            except _elf_errors() as exc:
                return Blind(path, spec.name, f"cannot read the executable: {exc}")
            found = result if result is not None else _NoStack(key)
            if result is not None:
                break
        seconds = time.monotonic() - started
        if isinstance(found, (TlsFunctions, Blind)):
            found = _replace(found, seconds=seconds)
        self._to_disk(found)
        return found

    def _cache_file(self, key: str) -> Path | None:
        if self.cache_dir is None or not key:
            return None
        name = hashlib.sha256(f"{LOCATOR_VERSION}:{key}".encode()).hexdigest()[:32]
        return self.cache_dir / f"{name}.json"

    def _from_disk(self, path: str) -> TlsFunctions | Blind | _NoStack | None:
        if self.cache_dir is None:
            return None
        try:
            img = _Image(path)
        except _elf_errors():
            return None
        try:
            key = img.build_key()
        finally:
            img.close()
        file = self._cache_file(key)
        try:
            record = json.loads(file.read_text()) if file else None
        except (OSError, ValueError):
            return None
        if not record or record.get("key") != key:
            return None
        kind = record.pop("kind", None)
        record.pop("key", None)
        if kind == "functions":
            return TlsFunctions(**{**record, "path": path, "cached": True})
        if kind == "blind":
            return Blind(**{**record, "path": path, "cached": True})
        if kind == "none":
            return _NoStack(key)
        return None

    def _to_disk(self, result: TlsFunctions | Blind | _NoStack) -> None:
        key = result.build_key
        file = self._cache_file(key)
        if file is None:
            return
        if isinstance(result, _NoStack):
            record = {"kind": "none", "key": key}
        else:
            record = {"kind": "functions" if isinstance(result, TlsFunctions) else "blind", "key": key, **asdict(result)}
            record.pop("path", None)
            record.pop("cached", None)
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(record))
            os.replace(tmp, file)
        except OSError as exc:
            log.warning("cannot cache TLS location in %s: %s", file, exc)


@dataclass(frozen=True)
class _NoStack:
    build_key: str


def _replace(result: TlsFunctions | Blind, **changes: object) -> TlsFunctions | Blind:
    from dataclasses import replace
    return replace(result, **changes)


def _with_path(result: TlsFunctions | Blind | _NoStack | None, path: str) -> TlsFunctions | Blind | None:
    if result is None or isinstance(result, _NoStack):
        return None
    return result if result.path == path else _replace(result, path=path)


def locate(path: str, cache_dir: Path | None = DEFAULT_CACHE_DIR) -> TlsFunctions | Blind | None:
    """TlsFunctions where BoringSSL's SSL_write/SSL_read/SSL_shutdown are in the executable at
    path, Blind(reason) when it carries BoringSSL that cannot be located unambiguously, None when
    it carries none."""
    return Locator(cache_dir).locate(path)
