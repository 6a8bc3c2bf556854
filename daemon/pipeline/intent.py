"""Intent: TLS plaintext and pipe writes decoded into LLM calls, HTTP requests and MCP calls,
merged with the agents' own telemetry, attributed to their session and handed on.

A handler of the pipeline: it owns the TLS data/close kinds (they are not effects and never reach
the sinks themselves), sees every effect for MCP over stdio, and every exit to finish the
process's connections."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from vigild.bpf.events import SOCK_LIB_PIPE, ExitEvent, ProcessEvent, TlsClose, TlsData
from vigild.correlate.agent_telemetry import TelemetryMerger, TelemetryRecord
from vigild.correlate.intent import HttpsRequest, LlmCall
from vigild.correlate.mcp import McpCall, McpTracker
from vigild.correlate.process_tree import ProcessTable
from vigild.correlate.tls_gaps import TlsGaps
from vigild.correlate.tls_stream import TlsStreamDecoder
from vigild.daemon.events import Attributed, Event
from vigild.daemon.pipeline.control_port import ToolControlPort

EXPIRE_EVERY_S = 5.0  # how often connections that went idle (their close never seen) are finished


class IntentHandler:
    def __init__(self, intent: TlsStreamDecoder | None, processes: ProcessTable, emit: Callable[[Event], None],
                 control: ToolControlPort | None = None,
                 telemetry: queue.SimpleQueue[TelemetryRecord] | None = None,
                 on_plaintext: Callable[[TlsData], None] = lambda event: None, own_hosts: Iterable[str] = ()) -> None:
        self.intent = intent
        self.processes = processes
        self.emit = emit
        self.control = control
        self.telemetry = telemetry
        self.on_plaintext = on_plaintext
        self.tls_gaps = TlsGaps()
        self.own_hosts = frozenset(own_hosts)  # vigil's own HTTP endpoints (host:port), never reported as requests
        self.mcp = McpTracker()  # MCP over stdio: pipe writes from the sockdata sensor
        self.merger = TelemetryMerger(comm_of=self._comm_of) if telemetry is not None else None
        self._last_expire = 0.0

    def tls_data(self, event: TlsData) -> None:
        if event.lib == SOCK_LIB_PIPE:
            chunk = self.tls_gaps.chunk(event)
            self.dispatch(self.mcp.feed_pipe(event.ts_ns, event.pid, event.comm, event.conn_id,
                                             event.peer_ino, event.data, chunk.lost_bytes))
            return
        self.on_plaintext(event)
        if self.intent is not None:
            self.dispatch(self.intent.feed(self.tls_gaps.chunk(event)))

    def tls_close(self, event: TlsClose) -> None:
        self.tls_gaps.forget(event.pid, event.conn_id)
        if self.intent is not None:
            self.dispatch(self.intent.close(event.pid, event.conn_id, event.ts_ns))

    def effect(self, event: ProcessEvent) -> None:
        """Every effect dispatched: MCP over stdio pairs pipes with the processes behind them."""
        self.mcp.observe_effect(event)

    def exited(self, event: ExitEvent) -> None:
        if self.intent is not None:
            self.tls_gaps.forget(event.pid)
            self.dispatch(self.intent.close_process(event.pid))

    def dispatch(self, events: list[Any]) -> None:
        for inner in self._mcp_released(events):
            if isinstance(inner, HttpsRequest) and inner.host in self.own_hosts:
                continue  # an agent exporting its telemetry to vigil's receiver: vigil's plumbing
            if isinstance(inner, LlmCall):
                if self.merger is not None:
                    self.merger.observe_tls(inner)
                self.mcp.observe_llm(inner)
            info = self.processes.get(inner.pid)
            session_id = info.session_id if info else None
            linked = self.control.observe_intent(inner, session_id) if self.control is not None else []
            self.emit(Attributed(inner, session_id))
            for event in linked:  # after the LLM call that named them
                self.emit(event)

    def _mcp_released(self, events: list[Any]) -> Iterator[Any]:
        """MCP calls decoded from HTTP wait in the tracker for their endpoint's initialize."""
        for inner in events:
            if isinstance(inner, McpCall) and inner.transport == "http":
                yield from self.mcp.observe_http(inner)
            else:
                yield inner

    def housekeeping(self, now: float) -> None:
        """Merge the agents' telemetry received since the last poll; finish idle connections."""
        if self.merger is not None:
            self._drain_telemetry()
            self.dispatch(self.merger.expire())
        if self.intent is not None and now - self._last_expire >= EXPIRE_EVERY_S:
            self._last_expire = now
            self.dispatch(self.intent.expire(time.time_ns()))

    def flush(self) -> None:
        """At stop: what the decoders still hold."""
        if self.intent is not None:
            self.dispatch(self.intent.flush())
        self.dispatch(self.mcp.flush())
        if self.merger is not None:
            self._drain_telemetry()
            self.dispatch(self.merger.flush())

    def _drain_telemetry(self) -> None:
        assert self.telemetry is not None and self.merger is not None
        while True:
            try:
                record = self.telemetry.get_nowait()
            except queue.Empty:
                return
            self.merger.feed(record)

    def _comm_of(self, pid: int) -> str:
        info = self.processes.get(pid)
        return info.comm if info else ""

    def health(self) -> dict[str, Any]:
        return {"parse_failures": dict(self.intent.failures) if self.intent is not None else {}}
