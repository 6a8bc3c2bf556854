"""`vigil trace -o text`: a readable live view with rich.

Each event is one line, indented by its process's depth in the traced tree and tagged with the
tool call it belongs to (the tool's name and the model's id for it). What every program does at
start — reads of system files and of language runtimes' trees, failed lookups, /dev — is counted,
not printed (`--all` prints it). A status line is kept on stderr only while nothing else writes to
the terminal (tracing `-p PID`), so it never fuses with the traced command's output; a summary
closes the run: LLM calls, tokens, tool calls by outcome, alerts, losses.
"""

from __future__ import annotations

import shlex
import time
from collections import Counter
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from vigild.bpf.events import ExecEvent, ExitEvent, ForkEvent
from vigild.correlate.process_tree import ProcessTable
from vigild.correlate.timeline import is_plumbing
from vigild.daemon.sinks.live_effects import EFFECT_LINES
from vigild.daemon.events import Event, LostEvent, SessionEnd, SessionStart

MAX_ARGV_CHARS = 400


def _clock(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9).strftime("%H:%M:%S.%f")[:-3]


def _argv(argv: list[str]) -> str:
    text = shlex.join(argv)
    if len(text) > MAX_ARGV_CHARS:
        return text[:MAX_ARGV_CHARS] + f"… ({len(text)} chars)"
    return text


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / (1 << 20):.0f} MiB"


def _tool_start_line(ts: str, pid: int, indent: str, d: dict) -> Text:
    line = Text(f"{ts} tool▶ {pid:>7} {indent}", style="bold blue")
    line.append(f"call {d['tool_call']} {_argv(d['argv'])}", style="bold blue")
    why = f"{d['tool_name']} {d['tool_call_id']}" if not d.get("unrequested") else "unrequested"
    line.append(f"  [{why}; {d.get('cgroup') or 'not placed: ' + str(d.get('placement_error'))}]", style="blue")
    return line


def _tool_end_line(ts: str, pid: int, indent: str, d: dict) -> Text:
    bad = d["outcome"] != "ok"
    line = Text(f"{ts} tool■ {pid:>7} {indent}", style="bold red" if bad else "bold blue")
    line.append(f"call {d['tool_call']} {d['outcome']} after {d['duration_ms']:.0f} ms, peak "
                f"{_mib(d.get('peak_memory_bytes'))}")
    if d.get("limits_hit"):
        line.append(f", hit {', '.join(d['limits_hit'])}", style="bold red")
    if d.get("cpu_delay_ms") is not None:
        line.append(f", waited cpu {d['cpu_delay_ms']:.0f} / io {d['blkio_delay_ms']:.0f} / reclaim "
                    f"{d['reclaim_delay_ms']:.0f} ms", style="dim")
    return line


def _mem_spike_line(ts: str, pid: int, indent: str, d: dict) -> Text:
    return Text(f"{ts} spike {pid:>7} {indent}call {d['tool_call']} grew {_mib(d['growth_bytes'])} within "
                f"{d['window_ms']:.0f} ms (call now {_mib(d['call_rss_bytes'])})", style="yellow")


def _oom_kill_line(ts: str, pid: int, indent: str, d: dict) -> Text:
    return Text(f"{ts} OOM   {pid:>7} {indent}call {d['tool_call']}: the kernel killed {d['comm']} "
                f"(rss {_mib(d['rss_bytes'])})", style="bold red")


def _tool_linked_line(ts: str, pid: int, indent: str, d: dict) -> Text:
    return Text(f"{ts} tool= {pid:>7} {indent}call {d['tool_call']} is {d['tool_name']} {d['tool_call_id']} "
                f"(learnt from {d.get('source')} after it started)", style="blue")


TOOL_LINES = {"tool_start": _tool_start_line, "tool_linked": _tool_linked_line, "tool_end": _tool_end_line,
              "mem_spike": _mem_spike_line, "oom_kill": _oom_kill_line}


