"""Tool calls: which process belongs to which call, which LLM tool call asked for it, how it ended.

Pure bookkeeping over decoded events, no kernel or cgroup access (the cgroup actions live in
``daemon/tools/control_loop.py``), so all of it is tested with plain dataclasses.

A tool call is a process that a controlled agent root forks and that execs (the kernel flags that
exec ``call_start``), together with everything it forks later. Its id is that first process's pid,
the same ``call_id`` the kernel writes into the tracked map, so kernel events (memory spikes, OOM
kills) name the call directly.
"""

from __future__ import annotations

import shlex
import signal as signal_mod
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vigild.bpf.events import ExecEvent
from vigild.correlate.shell_commands import inner_commands

INTENT_MAX_AGE_NS = 300 * 1_000_000_000  # an LLM tool call older than this is not "shortly before"
# Unrequested calls kept per session for a late intent to link (telemetry arrives after the tool ran)
ENDED_UNREQUESTED_KEPT = 64
# Telemetry dates a call by the agent's own clock, tool calls are dated by the kernel's: a late
# link by telemetry allows them to disagree by this much (the tool cannot start before the ask)
CLOCK_SLACK_NS = 2 * 1_000_000_000
SESSIONS_KEPT = 1024
MIN_MATCH_CHARS = 2
COMMAND_KEYS = ("command", "cmd", "script", "code", "commandLine", "shell_command")

OUTCOMES = ("ok", "exit", "oom_killed", "signal", "timeout")


@dataclass
class ToolIntent:
    """One tool call an LLM response asked for."""

    session_id: int | None
    ts_ns: int
    llm_seq: int  # which LLM call of the session it came from (increasing)
    tool_call_id: str | None
    tool_name: str | None
    arguments: Any
    response_id: str | None
    consumed: bool = False

    def strings(self) -> list[str]:
        """Argument strings worth looking for in a command line, command-like keys first."""
        args = self.arguments
        found: list[str] = []
        if isinstance(args, dict):
            found += [args[k] for k in COMMAND_KEYS if isinstance(args.get(k), str)]
            found += [v for k, v in args.items() if k not in COMMAND_KEYS and isinstance(v, str)]
        elif isinstance(args, str):
            found.append(args)
        return [s.strip() for s in found if len(s.strip()) >= MIN_MATCH_CHARS]


def command_is(needle: str, argv: list[str]) -> bool:
    """Is this command line exactly the tool argument `needle`, run directly (`ls -la`) or
    through the agent's wrappers (`bash -c`, `bash -lc`, a shell snapshot and `eval '…'`, a
    trapped subshell, a re-exec ending in `exec bash -c '…'`: see shell_commands)?"""
    needle = needle.strip()
    return bool(argv) and (" ".join(argv) == needle or needle in inner_commands(argv))


def command_matches(needle: str, argv: list[str]) -> bool:
    """Does the tool argument `needle` show up in this command line? `{"command": "ls -la"}`
    runs as `bash -c "ls -la"` (one argument) or as `ls -la` (two); exactly (`command_is`) or
    as a part of a longer command line."""
    if not argv:
        return False
    if needle in argv or command_is(needle, argv):
        return True
    joined = " ".join(argv)
    if needle in joined:
        return True
    try:
        return " ".join(shlex.split(needle)) in joined
    except ValueError:
        return False


@dataclass
class ToolCall:
    """One tool call and what is known about it so far."""

    id: int
    session_id: int
    pid: int
    ppid: int
    argv: list[str]
    filename: str
    start_ns: int
    held: bool
    pids: set[int] = field(default_factory=set)       # alive members
    all_pids: set[int] = field(default_factory=set)   # every member ever
    intent: ToolIntent | None = None
    match: str | None = None  # "command" or "order"; None when unrequested
    link_source: str | None = None  # where a late link came from ("telemetry", "tls"); None: linked at start
    exit_code: int | None = None
    signal: int | None = None
    end_ns: int | None = None
    oom_kills: int = 0
    oom_victims: list[int] = field(default_factory=list)
    mem_spikes: int = 0
    max_call_rss: int = 0
    timed_out: bool = False
    killed_reason: str | None = None  # why vigil killed it: "timeout", "agent_exited", "shutdown"

    @property
    def unrequested(self) -> bool:
        return self.intent is None

    @property
    def ended(self) -> bool:
        return self.end_ns is not None


def first_process_call(event: ExecEvent) -> ToolCall:
    """The call a first exec starts, not yet in any book (the held lane places it before the
    book, which follows the ring buffer's order, records it)."""
    return ToolCall(id=event.pid, session_id=event.session_id, pid=event.pid, ppid=event.ppid,
                    argv=list(event.argv), filename=event.filename, start_ns=event.ts_ns, held=event.held,
                    pids={event.pid}, all_pids={event.pid})


def outcome(call: ToolCall, oom_kills: int) -> str:
    """How the call ended. OOM is known from the kernel (tracepoint or cgroup counter), never
    inferred from an exit status of 137, which any SIGKILL gives."""
    if call.timed_out:
        return "timeout"
    if oom_kills > 0:
        return "oom_killed"
    if call.signal:
        return "signal"
    if call.exit_code:
        return "exit"
    return "ok"


