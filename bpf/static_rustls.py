"""Find rustls's TLS 1.3 record encrypters and decrypters inside a stripped static executable.

rustls is inlined Rust with no symbols, but its record layer calls the cipher through trait
objects (`Box<dyn MessageEncrypter>` / `Box<dyn MessageDecrypter>`), so each provider's
`encrypt`/`decrypt` is a real function reached through a vtable in .data.rel.ro. The TLS 1.3
ones build the record's additional data `[0x17, 0x03, 0x03, len_hi, len_lo]`, which the compiler
folds into one immediate holding 0x00030317. So: every function holding that immediate and sitting
in a vtable slot of the trait-object shape (drop glue or null, a size, a power-of-two alignment,
then the method) is one of them; an encrypter's vtable has a second method
(`encrypted_payload_len`), a decrypter's does not (what follows is other data).

What the probes need beyond the address, found in each encrypter's own code (no per-release
table): where its message argument keeps the content type (the byte the function switches on)
and which value of it means application data (the jump-table case that yields 0x17). The payload
words are checked at run time instead (bpf/tls.bpf.c): a record is read only when the sealed
length the function returns matches the plaintext length the words give, and a decrypted one
only when the function returned the same buffer. Any doubt here refuses the binary.
"""

from __future__ import annotations

import bisect
import mmap
import struct
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

from vigild.bpf.static_openssl import LocateError, _Elf

AAD_IMMEDIATE = b"\x17\x03\x03\x00"  # 0x00030317: TLS 1.3 additional data, type and version
APPLICATION_DATA = 0x17
MAX_VTABLE_SIZE = 1 << 16  # an encrypter object is a key schedule and an IV: far below this
PROLOGUE_INSNS = 160  # the content-type switch comes right after the nonce is built


@cache
def _capstone() -> ModuleType:
    # capstone decodes the encrypter's instructions (operands, jump-table targets): a hand-written
    # decoder for x86-64's variable-length encoding would be longer and less trustworthy.
    import capstone

    return capstone


@dataclass(frozen=True)
class Encrypter:
    offset: int  # file offset of encrypt(), for a uprobe
    type_offset: int  # where the message argument keeps its content type
    appdata_tag: int  # the value of that byte meaning application data


@dataclass(frozen=True)
class RustlsSites:
    """File offsets of the TLS 1.3 record functions of every crypto provider compiled in."""

    encrypters: tuple[Encrypter, ...]
    decrypters: tuple[int, ...]


def _aad_functions(elf: _Elf, starts: list[int]) -> set[int]:
    text = elf.section(".text")
    found = set()
    pos = elf.data.find(AAD_IMMEDIATE, text.offset, text.offset + text.size)
    while pos >= 0:
        i = bisect.bisect_right(starts, text.addr + pos - text.offset) - 1
        if i >= 0:
            found.add(starts[i])
        pos = elf.data.find(AAD_IMMEDIATE, pos + 1, text.offset + text.size)
    return found


def _vtable_slots(elf: _Elf, candidates: set[int], starts: set[int]) -> tuple[list[int], list[int]]:
    """(encrypt, decrypt) methods: candidates found in a vtable-shaped slot of .data.rel.ro."""
    sec = elf.section(".data.rel.ro")
    words = memoryview(elf.data)[sec.offset:sec.offset + sec.size - sec.size % 8].cast("Q")
    encrypt, decrypt = set(), set()
    for i in range(3, len(words) - 1):
        method = words[i]
        if method not in candidates:
            continue
        drop, size, align, after = words[i - 3], words[i - 2], words[i - 1], words[i + 1]
        if (drop and drop not in starts) or not 0 < size <= MAX_VTABLE_SIZE or align not in (1, 2, 4, 8, 16, 32, 64):
            continue
        (encrypt if after in starts else decrypt).add(method)
    both = encrypt & decrypt
    if both:
        raise LocateError(f"rustls: {len(both)} record function(s) sit in both encrypter and decrypter vtables")
    return sorted(encrypt), sorted(decrypt)


