"""`vigil doctor PID`: which TLS a running process uses and whether vigil can read it.

It applies the same rules as the TLS sensor without loading BPF: TLS libraries the process maps
(hooked by their symbols), and TLS compiled into its executable (exported OpenSSL symbols, or
BoringSSL found by the locator, or a stack vigil is blind to, and why).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import psutil
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from vigild.bpf.tls import LIB_PREFIXES, LIBRARIES, TLS_LIB_OPENSSL
from vigild.bpf.tls_locate import Blind, Locator, TlsFunctions
from vigild.bpf.uprobe_multi import probe as uprobe_multi_refusal


def _exports(path: str, symbols: tuple[str, ...]) -> list[str]:
    """Which of symbols the ELF file defines in its dynamic symbol table (what libbpf resolves)."""
    try:
        with open(path, "rb") as f:
            dynsym = ELFFile(f).get_section_by_name(".dynsym")
            if dynsym is None:
                return []
            names = {sym.name for sym in dynsym.iter_symbols() if sym["st_shndx"] != "SHN_UNDEF"}
    except (OSError, ELFError):
        return []
    return [s for s in symbols if s in names]


def diagnose(pid: int, locator: Locator | None = None) -> dict[str, Any]:
    """The process's TLS stacks, each `hooked` (how) or `blind` (why), and its TCP connections."""
    root = f"/proc/{pid}/root"
    exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    stacks: list[dict[str, Any]] = []
    seen: set[str] = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or not parts[5].startswith("/") or parts[5] in seen:
            continue
        seen.add(parts[5])
        name = os.path.basename(parts[5])
        for prefix, lib in LIB_PREFIXES.items():
            if name.startswith(prefix):
                lib_name, calls, _free = LIBRARIES[lib]
                found = _exports(root + parts[5], tuple(c[0] for c in calls))
                stacks.append({"where": parts[5], "stack": lib_name, "state": "hooked" if found else "blind",
                               "how": f"symbols ({', '.join(found)})" if found else None,
                               "reason": None if found else "library without the expected symbols"})
    openssl_calls = tuple(c[0] for c in LIBRARIES[TLS_LIB_OPENSSL][1])
    exported = _exports(root + exe, openssl_calls)
    if exported:
        stacks.append({"where": exe, "stack": "openssl", "state": "hooked", "how": f"symbols ({', '.join(exported)})",
                       "reason": None})
    else:
        found = (locator or Locator()).locate(root + exe)
        if isinstance(found, TlsFunctions):
            how = f"locator (SSL_write at {found.write:#x}, SSL_read at {found.read:#x}"
            how += f", {found.close_name} at {found.close:#x})" if found.close is not None else ")"
            stacks.append({"where": exe, "stack": found.stack, "state": "hooked", "how": how, "reason": None})
        elif isinstance(found, Blind):
            stacks.append({"where": exe, "stack": found.stack, "state": "blind", "how": None, "reason": found.reason})
    try:
        conns = [c for c in psutil.Process(pid).net_connections(kind="tcp") if c.raddr]
    except psutil.Error:
        conns = []
    refusal = uprobe_multi_refusal()
    return {"pid": pid, "exe": exe, "stacks": stacks, "tcp_connections": len(conns),
            "verdict": _verdict(stacks, len(conns)),
            # TLS libraries are hooked per tracked process where the kernel makes uprobe_multi
            # links; elsewhere every process mapping them traps (and untracked calls are dropped)
            "tls_uprobes": "global" if refusal else "per-process", "tls_uprobes_reason": refusal}


def _verdict(stacks: list[dict[str, Any]], connections: int) -> str:
    if any(s["state"] == "hooked" for s in stacks):
        blind = [s for s in stacks if s["state"] == "blind"]
        return "readable" + (f" (but blind to {', '.join(s['stack'] for s in blind)})" if blind else "")
    if any(s["state"] == "blind" for s in stacks):
        return "blind"
    return "no TLS stack found" + (f"; {connections} TCP connection(s) would be traffic without plaintext"
                                   if connections else "")


def cmd_doctor(pid: int, output: str, out: TextIO) -> int:
    try:
        report = diagnose(pid)
    except (OSError, psutil.Error) as exc:
        print(f"vigil: error: cannot inspect pid {pid}: {exc}", file=sys.stderr)
        return 1
    if output == "json":
        out.write(json.dumps(report) + "\n")
        return 0
    out.write(f"pid {pid} {report['exe']}: {report['verdict']}\n")
    for s in report["stacks"]:
        detail = f"hooked by {s['how']}" if s["state"] == "hooked" else f"BLIND: {s['reason']}"
        out.write(f"  {s['stack']:<14} {s['where']}\n  {'':<14} {detail}\n")
    out.write(f"  TCP connections: {report['tcp_connections']}\n")
    why = f" ({report['tls_uprobes_reason']})" if report["tls_uprobes_reason"] else ""
    out.write(f"  TLS uprobes: {report['tls_uprobes']}{why}\n")
    return 0
