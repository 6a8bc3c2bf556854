"""The cgroup side of per-tool-call control: place, limit, time out, measure and remove.

Policy (which limits a call gets) and bookkeeping (which process is in which call, which LLM tool
call asked for it: ``correlate/tool_calls.py``) are kept apart from the I/O here, senpai-style, so
both can be replaced or tested alone. Every method runs on the pipeline thread, under its lock.

Placement: the kernel stops a call's first process at its exec (lineage.bpf.c, the `held` map).
`observe` then creates ``tools/call-<id>`` with the call's limits, moves the process in (every v1
hierarchy, or the v2 group) and only then lets it go (SIGCONT). Its descendants inherit the group
at fork, so no process of the call runs a single instruction of the tool outside its limits, and
no memory it allocates is charged elsewhere.

The held process waits for nothing else: an ended call's groups are removed, and the spare groups
the next calls are renamed from (v1) are made, on the teardown thread (daemon/tools/teardown.py);
and the held lane (daemon/pipeline/held_lane.py) places it through `place_held` as soon as the
kernel stopped it, while the pipeline may still be decoding the effects queued before its exec. Placing, and deciding that a first exec is the agent's, are serialised by `_placing`: the
first to take it for a process does the work, the other finds it done.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Protocol

from vigild.bpf.control import FEATURE_PROGRAMS, ControlSensor, MemSpike, OomKill
from vigild.bpf.events import TRACK_CONTROLLED, TRACK_OBSERVED, ExecEvent, ExitEvent, ForkEvent, ProcessEvent
from vigild.bpf.features import Features
from vigild.bpf.lineage import LineageSensor
from vigild.bpf.loader import BpfError
from vigild.cgroups import AGENT, CallLimits, CgroupBackend, CgroupError, Limits, MoveError, gil_held, open_backend
from vigild.cgroups.dynmods import FavorDynmods
from vigild.correlate.agent_profiles import RELAUNCH, TOOL, AgentProfile, Proc, Profiles
from vigild.correlate.process_tree import ProcessInfo
from vigild.correlate.tool_calls import (
    ToolCall,
    ToolCallBook,
    ToolEnd,
    ToolLinked,
    ToolStart,
    command_matches,
    first_process_call,
    outcome,
)
from vigild.daemon.tools.container_placement import memory_limit_hit
from vigild.daemon.tools.placement_warm import INTENT_S, TAIL_S, PlacementWarmer
from vigild.daemon.tools.taskstats import DelayAccounting, TaskDelays, TaskstatsListener
from vigild.daemon.tools.teardown import Teardown

log = logging.getLogger("vigild.control")

PARENT_PREFIX = "vigil-run-"
CONTROLLERS = ("memory", "pids", "cpu")
HELD_TOO_LONG_NS = 2_000_000_000   # a held pid whose exec event never arrived (ring full) is let go
EMPTY_CHECK_INTERVAL_S = 1.0       # how often open calls' groups are checked for emptiness
PENDING_TTL_S = 120.0              # a declaration for the next call that no call took is dropped
ENDED_REMEMBERED = 256             # finished calls kept for `last_tool_end`
EARLY_STALE_S = 10.0               # a call the held lane placed whose exec the pipeline never saw (lost)
# An agent no profile recognises, once that is known: `Profiles.classify` given None looks the
# profile up again over every profile's globs, which was most of the held lane's role check.
UNPROFILED = AgentProfile("")
DELAY_FIELDS = {"cpu_ns": "cpu_delay_ms", "blkio_ns": "blkio_delay_ms", "reclaim_ns": "reclaim_delay_ms",
                "thrashing_ns": "thrashing_delay_ms"}


@dataclass(frozen=True)
class CallPolicy:
    """What a tool call gets: cgroup limits and a wall-clock timeout (None: none)."""

    limits: Limits = field(default_factory=Limits)
    timeout_s: float | None = None

    @classmethod
    def of(cls, limits: CallLimits) -> CallPolicy:
        """A declaration's, a policy's or the config's knobs and timeout as a policy."""
        return cls(Limits.of(limits), limits.timeout_s)

    def describe(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self.limits).items() if v is not None}, "timeout_s": self.timeout_s}

    def over(self, base: CallPolicy) -> CallPolicy:
        """This policy's set fields on top of `base`'s: a declared need replaces only what it names."""
        limits = replace(base.limits, **{f.name: getattr(self.limits, f.name) for f in fields(Limits)
                                         if getattr(self.limits, f.name) is not None})
        return CallPolicy(limits, self.timeout_s if self.timeout_s is not None else base.timeout_s)


