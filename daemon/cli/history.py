"""Reading the store back: `vigil sessions` (one line per session with its counts) and
`vigil show` (a session's story: LLM calls, the tool calls they asked for, their processes and
effects; the tool calls no model asked for; the agent's own activity)."""

from __future__ import annotations

import json
import shlex
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from vigild.correlate.containers import container_label
from vigild.correlate.effect_words import effect_words, evidence_target
from vigild.correlate.timeline import build_timeline, fold_effects, is_plumbing, summary
from vigild.correlate.tool_links import LINK_TYPES
from vigild.daemon.store import Store

SESSION_COLUMNS = ("session", "agent", "command", "started", "duration", "outcome", "llm", "tokens", "tools",
                   "alerts", "container")


def _when(ns: int | None) -> str:
    return datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S") if ns else "-"


def _clock(ns: int | None) -> str:
    return datetime.fromtimestamp(ns / 1e9).strftime("%H:%M:%S.%f")[:-3] if ns else "--:--:--"


def _duration(start: int | None, end: int | None) -> str:
    if not start or not end:
        return "running"
    seconds = (end - start) / 1e9
    return f"{seconds:.2f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def _outcome(exit_code: int | None, signal: int | None, end_reason: str | None = None) -> str:
    if end_reason:
        return end_reason.split(":", 1)[0]
    if signal:
        return f"signal {signal}"
    return "-" if exit_code is None else f"exit {exit_code}"


def _mib(n: int | None) -> str:
    return f"{n / 2**20:.0f} MiB" if n else "-"


def sessions_with_counts(store: Store, limit: int) -> list[dict[str, Any]]:
    rows = store.sessions(limit)
    for row in rows:
        row.update(summary(store.events(row["id"], ("llm_call", "tool_start", "detection", *LINK_TYPES))))
    return rows


def print_sessions(store: Store, limit: int, as_json: bool, console: Console) -> None:
    rows = sessions_with_counts(store, limit)
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    if not console.is_terminal:
        # Piped: whole values, one tab-separated line each (a table would cut ids to its width).
        print("\t".join(SESSION_COLUMNS))
        for r in rows:
            print("\t".join((str(r["id"]), r["agent"] or "-", shlex.join(r["argv"]), _when(r["started_ns"]),
                             _duration(r["started_ns"], r["ended_ns"]),
                             _outcome(r["exit_code"], r["signal"], r.get("end_reason")), str(r["llm_calls"]),
                             f"{r['input_tokens']}→{r['output_tokens']}", str(r["tool_calls"]), str(r["detections"]),
                             container_label(r.get("container")))))
        return
    table = Table(title=f"sessions in {store.path}")
    for col in SESSION_COLUMNS:
        if col in ("command", "container"):
            table.add_column(col, overflow="ellipsis", no_wrap=True, max_width=28)
        else:
            table.add_column(col, no_wrap=True, min_width=len(col),
                             justify="right" if col in ("llm", "tokens", "tools", "alerts") else "left")
    for r in rows:
        alerts = str(r["detections"]) if not r["detections"] else f"[bold red]{r['detections']}[/bold red]"
        table.add_row(str(r["id"]), r["agent"] or "-", shlex.join(r["argv"]), _when(r["started_ns"])[5:],
                      _duration(r["started_ns"], r["ended_ns"]), _outcome(r["exit_code"], r["signal"], r.get("end_reason")),
                      str(r["llm_calls"]), f"{r['input_tokens']}→{r['output_tokens']}", str(r["tool_calls"]), alerts,
                      container_label(r.get("container")))
    console.print(table)


