"""How the stored story words one file or network effect, and an alert's evidence: one wording
for `vigil show` (rich markup) and the HTML report (plain text). The live view words effects as
they happen, in human units with errno names (daemon/sinks/live_effects.py), on purpose differently."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EffectWords:
    """verb target detail, e.g. `wrote` `12 bytes to /x` ` (3 writes)`; views style the parts."""

    verb: str
    target: str
    detail: str = ""
    failed: bool = False
    network: bool = False  # net_* and dns: views colour them apart from file effects


def effect_words(e: dict[str, Any]) -> EffectWords:
    kind = e["type"]
    if kind == "file_open":
        verb = "write" if e.get("write") or e.get("create") or e.get("truncate") else "read"
        failed = (e.get("ret") or 0) < 0
        opens = e.get("opens") or 1
        detail = " (failed)" if failed else f" (opened {opens} times)" if opens > 1 else ""
        return EffectWords(verb, e.get("path") or "", detail, failed=failed)
    if kind == "file_write":
        return EffectWords("wrote", f"{e.get('bytes')} bytes to {e.get('path') or ''}", f" ({e.get('writes')} writes)")
    if kind.startswith("file_"):
        target = (e.get("path") or "") + (f" → {e['new_path']}" if e.get("new_path") else "")
        return EffectWords(kind.removeprefix("file_"), target)
    if kind == "dns_query":
        return EffectWords("dns", str(e.get("name")), network=True)
    peer = e.get("unix_path") or (f"{e.get('remote_addr') or e.get('local_addr')}:"
                                  f"{e.get('remote_port') or e.get('local_port')}")
    traffic = f" ({e.get('bytes_sent')} out, {e.get('bytes_received')} in)" if kind == "net_close" else ""
    return EffectWords(kind.removeprefix("net_"), str(peer), traffic, network=True)


def evidence_target(link: dict[str, Any]) -> str:
    """What one piece of an alert's evidence is about: a path, a tool, a model or an address."""
    return str(link.get("path") or link.get("tool_name") or link.get("model") or link.get("remote_addr") or "")
