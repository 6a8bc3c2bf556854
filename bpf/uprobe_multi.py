"""uprobe_multi links with a pid filter (kernel >= 6.6): one link puts a program on several
offsets of one file for one process only, so no other process carries a breakpoint.

The system libbpf of Debian 12 (1.1) predates `bpf_program__attach_uprobe_multi` (libbpf 1.3), so
the link is made with the BPF syscall's BPF_LINK_CREATE directly; only the fields the kernel
defines for uprobe_multi are filled. Symbols are resolved to file offsets as libbpf does (a
symbol's address translated through the PT_LOAD segment that holds it).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
from collections.abc import Iterable, Sequence
from functools import lru_cache


BPF_PROG_LOAD = 5
BPF_LINK_CREATE = 28
BPF_PROG_TYPE_KPROBE = 2
BPF_TRACE_UPROBE_MULTI = 48
BPF_F_UPROBE_MULTI_RETURN = 1
_SYS_BPF = {"x86_64": 321, "aarch64": 280}


class LinkCreateUprobeMulti(ctypes.Structure):
    """union bpf_attr as BPF_LINK_CREATE reads it for BPF_TRACE_UPROBE_MULTI."""

    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("target_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("path", ctypes.c_uint64),
        ("offsets", ctypes.c_uint64),
        ("ref_ctr_offsets", ctypes.c_uint64),
        ("cookies", ctypes.c_uint64),
        ("cnt", ctypes.c_uint32),
        ("um_flags", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def create_link(prog_fd: int, path: str, offsets: Sequence[int], cookies: Sequence[int], pid: int,
                retprobe: bool = False) -> int:
    """Attach prog_fd (loaded as BPF_TRACE_UPROBE_MULTI) at `offsets` of the file at path, for
    process pid only; returns the link's fd (closing it detaches). Raises OSError with the
    kernel's errno (EINVAL or ENOSYS-like errors on kernels before 6.6, ESRCH for a gone pid)."""
    machine = os.uname().machine
    if machine not in _SYS_BPF:
        raise OSError(95, f"uprobe_multi links are not wired for {machine}")
    n = len(offsets)
    offs = (ctypes.c_uint64 * n)(*offsets)
    cks = (ctypes.c_uint64 * n)(*cookies)
    raw_path = ctypes.create_string_buffer(path.encode())
    attr = LinkCreateUprobeMulti(prog_fd=prog_fd, attach_type=BPF_TRACE_UPROBE_MULTI,
                                 path=ctypes.addressof(raw_path), offsets=ctypes.addressof(offs),
                                 cookies=ctypes.addressof(cks), cnt=n,
                                 um_flags=BPF_F_UPROBE_MULTI_RETURN if retprobe else 0, pid=pid)
    fd = _libc.syscall(_SYS_BPF[machine], BPF_LINK_CREATE, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"uprobe_multi link on {path} for pid {pid}: {os.strerror(err)}")
    return fd


class ProgLoad(ctypes.Structure):
    """union bpf_attr as BPF_PROG_LOAD reads it, up to expected_attach_type."""

    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
        ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
    ]


def link_refusal(prog_fd: int) -> str | None:
    """Why this kernel cannot make uprobe_multi links for prog_fd, or None when it can. As
    libbpf's own probe does: a link on "/" (a directory) is refused with EBADF only by a kernel
    that knows the link type (6.6+); older ones say EINVAL, or accept the program's load and refuse
    every link."""
    try:
        fd = create_link(prog_fd, "/", [0], [0], pid=0)
    except OSError as exc:
        return None if exc.errno == 9 else f"kernel refuses uprobe_multi links ({os.strerror(exc.errno or 0)}); " \
                                              "they need Linux 6.6"
    os.close(fd)
    return "kernel accepted a uprobe_multi link on a directory"


