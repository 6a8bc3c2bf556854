"""Live-view lines for file and network effects and detections, in human units, failed calls
with their errno names. Which opens are worth a line (what an agent changed, what it read outside
the system's and runtimes' own files) is the view's decision (`correlate.timeline.is_plumbing`).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

from rich.text import Text

from vigild.correlate.effect_words import evidence_target


def _prefix(ts: str, word: str, pid: int, indent: str) -> str:
    return f"{ts} {word:<5} {pid:>7} {indent}"


def _open(ts: str, pid: int, indent: str, d: dict[str, Any]) -> Text | None:
    """Every open the view is given (it folds system and runtime plumbing itself unless --all)."""
    path = d.get("path") or ""
    ret = d.get("ret") or 0
    failed = f" (failed: {errno.errorcode.get(-ret, str(ret))})" if ret < 0 else ""
    if d.get("write") or d.get("create") or d.get("truncate"):
        verb = "create" if d.get("created") else "truncate" if d.get("truncate") else "open-w"
        return Text(_prefix(ts, "file", pid, indent) + f"{verb} {path}{failed}", style="yellow")
    if d.get("folded"):  # repeats of an open shown before, counted in the kernel
        return Text(_prefix(ts, "file", pid, indent) + f"read {path} again, {d.get('opens')} more times",
                    style="dim yellow")
    return Text(_prefix(ts, "file", pid, indent) + f"read {path}{failed}", style="dim yellow")


def human_bytes(n: int | None) -> str:
    """1536 -> "1.5 KiB": sizes people read at a glance."""
    if n is None:
        return "?"
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"


def _write(ts: str, pid: int, indent: str, d: dict[str, Any]) -> Text:
    calls = f" in {d.get('writes')} writes" if d.get("aggregated") and (d.get("writes") or 0) > 1 else ""
    return Text(_prefix(ts, "file", pid, indent) + f"wrote {human_bytes(d.get('bytes'))} to {d.get('path')}{calls}",
                style="yellow")


def _simple(verb: str) -> Callable[[str, int, str, dict[str, Any]], Text]:
    def line(ts: str, pid: int, indent: str, d: dict[str, Any]) -> Text:
        target = f"{d.get('path')} → {d.get('new_path')}" if d.get("new_path") else d.get("path")
        ret = d.get("ret") or 0
        failed = f" (failed: {errno.errorcode.get(-ret, str(ret))})" if ret < 0 else ""
        return Text(_prefix(ts, "file", pid, indent) + f"{verb} {target}{failed}", style="yellow")
    return line


def _peer(d: dict[str, Any]) -> str:
    if d.get("family") == "unix":
        return f"unix:{d.get('unix_path') or '?'}"
    addr = d.get("remote_addr") or d.get("local_addr")
    port = d.get("remote_port") or d.get("local_port")
    return f"[{addr}]:{port}" if d.get("family") == "inet6" else f"{addr}:{port}"


def _net(verb: str) -> Callable[[str, int, str, dict[str, Any]], Text]:
    def line(ts: str, pid: int, indent: str, d: dict[str, Any]) -> Text:
        extra = ""
        if d.get("type") == "net_close":
            extra = f" ({human_bytes(d.get('bytes_sent'))} out, {human_bytes(d.get('bytes_received'))} in)"
        return Text(_prefix(ts, "net", pid, indent) + f"{verb} {_peer(d)}{extra}", style="magenta")
    return line


def _dns(ts: str, pid: int, indent: str, d: dict[str, Any]) -> Text:
    return Text(_prefix(ts, "dns", pid, indent) + f"lookup {d.get('name')} via {d.get('server')}", style="magenta")


def _detection(ts: str, pid: int, indent: str, d: dict[str, Any]) -> Text:
    line = Text(_prefix(ts, "ALERT", pid, indent) + f"{d.get('name')}: {d.get('reason')}", style="bold red")
    for link in d.get("evidence") or []:
        line.append(f"\n{' ' * 22}{indent}⤷ {link.get('type')} {evidence_target(link)}", style="red")
    return line


def _retracted(ts: str, pid: int, indent: str, d: dict[str, Any]) -> Text:
    return Text(_prefix(ts, "ALERT", pid, indent) + f"withdrawn: {d.get('name')} on call {d.get('tool_call')}: "
                f"{d.get('reason')}", style="green")


EFFECT_LINES: dict[str, Callable[[str, int, str, dict[str, Any]], Text | None]] = {
    "file_open": _open,
    "file_write": _write,
    "file_unlink": _simple("delete"),
    "file_rename": _simple("rename"),
    "file_mkdir": _simple("mkdir"),
    "file_chmod": _simple("chmod"),
    "net_connect": _net("connect"),
    "net_accept": _net("accept"),
    "net_bind": _net("bind"),
    "net_close": _net("closed"),
    "net_bytes": _net("traffic"),
    "dns_query": _dns,
    "detection": _detection,
    "alert_retracted": _retracted,
}
