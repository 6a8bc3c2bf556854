"""Reading the store back: `vigil sessions` and `vigil show`."""

from __future__ import annotations

import json
import shlex
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from vigild.daemon.store import Store


def _when(ns: int | None) -> str:
    return datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S") if ns else "-"


def _duration(start: int | None, end: int | None) -> str:
    if not start or not end:
        return "running"
    seconds = (end - start) / 1e9
    return f"{seconds:.2f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def _outcome(exit_code: int | None, signal: int | None) -> str:
    if signal:
        return f"signal {signal}"
    return "-" if exit_code is None else f"exit {exit_code}"


def print_sessions(store: Store, limit: int, as_json: bool, console: Console) -> None:
    rows = store.sessions(limit)
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    table = Table(title=f"sessions in {store.path}")
    for col in ("session", "agent", "command", "started", "duration", "outcome", "processes", "events"):
        if col == "command":
            table.add_column(col, overflow="ellipsis", no_wrap=True, max_width=32)
        else:
            table.add_column(col, no_wrap=True, min_width=len(col),
                             justify="right" if col in ("processes", "events") else "left")
    for r in rows:
        table.add_row(str(r["id"]), r["agent"] or "-", shlex.join(r["argv"])[:60], _when(r["started_ns"])[5:],
                      _duration(r["started_ns"], r["ended_ns"]), _outcome(r["exit_code"], r["signal"]),
                      str(r["processes"]), str(r["events"]))
    console.print(table)


def session_tree(store: Store, session_id: int) -> dict[str, Any] | None:
    """The session with its processes nested under their parents and each process's events."""
    session = store.session(session_id)
    if session is None:
        return None
    session.pop("processes", None)
    session.pop("events", None)
    events = store.events(session_id)
    procs = store.processes(session_id)
    by_key: dict[int, dict[str, Any]] = {}
    for p in procs:
        p["children"] = []
        p["events"] = []
        by_key[p["pid"]] = p  # later incarnations of a reused pid replace earlier ones in lookups
    for ev in events:
        owner = by_key.get(ev.get("pid") or -1)
        if owner is not None and ev["type"] not in ("session_start", "session_end"):
            owner["events"].append(ev)
    roots = []
    for p in procs:
        parent = by_key.get(p["ppid"])
        if parent is not None and parent is not p and p["depth"] > 0:
            parent["children"].append(p)
        else:
            roots.append(p)
    session["processes"] = roots
    session["other_events"] = [e for e in events if e.get("pid") not in by_key]
    return session


def _proc_label(p: dict[str, Any]) -> str:
    argv = shlex.join(p["argv"]) if p["argv"] else p["comm"]
    took = ""
    if p["exit_ns"]:
        took = f" {(p['exit_ns'] - p['start_ns']) / 1e6:.1f} ms"
    outcome = _outcome(p["exit_code"], p["signal"])
    style = "red" if (p["signal"] or p["exit_code"]) else "green"
    return f"[bold]{p['pid']}[/bold] {argv[:200]} [{style}]{outcome}[/{style}][dim]{took}[/dim]"


def print_show(tree: dict[str, Any], console: Console) -> None:
    head = Tree(f"[bold cyan]session {tree['id']}[/bold cyan] {shlex.join(tree['argv'])} "
                f"({_when(tree['started_ns'])}, {_duration(tree['started_ns'], tree['ended_ns'])}, "
                f"{_outcome(tree['exit_code'], tree['signal'])})")

    def add(node: Tree, p: dict[str, Any]) -> None:
        branch = node.add(_proc_label(p))
        for child in p["children"]:
            add(branch, child)

    for root in tree["processes"]:
        add(head, root)
    console.print(head)
    lost = [e for e in tree["other_events"] if e["type"] == "lost"]
    if lost:
        console.print(f"[bold red]{sum(e['count'] for e in lost)} events were lost (ring buffer full)[/bold red]")