class ToolCallBook:
    """Call membership and intent matching for every controlled agent."""

    def __init__(self, intent_max_age_ns: int = INTENT_MAX_AGE_NS) -> None:
        self.calls: dict[int, ToolCall] = {}      # open calls by id
        self.member: dict[int, int] = {}          # alive pid -> call id
        self.intents: dict[int | None, deque[ToolIntent]] = {}
        # ended calls no model asked for yet: an intent that arrives late may still name them
        self.ended_unrequested: dict[int | None, deque[ToolCall]] = {}
        self._llm_seq = 0
        self.intent_max_age_ns = intent_max_age_ns

    # ---- processes ----
    def start(self, event: ExecEvent) -> ToolCall:
        """A call starts at its first process's exec (event.call_start)."""
        call = first_process_call(event)
        self.calls[call.id] = call
        self.member[event.pid] = call.id
        self._link_intent(call)
        return call

    def fork(self, pid: int, ppid: int) -> ToolCall | None:
        """A member's child belongs to the member's call."""
        call = self.call_of(ppid)
        if call is None:
            return None
        call.pids.add(pid)
        call.all_pids.add(pid)
        self.member[pid] = call.id
        return call

    def exit(self, pid: int, ts_ns: int, exit_code: int | None, signal: int | None) -> ToolCall | None:
        """Record an exit; returns the call if this was its last process (the call is over)."""
        call_id = self.member.pop(pid, None)
        call = self.calls.get(call_id) if call_id is not None else None
        if call is None:
            return None
        call.pids.discard(pid)
        if pid == call.pid:
            call.exit_code, call.signal = exit_code, signal
        if call.pids:
            return None
        return self.end(call, ts_ns)

    def end(self, call: ToolCall, ts_ns: int) -> ToolCall:
        """Close the call (last exit seen, or its cgroup found empty)."""
        call.end_ns = ts_ns
        self.calls.pop(call.id, None)
        if call.unrequested:
            self._remember_unrequested(call)
        for pid in call.pids:
            self.member.pop(pid, None)
        call.pids.clear()
        return call

    def call_of(self, pid: int) -> ToolCall | None:
        call_id = self.member.get(pid)
        return self.calls.get(call_id) if call_id is not None else None

    def note_oom(self, call_id: int, victim: int) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            call.oom_kills += 1
            call.oom_victims.append(victim)

    def note_spike(self, call_id: int, call_rss: int) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            call.mem_spikes += 1
            call.max_call_rss = max(call.max_call_rss, call_rss)

    # ---- intent ----
    def llm_call(self, session_id: int | None, ts_ns: int, tool_calls: list[dict[str, Any]],
                 response_id: str | None, source: str = "tls") -> list[ToolCall]:
        """Remember the tool calls an LLM response asked for; spawns that follow consume them.
        A tool call that already ran as an unrequested call (its intent arrived late: the
        agent's telemetry, a response read after the spawn) is linked to it now instead;
        returns the calls so linked."""
        if not tool_calls:
            return []
        self._llm_seq += 1
        queue = self.intents.setdefault(session_id, deque(maxlen=256))
        linked: list[ToolCall] = []
        for tc in tool_calls:
            intent = ToolIntent(session_id=session_id, ts_ns=ts_ns, llm_seq=self._llm_seq,
                                tool_call_id=tc.get("id"), tool_name=tc.get("name"),
                                arguments=tc.get("arguments", tc.get("arguments_raw")), response_id=response_id)
            queue.append(intent)
            call = self._late_call(intent, CLOCK_SLACK_NS if source == "telemetry" else 0)
            if call is not None:
                self._consume(call, intent, "command")
                call.link_source = source
                linked.append(call)
        return linked

    def _late_call(self, intent: ToolIntent, slack_ns: int) -> ToolCall | None:
        """The earliest unrequested call of the intent's session, started after the model was
        asked (and not later than an intent may be fresh), whose command is exactly the intent's
        (run directly or through the agent's wrappers: `bash -lc`, a shell snapshot and `eval`,
        `exec bash -c`). Never a command line merely containing it, never by order: the spawn
        a late intent names has already happened, and a looser guess could take another's."""
        session = intent.session_id
        candidates = sorted((c for c in [*self.calls.values(), *self.ended_unrequested.get(session, ())]
                             if c.session_id == session and c.unrequested
                             and -slack_ns <= c.start_ns - intent.ts_ns <= self.intent_max_age_ns),
                            key=lambda c: c.start_ns)
        strings = intent.strings()
        return next((c for c in candidates if any(command_is(s, c.argv) for s in strings)), None)

    def _remember_unrequested(self, call: ToolCall) -> None:
        """Keep an ended unrequested call for a late intent: the last few per session, of the
        last sessions only (a long-running vigild sees sessions come and go)."""
        kept = self.ended_unrequested.pop(call.session_id, None) or deque(maxlen=ENDED_UNREQUESTED_KEPT)
        kept.append(call)
        self.ended_unrequested[call.session_id] = kept  # re-inserted last: the newest session
        while len(self.ended_unrequested) > SESSIONS_KEPT:
            del self.ended_unrequested[next(iter(self.ended_unrequested))]

    def _fresh(self, session_id: int | None, ts_ns: int) -> list[ToolIntent]:
        queue = self.intents.get(session_id) or ()
        return [i for i in queue if not i.consumed and 0 <= ts_ns - i.ts_ns <= self.intent_max_age_ns]

    def requested(self, session_id: int | None, argv: list[str], ts_ns: int) -> bool:
        """Whether a pending LLM tool call of the session names this command line (so it is
        the model's, whatever an agent profile says of its shape)."""
        return any(command_matches(s, argv) for i in self._fresh(session_id, ts_ns) for s in i.strings())

    def _link_intent(self, call: ToolCall) -> None:
        """The tool call whose command this is, exactly (through the agent's wrappers); else
        one whose argument shows up in the command line; only when none does, the oldest
        unconsumed tool call of the session's last LLM call; else the call is unrequested."""
        queue = self.intents.get(call.session_id)
        if not queue:
            return
        fresh = self._fresh(call.session_id, call.start_ns)
        for test in (command_is, command_matches):
            for intent in fresh:
                if any(test(s, call.argv) for s in intent.strings()):
                    self._consume(call, intent, "command")
                    return
        if not fresh:
            return
        last = max(i.llm_seq for i in queue)
        pending = [i for i in fresh if i.llm_seq == last]
        if pending:
            self._consume(call, pending[0], "order")

    @staticmethod
    def _consume(call: ToolCall, intent: ToolIntent, how: str) -> None:
        intent.consumed = True
        call.intent = intent
        call.match = how