def process_tree(processes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Processes nested under their parents (a reused pid's later incarnation wins lookups)."""
    by_pid: dict[int, dict[str, Any]] = {}
    for p in processes:
        p["children"] = []
        by_pid[p["pid"]] = p
    roots = []
    for p in processes:
        parent = by_pid.get(p["ppid"])
        if parent is not None and parent is not p and p["depth"] > 0:
            parent["children"].append(p)
        else:
            roots.append(p)
    return roots


def session_tree(store: Store, session_id: int) -> dict[str, Any] | None:
    """Everything `vigil show` prints: the timeline, and the whole process tree with each
    process's own events."""
    session = store.session(session_id)
    if session is None:
        return None
    session.pop("processes", None)
    session.pop("events", None)
    events = store.events(session_id)
    procs = store.processes(session_id)
    own: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        if e.get("pid") is not None and e["type"] not in ("session_start", "session_end"):
            own.setdefault(e["pid"], []).append(e)
    for p in procs:
        p["events"] = own.get(p["pid"], [])
    tree = build_timeline(session, [dict(p) for p in procs], events)
    tree["processes"] = process_tree(procs)
    tree["other_events"] = [e for e in events if e.get("pid") not in own]
    return tree


# ---- rendering ----

def _proc_label(p: dict[str, Any]) -> str:
    argv = shlex.join(p["argv"]) if p["argv"] else p["comm"]
    took = f" {(p['exit_ns'] - p['start_ns']) / 1e6:.1f} ms" if p.get("exit_ns") else ""
    style = "red" if (p["signal"] or p["exit_code"]) else "green"
    return (f"[bold]{p['pid']}[/bold] {_esc(argv[:200])} [{style}]{_outcome(p['exit_code'], p['signal'])}"
            f"[/{style}][dim]{took}[/dim]")


def _esc(text: str) -> str:
    return text.replace("[", "\\[")


def _effect_label(title: str, group: list[dict[str, Any]]) -> str:
    if len(group) > 1:
        return f"[dim yellow]{_esc(title)}[/dim yellow]"
    words = effect_words(group[0])
    color = "magenta" if words.network else "yellow"
    detail = f" [dim]{words.detail.strip()}[/dim]" if words.failed else words.detail
    return f"[{color}]{words.verb}[/{color}] {_esc(words.target)}{detail}"


def _add_effects(node: Tree, effects: list[dict[str, Any]]) -> None:
    shown = [e for e in effects if not is_plumbing(e)]
    for title, group in fold_effects(shown):
        node.add(_effect_label(title, group))
    hidden = len(effects) - len(shown)
    if hidden:
        node.add(f"[dim]… and {hidden} opens of system files, devices and missing paths (-o json has them)[/dim]")


def _add_detections(node: Tree, detections: list[dict[str, Any]]) -> None:
    for d in detections:
        alert = node.add(f"[bold red]ALERT {d['name']}[/bold red]: {_esc(d['reason'])}")
        for link in d.get("evidence") or []:
            alert.add(f"[red]{link.get('type')}[/red] {_esc(evidence_target(link))}")


def _add_tool(parent: Tree, tool: dict[str, Any]) -> None:
    start, end = tool["start"] or {}, tool["end"] or {}
    name = start.get("tool_name") or "process"
    argv = shlex.join(start.get("argv") or [])
    outcome = end.get("outcome", "running")
    style = "green" if outcome == "ok" else "red"
    limits = f", hit {', '.join(end['limits_hit'])}" if end.get("limits_hit") else ""
    node = parent.add(f"[bold]tool {name}[/bold] #{tool['tool_call']} {_esc(argv[:160])} → [{style}]{outcome}"
                      f"[/{style}] [dim]{end.get('duration_ms') or 0:.0f} ms, peak {_mib(end.get('peak_memory_bytes'))}"
                      f"{limits}[/dim]")
    for p in tool["processes"]:
        node.add(_proc_label(p))
    _add_effects(node, tool["effects"])
    for note in tool["notes"]:
        node.add(f"[red]{note['type']}[/red] {_esc(json.dumps({k: v for k, v in note.items() if k.endswith('bytes')}))}")
    _add_detections(node, tool["detections"])


def _add_mcp(parent: Tree, call: dict[str, Any]) -> None:
    """An MCP tool call (correlate/mcp.py) and the effects its server had while serving it."""
    style = "green" if call.get("status") == "ok" else "red"
    node = parent.add(f"[bold]mcp[/bold] {_esc(str(call.get('server') or call.get('server_pid')))} "
                      f"{_esc(str(call.get('tool')))} [{style}]{call.get('status')}[/{style}] "
                      f"[dim]{call.get('duration_ms') or 0:.0f} ms, {call.get('attribution')} attribution"
                      f"{', ' + str(call['llm_tool_call_id']) if call.get('llm_tool_call_id') else ''}[/dim]")
    _add_effects(node, call.get("effects") or [])


def print_show(tree: dict[str, Any], console: Console) -> None:
    s = tree["summary"]
    head = Tree(f"[bold cyan]session {tree['id']}[/bold cyan] {_esc(shlex.join(tree['argv']))} "
                f"({_when(tree['started_ns'])}, {_duration(tree['started_ns'], tree['ended_ns'])}, "
                f"{_outcome(tree['exit_code'], tree['signal'])}) — {s['llm_calls']} LLM calls, "
                f"{s['input_tokens']}→{s['output_tokens']} tokens, {s['tool_calls']} tool calls, "
                f"{s['detections']} alerts")
    if tree.get("container"):
        head.add(f"[bold]container[/bold] {_esc(container_label(tree['container']))}")
    for step in tree["timeline"]:
        llm = step["llm_call"]
        node = head.add(f"[cyan]{_clock(llm.get('ts_ns'))} llm[/cyan] {llm.get('provider')} {llm.get('model')} "
                        f"[dim]{llm.get('input_tokens')}→{llm.get('output_tokens')} tokens, "
                        f"{llm.get('duration_ms') or 0:.0f} ms, {llm.get('finish_reason')}[/dim]")
        for tool in step["tool_calls"]:
            _add_tool(node, tool)
        for mcp in step.get("mcp_calls", ()):
            _add_mcp(node, mcp)
    if tree["unrequested"]:
        branch = head.add("[bold red]no tool call asked for these[/bold red]")
        for tool in tree["unrequested"]:
            _add_tool(branch, tool)
    agent = tree["agent"]
    branch = head.add("[bold]the agent's own processes and effects[/bold]")
    roots = [p for p in tree["processes"]]

    def add_proc(node: Tree, p: dict[str, Any]) -> None:
        child = node.add(_proc_label(p))
        for c in p["children"]:
            if c in agent["processes"] or not tree["timeline"] and not tree["unrequested"]:
                add_proc(child, c)

    for root in roots:
        add_proc(branch, root)
    _add_effects(branch, agent["effects"])
    for mcp in agent.get("mcp_calls", ()):
        _add_mcp(branch, mcp)
    _add_detections(branch, agent["detections"])
    console.print(head)
    if tree["lost"]:
        console.print(f"[bold red]{tree['lost']} events were lost (effects shed under load, or the ring buffer "
                      "full)[/bold red]")
