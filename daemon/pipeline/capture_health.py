"""Capture health: which executables' TLS vigil hooked or is blind to, execs held until their TLS
was hooked, and TCP connections that moved bytes while no plaintext was captured (traffic vigil
sees but cannot read). A handler of the pipeline: it receives execs, connects/closes and exits.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from vigild.bpf.effects_events import NetBytes, NetClose, NetConnect
from vigild.bpf.events import SOCK_LIB_PLAIN, ExecEvent, ExitEvent, ForkEvent, TlsData, TlsMapped
from vigild.bpf.lineage import LineageSensor
from vigild.bpf.tls import TlsSensor
from vigild.correlate.process_tree import ProcessTable
from vigild.correlate.sessions import Session
from vigild.daemon.events import CaptureBlind, CaptureEvent, Event

SCAN_INTERVAL_S = 0.25  # how often tracked processes' maps are read for newly loaded TLS libraries
YOUNG_PROCESS_NS = 10 * 1_000_000_000
EXITED_GRACE_S = 5.0  # how long an exited process's late socket closes still find their connects


class CaptureHealth:
    def __init__(self, tls: TlsSensor | None, lineage: LineageSensor, processes: ProcessTable,
                 sessions: dict[int, Session], emit: Callable[[Event], None],
                 tracks: Callable[[int], bool]) -> None:
        self.tls = tls
        self.lineage = lineage
        self.processes = processes
        self.sessions = sessions
        self.emit = emit
        self.tracks = tracks
        # when each process last had TLS plaintext, its connections' starts, executables already
        # said blind, blind connections by (agent, reason)
        self.plaintext_ns: dict[int, int] = {}
        self.connects: dict[int, dict[int, int]] = {}  # pid -> socket -> connect time
        self.exited_pids: deque[tuple[float, int]] = deque()  # their capture health goes after a grace
        self.said_blind: set[str] = set()
        self.blind_connections: Counter[tuple[str, str]] = Counter()
        self.exe_holds = 0            # execs held until their TLS was hooked, and the longest hold
        self.exe_hold_ms_max = 0.0
        self._last_scan = 0.0
        self._scan_round = 0

    def plaintext(self, event: TlsData) -> None:
        if event.lib == SOCK_LIB_PLAIN:  # read at the socket (conn_id is its inode): that connection is not blind
            self.connects.get(event.pid, {}).pop(event.conn_id, None)
        else:  # TLS plaintext names no socket: the process's connections count as read
            self.plaintext_ns[event.pid] = event.ts_ns

    def exited(self, event: ExitEvent) -> None:
        self.exited_pids.append((time.monotonic(), event.pid))
        if self.tls is not None:
            self.tls.unlink_process(event.pid)

    def tls_mapped(self, event: TlsMapped) -> None:
        """The kernel held a tracked process at its first mmap of a TLS library (per-process
        uprobes): link it, then let it go."""
        if self.tls is None:
            return
        self.tls.link_mapped(event.pid, event.file_dev, event.file_ino)
        if event.held:
            self.tls.release(event.pid)

    def forked(self, event: ForkEvent) -> None:
        """A child inherits its parent's mapped TLS libraries without mapping them itself."""
        if self.tls is not None and event.ppid in self.tls.proc_links:
            self.tls.inherit_links(event.ppid, event.pid)

    def hook_tree(self, pids: list[int]) -> None:
        """Hook what already-running processes carry now, not at the next scan: a session is
        announced only once its TLS is hooked, so what it sends from then on is read."""
        if self.tls is not None:
            for pid in pids:
                self.tls.scan_process(pid)

    def report_tree(self, pids: list[int]) -> None:
        """Say what vigil can read of each running process's TLS, after its session started."""
        if self.tls is not None:
            for pid in pids:
                self.report_captures(time.time_ns(), pid)

    def hook_executable(self, event: ExecEvent) -> None:
        """Hook the TLS the new executable carries before it runs: the kernel holds an exec of an
        executable it has not seen (EXEC_EXE_HELD) until this has attached (or given up)."""
        key = self.tls.scan_process(event.pid) if self.tls is not None else None
        if key is not None:
            self.lineage.mark_exe_seen(*key)
        hold_ms = None
        if event.exe_held:
            hold_ms = (time.time_ns() - event.ts_ns) / 1e6
            self.exe_holds += 1
            self.exe_hold_ms_max = max(self.exe_hold_ms_max, hold_ms)
            if not event.held:  # a tool call's process is let go by the control, once placed
                self.lineage.release_held(event.pid)
                try:
                    os.kill(event.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        self.report_captures(event.ts_ns, event.pid, hold_ms)

    def report_captures(self, ts_ns: int, pid: int, hold_ms: float | None = None) -> None:
        """Say what became hooked or blind; pid is the process that led to it (0: a search that
        ended after its process was let go), hold_ms how long its exec was held."""
        if self.tls is None or not self.tls.new_captures:
            return
        info = self.processes.get(pid)
        for cap in self.tls.new_captures:
            cls = CaptureBlind if cap.state == "blind" else CaptureEvent
            if cap.state == "blind":
                self.said_blind.add(cap.path)
            self.emit(cls(ts_ns=ts_ns, pid=pid, comm=info.comm if info else "",
                          session_id=info.session_id if info else None, binary=cap.path, stack=cap.stack,
                          how=cap.how, reason=cap.reason, locate_ms=cap.locate_ms, cached=cap.cached,
                          hold_ms=round(hold_ms, 1) if hold_ms is not None else None))
        self.tls.new_captures.clear()

    def watch_plaintext(self, event: NetConnect | NetClose) -> None:
        """A TCP connection of a tracked process that moved bytes while no TLS plaintext was
        captured for that process: traffic vigil sees but cannot read. Counted by agent and
        reason; said once per executable (`capture_blind`)."""
        if event.family not in ("inet", "inet6") or event.sock_type != "stream":
            return
        if isinstance(event, NetConnect):
            self.connects.setdefault(event.pid, {})[event.sock_id] = event.ts_ns
            return
        started = self.connects.get(event.pid, {}).pop(event.sock_id, None)
        if isinstance(event, NetBytes) or not (event.bytes_sent or event.bytes_received) or started is None:
            return
        if self.plaintext_ns.get(event.pid, 0) >= started:
            return
        info = self.processes.get(event.pid)
        binary = info.filename if info and info.filename else event.comm
        capture = self.tls.capture_of(binary) if self.tls is not None and binary.startswith("/") else None
        if self.tls is None:
            reason = "TLS capture is off"
        elif capture is not None and capture.state == "blind":
            reason = capture.reason or "blind"
        elif capture is not None:
            reason = f"{capture.stack} hooked but no plaintext seen on this connection"
        else:
            reason = "no TLS library hooked for this executable (unrecognised TLS, or plain TCP)"
        session = self.sessions.get(event.session_id)
        agent = (session.agent if session is not None else None) or "unknown"
        self.blind_connections[(agent, _reason_label(reason))] += 1
        if binary not in self.said_blind:
            self.said_blind.add(binary)
            self.emit(CaptureBlind(ts_ns=event.ts_ns, pid=event.pid, comm=event.comm,
                                   session_id=event.session_id, binary=binary,
                                   stack=capture.stack if capture is not None else "unknown",
                                   reason=f"traffic without plaintext ({event.bytes_sent} bytes sent, "
                                          f"{event.bytes_received} received): {reason}"))

    def housekeeping(self, now: float) -> None:
        """Hook TLS libraries that tracked processes loaded since their exec; forget processes
        that exited a grace ago."""
        if self.tls is not None:
            self.tls.poll_pending()
            self.report_captures(time.time_ns(), 0)
            self.tls.close_exited_links()
        if self.tls is not None and now - self._last_scan >= SCAN_INTERVAL_S:
            # Young processes are still loading libraries: scan them every round; older ones
            # every tenth round.
            self._scan_round += 1
            self._last_scan = now
            young_since = time.time_ns() - YOUNG_PROCESS_NS
            for info in list(self.processes.processes.values()):
                if info.alive and (info.start_ns > young_since or self._scan_round % 10 == 0):
                    self.tls.scan_process(info.pid)
                    self.report_captures(time.time_ns(), info.pid)
        self._forget_exited(now)

    def _forget_exited(self, now: float) -> None:
        """Drop the capture health of processes that exited a grace ago: their sockets close after
        their exit event (the kernel closes files late in do_exit), so the closes must still find
        their connects; a pid reused by a tracked process meanwhile keeps its new state."""
        while self.exited_pids and now - self.exited_pids[0][0] >= EXITED_GRACE_S:
            _, pid = self.exited_pids.popleft()
            if not self.tracks(pid):
                self.plaintext_ns.pop(pid, None)
                self.connects.pop(pid, None)

    def health(self) -> dict[str, Any]:
        return {
            "attach_ok": dict(self.tls.attach_ok) if self.tls is not None else {},
            "attach_failed": dict(self.tls.attach_failed) if self.tls is not None else {},
            "tls_blind_connections": dict(self.blind_connections),
            "tls_captures": [c.as_dict() for c in self.tls.captures.values()] if self.tls is not None else [],
            "exe_holds": self.exe_holds,
            "exe_hold_ms_max": self.exe_hold_ms_max,
            **(self.tls.health() if self.tls is not None else {"tls_uprobes": "off"}),
        }


def _reason_label(reason: str) -> str:
    """A bounded metric label: the reason up to its first colon (no paths, no addresses)."""
    return reason.split(":", 1)[0].split(" (", 1)[0][:80]