def _content_type_switch(elf: _Elf, func: int) -> tuple[int, int]:
    """In encrypt(&mut self, msg: OutboundPlainMessage, seq) (msg by reference in rdx): the
    displacement of the byte it switches on, and the case that yields 0x17 (application data)."""
    cs = _capstone()
    from capstone import x86

    md = cs.Cs(cs.CS_ARCH_X86, cs.CS_MODE_64)
    md.detail = True
    start = elf.file_offset(func)
    code = elf.data[start:start + 16 * PROLOGUE_INSNS]
    msg_regs = {x86.X86_REG_RDX}
    type_offset: int | None = None
    for insn in md.disasm(code, func, PROLOGUE_INSNS):
        ops = insn.operands
        if insn.id == x86.X86_INS_MOV and len(ops) == 2 and ops[0].type == x86.X86_OP_REG \
                and ops[1].type == x86.X86_OP_REG and ops[1].reg in msg_regs and type_offset is None:
            msg_regs.add(ops[0].reg)
        elif insn.id == x86.X86_INS_MOVZX and type_offset is None and ops[1].type == x86.X86_OP_MEM \
                and ops[1].size == 1 and ops[1].mem.base in msg_regs and ops[1].mem.index == 0:
            type_offset = ops[1].mem.disp
        elif type_offset is not None and insn.id == x86.X86_INS_LEA and ops[1].type == x86.X86_OP_MEM \
                and ops[1].mem.base == x86.X86_REG_RIP:
            return type_offset, _appdata_case(elf, md, insn.address + insn.size + ops[1].mem.disp)
        elif insn.id in (x86.X86_INS_RET, x86.X86_INS_UD2):
            break
    raise LocateError(f"rustls: no content-type switch found in the encrypter at {func:#x}")


def _appdata_case(elf: _Elf, md: Any, table: int) -> int:
    """The index of the jump table at `table` whose target loads the immediate 0x17."""
    from capstone import x86

    hits = []
    base = elf.file_offset(table)
    for case in range(8):
        (rel,) = struct.unpack_from("<i", elf.data, base + 4 * case)
        target = table + rel
        try:
            offset = elf.file_offset(target)
        except LocateError:
            break  # past the table's end
        insn = next(md.disasm(elf.data[offset:offset + 16], target, 1), None)
        if insn is None:
            break
        ops = insn.operands
        if insn.id == x86.X86_INS_MOV and len(ops) == 2 and ops[1].type == x86.X86_OP_IMM and ops[1].imm == APPLICATION_DATA:
            hits.append(case)
    if len(hits) != 1:
        raise LocateError(f"rustls: the content-type table at {table:#x} has {len(hits)} application-data cases (want 1)")
    return hits[0]


def locate_rustls(data: mmap.mmap) -> RustlsSites:
    """The TLS 1.3 record functions in the ELF image `data`, or LocateError saying why not."""
    elf = _Elf(data)
    starts = elf.function_starts()
    candidates = _aad_functions(elf, starts)
    if not candidates:
        raise LocateError("rustls: no function builds TLS 1.3 record data (no 0x030317 immediate)")
    encrypt, decrypt = _vtable_slots(elf, candidates, set(starts))
    if not encrypt or not decrypt:
        raise LocateError(f"rustls: {len(encrypt)} encrypter(s) and {len(decrypt)} decrypter(s) in vtables (want both)")
    encrypters = []
    for func in encrypt:
        type_offset, tag = _content_type_switch(elf, func)
        if not 0 <= type_offset < 256:  # the probe's attach cookie carries it in one byte
            raise LocateError(f"rustls: the encrypter at {func:#x} keeps its content type at {type_offset} (want < 256)")
        encrypters.append(Encrypter(elf.file_offset(func), type_offset, tag))
    return RustlsSites(tuple(encrypters), tuple(elf.file_offset(f) for f in decrypt))
