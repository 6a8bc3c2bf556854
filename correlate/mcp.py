"""MCP tool calls over stdio and streamable HTTP, decoded into ``mcp_call`` events, with the
server's effects (stdio) and the model's tool call.

Streamable HTTP (plain or TLS) reaches here through the HTTP decoders: a POST whose body is a
JSON-RPC 2.0 request, answered with JSON or with an SSE stream of JSON-RPC messages
(:func:`mcp_http_call`); the tracker then adds the server's name (from that endpoint's
``initialize``) and the model's tool call. The server of an HTTP transport is another process,
reached over TCP, so its effects are not attributed (``attribution`` stays null).

Stdio is the newline-delimited JSON-RPC 2.0 between a host and the servers it spawns.

The kernel (bpf/sockdata.bpf.c) hands over what tracked processes *write* to pipes whose first
write starts like a JSON-RPC message (``{"`` and a key's first letter): the host's requests are its writes to the server's stdin pipe, the server's answers
its writes to its stdout pipe. Each write names the pipe (its inode) and the writer's stdin pipe
(``peer_ino``), so an answer written by a server whose stdin is pipe A pairs with the request of
the same JSON-RPC id written to pipe A: two servers of one host (whose ids both start at 0) never
mix. A pipe whose first message is not JSON-RPC 2.0 is ignored from then on.

Effects: between a ``tools/call`` request and its answer, the effects of the server process (and
of the processes it started) are attributed to the call. A server serving one request at a time
makes that exact; when several calls are in flight on one server, each of them lists the effects
of that time and says ``attribution: "concurrent"`` (the kernel cannot tell which request a read
served).

Linking: the host usually got the tool call from a model first. A ``tools/call`` is linked to the
latest unlinked tool call of an ``llm_call`` of the same process (else of any process) whose
arguments are equal and whose name is the MCP tool's name or ends with it (hosts prefix server
names: ``mcp__filesystem__read_text_file``).

Pure: no I/O; every public method returns the events it completed and never raises.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from vigild.correlate.exchange import Exchange
from vigild.correlate.intent import LlmCall, ParseFailure, _Event
from vigild.correlate.llm_common import is_event_stream, parse_json, sse_events
from vigild.correlate.redact import redact_text, redact_url

MAX_LINE_BYTES = 16 * 1024 * 1024  # one JSON-RPC message; longer ones are dropped and said
MAX_EFFECTS = 64  # effects listed per call; the rest are counted in effects_omitted
MAX_PENDING = 4096  # requests waiting for an answer; the oldest are ended as "no_response"
MAX_RECENT_TOOL_CALLS = 256
HTTP_WAIT_NS = 10 * 1_000_000_000  # how long HTTP calls wait for their endpoint's initialize


@dataclass(frozen=True)
class McpCall(_Event):
    """One MCP request and its answer. ``status``: ``ok``, ``error`` (a JSON-RPC error),
    ``tool_error`` (a tools/call result with ``isError``) or ``no_response``. ``arguments`` are
    the tools/call arguments, redacted like a model's tool-call arguments; results are not kept,
    only their status."""

    type: ClassVar[str] = "mcp_call"

    ts_ns: int
    pid: int  # the host that sent the request
    comm: str
    transport: str  # "stdio" or "http"
    method: str
    request_id: str
    server_pid: int | None = None
    server: str | None = None
    server_version: str | None = None
    tool: str | None = None
    arguments: Any = None
    status: str = "ok"
    error: str | None = None
    duration_ms: float | None = None
    tools: list[str] | None = None  # tools/list: the names offered
    llm_tool_call_id: str | None = None
    llm_tool_name: str | None = None
    effects: list[dict[str, Any]] = field(default_factory=list)
    effects_omitted: int = 0
    attribution: str | None = None  # "exact" or "concurrent" (see the module docstring)
    endpoint: str | None = None  # http: host and path of the MCP endpoint
    conn_id: int | None = None  # http: the connection (SSL* or socket inode)


@dataclass
class _Request:
    ts_ns: int
    pid: int
    comm: str
    pipe: int
    method: str
    request_id: str
    params: dict[str, Any]
    effects: list[dict[str, Any]] = field(default_factory=list)
    effects_omitted: int = 0
    concurrent: bool = False


@dataclass
class _Pipe:
    partial: bytes = b""
    messages: int = 0
    ignored: bool = False


@dataclass
class _Server:
    pid: int
    name: str | None = None
    version: str | None = None


class McpTracker:
    """Feed it pipe writes (``feed_pipe``), the pipeline's LLM calls (``observe_llm``) and
    effect events (``observe_effect``); it returns ``McpCall`` and ``ParseFailure`` events."""

    def __init__(self) -> None:
        self._pipes: dict[tuple[int, int], _Pipe] = {}
        self._pending: OrderedDict[tuple[int, str], _Request] = OrderedDict()  # (pipe, id)
        self._servers: dict[int, _Server] = {}  # the server's stdin pipe -> who answers on it
        self._in_flight: dict[int, list[_Request]] = {}  # server pid -> its calls not yet answered
        self._children: dict[int, int] = {}  # pid -> the server it was started by (effects count)
        self._recent: OrderedDict[tuple[int, str], tuple[int, str, Any]] = OrderedDict()  # (pid, id) -> call
        self._linked: set[tuple[int, str]] = set()
        self._http_servers: dict[tuple[int, str], tuple[str | None, str | None]] = {}
        self._http_waiting: dict[tuple[int, str], list[McpCall]] = {}

    # ---- inputs ----
    def feed_pipe(self, ts_ns: int, pid: int, comm: str, pipe: int, peer_pipe: int, data: bytes,
                  lost_bytes: int = 0) -> list[_Event]:
        """One write of `pid` to `pipe`; peer_pipe is the writer's own stdin pipe (0: none)."""
        try:
            return self._feed(ts_ns, pid, comm, pipe, peer_pipe, data, lost_bytes)
        except Exception as exc:  # noqa: BLE001 - the event loop must survive any decoder bug
            self._pipes[(pid, pipe)] = _Pipe(ignored=True)
            return [ParseFailure(ts_ns, pid, pipe, comm, "internal_error",
                                 redact_text(f"MCP decoder error {type(exc).__name__}: {exc}"))]

    def observe_llm(self, call: LlmCall) -> None:
        """Remember the tool calls a model asked for, to link the MCP calls that carry them out."""
        for tool_call in call.tool_calls:
            call_id = tool_call.get("id")
            if isinstance(call_id, str) and "arguments" in tool_call:
                self._recent[(call.pid, call_id)] = (call.ts_ns, str(tool_call.get("name") or ""),
                                                     tool_call["arguments"])
        while len(self._recent) > MAX_RECENT_TOOL_CALLS:
            key, _ = self._recent.popitem(last=False)
            self._linked.discard(key)

    def observe_effect(self, event: Any) -> None:
        """An event of a traced process: a fork under a server is followed; a file or network
        effect of a server (or of what it started) joins its calls in flight."""
        if not self._in_flight and not self._children:
            return  # no server has a call in flight nor a child: nothing to follow or join (most events)
        pid, etype = getattr(event, "pid", None), getattr(event, "type", "")
        if etype == "fork":
            server = self._children.get(event.ppid, event.ppid if event.ppid in self._in_flight else None)
            if server is not None:
                self._children[pid] = server
            return
        if etype == "exit":
            self._children.pop(pid, None)
            return
        if not (etype.startswith("file_") or etype.startswith("net_") or etype == "exec"):
            return
        server = pid if pid in self._in_flight else self._children.get(pid)
        calls = self._in_flight.get(server) if server is not None else None
        if not calls:
            return
        effect = {"type": etype, "pid": pid, "ts_ns": event.ts_ns}
        for name in ("path", "filename", "remote_addr", "remote_port", "bytes"):
            value = getattr(event, name, None)
            if value not in (None, ""):
                effect[name] = value
        for request in calls:
            if len(request.effects) < MAX_EFFECTS:
                request.effects.append(effect)
            else:
                request.effects_omitted += 1

    def flush(self) -> list[_Event]:
        """End every request still waiting (shutdown) as ``no_response``."""
        events: list[_Event] = []
        while self._pending:
            _, request = self._pending.popitem(last=False)
            events.append(self._ended(request, None, None))
        for waiting in self._http_waiting.values():
            events += [self._resolved(c) for c in sorted(waiting, key=lambda c: c.ts_ns)]
        self._http_waiting.clear()
        return events

    # ---- internals ----
    def _feed(self, ts_ns: int, pid: int, comm: str, pipe: int, peer_pipe: int, data: bytes,
              lost_bytes: int) -> list[_Event]:
        state = self._pipes.setdefault((pid, pipe), _Pipe())
        if state.ignored:
            return []
        events: list[_Event] = []
        if lost_bytes:
            state.partial = b""
            events.append(ParseFailure(ts_ns, pid, pipe, comm, "capture_gap",
                                       f"{lost_bytes} bytes of MCP messages lost; the message they cut is dropped"))
            head, sep, data = data.partition(b"\n")  # the rest of a cut message
            if not sep:
                return events
        state.partial += data
        *lines, state.partial = state.partial.split(b"\n")
        if len(state.partial) > MAX_LINE_BYTES:
            state.partial = b""
            events.append(ParseFailure(ts_ns, pid, pipe, comm, "message_too_long",
                                       f"an MCP message longer than {MAX_LINE_BYTES} bytes was dropped"))
        for line in lines:
            if not line.strip():
                continue
            message = self._message(line)
            if message is None:
                if state.messages == 0:
                    state.ignored = True  # not JSON-RPC: some other JSON on a pipe
                    return events
                events.append(ParseFailure(ts_ns, pid, pipe, comm, "invalid_json_rpc",
                                           "a line on an MCP pipe is not a JSON-RPC 2.0 message"))
                continue
            state.messages += 1
            events += self._on_message(ts_ns, pid, comm, pipe, peer_pipe, message)
        return events

    @staticmethod
    def _message(line: bytes) -> dict[str, Any] | None:
        try:
            message = parse_json(line)
        except ValueError:
            return None
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return None
        return message

    def _on_message(self, ts_ns: int, pid: int, comm: str, pipe: int, peer_pipe: int,
                    message: dict[str, Any]) -> list[_Event]:
        method = message.get("method")
        has_id = "id" in message and isinstance(message["id"], (str, int)) and not isinstance(message["id"], bool)
        if isinstance(method, str):
            if not has_id:
                return []  # a notification: nothing answers it
            params = message.get("params")
            request = _Request(ts_ns, pid, comm, pipe, method, json.dumps(message["id"]),
                               params if isinstance(params, dict) else {})
            self._pending[(pipe, request.request_id)] = request
            server = self._servers.get(pipe)
            if server is not None:
                self._start(server.pid, request)
            events: list[_Event] = []
            while len(self._pending) > MAX_PENDING:
                _, old = self._pending.popitem(last=False)
                events.append(self._ended(old, None, None))
            return events
        if not has_id or not ("result" in message or "error" in message):
            return []
        request = self._pending.pop((peer_pipe, json.dumps(message["id"])), None)
        if request is None:
            return []  # an answer to a request we did not see (capture started later)
        server = self._servers.setdefault(peer_pipe, _Server(pid))
        server.pid = pid
        result = message.get("result")
        if request.method == "initialize" and isinstance(result, dict):
            info = result.get("serverInfo")
            if isinstance(info, dict):
                server.name = info.get("name") if isinstance(info.get("name"), str) else None
                server.version = info.get("version") if isinstance(info.get("version"), str) else None
        return [self._ended(request, message, ts_ns)]

    def _start(self, server_pid: int, request: _Request) -> None:
        calls = self._in_flight.setdefault(server_pid, [])
        calls.append(request)
        if len(calls) > 1:
            for call in calls:
                call.concurrent = True

    def _ended(self, request: _Request, answer: dict[str, Any] | None, ts_ns: int | None) -> McpCall:
        server = self._servers.get(request.pipe)
        if server is not None and request in self._in_flight.get(server.pid, []):
            self._in_flight[server.pid].remove(request)
        status, error, tools = _outcome(request.method, answer)
        tool, arguments = _tool_of(request.method, request.params)
        link = self._link(request.pid, tool, arguments) if tool is not None else None
        return McpCall(
            ts_ns=request.ts_ns, pid=request.pid, comm=request.comm, transport="stdio", method=request.method,
            request_id=request.request_id, server_pid=server.pid if server else None,
            server=server.name if server else None, server_version=server.version if server else None,
            tool=tool, arguments=arguments, status=status, error=error,
            duration_ms=round((ts_ns - request.ts_ns) / 1e6, 3) if ts_ns is not None else None, tools=tools,
            llm_tool_call_id=link[0] if link else None, llm_tool_name=link[1] if link else None,
            effects=request.effects, effects_omitted=request.effects_omitted,
            attribution=("concurrent" if request.concurrent else "exact") if request.method == "tools/call" else None,
        )

    def observe_http(self, call: McpCall) -> list[McpCall]:
        """An MCP call decoded from HTTP; returns the calls ready to report, with the server's
        name (from the endpoint's initialize) and the model's tool call.

        HTTP exchanges end in the order their responses end, not the order they were sent: a
        host that stops reading an SSE answer once it has the message ends them all at the
        connection's close. So a call to an endpoint whose initialize has not come yet waits for
        it, at most HTTP_WAIT_NS (by the calls' own clocks) or until flush()."""
        key = (call.pid, call.endpoint or "")
        if call.method == "initialize" and call.server is not None:
            self._http_servers[key] = (call.server, call.server_version)
        waiting = self._http_waiting.setdefault(key, [])
        waiting.append(call)
        newest = max(c.ts_ns for c in waiting)
        if key in self._http_servers or newest - min(c.ts_ns for c in waiting) > HTTP_WAIT_NS:
            del self._http_waiting[key]
            return [self._resolved(c) for c in sorted(waiting, key=lambda c: c.ts_ns)]
        return []

    def _resolved(self, call: McpCall) -> McpCall:
        name, version = self._http_servers.get((call.pid, call.endpoint or ""), (call.server, call.server_version))
        link = self._link(call.pid, call.tool, call.arguments) if call.tool is not None else None
        return replace(call, server=name, server_version=version,
                       llm_tool_call_id=link[0] if link else None, llm_tool_name=link[1] if link else None)

    def _link(self, pid: int, tool: str, arguments: Any) -> tuple[str, str] | None:
        """The latest unlinked model tool call that asked for this one (same process first)."""
        def fits(name: str, args: Any) -> bool:
            return (name == tool or name.endswith("_" + tool) or name.endswith("." + tool)) and \
                args == (arguments if arguments is not None else {})

        for same_process in (True, False):
            candidates: Iterable[tuple[tuple[int, str], tuple[int, str, Any]]] = reversed(self._recent.items())
            for key, (_, name, args) in candidates:
                if key in self._linked or (key[0] == pid) != same_process or not fits(name, args):
                    continue
                self._linked.add(key)
                return key[1], name
        return None


