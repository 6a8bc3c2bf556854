"""The pipeline: one thread drains the kernel's ring buffer, decodes records into typed events,
keeps the process table and sessions, and hands every event to the sinks.

Work inside the libbpf callback is a list append; decoding and sinks run after each poll, so a
slow sink delays the next poll but never runs inside C.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

import psutil

from vigild.bpf.clock import BootClock
from vigild.bpf.events import DecodeError, EventDecoder, ExecEvent, ExitEvent, ProcessEvent
from vigild.bpf.lineage import LineageSensor
from vigild.bpf.loader import RingBuffer
from vigild.correlate.process_tree import ProcessInfo, ProcessTable
from vigild.correlate.sessions import Session, SessionIds
from vigild.daemon.events import Event, LostEvent, SessionEnd, SessionStart

log = logging.getLogger("vigild.pipeline")


class Sink(Protocol):
    def handle(self, event: Event) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class Pipeline:
    def __init__(
        self,
        lineage: LineageSensor,
        sinks: Sequence[Sink],
        agent_for_comm: Callable[[str], str | None] = lambda comm: None,
        poll_ms: int = 10,
    ) -> None:
        self.lineage = lineage
        self.sinks = list(sinks)
        self.agent_for_comm = agent_for_comm
        self.poll_ms = poll_ms
        self.clock = BootClock()
        self.decoder = EventDecoder(self.clock)
        self.processes = ProcessTable()
        self.sessions: dict[int, Session] = {}
        self.session_ids = SessionIds()
        self.counts: Counter[str] = Counter()
        self.sink_errors = 0
        self.dropped: dict[str, int] = {}
        self._raw: list[bytes] = []
        self._ring = RingBuffer()
        self._ring.add(lineage.events, self._raw.append)
        self._lock = threading.RLock()
        self._exited = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_drop_check = 0.0

    # ---- roots ----
    def add_root(self, pid: int, agent: str | None = None) -> Session:
        """Track a running process and the tree below it, as one new session."""
        with self._lock:
            session_id = self.session_ids.next()
            procs = self.lineage.track_tree(pid, session_id)
            root = procs[0]
            session = Session(id=session_id, root_pid=pid, started_ns=int(root.create_time() * 1e9),
                              argv=_safe(root.cmdline, []), agent=agent, cwd=_safe(root.cwd, None),
                              uid=_safe(lambda: root.uids().real, None))
            for proc in procs:
                self._seed(proc, session_id, pid)
            self._open_session(session)
            return session

    def add_pending_root(self, pid: int, argv: list[str], cwd: str, uid: int) -> Session:
        """Track a child we forked that is waiting to exec `argv` (vigil trace -- CMD)."""
        with self._lock:
            session_id = self.session_ids.next()
            self.lineage.track(pid, session_id)
            now = time.time_ns()
            self.processes.seed(ProcessInfo(pid=pid, ppid=0, session_id=session_id, comm="", start_ns=now,
                                            argv=argv))
            session = Session(id=session_id, root_pid=pid, started_ns=now, argv=argv, cwd=cwd, uid=uid)
            self._open_session(session)
            return session

    def _seed(self, proc: psutil.Process, session_id: int, root_pid: int) -> None:
        try:
            with proc.oneshot():
                info = ProcessInfo(pid=proc.pid, ppid=proc.ppid(), session_id=session_id, comm=proc.name(),
                                   start_ns=int(proc.create_time() * 1e9), filename=_safe(proc.exe, ""),
                                   argv=_safe(proc.cmdline, []))
        except psutil.Error:
            return
        parent = self.processes.get(info.ppid)
        info.depth = parent.depth + 1 if parent and proc.pid != root_pid else 0
        self.processes.seed(info)

    def _open_session(self, session: Session) -> None:
        self.sessions[session.id] = session
        self._dispatch(SessionStart(ts_ns=session.started_ns, session=session))

    # ---- running ----
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vigil-pipeline", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("pipeline step failed; continuing")
                time.sleep(self.poll_ms / 1000)

    def run_once(self, timeout_ms: int | None = None) -> int:
        """One poll: drain the ring buffer and dispatch what it held; returns records handled."""
        self._ring.poll(self.poll_ms if timeout_ms is None else timeout_ms)
        batch, self._raw[:] = list(self._raw), []
        with self._lock:
            for raw in batch:
                self._handle_raw(raw)
            self._check_drops()
            for sink in self.sinks:
                self._guard(sink.flush)
        return len(batch)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.ident is not None:  # started (a signal may come first)
            self._thread.join(timeout=5)
        self._thread = None
        self.run_once(0)  # what arrived after the last poll
        self._check_drops(force=True)
        for sink in self.sinks:
            self._guard(sink.flush)
            self._guard(sink.close)
        self._ring.free()

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

    def handle(self, event: ProcessEvent) -> None:
        if isinstance(event, ExecEvent) and event.new_root and event.session_id not in self.sessions:
            self._open_session(Session(id=event.session_id, root_pid=event.pid, started_ns=event.ts_ns,
                                       argv=event.argv, agent=self.agent_for_comm(event.comm), uid=event.uid))
        info = self.processes.apply(event)
        session = self.sessions.get(event.session_id)
        if isinstance(event, ExecEvent) and session is not None and event.pid == session.root_pid:
            session.argv = event.argv
        self._dispatch(event)
        if isinstance(event, ExitEvent):
            if session is not None and event.pid == session.root_pid and session.ended_ns is None:
                session.ended_ns = event.ts_ns
                session.exit_code = info.exit_code
                session.signal = info.signal
                self._dispatch(SessionEnd(ts_ns=event.ts_ns, session=session))
            self._exited.notify_all()

    def _dispatch(self, event: Event) -> None:
        self.counts[event.type] += 1
        for sink in self.sinks:
            self._guard(sink.handle, event)

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
        for kind, (_emitted, dropped) in self.lineage.stats().items():
            before = self.dropped.get(kind, 0)
            if dropped > before:
                self.dropped[kind] = dropped
                self._dispatch(LostEvent(ts_ns=time.time_ns(), kind=kind, count=dropped - before, total=dropped))

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())


def _safe(fn: Callable[[], object], default: object) -> object:
    try:
        return fn()
    except (psutil.Error, OSError):
        return default


def exit_status(info: ProcessInfo | None) -> int:
    """Shell-style status: the exit code, or 128 + signal."""
    if info is None:
        return 1
    if info.signal:
        return 128 + info.signal
    return info.exit_code or 0