@dataclass
class PendingPolicy:
    """A policy waiting for the next call of a session (None: of any session) whose command line
    contains `match` (None: whatever it runs); `tag` names it for the caller (e.g. the hook's
    tool_use_id), so the caller can later ask how that very call ended."""

    policy: CallPolicy
    session_id: int | None = None
    match: str | None = None
    tag: str | None = None
    expires_ns: int = 0

    def fits(self, call: ToolCall, now_ns: int) -> bool:
        return (now_ns <= self.expires_ns and self.session_id in (None, call.session_id)
                and (self.match is None or command_matches(self.match, call.argv)))


@dataclass
class Placed:
    """What placing a call's first process did: the limits it got, where, and how long the kernel
    held it. Made by whichever thread placed it (`placed_ns`: monotonic, for staleness)."""

    ts_ns: int
    policy: CallPolicy
    tag: str | None
    backend: CgroupBackend | None
    group: str | None
    error: str | None
    hold_ms: float | None
    placed_ns: int = 0


PolicyFor = Callable[[ToolCall], CallPolicy]
ProcessOf = Callable[[int], ProcessInfo | None]
SESSIONS_REMEMBERED = 4096         # sessions whose agent profile is kept
TickHook = Callable[["ToolCallControl"], list[Any]]


class Placement(Protocol):
    """Which backend's tree a call's group goes in (vigild: the agent's own cgroup when delegated,
    see daemon/tools/agent_cgroups.py); `release` hands back a tree none of whose calls is open."""

    def backend_for(self, call: ToolCall) -> CgroupBackend: ...

    def release(self, tree: CgroupBackend) -> None: ...

    def close(self) -> None: ...