def _outcome(method: str, answer: dict[str, Any] | None) -> tuple[str, str | None, list[str] | None]:
    """(status, error message, tool names offered) of a request's answer (None: none came)."""
    if answer is None:
        return "no_response", None, None
    result = answer.get("result")
    tools = None
    if method == "tools/list" and isinstance(result, dict) and isinstance(result.get("tools"), list):
        tools = [str(t.get("name")) for t in result["tools"] if isinstance(t, dict)]
    if "error" in answer:
        err = answer.get("error")
        return "error", redact_text(str(err.get("message") if isinstance(err, dict) else err)), tools
    if isinstance(result, dict) and result.get("isError") is True:
        return "tool_error", None, tools
    return "ok", None, tools


def _tool_of(method: str, params: dict[str, Any]) -> tuple[str | None, Any]:
    """The tool name and arguments of a tools/call (None, None for other methods)."""
    if method != "tools/call" or not isinstance(params.get("name"), str):
        return None, None
    return params["name"], params.get("arguments")


def _server_info(method: str, answer: dict[str, Any] | None) -> tuple[str | None, str | None]:
    result = answer.get("result") if answer is not None else None
    info = result.get("serverInfo") if method == "initialize" and isinstance(result, dict) else None
    if not isinstance(info, dict):
        return None, None
    name, version = info.get("name"), info.get("version")
    return (name if isinstance(name, str) else None), (version if isinstance(version, str) else None)


