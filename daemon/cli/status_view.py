"""`vigil status` as text: what the `status` command of the control socket answered."""

from __future__ import annotations

import shlex
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def print_status(status: dict[str, Any], console: Console) -> None:
    uptime = int(status["uptime_s"])
    console.print(f"vigild pid {status['pid']}, up {uptime // 3600}h{uptime // 60 % 60:02d}m{uptime % 60:02d}s")
    console.print(f"  programs attached  {status['programs_attached']} "
                  f"({status['tls_libraries_hooked']} TLS libraries hooked)")
    console.print(f"  agents watched     {', '.join(status['agents']) or '-'}")
    console.print(f"  sessions           {status['sessions_open']} open, {status['sessions_total']} since start; "
                  f"{status['tracked_processes']} processes tracked")
    console.print(f"  events             {status['events_total']} ({status['events_per_s']}/s), "
                  f"{status['drops']} dropped")
    console.print(f"  store              {status['store']['path']} ({_size(status['store']['bytes'])})")
    for name, feature in status.get("features", {}).items():
        state = "available" if feature["available"] else f"unavailable: {feature['reason']}"
        console.print(f"  feature {name:<14} {state}", markup=False, highlight=False)
    placement = status.get("tool_placement") or {}
    for tree in placement.get("agent_trees", []):
        console.print(f"  tool calls in      {tree}", markup=False, highlight=False)
    for where, why in placement.get("below_vigild", {}).items():
        console.print(f"  tool calls of {where} run below vigild's own cgroup: {why}", markup=False, highlight=False)
    if status["sessions"]:
        table = Table("session", "agent", "pid", "since", "command")
        for s in status["sessions"]:
            since = datetime.fromtimestamp(s["started_ns"] / 1e9).strftime("%Y-%m-%d %H:%M:%S")
            table.add_row(str(s["session_id"]), s["agent"] or "-", str(s["pid"]), since, shlex.join(s["argv"]))
        console.print(table)