class TextView:
    def __init__(self, processes: ProcessTable, console: Console | None = None, *, show_all: bool = False,
                 verbose: bool = False, status_line: bool = True) -> None:
        self.console = console or Console(highlight=False)
        self.processes = processes
        self.show_all = show_all
        self.verbose = verbose
        self.events = 0
        self.dropped = 0
        self.folded = 0
        self.started = time.monotonic()
        self.tags: dict[int, str] = {}  # tool call -> "Bash toolu_01…", the label its lines carry
        self.totals: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self._live: Live | None = None
        status_console = Console(stderr=True, highlight=False)
        if status_line and status_console.is_terminal:
            self._live = Live(self._status(), console=status_console, refresh_per_second=4, transient=True)
            self._live.start()

    def _status(self) -> Text:
        elapsed = time.monotonic() - self.started
        alive = sum(1 for p in self.processes.processes.values() if p.alive)
        style = "bold red" if self.dropped else "dim"
        return Text(f"events {self.events} · dropped {self.dropped} · tracked {alive} · {elapsed:.0f}s", style=style)

    def _line(self, event: Event, record: dict[str, Any]) -> Text | None:
        ts = _clock(event.ts_ns)
        if isinstance(event, LostEvent):
            self.dropped = event.total
            return Text(f"{ts} LOST  {event.count} {event.kind} events (shed under load or ring buffer full; {event.total} so far)",
                        style="bold red")
        if isinstance(event, SessionStart):
            verb = "END  " if isinstance(event, SessionEnd) else "START"
            s = event.session
            tail = ""
            if isinstance(event, SessionEnd):
                tail = f" → signal {s.signal}" if s.signal else f" → exit {s.exit_code}"
            return Text(f"{ts} {verb} session {s.id} pid {s.root_pid} {_argv(s.argv)}{tail}", style="bold cyan")
        pid = getattr(event, "pid", 0)
        indent = "  " * self.processes.depth(pid)
        if isinstance(event, ForkEvent):
            return Text(f"{ts} fork  {pid:>7} {indent}↳ from {event.ppid}", style="dim")
        if isinstance(event, ExecEvent):
            line = Text(f"{ts} exec  {pid:>7} {indent}", style="green")
            line.append(_argv(event.argv) or event.filename, style="bold green")
            if event.argv_truncated:
                line.append(f"  [argv cut at {len(event.argv)} args of {event.argv_bytes} bytes]", style="yellow")
            return line
        if isinstance(event, ExitEvent):
            info = self.processes.get(pid)
            took = f" after {info.duration_ms:.1f} ms" if info and info.duration_ms is not None else ""
            if event.signal:
                return Text(f"{ts} exit  {pid:>7} {indent}✗ {event.comm} killed by {event.signal_name}{took}", style="red")
            style = "red" if event.exit_code else "blue"
            return Text(f"{ts} exit  {pid:>7} {indent}{'✗' if event.exit_code else '✓'} {event.comm} "
                        f"exit {event.exit_code}{took}", style=style)
        d = record
        pid = d.get("pid") or 0
        indent = "  " * self.processes.depth(pid)
        if d.get("type") == "llm_call":
            return self._llm_line(ts, pid, indent, d)
        if d.get("type") == "https_request":
            return Text(f"{ts} https {pid:>7} {indent}{d.get('method')} {d.get('host') or ''}{d.get('path')} "
                        f"→ {d.get('status')}", style="magenta")
        if d.get("type") in TOOL_LINES:
            return TOOL_LINES[d["type"]](ts, pid, indent, d)
        if d.get("type") in EFFECT_LINES:
            return EFFECT_LINES[d["type"]](ts, pid, indent, d)
        if d.get("type") == "capture_blind":
            return Text(f"{ts} BLIND {pid:>7} {indent}vigil cannot read the TLS plaintext of {d.get('binary')} "
                        f"({d.get('stack')}): {d.get('reason')}", style="bold yellow")
        if d.get("type") == "capture_hooked":
            found = f", located in {d['locate_ms']:.0f} ms" if d.get("locate_ms") is not None else ""
            return Text(f"{ts} tls   {pid:>7} {indent}TLS of {d.get('binary')} hooked ({d.get('stack')} by "
                        f"{d.get('how')}{' from cache' if d.get('cached') else found})", style="dim")
        if d.get("type") == "parse_failure":
            return Text(f"{ts} ?     {pid:>7} {indent}undecoded TLS traffic: {d.get('reason')}: {d.get('detail')}",
                        style="yellow")
        return Text(f"{ts} {d.get('type', '?'):<5} {pid:>7} {indent}{d}")

    def _llm_line(self, ts: str, pid: int, indent: str, d: dict) -> Text:
        line = Text(f"{ts} llm   {pid:>7} {indent}", style="cyan")
        line.append(f"{d.get('provider')} {d.get('model')}", style="bold cyan")
        tokens = f"{d.get('input_tokens')}→{d.get('output_tokens')} tok"
        timing = f"{d.get('duration_ms') or 0:.0f} ms"
        if d.get("stream") and d.get("ttft_ms") is not None:
            timing += f", first token {d['ttft_ms']:.0f} ms"
        line.append(f"  {d.get('status')} {tokens}, {timing}, {d.get('finish_reason')}")
        text = (d.get("text") or "").strip()
        if text:
            shown = text if self.verbose else text.splitlines()[0][:160] + (" …" if len(text) > 160 or "\n" in text
                                                                            else "")
            line.append(f"\n{' ' * 22}{indent}“{shown}”", style="italic")
        for call in d.get("tool_calls") or []:
            args = call.get("arguments", call.get("arguments_raw"))
            line.append(f"\n{' ' * 22}{indent}↳ tool {call.get('name')}({str(args)[:160]})", style="bold yellow")
        return line

    def handle(self, event: Event, record: dict[str, Any]) -> None:
        self.events += 1
        kind = event.type
        if kind in ("file_open", "llm_call", "tool_start", "tool_linked", "tool_end", "detection", "alert_retracted"):
            d = record
            self._count(kind, d)
            if kind == "file_open" and not self.show_all and is_plumbing(d):
                self.folded += 1
                return
        line = self._line(event, record)
        if line is None:
            return
        call = getattr(event, "tool_call", None) or (record.get("tool_call") if kind in TOOL_LINES else None)
        if call and call in self.tags:
            line = Text.assemble(Text(f"[{self.tags[call]}] ", style="dim blue"), line)
        self.console.print(line, soft_wrap=True)

    def _count(self, kind: str, d: dict) -> None:
        if kind == "llm_call":
            self.totals["llm_calls"] += 1
            self.totals["input_tokens"] += d.get("input_tokens") or 0
            self.totals["output_tokens"] += d.get("output_tokens") or 0
        elif kind in ("tool_start", "tool_linked") and d.get("tool_call") is not None:
            ident = d.get("tool_call_id") or "unrequested"
            self.tags[d["tool_call"]] = f"{d.get('tool_name') or 'process'} {ident[:14]}"
        elif kind == "tool_end":
            self.outcomes[d.get("outcome") or "?"] += 1
        elif kind == "detection":
            self.totals["alerts"] += 1
        elif kind == "alert_retracted":
            self.totals["alerts"] -= 1

    def summary(self) -> Text:
        """The run in one line: what the model was asked and did, and what was lost or folded."""
        calls = ", ".join(f"{n} {outcome}" for outcome, n in self.outcomes.most_common()) or "none"
        text = Text(f"summary: {self.totals['llm_calls']} LLM calls, {self.totals['input_tokens']}→"
                    f"{self.totals['output_tokens']} tokens; tool calls: {calls}; ", style="bold")
        text.append(f"{self.totals['alerts']} alerts", style="bold red" if self.totals["alerts"] else "bold")
        text.append(f"; {self.events} events, {self.dropped} lost", style="bold red" if self.dropped else "bold")
        if self.folded:
            text.append(f"; {self.folded} opens of system and runtime files folded (--all shows them)", style="dim")
        return text

    def flush(self) -> None:
        if self._live is not None:
            self._live.update(self._status())

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        self.console.print(self.summary())