class ToolCallControl:
    """Tool calls of controlled agents: their cgroups, limits, timeouts and final accounting.

    Without a cgroup backend (`vigil trace`, an observing vigild) it only observes: the kernel
    marks each call's first exec but never stops it, nothing is placed, limited or killed, and
    which call an event belongs to is this bookkeeping's answer (see `_relabel`)."""

    def __init__(self, backend: CgroupBackend | None, lineage: LineageSensor, policy: CallPolicy,
                 sensor: ControlSensor | None = None, delays: TaskstatsListener | None = None,
                 book: ToolCallBook | None = None) -> None:
        self.backend = backend
        self.lineage = lineage
        self.sensor = sensor
        self.delays = delays
        self.book = book or ToolCallBook()
        self.default_policy = policy
        self.policy_for: PolicyFor = lambda call: self.default_policy
        self._next: list[PendingPolicy] = []
        self.tags: dict[int, str] = {}
        self.ended: deque[tuple[ToolEnd, str | None]] = deque(maxlen=ENDED_REMEMBERED)
        self.adaptive: TickHook | None = None  # e.g. adaptive.AdaptiveController.tick
        self.groups: dict[int, str] = {}
        self.teardown = Teardown() if backend is not None else None
        self.placement: Placement | None = None  # None: every call below `backend`'s parent
        self._backend_of: dict[int, CgroupBackend] = {}
        self.applied: dict[int, CallPolicy] = {}
        self._delay_ns: dict[int, dict[str, int]] = {}
        self._empty_seen: set[int] = set()
        self._last_empty_check = 0.0
        self.delayacct: DelayAccounting | None = None
        # What tells the agent's own processes from tool calls (agent_profiles); the pipeline
        # gives the process table, where the parent's command line is found.
        self.profiles = Profiles()
        self.process_of: ProcessOf = lambda pid: None
        self.session_profiles: dict[int, AgentProfile | None] = {}
        # Observing: relaunches adopted as the agent, and their children not yet exec'd (see _observed_exec)
        self._relaunches: set[int] = set()
        self._first_exec_due: set[int] = set()
        # Calls the held lane placed before the pipeline reached their exec (pid -> placement)
        self._placing = threading.RLock()
        self._early: dict[int, Placed] = {}
        self.placed_early = 0
        self.warmer: PlacementWarmer | None = None  # keeps the cgroup-move path warm (placement_warm.py)
        self.favoring: FavorDynmods | None = None  # cgroup2's favordynmods, on while placing (opt-in)

    # ---- the API policies plug into ----
    def push_next_policy(self, policy: CallPolicy, session_id: int | None = None, match: str | None = None,
                         tag: str | None = None, ttl_s: float = PENDING_TTL_S) -> None:
        """Limits for the next tool call that starts (e.g. a need the agent declared for it), in
        `session_id` only when given, and only a call running `match` when given. Its set fields
        go on top of what `policy_for` gives that call."""
        with self._placing:  # the held lane takes declarations too
            self._next.append(PendingPolicy(policy, session_id, match, tag, time.time_ns() + int(ttl_s * 1e9)))

    def has_tag(self, tag: str) -> bool:
        """Whether a declaration tagged so waits for its call or its call is still running."""
        return tag in self.tags.values() or any(p.tag == tag for p in self._next)

    def _take_pending(self, call: ToolCall) -> PendingPolicy | None:
        now = time.time_ns()
        self._next = [p for p in self._next if p.expires_ns >= now]
        for i, pending in enumerate(self._next):
            if pending.fits(call, now):
                return self._next.pop(i)
        return None

    def backend_of(self, call_id: int) -> CgroupBackend:
        """The backend whose tree holds the call's group."""
        return self._backend_of.get(call_id, self.backend)

    def update_call(self, call_id: int, policy: CallPolicy) -> None:
        """Change a running call's limits (and timeout) in place."""
        group = self.groups.get(call_id)
        if group is None or self.backend is None:
            raise KeyError(f"no open tool call {call_id} in a cgroup")
        self.backend_of(call_id).set_limits(group, policy.limits)
        self.applied[call_id] = policy

    @property
    def open_calls(self) -> list[ToolCall]:
        return list(self.book.calls.values())

    # ---- setup ----
    @property
    def observe_only(self) -> bool:
        return self.backend is None

    @property
    def root_flags(self) -> int:
        """The kernel flags of an agent root: its children's first execs start tool calls, held
        for placement when there is a backend, only marked when observing."""
        return TRACK_OBSERVED if self.observe_only else TRACK_CONTROLLED

    def place_agent(self, pid: int) -> None:
        """Put the agent runtime in ``agent/``, beside (not above) its tools' groups."""
        if self.backend is not None:
            self.backend.add_process(AGENT, pid)

    # ---- events ----
    def observe(self, event: ProcessEvent) -> list[Any]:
        """Act on one kernel event; returns the tool events it produced."""
        if not self.observe_only:
            return self._observe(event)
        if isinstance(event, ExecEvent):
            self._observed_exec(event)
        elif isinstance(event, ForkEvent) and event.ppid in self._relaunches:
            self._first_exec_due.add(event.pid)
        elif isinstance(event, ExitEvent):
            self._relabel(event)  # before the exit takes the process out of its call
            self._relaunches.discard(event.pid)
            self._first_exec_due.discard(event.pid)
        found = self._observe(event)
        if not isinstance(event, ExitEvent):
            self._relabel(event)
        return found

    def _observed_exec(self, event: ExecEvent) -> None:
        """A child a relaunch forked before user space knew it for the agent carries the kernel's
        stale call id and no mark (nothing stopped the relaunch until then): its first exec
        starts a call all the same."""
        if event.pid in self._first_exec_due:
            self._first_exec_due.discard(event.pid)
            if not event.call_start and self.book.call_of(event.pid) is None:
                event.call_start = True

    def _relabel(self, event: Any) -> None:
        """Observing, nothing stops a process between its exec and user space's verdict on it, so
        the kernel's call id can be a relaunch's or a helper's for a moment: the book decides."""
        if hasattr(event, "tool_call") and hasattr(event, "pid"):
            call = self.book.call_of(event.pid)
            event.tool_call = call.id if call is not None else None

    def _observe(self, event: ProcessEvent) -> list[Any]:
        if isinstance(event, ExecEvent) and event.call_start:
            with self._placing:
                early = self._early.pop(event.pid, None)
                if early is not None and early.ts_ns != event.ts_ns:
                    early = None  # another process's, by the same pid: its exec was lost
                role = TOOL if early is not None else self._role(event)
                if role != TOOL:
                    self._adopt(event, role)
                    return []
                return [self._start(event, early)]
        if isinstance(event, ForkEvent):
            self.book.fork(event.pid, event.ppid)
        elif isinstance(event, ExitEvent):
            self._collect_delays()
            call = self.book.exit(event.pid, event.ts_ns, event.exit_code, event.signal)
            if call is not None:
                return [self._finish(call)]
        elif isinstance(event, OomKill):
            self.book.note_oom(event.tool_call, event.pid)
        elif isinstance(event, MemSpike):
            self.book.note_spike(event.tool_call, event.call_rss_bytes)
        return []

    def observe_intent(self, inner: Any, session_id: int | None) -> list[ToolLinked]:
        """LLM calls carry the tool calls the model asked for; spawns that follow are matched,
        and calls that already ran unrequested are linked now (a `tool_linked` each)."""
        if inner.type != "llm_call" or not inner.tool_calls:
            return []
        if self.warmer is not None:  # the agent spawns what the model asked for next: its move is near
            self.warmer.want(INTENT_S)
        linked = self.book.llm_call(session_id, inner.ts_ns, list(inner.tool_calls), inner.response_id,
                                    source=inner.source)
        return [ToolLinked(ts_ns=time.time_ns(), call=call) for call in linked]

    def agent_session(self, session_id: int, agent: str | None) -> None:
        """A session opened for an agent of this kind (vigild knows it by discovery): its
        profile is that one, whatever its processes' command lines look like."""
        profile = self.profiles.profile_named(agent)
        if profile is not None:
            self._remember_profile(session_id, profile)

    def _remember_profile(self, session_id: int, profile: AgentProfile | None) -> None:
        while len(self.session_profiles) >= SESSIONS_REMEMBERED:
            del self.session_profiles[next(iter(self.session_profiles))]  # the oldest session's
        self.session_profiles[session_id] = profile

    def adopt_relaunches(self, root_pid: int, tree: list[ProcessInfo]) -> None:
        """An agent adopted while running (`vigil trace -p`, vigild at start): its existing
        relaunches are the agent too, so they become controlled roots and their future children
        tool calls. `tree`: the processes found below the root, parents before children."""
        agents = {root_pid}
        for info in tree:
            parent = self.process_of(info.ppid)
            if info.ppid not in agents or parent is None or not info.filename:
                continue
            if self.profiles.is_relaunch(Proc(info.filename, info.argv), Proc(parent.filename, parent.argv),
                                         self.profiles.recognise(Proc(parent.filename, parent.argv))):
                tracked = self.lineage.tracked_info(info.pid)
                if tracked is not None:
                    self.lineage.track(info.pid, tracked.session_id, root_pid=tracked.root_pid, depth=tracked.depth,
                                       flags=self.root_flags)
                    agents.add(info.pid)
                    if self.observe_only:
                        self._relaunches.add(info.pid)

    def _role(self, event: ExecEvent) -> str:
        """What the first exec of the agent's child is: a relaunch of the agent, the agent's own
        housekeeping, or a tool call. A command a pending LLM tool call names is always a tool."""
        parent = self.process_of(event.ppid)
        if parent is None or not parent.filename:
            return TOOL
        agent = Proc(parent.filename, parent.argv)
        if event.session_id not in self.session_profiles:
            self._remember_profile(event.session_id, self.profiles.recognise(agent))
        role = self.profiles.classify(Proc(event.filename, event.argv), agent,
                                      self.session_profiles[event.session_id] or UNPROFILED)
        if role != TOOL and role != RELAUNCH and self.book.requested(event.session_id, event.argv, event.ts_ns):
            return TOOL
        return role

    def _adopt(self, event: ExecEvent, role: str) -> None:
        """The process is the agent's, not a tool call: the kernel's call id is cleared while
        the process is still stopped at its exec; a relaunch becomes a controlled root (its own
        children start tool calls), housekeeping an ordinary member of the agent's tree (its
        children are housekeeping too). It stays in the agent's cgroup, where it was forked."""
        try:
            info = self.lineage.tracked_info(event.pid)
            if info is not None:
                self.lineage.track(event.pid, info.session_id, root_pid=info.root_pid, depth=info.depth,
                                   flags=self.root_flags if role == RELAUNCH else 0)
            if role == RELAUNCH and self.observe_only:
                self._relaunches.add(event.pid)
            if self.sensor is not None:  # memory the exec itself charged to the would-be call
                self.sensor.forget_process(event.pid)
                self.sensor.forget_call(event.pid)
        except BpfError as exc:  # the kernel still counts it as a call: said, not hidden
            log.warning("pid %d is the agent's %s, but the kernel keeps it as a tool call: %s", event.pid, role, exc)
        finally:
            if event.held:  # never left stopped, whatever failed above
                self._release(event.pid)
        event.tool_call = None
        event.agent_role = role

    def place_held(self, event: ExecEvent) -> bool:
        """The held lane's early placement (on its thread, or the pipeline's between two records:
        daemon/pipeline/held_lane.py): the call's first process goes into
        its group and is let go now, not once the pipeline has decoded what the ring buffer holds
        before its exec. Only a process the kernel still holds, whose parent the process table
        knows and which the agent profiles call a tool: whatever else (the agent's relaunch or
        housekeeping, a command a pending LLM tool call may claim) is left to the pipeline, which
        sees every event in order. The call's bookkeeping (its tool_start, its link to the model's
        tool call) is the pipeline's too, when it reaches the exec. Returns whether it placed."""
        if self.observe_only or not event.call_start or not event.held or event.exe_held:
            return False
        with self._placing, gil_held.keeping_gil():
            if (event.pid in self._early or not self.lineage.is_held(event.pid, keep_gil=True)
                    or self._early_role(event) != TOOL):
                return False
            placed = self._place(first_process_call(event), event)
            placed.placed_ns = time.monotonic_ns()
            self._early[event.pid] = placed
            self.placed_early += 1
            return True

    def _early_role(self, event: ExecEvent) -> str | None:
        """`_role` as far as it can be told off the pipeline thread; None when it cannot."""
        parent = self.process_of(event.ppid)
        if parent is None or not parent.filename:
            return None
        agent = Proc(parent.filename, parent.argv)
        profile = self.session_profiles.get(event.session_id)
        if event.session_id not in self.session_profiles:
            profile = self.profiles.recognise(agent)
        return self.profiles.classify(Proc(event.filename, event.argv), agent, profile or UNPROFILED)

    def _start(self, event: ExecEvent, early: Placed | None = None) -> ToolStart:
        call = self.book.start(event)
        placed = early if early is not None else self._place(call, event)
        if placed.tag is not None:
            self.tags[call.id] = placed.tag
        if placed.backend is not None:
            self._backend_of[call.id] = placed.backend
        if placed.group is not None:
            self.groups[call.id] = placed.group
        self.applied[call.id] = placed.policy
        return ToolStart(ts_ns=event.ts_ns, call=call, cgroup=placed.group, limits=placed.policy.describe(),
                         hold_ms=placed.hold_ms, placement_error=placed.error)

    def _place(self, call: ToolCall, event: ExecEvent) -> Placed:
        """The call's limits (its policy, a declaration waiting for it), its group, its first
        process moved in and let go; under `_placing`."""
        with self._placing:
            policy = self.policy_for(call)
            pending = self._take_pending(call)
            tag = None
            if pending is not None:
                policy = pending.policy.over(policy)
                tag = pending.tag
            backend = group = error = None
            try:
                if self.backend is not None:
                    backend = self.placement.backend_for(call) if self.placement is not None else self.backend
                    group = backend.place_call(str(call.id), policy.limits, call.pid)
            except (CgroupError, OSError) as exc:
                error = str(exc)
                if isinstance(exc, MoveError):  # made, so removed when the call ends
                    group = exc.group
                log.warning("tool call %d runs without its limits: %s", call.id, exc)
            finally:
                if event.held:
                    self._release(call.pid)
            if self.warmer is not None:  # the agent's next call of a loop finds the move path warm
                self.warmer.want(TAIL_S)
            hold_ms = (time.time_ns() - event.ts_ns) / 1e6 if event.held else None
            if group is not None and backend is not None and self.teardown is not None:
                self.teardown.refill(backend, self.default_policy.limits)
            return Placed(ts_ns=event.ts_ns, policy=policy, tag=tag, backend=backend, group=group, error=error,
                          hold_ms=round(hold_ms, 3) if hold_ms is not None else None)

    def _release(self, pid: int) -> None:
        self.lineage.release_held(pid, keep_gil=gil_held.active())
        try:
            gil_held.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass

    def _collect_delays(self) -> None:
        """Taskstats exit records reach the socket before the exit event reaches us (the kernel
        sends them earlier in do_exit), so draining here attributes them while the pid is still
        a member of its call."""
        if self.delays is None:
            return
        for rec in self.delays.drain():
            call = self.book.call_of(rec.tgid)
            if call is not None:
                self._add_delays(call.id, rec)

    def _add_delays(self, call_id: int, rec: TaskDelays) -> None:
        sums = self._delay_ns.setdefault(call_id, {k: 0 for k in DELAY_FIELDS})
        for key in DELAY_FIELDS:
            sums[key] += getattr(rec, key)

    def _finish(self, call: ToolCall) -> ToolEnd:
        group = self.groups.pop(call.id, None)
        backend = self._backend_of.pop(call.id, self.backend)
        policy = self.applied.pop(call.id, self.default_policy)
        self._empty_seen.discard(call.id)
        mem = pids = None
        knobs_hit: list[str] = []
        if group is not None:
            try:
                mem = backend.memory_stats(group) if "memory" in backend.controllers else None
                pids = backend.pids_stats(group) if "pids" in backend.controllers else None
                knobs_hit = backend.knobs_hit(group)
            except CgroupError as exc:
                log.warning("cannot read the accounting of %s: %s", group, exc)
            self._remove(backend, group)
        self._release_if_unused(backend)
        if self.sensor is not None:
            self.sensor.forget_call(call.id)
        # The tracepoint counts each victim once; the group's counter is the floor if events were lost.
        oom_kills = max(call.oom_kills, mem.killed_processes if mem else 0)
        hit = []
        if mem is not None and (mem.max_events or mem.oom_kills):
            hit.append(memory_limit_hit(mem.max_events, mem.peak, policy.limits.memory_max))
        if mem is not None and mem.high_events:
            hit.append("memory.high")
        if pids is not None and pids.max_events:
            hit.append("pids.max")
        hit += knobs_hit
        if call.timed_out:
            hit.append("timeout")
        peak = mem.peak if mem is not None and mem.peak else (call.max_call_rss or None)
        sums = self._delay_ns.pop(call.id, None)
        delays = {name: (round(sums[key] / 1e6, 3) if sums is not None else None) for key, name in DELAY_FIELDS.items()}
        if sums is None and self.delays is not None:
            delays = {name: 0.0 for name in DELAY_FIELDS.values()}
        end = ToolEnd(ts_ns=call.end_ns or time.time_ns(), call=call, outcome=outcome(call, oom_kills),
                      limits=policy.describe(), limits_hit=hit, peak_memory_bytes=peak, oom_kills=oom_kills,
                      processes=len(call.all_pids), delays=delays)
        self.ended.append((end, self.tags.pop(call.id, None)))
        return end

    def _remove(self, backend: CgroupBackend, group: str) -> None:
        if self.teardown is not None:
            self.teardown.remove(backend, group)
            return
        try:
            backend.remove(group, kill=True, timeout=2.0)
        except CgroupError as exc:
            log.warning("cannot remove %s: %s", backend.path(group), exc)

    def _release_if_unused(self, backend: CgroupBackend) -> None:
        """An agent's own tree goes when its last open call ended (its cgroup must stay removable
        by whoever owns it: a container runtime cannot remove a cgroup with our groups in it)."""
        if backend is self.backend or self.placement is None or backend in self._backend_of.values():
            return
        if self.teardown is not None:
            self.teardown.drain()  # its groups' removal, queued before
        try:
            with self._placing:  # not while the held lane places a call in it
                if any(placed.backend is backend for placed in self._early.values()):
                    return
                self.placement.release(backend)
        except CgroupError as exc:
            log.warning("cannot remove the tool-call groups in %s: %s", backend.path(""), exc)

    def _kill(self, call: ToolCall, reason: str) -> None:
        """SIGKILL every process of the call once; the exits finish it. Does not wait: a fork
        bomb's late children are caught by the next round."""
        call.killed_reason = call.killed_reason or reason
        group = self.groups.get(call.id)
        pids = set(call.pids)
        if group is not None:
            try:
                pids.update(self.backend_of(call.id).processes_recursive(group))
            except CgroupError:
                pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # ---- periodic ----
    def tick(self) -> list[Any]:
        """Timeouts, held processes whose exec event was lost, calls whose group is empty but
        whose last exit was lost. Returns the tool_end events this produced."""
        now = time.time_ns()
        for call in self.open_calls:
            policy = self.applied.get(call.id, self.default_policy)
            if policy.timeout_s is not None and now - call.start_ns > policy.timeout_s * 1e9:
                call.timed_out = True
                self._kill(call, "timeout")
        self._release_stale_held()
        self._forget_lost_early()
        events = self._finish_empty()
        if self.adaptive is not None:
            events += self.adaptive(self)
        return events

    def _release_stale_held(self) -> None:
        boot_now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        for pid, since in self.lineage.held_pids().items():
            if boot_now - since > HELD_TOO_LONG_NS:
                log.warning("releasing pid %d: held %.1f s without its exec event", pid, (boot_now - since) / 1e9)
                self._release(pid)

    def _forget_lost_early(self) -> None:
        """A call the held lane placed whose exec the pipeline never got (the ring buffer was
        full: counted as lost): its group goes once empty, as an ended call's would."""
        now = time.monotonic_ns()
        with self._placing:
            stale = [pid for pid, placed in self._early.items() if now - placed.placed_ns > EARLY_STALE_S * 1e9]
            for pid in stale:
                placed = self._early[pid]
                if placed.group is None or placed.backend is None:
                    del self._early[pid]
                    continue
                try:
                    if placed.backend.processes_recursive(placed.group):
                        continue  # still running: kept, the pipeline may yet reach its exec
                except CgroupError:
                    pass
                del self._early[pid]
                log.warning("tool call %d was placed but its exec event never arrived (lost); its group goes", pid)
                self._remove(placed.backend, placed.group)

    def _finish_empty(self) -> list[Any]:
        mono = time.monotonic()
        if mono - self._last_empty_check < EMPTY_CHECK_INTERVAL_S:
            return []
        self._last_empty_check = mono
        ended = []
        for call in self.open_calls:
            group = self.groups.get(call.id)
            if group is None:
                continue
            try:
                empty = not self.backend_of(call.id).processes_recursive(group)
            except CgroupError:
                continue
            # Twice in a row, a second apart: exits still in the ring buffer get their chance.
            if empty and call.id in self._empty_seen:
                self._collect_delays()
                ended.append(self._finish(self.book.end(call, time.time_ns())))
            elif empty:
                self._empty_seen.add(call.id)
            else:
                self._empty_seen.discard(call.id)
        return ended

    # ---- shutdown ----
    def kill_open(self, reason: str) -> None:
        """The agent is gone (or vigil is stopping): end every open call (observing only: none)."""
        if self.observe_only:
            return
        for call in self.open_calls:
            self._kill(call, reason)

    def close(self) -> list[Any]:
        """Finish calls still open (their exits were not seen), remove every group vigil made."""
        events: list[Any] = []
        self._collect_delays()
        if self.backend is None:
            return events  # observing only: calls still running are not ours to end
        if self.warmer is not None:  # before the layout's own moves below
            self.warmer.stop()
        for call in self.open_calls:
            self._kill(call, call.killed_reason or "shutdown")
            events.append(self._finish(self.book.end(call, time.time_ns())))
        with self._placing:  # placed by the held lane, never reached by the pipeline
            for placed in self._early.values():
                if placed.group is not None and placed.backend is not None:
                    self._remove(placed.backend, placed.group)
            self._early.clear()
        if self.teardown is not None:
            self.teardown.close()
            self.teardown = None
        if self.placement is not None:
            self.placement.close()
        try:
            self.backend.remove_layout(kill=False, timeout=2.0)
        except CgroupError as exc:
            log.warning("cannot remove vigil's cgroups: %s", exc)
        if self.favoring is not None:  # after vigil's last move: the host's mount as it was
            try:
                self.favoring.restore()
            except CgroupError as exc:
                log.warning("cannot put the cgroup2 mount back without favordynmods: %s", exc)
            self.favoring = None
        return events

    def health(self) -> dict[str, Any]:
        """The warmer's counters (none without one), for metrics and status."""
        return self.warmer.health() if self.warmer is not None else {}

    def release_resources(self) -> None:
        """After the BPF links are gone: close taskstats, restore kernel.task_delayacct."""
        if self.delays is not None:
            self.delays.close()
            self.delays = None
        if self.delayacct is not None:
            self.delayacct.restore()
            self.delayacct = None
        if self.sensor is not None:
            self.sensor.close()


