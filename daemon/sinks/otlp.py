"""Export a recorded session to an OpenTelemetry backend as one trace (OTLP over HTTP, protobuf).

The trace mirrors what vigil saw, named per the GenAI semantic conventions (`otlp_semconv`):

    invoke_agent {agent}            the session: its agent, argv and root process
    ├── chat {model}                an LLM call, under the process that made it
    ├── execute_tool {tool_name}    a tool call, linked to the chat span that asked for it
    │   └── process {name}          the tool's processes, nested as they forked; their effects
    │                               (exec, file_*, net_*, mem_spike, oom_kill, detection...) are
    │                               span events
    ├── process {name}              the agent's other processes
    └── {METHOD}                    any other HTTPS request

Ids come from the session (trace id) and from what each span stands for (span id), never from a
random source: exporting a session again sends the same trace, which backends merge instead of
showing twice.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from vigild.correlate.containers import resource_attributes
from vigild.correlate.tool_links import apply_links
from vigild.daemon.sinks.otlp_semconv import (
    Attributes,
    chat_attributes,
    clean,
    effect_attributes,
    http_attributes,
    mcp_attributes,
    process_attributes,
    scalar,
    session_attributes,
    tool_attributes,
)
from vigild.daemon.store import Store

DEFAULT_TIMEOUT_S = 10.0
# Spans per request: keeps a long session's trace under collectors' request size limits.
MAX_SPANS_PER_REQUEST = 1000
SCOPE = InstrumentationScope("vigild")
ROOT = "session"
# Lineage events that the process spans themselves stand for.
IMPLIED = frozenset({"session_start", "session_end", "fork", "exit", "tool_start", "tool_end"})


class OtlpExportError(RuntimeError):
    """The session does not exist, or the collector did not accept its trace."""


def export_session(store: Store, session_id: int, endpoint: str, capture_content: bool = False,
                   headers: Mapping[str, str] | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> int:
    """Send one session as a trace to the OTLP/HTTP `endpoint` (a collector's base URL, to which
    `/v1/traces` is added, or the full traces URL). Message content goes only with
    `capture_content`. Returns the number of spans sent; raises OtlpExportError on failure."""
    spans = session_spans(store, session_id, capture_content)
    url = traces_url(endpoint)
    exporter = OTLPSpanExporter(endpoint=url, headers=dict(headers or {}), timeout=timeout)
    # The exporter only says SUCCESS or FAILURE; why is in what it logs.
    reasons = _Collect()
    exporter_log = logging.getLogger("opentelemetry.exporter.otlp")
    exporter_log.addHandler(reasons)
    result = SpanExportResult.SUCCESS
    try:
        for first in range(0, len(spans), MAX_SPANS_PER_REQUEST):
            result = exporter.export(spans[first:first + MAX_SPANS_PER_REQUEST])
            if result is not SpanExportResult.SUCCESS:
                break
    finally:
        exporter_log.removeHandler(reasons)
        exporter.shutdown()  # type: ignore[no-untyped-call]
    if result is not SpanExportResult.SUCCESS:
        why = f": {reasons.messages[0]}" if reasons.messages else ""
        raise OtlpExportError(f"the OTLP endpoint {url} did not accept session {session_id}'s trace{why}")
    return len(spans)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def traces_url(endpoint: str) -> str:
    """A base URL (`http://collector:4318`) gets the OTLP traces path, as OTEL_EXPORTER_OTLP_ENDPOINT
    does; a URL with a path is used as given."""
    if urlsplit(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/traces"
    return endpoint


def session_spans(store: Store, session_id: int, capture_content: bool = False) -> list[ReadableSpan]:
    """The session's trace as finished SDK spans."""
    session = store.session(session_id)
    if session is None:
        raise OtlpExportError(f"no session {session_id} in {store.path}")
    # late links applied: a call the telemetry linked is a child of its chat span's tool call
    return _TraceBuilder(session, store.processes(session_id), apply_links(store.events(session_id)),
                         capture_content).build()


@dataclass
class _Draft:
    """A span being assembled; ids and contexts are made once the whole tree is known."""

    name: str
    start: int
    end: int
    parent: str | None
    attributes: Attributes
    kind: SpanKind = SpanKind.INTERNAL
    events: list[Event] = field(default_factory=list)
    links: list[str] = field(default_factory=list)


@dataclass
class _Tool:
    start: dict[str, Any]
    end: dict[str, Any] | None = None