def mcp_http_call(exchange: Exchange, pid: int, comm: str, conn_id: int) -> McpCall | None:
    """The MCP call an HTTP exchange carried (streamable HTTP: a POSTed JSON-RPC request, answered
    with JSON or an SSE stream), or None when it is not one. Notifications and answers the
    client POSTs are not calls."""
    request = exchange.request
    if request.method.upper() != "POST":
        return None
    try:
        message = parse_json(request.body.content())
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or not isinstance(message.get("method"), str) \
            or not isinstance(message.get("id"), (str, int)) or isinstance(message.get("id"), bool):
        return None
    answer, answered_ns = _http_answer(exchange, message["id"])
    method = message["method"]
    params = message.get("params") if isinstance(message.get("params"), dict) else {}
    status, error, tools = _outcome(method, answer)
    if answer is None and exchange.response is not None and exchange.response.status >= 400:
        status, error = "error", f"HTTP {exchange.response.status}"
    tool, arguments = _tool_of(method, params)
    server, version = _server_info(method, answer)
    end = answered_ns if answered_ns is not None else exchange.response.end_ts if exchange.response else None
    return McpCall(
        ts_ns=request.start_ts, pid=pid, comm=comm, transport="http", method=method,
        request_id=json.dumps(message["id"]), server=server, server_version=version, tool=tool,
        arguments=arguments, status=status, error=error, tools=tools,
        duration_ms=round((end - request.start_ts) / 1e6, 3) if end is not None else None,
        endpoint=redact_url(f"{exchange.host}{request.target.split('?', 1)[0]}"), conn_id=conn_id,
    )


def _http_answer(exchange: Exchange, request_id: str | int) -> tuple[dict[str, Any] | None, int | None]:
    """The JSON-RPC answer to request_id in the response (its JSON body, or one of its SSE
    events) and when it arrived (an SSE answer: its event's last byte; a host may hold the
    stream open long after)."""
    response = exchange.response
    if response is None:
        return None, None
    if is_event_stream(response):
        candidates: Iterable[tuple[Any, int | None]] = (
            (_json_or_none(event.data), ts_ns) for ts_ns, event in sse_events(response.body))
    else:
        body = _json_or_none(response.body.content())
        candidates = [(item, None) for item in (body if isinstance(body, list) else [body])]
    for obj, ts_ns in candidates:
        if isinstance(obj, dict) and obj.get("id") == request_id and ("result" in obj or "error" in obj):
            return obj, ts_ns
    return None, None


def _json_or_none(data: str | bytes) -> Any:
    try:
        return parse_json(data)
    except ValueError:
        return None