# ---- setup ---------------------------------------------------------------------------------------

def open_trace_control(lineage: LineageSensor) -> ToolCallControl:
    """`vigil trace`, an observing vigild: tool calls observed (marked by the kernel at their first
    exec, never stopped, placed or limited), linked to the model's ids like governed ones."""
    return ToolCallControl(None, lineage, CallPolicy())


def open_run_control(lineage: LineageSensor, policy: CallPolicy, spike_bytes: int, spike_window_ns: int,
                     delay_accounting: bool = True, features: Features | None = None) -> ToolCallControl:
    """Everything `vigil run` needs, in an order that leaves nothing behind when a step fails.
    A kernel that refuses the control programs costs memory spikes and OOM-victim events (said
    through `features`), not the per-call cgroups.

    Its held execs need the watchdog `assembly` starts."""
    backend = open_backend(f"{PARENT_PREFIX}{os.getpid()}", CONTROLLERS)
    for name in backend.remove_dead_runs(PARENT_PREFIX):
        log.info("removed stale cgroups %s", name)
    try:
        backend.ensure_layout()
    except BaseException:
        backend.remove_layout(kill=True)
        raise
    control = ToolCallControl(backend, lineage, policy)
    if control.teardown is not None:
        control.teardown.refill(backend, policy.limits)  # the first calls find spares
    try:
        control.sensor = _open_control_sensor(lineage, spike_bytes, spike_window_ns, features)
        if delay_accounting:
            control.delayacct = DelayAccounting()
            if control.delayacct.enable():
                try:
                    control.delays = TaskstatsListener()
                except OSError as exc:
                    log.warning("taskstats unavailable (%s): tool calls get no delay figures", exc)
    except BaseException:
        control.release_resources()
        if control.teardown is not None:
            control.teardown.close()  # its spares are made before the layout goes
        backend.remove_layout(kill=True)
        raise
    return control


def _open_control_sensor(lineage: LineageSensor, spike_bytes: int, spike_window_ns: int,
                         features: Features | None) -> ControlSensor | None:
    features = features or Features(log.warning)
    try:
        sensor = ControlSensor(lineage.shared_maps, spike_bytes=spike_bytes, spike_window_ns=spike_window_ns)
    except BpfError as exc:
        for feature in FEATURE_PROGRAMS:
            features.unavailable(feature, f"control.bpf.o: {exc.summary}")
        return None
    sensor.report(features)
    return sensor
