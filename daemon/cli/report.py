"""`vigil report SESSION --html FILE`: one session as a self-contained HTML page.

The page tells the same story as `vigil show` (it renders the same tree): each LLM call, the tool
calls it asked for by the model's own ids, under each its processes, effects, memory notes and
alerts; what nobody asked for set apart; the agent's own activity last. It is one file with its
style inline and no script or remote resource, so it opens anywhere, offline, and can be attached
to a ticket. Collapsing uses HTML's own <details> elements.

Everything in it comes from agents, models and the network, so it goes through Jinja2 with
autoescaping on: no captured string can become markup in the reader's browser.
"""

from __future__ import annotations

import shlex
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from vigild.correlate.effect_words import effect_words, evidence_target
from vigild.correlate.timeline import fold_effects, is_plumbing

_ENV = Environment(loader=PackageLoader("vigild.daemon.cli", "templates"), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True)


def _clock(ts_ns: int | None) -> str:
    if not ts_ns:
        return ""
    return datetime.fromtimestamp(ts_ns / 1e9, tz=timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def _when(ts_ns: int | None) -> str:
    if not ts_ns:
        return "-"
    return datetime.fromtimestamp(ts_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(start: int | None, end: int | None) -> str:
    if not start or not end:
        return "running"
    seconds = (end - start) / 1e9
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _mib(n: int | None) -> str:
    return f"{n / 2**20:.0f} MiB" if n else "-"


def _outcome(p: dict[str, Any]) -> str:
    if p.get("end_reason"):
        return str(p["end_reason"]).split(":", 1)[0]
    if p.get("signal"):
        return f"signal {p['signal']}"
    return "-" if p.get("exit_code") is None else f"exit {p['exit_code']}"


def _effect(title: str, group: list[dict[str, Any]]) -> str:
    """One line per effect (or per folded group of reads), as `vigil show` words it."""
    if len(group) > 1:
        return title
    words = effect_words(group[0])
    return f"{words.verb} {words.target}{words.detail}"


def _effects(effects: list[dict[str, Any]]) -> list[str]:
    """Effect lines, folded as `vigil show` folds them; system plumbing counted on one line."""
    shown = [e for e in effects if not is_plumbing(e)]
    lines = [_effect(title, group) for title, group in fold_effects(shown)]
    if len(effects) > len(shown):
        lines.append(f"… and {len(effects) - len(shown)} opens of system files, devices and missing paths")
    return lines


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    start, end = tool["start"] or {}, tool["end"] or {}
    return {
        "id": tool["tool_call"],
        "name": start.get("tool_name") or "process",
        "model_id": start.get("tool_call_id"),
        "command": shlex.join(start.get("argv") or [])[:400],
        "outcome": end.get("outcome", "running"),
        "duration": f"{end.get('duration_ms') or 0:.0f} ms",
        "peak": _mib(end.get("peak_memory_bytes")),
        "limits_hit": end.get("limits_hit") or [],
        "processes": [{"pid": p["pid"], "argv": shlex.join(p["argv"] or [p["comm"]])[:300], "outcome": _outcome(p)}
                      for p in tool["processes"]],
        "effects": _effects(tool["effects"]),
        "notes": [f"{n['type']} {n.get('growth_bytes') or n.get('rss_bytes') or ''}".strip() for n in tool["notes"]],
        "alerts": [_alert(d) for d in tool["detections"]],
    }


def _alert(d: dict[str, Any]) -> dict[str, Any]:
    links = [f"{link.get('type')} {evidence_target(link)}".strip() for link in d.get("evidence") or ()]
    return {"name": d["name"], "reason": d.get("reason", ""), "evidence": links}


def render_html(tree: dict[str, Any], agent_name: str | None = None) -> str:
    """The page for one `session_tree()` (whose "agent" key holds the agent's own activity, so its
    name comes separately)."""
    summary = tree["summary"]
    steps = []
    for step in tree["timeline"]:
        llm = step["llm_call"]
        text = (llm.get("text") or "").strip()
        steps.append({
            "clock": _clock(llm.get("ts_ns")),
            "provider": llm.get("provider"), "model": llm.get("model"),
            "tokens": f"{llm.get('input_tokens') or 0}→{llm.get('output_tokens') or 0}",
            "duration": f"{llm.get('duration_ms') or 0:.0f} ms", "finish": llm.get("finish_reason"),
            "text_head": text.splitlines()[0][:300] if text else "", "text": text,
            "asked": [f"{c.get('name')} ({c.get('id')})" for c in llm.get("tool_calls") or ()],
            "tools": [_tool(t) for t in step["tool_calls"]],
            "error": llm.get("error"),
        })
    agent = tree["agent"]
    return _ENV.get_template("report.html").render(
        session=tree["id"], command=shlex.join(tree.get("argv") or []), agent=agent_name,
        started=_when(tree.get("started_ns")), duration=_duration(tree.get("started_ns"), tree.get("ended_ns")),
        outcome=_outcome(tree), summary=summary, steps=steps,
        unrequested=[_tool(t) for t in tree["unrequested"]],
        agent_effects=_effects(agent["effects"]),
        agent_alerts=[_alert(d) for d in agent["detections"]], lost=tree.get("lost") or 0)


def write_html(tree: dict[str, Any], path: Path, agent_name: str | None = None) -> None:
    path.write_text(render_html(tree, agent_name), encoding="utf-8")