# ---- events ------------------------------------------------------------------------------------

def _intent_fields(call: ToolCall) -> dict[str, Any]:
    intent = call.intent
    return {
        "tool_call_id": intent.tool_call_id if intent else None,
        "tool_name": intent.tool_name if intent else None,
        "response_id": intent.response_id if intent else None,
        "match": call.match,
        "unrequested": intent is None,
    }


@dataclass
class ToolStart:
    """A tool call began: its first process exec'd and (when held) was placed in its cgroup
    before running. `hold_ms` is how long the kernel kept it stopped."""

    type: ClassVar[str] = "tool_start"
    ts_ns: int
    call: ToolCall
    cgroup: str | None
    limits: dict[str, Any]
    hold_ms: float | None
    placement_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        c = self.call
        return {"type": self.type, "ts_ns": self.ts_ns, "session_id": c.session_id, "tool_call": c.id,
                "pid": c.pid, "ppid": c.ppid, "argv": c.argv, "filename": c.filename, **_intent_fields(c),
                "cgroup": self.cgroup, "limits": self.limits, "held": c.held, "hold_ms": self.hold_ms,
                "placement_error": self.placement_error}


@dataclass
class ToolLinked:
    """A tool call that started unrequested is the model's after all: an intent that arrived
    after its spawn (the agent's telemetry, a response read late) names its command. Its
    tool_start said `unrequested`; from here on the call is linked (its tool_end, when it comes
    after this, carries the id), and readers of the history apply this to its start."""

    type: ClassVar[str] = "tool_linked"
    ts_ns: int
    call: ToolCall

    def to_dict(self) -> dict[str, Any]:
        c = self.call
        return {"type": self.type, "ts_ns": self.ts_ns, "session_id": c.session_id, "tool_call": c.id,
                "pid": c.pid, "start_ns": c.start_ns, "argv": c.argv, **_intent_fields(c),
                "source": c.link_source, "ended": c.ended}


@dataclass
class ToolEnd:
    """A tool call is over: its last process exited (or vigil ended it)."""

    type: ClassVar[str] = "tool_end"
    ts_ns: int
    call: ToolCall
    outcome: str
    limits: dict[str, Any]
    limits_hit: list[str]
    peak_memory_bytes: int | None
    oom_kills: int
    processes: int
    delays: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        c = self.call
        sig = c.signal
        return {"type": self.type, "ts_ns": self.ts_ns, "session_id": c.session_id, "tool_call": c.id,
                "pid": c.pid, "argv": c.argv, **_intent_fields(c),
                "duration_ms": round((self.ts_ns - c.start_ns) / 1e6, 3), "outcome": self.outcome,
                "exit_code": c.exit_code, "signal": sig, "signal_name": _signal_name(sig),
                "killed_by_vigil": c.killed_reason, "limits_hit": self.limits_hit, "limits": self.limits,
                "peak_memory_bytes": self.peak_memory_bytes, "oom_kills": self.oom_kills,
                "mem_spikes": c.mem_spikes, "processes": self.processes, **self.delays}


def _signal_name(sig: int | None) -> str | None:
    if not sig:
        return None
    try:
        return signal_mod.Signals(sig).name
    except ValueError:
        return f"SIG{sig}"
