"""`vigil top`: a live terminal view over vigild, one row per session it watches (agent, LLM calls,
tokens, tool calls running and done, peak memory, limits hit, alerts), refreshed every second;
`--session ID` drills into one session's recent activity. It reads vigild's `top` command over the
control socket, so it costs vigild one small answer per refresh."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

COLUMNS = ("session", "agent", "pid", "up", "llm", "tokens", "tools run/done", "failed", "peak mem", "limits", "alerts",
           "command")


def _age(start_ns: int, end_ns: int | None) -> str:
    seconds = int(((end_ns or time.time_ns()) - start_ns) / 1e9) if start_ns else 0
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f}M" if n else "-"


def render(snapshot: dict[str, Any], session_id: int | None = None) -> Group:
    """The table (and the drill-down) for one answer of vigild's `top` command."""
    table = Table(title=f"vigil top — {datetime.now():%H:%M:%S}", expand=True)
    for col in COLUMNS:
        table.add_column(col, no_wrap=col != "command", overflow="ellipsis",
                         justify="right" if col in ("llm", "tokens", "failed", "limits", "alerts") else "left")
    for s in sorted(snapshot["sessions"], key=lambda s: (s["ended_ns"] is not None, -s["started_ns"])):
        style = "dim" if s["ended_ns"] else ("bold red" if s["alerts"] else "")
        table.add_row(str(s["session_id"]), s["agent"], str(s["pid"]), _age(s["started_ns"], s["ended_ns"]),
                      str(s["llm_calls"]), f"{s['input_tokens']}→{s['output_tokens']}",
                      f"{s['tools_running']}/{s['tools_done']}", str(s["tools_failed"]), _mib(s["peak_memory_bytes"]),
                      str(s["limits_hit"]), str(s["alerts"]), s["command"] + (f" ({s['outcome']})" if s["outcome"] else ""),
                      style=style)
    parts: list[Any] = [table]
    if session_id is not None:
        recent = snapshot.get("recent")
        parts.append(Text(f"session {session_id}: " + ("not watched (ended long ago, or never)" if recent is None
                                                      else f"last {len(recent)} events"), style="bold"))
        for line in recent or ():
            parts.append(Text("  " + line, style="red" if line.startswith("ALERT") else ""))
    return Group(*parts)


def run_top(ask: Callable[[], dict[str, Any]], console: Console, session_id: int | None, interval: float) -> None:
    """Refresh until Ctrl-C."""
    with Live(render(ask(), session_id), console=console, screen=console.is_terminal, auto_refresh=False) as live:
        while True:
            time.sleep(interval)
            live.update(render(ask(), session_id), refresh=True)