class _TraceBuilder:
    def __init__(self, session: dict[str, Any], processes: list[dict[str, Any]], events: list[dict[str, Any]],
                 capture_content: bool) -> None:
        self.session = session
        self.processes = processes
        self.events = events
        self.capture = capture_content
        self.seed = f"vigil/{session['id']}/{session['started_ns']}"
        last = [session["started_ns"], *(e["ts_ns"] for e in events),
                *(p["exit_ns"] or p["start_ns"] for p in processes)]
        self.end_ns: int = session["ended_ns"] or max(last)
        self.drafts: dict[str, _Draft] = {}
        self.incarnations: dict[int, list[tuple[int, str]]] = defaultdict(list)  # pid -> [(start_ns, key)]
        self.tools: dict[str, _Tool] = {}
        self.mcp_calls: list[dict[str, Any]] = []
        self.chat_of_call: dict[str, tuple[str, Any]] = {}  # LLM tool call id -> (chat key, arguments)
        # Effects as span events, by span key: tool spans are made last, once links are known.
        self.pending: dict[str, list[Event]] = defaultdict(list)

    def build(self) -> list[ReadableSpan]:
        self.drafts[ROOT] = _Draft(self._root_name(), self.session["started_ns"], self.end_ns, None,
                                   session_attributes(self.session))
        self._collect_tools()
        self._add_processes()
        for event in self.events:
            self._add_event(event)
        self._add_tool_spans()
        return self._finish()

    def _root_name(self) -> str:
        if self.session.get("agent"):
            return f"invoke_agent {self.session['agent']}"
        # The session row keeps the root's latest argv; the start event has the one it began with.
        started = next((e for e in self.events if e["type"] == "session_start"), self.session)
        argv = started.get("argv") or ["?"]
        return f"session {os.path.basename(argv[0])}"

    # ---- structure ----
    def _collect_tools(self) -> None:
        for event in self.events:
            if event["type"] not in ("tool_start", "tool_end"):
                continue
            key = self._tool_key(event)
            if event["type"] == "tool_start":
                self.tools.setdefault(key, _Tool(event))
            elif key in self.tools:
                self.tools[key].end = event

    @staticmethod
    def _tool_key(event: dict[str, Any]) -> str:
        return f"tool/{event.get('tool_call') or event.get('tool_call_id')}"

    def _tool_of_process(self, proc: dict[str, Any]) -> str | None:
        """The tool call whose first process this is (the tool's pid, alive at its start)."""
        for key, tool in self.tools.items():
            began = tool.start["ts_ns"]
            if (tool.start.get("pid") == proc["pid"] and proc["start_ns"] <= began
                    and (proc["exit_ns"] is None or proc["exit_ns"] >= began)):
                return key
        return None

    def _add_processes(self) -> None:
        for proc in sorted(self.processes, key=lambda p: p["start_ns"]):
            if proc["depth"] == 0 and proc["pid"] == self.session["root_pid"]:
                self.incarnations[proc["pid"]].append((proc["start_ns"], ROOT))
                continue
            key = f"process/{proc['pid']}/{proc['start_ns']}"
            parent = self._tool_of_process(proc) or self._owner(proc["ppid"], proc["start_ns"])
            name = os.path.basename(proc["argv"][0]) if proc.get("argv") else proc["comm"]
            self.drafts[key] = _Draft(f"process {name}", proc["start_ns"], proc["exit_ns"] or self.end_ns, parent,
                                      process_attributes(proc))
            self.incarnations[proc["pid"]].append((proc["start_ns"], key))

    def _owner(self, pid: int | None, ts_ns: int) -> str:
        """The span of the process `pid` was at `ts_ns` (pids are reused): its latest incarnation
        started by then; the session when the process is unknown."""
        owner = ROOT
        for start, key in self.incarnations.get(pid or -1, ()):
            if start > ts_ns:
                break
            owner = key
        return owner

    # ---- events ----
    def _add_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        ts = event["ts_ns"]
        if kind in IMPLIED:
            return
        if kind == "llm_call":
            self._add_chat(event)
        elif kind == "mcp_call":
            self.mcp_calls.append(event)  # spans after every chat span is known (links)
        elif kind == "https_request":
            end = ts + int((event.get("duration_ms") or 0) * 1e6)
            self._add(f"https/{event.get('pid')}/{ts}/{event.get('conn_id')}",
                      _Draft(str(event.get("method") or "HTTP"), ts, end, self._owner(event.get("pid"), ts),
                             http_attributes(event), SpanKind.CLIENT))
        elif kind == "exec":
            self.drafts[self._owner(event.get("pid"), ts)].events.append(
                Event("exec", clean({"process.command_args": scalar(event.get("argv")),
                                     "process.executable.path": event.get("filename"),
                                     "vigil.argv_truncated": event.get("argv_truncated") or None}), ts))
        else:
            tool = self._tool_key(event) if event.get("tool_call") is not None else None
            target = tool if tool in self.tools else self._owner(event.get("pid"), ts)
            self.pending[target].append(Event(kind, effect_attributes(event), ts))

    def _add_chat(self, call: dict[str, Any]) -> None:
        ts = call["ts_ns"]
        end = ts + int((call.get("duration_ms") or 0) * 1e6)
        key = self._add(f"chat/{call.get('pid')}/{ts}/{call.get('conn_id')}",
                        _Draft(f"chat {call.get('model') or 'unknown'}", ts, end, self._owner(call.get("pid"), ts),
                               chat_attributes(call, self.capture), SpanKind.CLIENT))
        for tc in call.get("tool_calls") or ():
            if tc.get("id"):
                self.chat_of_call[tc["id"]] = (key, tc.get("arguments", tc.get("arguments_raw")))

    def _add_tool_spans(self) -> None:
        for key, tool in self.tools.items():
            last = tool.end or tool.start
            # by the model's tool-call id only: providers reuse response ids across calls
            chat, arguments = self.chat_of_call.get(last.get("tool_call_id") or "", (None, None))
            start = tool.start["ts_ns"]
            end = tool.end["ts_ns"] if tool.end else self.end_ns
            self.drafts[key] = _Draft(f"execute_tool {last.get('tool_name') or 'unknown'}", start, end, ROOT,
                                      tool_attributes(tool.start, tool.end, arguments, self.capture),
                                      links=[chat] if chat else [])
        for call in self.mcp_calls:
            start = call["ts_ns"]
            chat, _ = self.chat_of_call.get(call.get("llm_tool_call_id") or "", (None, None))
            name = f"execute_tool {call.get('tool')}" if call.get("method") == "tools/call" else f"mcp {call.get('method')}"
            draft = _Draft(name, start, start + int((call.get("duration_ms") or 0) * 1e6),
                           self._owner(call.get("pid"), start), mcp_attributes(call, self.capture),
                           links=[chat] if chat else [])
            draft.events.extend(Event(e["type"], effect_attributes(e), e["ts_ns"]) for e in call.get("effects") or ())
            self._add(f"mcp/{call.get('pid')}/{start}/{call.get('request_id')}", draft)

    def _add(self, key: str, draft: _Draft) -> str:
        unique, n = key, 1
        while unique in self.drafts:
            n += 1
            unique = f"{key}#{n}"
        self.drafts[unique] = draft
        return unique

    # ---- output ----
    def _finish(self) -> list[ReadableSpan]:
        trace_id = _id(self.seed, 16)
        resource = Resource({"service.name": "vigild", "host.name": self.session.get("host") or "",
                             "vigil.session.id": self.session["id"],
                             **resource_attributes(self.session.get("container"))})

        def context(key: str) -> SpanContext:
            return SpanContext(trace_id, _id(f"{self.seed}/{key}", 8), is_remote=False,
                               trace_flags=TraceFlags(TraceFlags.SAMPLED))

        for key, events in self.pending.items():
            self.drafts[key].events.extend(events)
        spans = []
        for key, d in self.drafts.items():
            error = d.attributes.get("error.type")
            spans.append(ReadableSpan(
                name=d.name, context=context(key), parent=context(d.parent) if d.parent else None,
                resource=resource, attributes=d.attributes, kind=d.kind,
                events=sorted(d.events, key=lambda e: e.timestamp),
                links=[Link(context(k), {"vigil.link": "requested_by"}) for k in d.links],
                status=Status(StatusCode.ERROR, str(error)) if error else Status(StatusCode.UNSET),
                start_time=d.start, end_time=max(d.end, d.start), instrumentation_scope=SCOPE,
            ))
        return spans


def _id(seed: str, size: int) -> int:
    """A non-zero id of `size` bytes derived from `seed` (zero is OTLP's "no id")."""
    return int.from_bytes(hashlib.sha256(seed.encode()).digest()[:size], "big") or 1
