"""The pipeline: one thread drains the kernel's ring buffer, decodes records into typed events,
keeps the process table and sessions, and routes each event to the handlers registered for its
class (capture health, intent, tool control) and to the sinks.

Work inside the libbpf callback is a list append; decoding and sinks run after each poll, so a
slow sink delays the next poll but never runs inside C.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol

import psutil

from vigild.bpf.clock import BootClock
from vigild.bpf.effects_events import NetClose, NetConnect
from vigild.bpf.events import (DecodeError, EventDecoder, ExecEvent, ExitEvent, ForkEvent, ProcessEvent, TlsClose,
                               TlsData, TlsMapped)
from vigild.bpf.lineage import LineageSensor
from vigild.bpf.tls import TlsSensor
from vigild.correlate.agent_telemetry import TelemetryRecord
from vigild.correlate.detections import Detector
from vigild.correlate.poll_wait import PollWait
from vigild.correlate.process_tree import ProcessInfo, ProcessTable
from vigild.correlate.redact import redact_text
from vigild.correlate.sessions import Session, SessionIds
from vigild.correlate.tls_stream import TlsStreamDecoder
from vigild.daemon.containers import ContainerResolver
from vigild.daemon.events import Event, LostEvent, SessionEnd, SessionStart
from vigild.daemon.pipeline.capture_health import CaptureHealth
from vigild.daemon.pipeline.control_port import ToolControlPort
from vigild.daemon.pipeline.detections import DetectionRelay
from vigild.daemon.pipeline.held_lane import HeldLane, any_held, held_first
from vigild.daemon.pipeline.intent import IntentHandler
from vigild.daemon.pipeline.reader import DEFAULT_BACKLOG_BYTES, RingReader
from vigild.daemon.pipeline.router import Router
from vigild.daemon.pipeline.scrub import scrub
from vigild.daemon.sinks.record import Record, record_of

log = logging.getLogger("vigild.pipeline")

REFUSED_REMEMBERED = 4096  # sessions of refused roots whose late descendants' events are dropped
MAX_UNFLUSHED_S = 1.0  # sinks (the store's commit) are flushed at least this often, even inside a batch
FLUSH_CHECK_EVERY = 256
HEALTH_EVERY_S = 0.25  # how often the pipeline thread republishes its health snapshot when idle


class _Plan(NamedTuple):
    """What the pipeline does with events of one class: their handlers in each router, and
    whether they are execs or exits (the kinds with work of their own)."""

    owners: tuple[Callable[[Any], None], ...]
    before: tuple[Callable[[Any], None], ...]
    after: tuple[Callable[[Any], None], ...]
    is_exec: bool
    is_exit: bool


class ExtraSensor(Protocol):
    """A sensor whose programs write their own event kinds into the shared ring buffer."""

    def register(self, decoder: EventDecoder) -> None: ...

    def close(self) -> None: ...


class Sink(Protocol):
    """Receives each event with its record (built once, shared: read it, never change it)."""

    def handle(self, event: Event, record: Record) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class Pipeline:
    def __init__(
        self,
        lineage: LineageSensor,
        sinks: Sequence[Sink],
        tls: TlsSensor | None = None,
        intent: TlsStreamDecoder | None = None,
        classify_root: Callable[[ExecEvent], str | None] = lambda event: "",
        poll_ms: int = 10,
        sensors: Sequence[ExtraSensor] = (),
        control: ToolControlPort | None = None,
        detector: Detector | None = None,
        telemetry: queue.SimpleQueue[TelemetryRecord] | None = None,
        own_hosts: Iterable[str] = (),
        backlog_bytes: int = DEFAULT_BACKLOG_BYTES,
        raise_gil_holder: bool = False,
    ) -> None:
        """classify_root names the agent of a process the kernel made a root by comm, or
        returns None when a closer look (its executable, its arguments) says it is not one: the
        process is then untracked and nothing of it is reported.

        control (vigil run) puts each tool call of controlled roots in its own cgroup and adds
        tool_start/tool_end events. telemetry: the agents' own OTLP records (vigil's receiver),
        merged with what TLS decoded. own_hosts: vigil's own HTTP endpoints (host:port, the
        telemetry receiver), whose requests are never reported. backlog_bytes: what a burst may
        queue in user space beyond the ring (reader.py). raise_gil_holder: the held lane raises
        this pipeline's thread while a held exec waits for the GIL it holds (held_lane.py)."""
        self.lineage = lineage
        self.sinks = list(sinks)
        self.tls = tls
        self.intent = intent if intent is not None else (TlsStreamDecoder() if tls is not None else None)
        self.classify_root = classify_root
        self.poll_ms = poll_ms
        self.clock = BootClock()
        self.decoder = EventDecoder(self.clock)
        for sensor in sensors:
            sensor.register(self.decoder)
        self.control = control
        self.detections = DetectionRelay(detector, self._dispatch) if detector is not None else None
        if control is not None and control.sensor is not None:
            control.sensor.register(self.decoder)
        self.processes = ProcessTable()
        if control is not None:
            control.process_of = self.processes.get  # the agent's command line, for agent profiles
        self.sessions: dict[int, Session] = {}
        self.containers = ContainerResolver()  # each session's container, from its root's cgroup
        self._refused: OrderedDict[int, None] = OrderedDict()  # sessions of roots that are not agents
        self.session_ids = SessionIds()
        self.counts: Counter[str] = Counter()
        self.sink_errors = 0
        self.dropped: dict[str, int] = {}
        self._reader = RingReader(lineage.events, backlog_bytes)
        self._raise_gil_holder = raise_gil_holder
        self._ring = self._reader.ring
        self._poll_wait = PollWait(poll_ms)  # a long wait while nothing is tracked
        self._lock = threading.RLock()
        self._exited = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held_lane: HeldLane | None = None  # vigil run's, vigild governing: started with the pipeline
        self._last_drop_check = 0.0
        self._episode: dict[str, int] = {}  # events lost by kind since the kernel started dropping
        self._health: dict[str, Any] | None = None  # published by the pipeline thread, read by others
        self._health_at = 0.0
        self.capture = CaptureHealth(tls, lineage, self.processes, self.sessions, self._dispatch, self.tracks)
        self.intents = IntentHandler(self.intent, self.processes, self._dispatch, control=control,
                                     telemetry=telemetry, on_plaintext=self.capture.plaintext, own_hosts=own_hosts)
        # Handlers before the sinks see the event (they may change what the sinks get, or hold
        # the process until they are done), and after it.
        self.before = Router()
        self.before.register((NetConnect, NetClose), self.capture.watch_plaintext)
        self.before.register((ExecEvent,), self.capture.hook_executable)
        self.before.register((ForkEvent,), self.capture.forked)
        self.after = Router()
        self.after.register((ProcessEvent,), self.intents.effect)
        self.after.register((ExitEvent,), self.capture.exited)
        self.after.register((ExitEvent,), self.intents.exited)
        # TLS data and closes are intent's alone: they are not effects and never reach the sinks.
        self.owned = Router()
        self.owned.register((TlsData,), self.intents.tls_data)
        self.owned.register((TlsClose,), self.intents.tls_close)
        self.owned.register((TlsMapped,), self.capture.tls_mapped)
        self._plans: dict[type, _Plan] = {}  # what handle() does with each event class, resolved once
        for router in (self.owned, self.before, self.after):
            router.on_change(self._plans.clear)

    @property
    def blind_connections(self) -> Counter[tuple[str, str]]:
        return self.capture.blind_connections

    # ---- roots ----
    def add_root(self, pid: int, agent: str | None = None, controlled: bool = False) -> Session:
        """Track a running process and the tree below it, as one new session. controlled: the
        processes it spawns from now on are tool calls (its existing children are not; those that
        are its relaunches are the agent, and their future children are tool calls too)."""
        with self._lock:
            session_id = self.session_ids.next()
            procs = self.lineage.track_tree(pid, session_id, flags=self._root_flags(controlled))
            root = procs[0]
            session = Session(id=session_id, root_pid=pid, started_ns=int(root.create_time() * 1e9),
                              argv=[redact_text(a) for a in _safe(root.cmdline, [])], agent=agent, cwd=_safe(root.cwd, None),
                              uid=_safe(lambda: root.uids().real, None))
            for proc in procs:
                self._seed(proc, session_id, pid)
            if controlled and self.control is not None:
                tree = [info for proc in procs[1:] if (info := self.processes.get(proc.pid)) is not None]
                self.control.adopt_relaunches(pid, sorted(tree, key=lambda i: i.depth))
            pids = [proc.pid for proc in procs]
            self.capture.hook_tree(pids)
            self._open_session(session)
            self._ring.wake()  # the pipeline may be in an idle wait: its short polls start now
            self.capture.report_tree(pids)
            return session

    def add_pending_root(self, pid: int, argv: list[str], cwd: str, uid: int, controlled: bool = False) -> Session:
        """Track a child we forked that is waiting to exec `argv` (vigil trace -- CMD).
        controlled: each process it spawns is a tool call (vigil run)."""
        with self._lock:
            session_id = self.session_ids.next()
            self.lineage.track(pid, session_id, flags=self._root_flags(controlled))
            now = time.time_ns()
            argv = [redact_text(a) for a in argv]
            self.processes.seed(ProcessInfo(pid=pid, ppid=0, session_id=session_id, comm="", start_ns=now,
                                            argv=argv))
            session = Session(id=session_id, root_pid=pid, started_ns=now, argv=argv, cwd=cwd, uid=uid)
            self._open_session(session)
            self._ring.wake()  # the pipeline may be in an idle wait: its short polls start now
            return session

    def _root_flags(self, controlled: bool) -> int:
        """A root's kernel flags: its children's execs start tool calls (held for placement, or
        only marked when the control observes) when it is controlled and there is a control."""
        return self.control.root_flags if controlled and self.control is not None else 0

    def _seed(self, proc: psutil.Process, session_id: int, root_pid: int) -> None:
        try:
            with proc.oneshot():
                info = ProcessInfo(pid=proc.pid, ppid=proc.ppid(), session_id=session_id, comm=proc.name(),
                                   start_ns=int(proc.create_time() * 1e9), filename=_safe(proc.exe, ""),
                                   argv=[redact_text(a) for a in _safe(proc.cmdline, [])])
        except psutil.Error:
            return
        parent = self.processes.get(info.ppid)
        info.depth = parent.depth + 1 if parent and proc.pid != root_pid else 0
        self.processes.seed(info)

    def _open_session(self, session: Session) -> None:
        if session.container is None and (container := self.containers.of_pid(session.root_pid)) is not None:
            session.container = container.to_dict()
        self.sessions[session.id] = session
        if self.control is not None:
            self.control.agent_session(session.id, session.agent)
        self._dispatch(SessionStart(ts_ns=session.started_ns, session=session))

    # ---- running ----
    def start(self) -> None:
        if self.control is not None and not self.control.observe_only:
            self.held_lane = HeldLane(self.lineage, self.clock, self.control.place_held,
                                      raise_holder=self._raise_gil_holder)
            self.held_lane.start()
        self._thread = threading.Thread(target=self._run, name="vigil-pipeline", daemon=True)
        self._thread.start()
        if self.held_lane is not None and self._thread.native_id is not None:  # the GIL's usual holder
            self.held_lane.raise_while_held((self._thread.native_id,))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("pipeline step failed; continuing")
                time.sleep(self.poll_ms / 1000)

    def run_once(self, timeout_ms: int | None = None) -> int:
        """One poll: drain the ring buffer and dispatch what it held; returns records handled."""
        batch = self._reader.poll(self._poll_wait(self.processes) if timeout_ms is None else timeout_ms)
        if batch and self.control is not None and not self.control.observe_only and any_held(self.lineage):
            batch.reorder(held_first)  # a held exec waits for the births before it, not the effects
        with self._lock:
            flushed = time.monotonic()
            lane = self.held_lane
            for i, raw in enumerate(batch):
                if lane is not None:
                    lane.gate()  # a held process being placed goes first
                self._handle_raw(raw)
                if i % FLUSH_CHECK_EVERY == FLUSH_CHECK_EVERY - 1:
                    self._reader.drain()  # a burst's backlog waits here, not in the ring (reader.py)
                    if time.monotonic() - flushed >= MAX_UNFLUSHED_S:
                        # A big backlog takes seconds to decode: a crash must not lose all of it, and
                        # health readers must not see a state older than a second.
                        self._flush_sinks()
                        self._publish_health()
                        flushed = time.monotonic()
            self._check_drops()
            self._housekeeping()
            self._flush_sinks()
            # Published at least once a second, and before an idle wait: the state a reader sees
            # must not lag a second behind the last session that ended.
            if time.monotonic() - self._health_at >= HEALTH_EVERY_S or (
                    batch and self._poll_wait(self.processes) == self._poll_wait.idle_ms):
                self._publish_health()
        return len(batch)

    def _flush_sinks(self) -> None:
        for sink in self.sinks:
            self._guard(sink.flush)

    def stop(self) -> None:
        self._stop.set()
        self._ring.wake()
        if self._thread is not None and self._thread.ident is not None:  # started (a signal may come first)
            self._thread.join(timeout=5)
        self._thread = None
        if self.held_lane is not None:  # after the thread that gates on it; what it left, run_once places
            self.held_lane.stop()
            self.held_lane = None
        self.run_once(0)  # what arrived after the last poll
        self._check_drops(force=True)
        with self._lock:
            self.intents.flush()
            if self.detections is not None:
                self.detections.flush()
        if self.control is not None:
            with self._lock:
                for tool_event in self.control.close():
                    self._dispatch(tool_event)
        for sink in self.sinks:
            self._guard(sink.flush)
            self._guard(sink.close)
        self._reader.free()

    def end_tool_calls(self, reason: str, timeout: float) -> None:
        """Kill the tool calls still running (their agent is gone) and wait for their exits, so
        their tool_end events carry real exit statuses."""
        if self.control is None or self.control.observe_only:  # observed calls are not ours to end
            return
        with self._lock:
            self.control.kill_open(reason)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self.control.open_calls:
                    return
                self.control.kill_open(reason)  # children forked since the last round
            time.sleep(0.05)

    @property
    def lock(self) -> threading.RLock:
        """The pipeline's lock: other threads (the control socket) take it before touching the
        process table or the tool-call control."""
        return self._lock

    def emit(self, event: Event) -> None:
        """Hand an event made outside the pipeline thread (e.g. a declared limit change) to the sinks."""
        with self._lock:
            self._dispatch(event)

    def wait_exit(self, pid: int, timeout: float) -> bool:
        """Block until the exit event of pid has been dispatched (or timeout)."""
        deadline = time.monotonic() + timeout
        with self._exited:
            while True:
                info = self.processes.get(pid)
                if info is not None and not info.alive:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._exited.wait(remaining)

    # ---- events ----
    def _handle_raw(self, raw: bytes) -> None:
        try:
            event = self.decoder.decode(raw)
        except DecodeError as exc:
            log.warning("undecodable record: %s", exc)
            return
        self.handle(event)

    def _plan(self, cls: type) -> _Plan:
        plan = self._plans[cls] = _Plan(self.owned.handlers(cls), self.before.handlers(cls),
                                        self.after.handlers(cls), issubclass(cls, ExecEvent),
                                        issubclass(cls, ExitEvent))
        return plan

    def handle(self, event: ProcessEvent) -> None:
        cls = type(event)
        plan = self._plans.get(cls) or self._plan(cls)
        if plan.owners:
            for owner in plan.owners:
                owner(event)
            return
        is_exec, is_exit = plan.is_exec, plan.is_exit
        if event.session_id in self._refused:
            # Forked by a root classify_root turned down, before that root was untracked.
            if not is_exit:
                self.lineage.untrack(event.pid)
            return
        scrub(event)
        if is_exec and event.new_root and event.session_id not in self.sessions:
            agent = self.classify_root(event)
            if agent is None:
                self.lineage.untrack(event.pid)
                self._refused[event.session_id] = None
                while len(self._refused) > REFUSED_REMEMBERED:
                    self._refused.popitem(last=False)
                return
            self._open_session(Session(id=event.session_id, root_pid=event.pid, started_ns=event.ts_ns,
                                       argv=event.argv, agent=agent or None, uid=event.uid))
            if self.control is not None:
                # Roots matched on more than their name (exe/args globs) are known to be agents
                # only now; the kernel already made name-matched ones controlled at exec.
                self.lineage.track(event.pid, event.session_id, flags=self.control.root_flags)
        for handler in plan.before:
            handler(event)
        # A tool call's first process is stopped until it is placed (after its TLS is hooked).
        tool_events = self.control.observe(event) if self.control is not None else ()
        info = self.processes.apply(event)
        session = self.sessions.get(event.session_id)
        if is_exec and session is not None and event.pid == session.root_pid and not session.argv:
            session.argv = event.argv  # the command as started; a later exec of the root (bash's last command) is not it
        self._dispatch(event)
        for handler in plan.after:
            handler(event)
        for tool_event in tool_events:
            self._dispatch(tool_event)
        if is_exit:
            if session is not None and event.pid == session.root_pid and session.ended_ns is None:
                session.ended_ns = event.ts_ns
                session.exit_code = info.exit_code
                session.signal = info.signal
                self._dispatch(SessionEnd(ts_ns=event.ts_ns, session=session))
            self._exited.notify_all()

    def _housekeeping(self) -> None:
        """The handlers' timed work: TLS libraries loaded since exec, idle connections, the
        agents' telemetry, tool calls' limits and ends."""
        now = time.monotonic()
        self.capture.housekeeping(now)
        self.intents.housekeeping(now)
        if self.detections is not None:
            self.detections.housekeeping()
        if self.control is not None:
            for tool_event in self.control.tick():
                self._dispatch(tool_event)

    def tracks(self, pid: int) -> bool:
        """Whether `pid` is a live process of one of this pipeline's sessions (any thread may ask:
        one dict lookup, no lock)."""
        info = self.processes.processes.get(pid)
        return info is not None and info.alive

    def tracked_pids(self) -> list[int]:
        """Live tracked processes (for attributing telemetry senders), from any thread."""
        with self._lock:
            return [p.pid for p in self.processes.processes.values() if p.alive]

    def health(self) -> dict[str, Any]:
        """vigild's own state, read by the metrics exporter and `vigil status` from their own
        threads. They get the snapshot the pipeline thread published last (at least once a second,
        even inside a long batch), never the pipeline's lock: a busy pipeline must not make a
        scrape or a status request wait. Kernel counters are read live."""
        snapshot = self._health
        if snapshot is None:
            with self._lock:
                snapshot = self._publish_health()
        stats = self.lineage.stats()
        return {**snapshot, **(self.control.health() if self.control is not None else {}),
                "events_by_kind": {kind: emitted for kind, (emitted, _) in stats.items()},
                "drops_by_kind": {kind: dropped for kind, (_, dropped) in stats.items()}}

    def _publish_health(self) -> dict[str, Any]:
        """Build the health snapshot; on the pipeline thread (or under its lock)."""
        snapshot = {
            "events_dispatched": dict(self.counts),
            "decode_errors": dict(self.decoder.errors),
            **self.intents.health(),
            "tracked_processes": sum(1 for p in self.processes.processes.values() if p.alive),
            "sessions_open": sum(1 for s in self.sessions.values() if s.ended_ns is None),
            "sessions_total": len(self.sessions),
            "sink_errors": self.sink_errors,
            "callback_errors": self._ring.callback_errors,
            "ring_backlog_peak_bytes": self._reader.peak_backlog,
            "ring_backlog_limit_bytes": self._reader.backlog_bytes,
            **self.capture.health(),
            **(self.held_lane.health() if self.held_lane is not None else {}),
            **{key: value for sink in self.sinks if hasattr(sink, "health") for key, value in sink.health().items()},
        }
        self._health = snapshot
        self._health_at = time.monotonic()
        return snapshot

    def _dispatch(self, event: Event) -> None:
        self.counts[event.type] += 1
        record = record_of(event)
        for sink in self.sinks:
            try:  # _guard's work, inline: a frame less per sink and event
                sink.handle(event, record)
            except Exception:  # a broken sink must not stop tracing
                self.sink_errors += 1
                log.exception("sink %s failed", type(sink).__qualname__)
        if self.detections is not None:
            self.detections.observe(event, record)

    def _guard(self, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception:  # a broken sink must not stop tracing
            self.sink_errors += 1
            log.exception("sink %s failed", getattr(fn, "__qualname__", fn))

    def _check_drops(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_drop_check < 1.0:
            return
        self._last_drop_check = now
        lost_now: dict[str, int] = {}
        for kind, (_emitted, dropped) in self.lineage.stats().items():
            before = self.dropped.get(kind, 0)
            if dropped > before:
                self.dropped[kind] = dropped
                lost_now[kind] = dropped - before
                self._dispatch(LostEvent(ts_ns=time.time_ns(), kind=kind, count=dropped - before, total=dropped))
        self._log_drop_episode(lost_now)

    def _log_drop_episode(self, lost_now: dict[str, int]) -> None:
        """One log line when the kernel starts dropping events and one when it stops (with the
        counts by kind), not one per second of a flood."""
        if lost_now:
            if not self._episode:
                log.warning("the kernel is dropping events (effects shed under load, or the ring buffer full): %s so far",
                            _by_kind(lost_now))
            for kind, count in lost_now.items():
                self._episode[kind] = self._episode.get(kind, 0) + count
        elif self._episode:
            log.warning("the kernel stopped dropping events; lost in this episode: %s", _by_kind(self._episode))
            self._episode = {}

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())


def _by_kind(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items(), key=lambda kv: -kv[1]))


def _safe(fn: Callable[[], object], default: object) -> object:
    try:
        return fn()
    except (psutil.Error, OSError):
        return default
