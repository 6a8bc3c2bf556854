"""Per-session counters for `vigil top`: a sink that keeps, for each session vigild is watching,
what an operator scans a host for (LLM calls, tokens, tool calls running and done, peak memory,
limits hit, alerts) and the last few things that happened, so the top view and its drill-down are
one small request over the control socket, not a query of the whole store.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from vigild.daemon.events import Event

RECENT = 40           # lines of recent activity kept per session for the drill-down
ENDED_KEPT_S = 60.0   # an ended session stays listed this long, so its end is seen
SESSIONS_KEPT = 1024


@dataclass
class SessionStats:
    session_id: int
    agent: str
    pid: int
    command: str
    started_ns: int
    ended_ns: int | None = None
    outcome: str | None = None
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    tools_running: int = 0
    tools_done: int = 0
    tools_failed: int = 0
    peak_memory_bytes: int = 0
    limits_hit: int = 0
    alerts: int = 0
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT))
    ended_at: float | None = None

    def row(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("recent", "ended_at")}


class SessionStatsSink:
    """Folds events into SessionStats; `snapshot()` is read from the control socket's threads."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[int, SessionStats] = OrderedDict()
        self._lock = threading.Lock()

    def handle(self, event: Event, record: dict[str, Any]) -> None:
        kind = event.type
        if kind not in ("session_start", "session_end", "llm_call", "tool_start", "tool_end", "detection"):
            return
        d = record
        sid = d.get("session_id")
        if sid is None:
            return
        with self._lock:
            if kind == "session_start":
                self._sessions[sid] = SessionStats(sid, d.get("agent") or "-", d.get("pid") or 0,
                                                   shlex.join(d.get("argv") or [])[:200], d.get("started_ns") or 0)
                self._forget_old()
                return
            stats = self._sessions.get(sid)
            if stats is None:
                return
            if kind == "session_end":
                stats.ended_ns = d.get("ended_ns") or d.get("ts_ns")
                stats.outcome = f"signal {d['signal']}" if d.get("signal") else f"exit {d.get('exit_code')}"
                stats.ended_at = time.monotonic()
                stats.recent.append(f"session ended: {stats.outcome}")
            elif kind == "llm_call":
                stats.llm_calls += 1
                stats.input_tokens += d.get("input_tokens") or 0
                stats.output_tokens += d.get("output_tokens") or 0
                asked = ", ".join(c.get("name") or "?" for c in d.get("tool_calls") or ())
                stats.recent.append(f"llm {d.get('model')} {d.get('input_tokens') or 0}→"
                                    f"{d.get('output_tokens') or 0} tokens" + (f", asked {asked}" if asked else ""))
            elif kind == "tool_start":
                stats.tools_running += 1
                stats.recent.append(f"tool {d.get('tool_name') or 'process'} started: "
                                    f"{shlex.join(d.get('argv') or [])[:120]}")
            elif kind == "tool_end":
                stats.tools_running = max(0, stats.tools_running - 1)
                stats.tools_done += 1
                stats.tools_failed += d.get("outcome") not in (None, "ok")
                stats.peak_memory_bytes = max(stats.peak_memory_bytes, d.get("peak_memory_bytes") or 0)
                stats.limits_hit += bool(d.get("limits_hit"))
                stats.recent.append(f"tool {d.get('tool_name') or 'process'} → {d.get('outcome')}")
            else:
                stats.alerts += 1
                stats.recent.append(f"ALERT {d.get('name')}: {d.get('reason')}")

    def _forget_old(self) -> None:
        now = time.monotonic()
        for sid in [s.session_id for s in self._sessions.values()
                    if s.ended_at is not None and now - s.ended_at > ENDED_KEPT_S]:
            del self._sessions[sid]
        while len(self._sessions) > SESSIONS_KEPT:
            self._sessions.popitem(last=False)

    def snapshot(self, session_id: int | None = None) -> dict[str, Any]:
        """Every listed session's row; with `session_id`, that one's recent activity too."""
        with self._lock:
            self._forget_old()
            rows = [s.row() for s in self._sessions.values()]
            detail = self._sessions.get(session_id) if session_id is not None else None
            return {"sessions": rows, "recent": list(detail.recent) if detail else None}

    def flush(self) -> None:
        """Counters only: nothing to write."""

    def close(self) -> None:
        """Nothing held."""