def probe() -> str | None:
    """Whether this kernel makes uprobe_multi links (None) or why not, without loading vigil's
    objects: a two-instruction program loaded for the link type, then `link_refusal`."""
    insns = (ctypes.c_uint64 * 2)(0x00000000000000B7, 0x0000000000000095)  # r0 = 0; exit
    license_ = ctypes.create_string_buffer(b"GPL")
    attr = ProgLoad(prog_type=BPF_PROG_TYPE_KPROBE, insn_cnt=2, insns=ctypes.addressof(insns),
                    license=ctypes.addressof(license_), expected_attach_type=BPF_TRACE_UPROBE_MULTI)
    machine = os.uname().machine
    if machine not in _SYS_BPF:
        return f"uprobe_multi links are not wired for {machine}"
    fd = _libc.syscall(_SYS_BPF[machine], BPF_PROG_LOAD, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        err = ctypes.get_errno()
        return f"kernel refuses uprobe_multi programs ({os.strerror(err)}); they need Linux 6.6"
    try:
        return link_refusal(fd)
    finally:
        os.close(fd)


# ELF64 little-endian layouts (elf.h): the file header's section-table fields, a section header,
# a program header, a symbol.
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_PHDR = struct.Struct("<IIQQQQQQ")
_SYM = struct.Struct("<IBBHQQ")
SHT_SYMTAB, SHT_DYNSYM, PT_LOAD, STT_FUNC = 2, 11, 1, 2


@lru_cache(maxsize=64)
def _symbol_table(path: str, st_dev: int, st_ino: int, st_mtime_ns: int) -> dict[str, int]:
    """Defined function symbols of an ELF64 file -> file offsets (the file's identity is part of
    the cache key, so a replaced library is read again).

    Read by hand rather than with pyelftools (which vigild has, for the locator): this runs at
    every start to hook the system's libssl, and importing pyelftools for it would add ~5 MiB to
    an idle daemon (issue 14). Only the symbol tables and PT_LOAD headers are read."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as data:
        if data[:6] != b"\x7fELF\x02\x01":
            raise ValueError(f"{path} is not a little-endian ELF64 file")
        (_ident, _type, _machine, _version, _entry, phoff, shoff, _flags, _ehsize, phentsize, phnum, shentsize,
         shnum, _shstrndx) = _EHDR.unpack_from(data, 0)
        sections = [_SHDR.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
        loads = [(vaddr, memsz, offset) for ptype, _pf, offset, vaddr, _pa, _filesz, memsz, _al in
                 (_PHDR.unpack_from(data, phoff + i * phentsize) for i in range(phnum)) if ptype == PT_LOAD]
        found: dict[str, int] = {}
        for kind in (SHT_DYNSYM, SHT_SYMTAB):
            for (_name, sh_type, _fl, _addr, sh_offset, sh_size, sh_link, _info, _align, sh_entsize) in sections:
                if sh_type != kind or not sh_entsize or sh_link >= len(sections):
                    continue
                strtab = sections[sh_link][4]
                for at in range(sh_offset, sh_offset + sh_size, sh_entsize):
                    st_name, st_info, _other, st_shndx, st_value, _size = _SYM.unpack_from(data, at)
                    if st_info & 0xF != STT_FUNC or st_shndx == 0 or not st_value:
                        continue
                    end = data.find(b"\0", strtab + st_name)
                    name = data[strtab + st_name:end].decode(errors="replace").split("@", 1)[0]
                    if name in found:
                        continue
                    for vaddr, memsz, offset in loads:
                        if vaddr <= st_value < vaddr + memsz:
                            found[name] = st_value - vaddr + offset
                            break
    return found


def symbol_offsets(path: str, names: Iterable[str]) -> dict[str, int]:
    """File offsets of the named functions in the ELF file at path; a missing name raises
    KeyError naming it."""
    st = os.stat(path)
    table = _symbol_table(path, st.st_dev, st.st_ino, st.st_mtime_ns)
    wanted = list(names)
    missing = [n for n in wanted if n not in table]
    if missing:
        raise KeyError(f"{', '.join(missing)} not in {path}")
    return {n: table[n] for n in wanted}
