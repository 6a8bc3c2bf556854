"""A local HTTPS server that impersonates the Anthropic, OpenAI and Gemini APIs.

End-to-end tests run real, unmodified clients (official SDKs, curl, Node ``fetch``) against it
under the tracer and compare what the tracer decoded with :attr:`FakeLLMServer.exchanges`, the
server's own record of what it received and sent.  The server therefore uses Python's ``ssl``
(OpenSSL, like the clients) and real HTTP framing: HTTP/1.1 via ``h11`` with keep-alive,
Content-Length or chunked bodies and optional gzip, and HTTP/2 via ``h2`` when ALPN picks it,
with concurrent streams multiplexed on one connection.

Each connection is served by one thread that owns its socket: OpenSSL ``SSL`` objects must not be
read and written from two threads at once, so HTTP/2 streams are interleaved by a small scheduler
on that thread rather than by a thread per stream.
"""

from __future__ import annotations

import contextlib
import email.utils
import gzip as gzip_module
import itertools
import json
import select
import shutil
import socket
import ssl
import threading
import time
import traceback
import zlib
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h11

from .certs import CertPaths, generate_certs
from .providers import LLMResponse, Rendered, render, route
from .scripts import DELAY_HEADER, SCENARIO_HEADER, SCENARIOS, Scenario

_POLL = 0.05
"""How often blocked reads wake up to notice shutdown (seconds)."""

_SEND_TIMEOUT = 10.0
_MULTIBYTE_LEAD = range(0xC2, 0xF5)


@dataclass
class Exchange:
    """One request the server received and the response it sent.

    Request side: ``method``, ``path`` (with query), ``request_headers`` (lower-case names, in
    order), raw ``request_body`` and its parse ``request_json`` (``None`` if not JSON).
    Response side: ``status``, ``response_headers``, ``response_body`` (the identity-encoded
    payload — for streams the concatenated SSE bytes — even when it went out gzipped),
    ``content_encoding``, ``stream``, and ``response``: the structured reply (model, text,
    tool_calls with ids/names/argument dicts, usage, finish_reason) or ``None`` for non-LLM paths
    and errors.  Connection side: ``http_version`` (``"1.1"`` / ``"2"``), ``stream_id`` (HTTP/2),
    ``connection_id`` and the client's ``peer`` address, to tie events to sockets.
    Timing (``time.monotonic()``): ``t_request`` when the request was complete, ``t_first_byte``
    when the first body byte was written, ``t_last_byte`` when the response was finished.
    """

    id: int
    connection_id: int
    peer: tuple[str, int]
    http_version: str
    stream_id: int | None
    method: str
    path: str
    request_headers: list[tuple[str, str]]
    request_body: bytes
    request_json: Any
    scenario: str
    provider: str | None = None
    status: int = 0
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes = b""
    content_encoding: str | None = None
    stream: bool = False
    response: LLMResponse | None = None
    error: str | None = None
    t_request: float = 0.0
    t_first_byte: float | None = None
    t_last_byte: float | None = None
    completed: bool = False
    aborted: bool = False

    def header(self, name: str) -> str | None:
        """First request header called ``name`` (case-insensitive), or ``None``."""
        name = name.lower()
        return next((v for k, v in self.request_headers if k == name), None)


class ExchangeLog:
    """Thread-safe, append-only list of :class:`Exchange` records (in request-completion order)."""

    def __init__(self) -> None:
        self._items: list[Exchange] = []
        self._cond = threading.Condition()

    def _append(self, exchange: Exchange) -> None:
        with self._cond:
            self._items.append(exchange)
            self._cond.notify_all()

    def _finished(self, exchange: Exchange, *, aborted: bool = False) -> None:
        with self._cond:
            exchange.t_last_byte = time.monotonic()
            exchange.completed = not aborted
            exchange.aborted = aborted
            self._cond.notify_all()

    def snapshot(self) -> list[Exchange]:
        """A copy of the list as it is now."""
        with self._cond:
            return list(self._items)

    def llm(self) -> list[Exchange]:
        """Only the exchanges that were LLM API calls (``provider`` set)."""
        return [e for e in self.snapshot() if e.provider is not None]

    def wait_finished(self, count: int, timeout: float = 10.0) -> list[Exchange]:
        """Wait until at least ``count`` exchanges exist and all are finished; return them.

        A client can see the last byte a hair before the server thread marks the exchange
        finished, so tests call this instead of reading the list straight after the client exits.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (len(self._items) >= count and all(e.completed or e.aborted for e in self._items)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self._items)} exchanges, expected {count} finished")
                self._cond.wait(remaining)
            return list(self._items)

    def clear(self) -> None:
        """Forget all records (between phases of one test)."""
        with self._cond:
            self._items.clear()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def __getitem__(self, index: int) -> Exchange:
        with self._cond:
            return self._items[index]

    def __iter__(self) -> Iterator[Exchange]:
        return iter(self.snapshot())


@dataclass
class _Segment:
    """One write of response body: sent ``delay`` seconds after the previous one."""

    delay: float
    data: bytes


@dataclass
class _Plan:
    """Everything the transport needs to send one response."""

    exchange: Exchange
    status: int
    headers: list[tuple[str, str]]
    segments: list[_Segment]
    content_length: int | None
    """``None`` means "stream it" (chunked on HTTP/1.1)."""


def _split_inside_utf8(data: bytes) -> list[bytes]:
    """Cut ``data`` in two inside its first multibyte UTF-8 character (or not at all)."""
    for i, b in enumerate(data):
        if b in _MULTIBYTE_LEAD and i + 1 < len(data):
            return [data[: i + 1], data[i + 1 :]]
    return [data]


class FakeLLMServer:
    """Threaded HTTPS fake of the LLM APIs on 127.0.0.1.  Use as a context manager.

    * ``port`` – 0 picks a free port.
    * ``http2`` – offer ``h2`` in ALPN (clients that ask for it get HTTP/2).
    * ``scenarios`` – extra or replacement scenarios by name, merged over the built-in
      :data:`~fakellm.scripts.SCENARIOS`.
    * ``default_scenario`` – name or :class:`Scenario` used when a request has no
      ``x-fake-scenario`` header; may be reassigned while running.
    * ``cert_dir`` – where to write the PKI (default: a temp dir removed on close).
    * ``tls`` – False serves plain HTTP/1.1 (``http://``), as local model servers do.
    * ``fail_first`` – HTTP statuses for the first LLM requests that declare tools (an agent's
      turns, not its title or quota calls): each answered with that status and the provider's
      error JSON, in order; then the scenario answers. For recording how agents report errors.

    Attributes: ``url`` (``https://127.0.0.1:<port>``), ``port``, ``host``, ``ca_path``,
    ``certs`` (all PEM paths), ``exchanges`` (:class:`ExchangeLog`), ``errors`` (tracebacks of
    unexpected server-side failures; tests assert it stays empty).  Nothing is ever printed.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        http2: bool = True,
        scenarios: Mapping[str, Scenario] | None = None,
        default_scenario: str | Scenario = "default",
        cert_dir: str | Path | None = None,
        tls: bool = True,
        fail_first: Sequence[int] = (),
    ) -> None:
        self.host = "127.0.0.1"
        self._fail_first = list(fail_first)
        self._fail_lock = threading.Lock()  # connections are served on their own threads
        self.tls = tls
        self._requested_port = port
        self.http2 = http2
        self.scenarios: dict[str, Scenario] = {**SCENARIOS, **(scenarios or {})}
        self.default_scenario: str | Scenario = default_scenario
        self._cert_dir = cert_dir
        self.certs: CertPaths | None = None
        self.exchanges = ExchangeLog()
        self.errors: list[str] = []
        self._errors_lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._threads: set[threading.Thread] = set()
        self._threads_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._ssl: ssl.SSLContext | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``https://127.0.0.1:43121``."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def ca_path(self) -> str:
        """PEM file of the CA that signed the server certificate (give it to clients)."""
        if self.certs is None:
            raise RuntimeError("server not started")
        return str(self.certs.ca_cert)

    def start(self) -> FakeLLMServer:
        """Generate certificates, bind, and start accepting connections."""
        self.certs = generate_certs(self._cert_dir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.certs.server_cert, self.certs.server_key)
        ctx.set_alpn_protocols(["h2", "http/1.1"] if self.http2 else ["http/1.1"])
        self._ssl = ctx
        self._listener = socket.create_server((self.host, self._requested_port), backlog=64)
        self._listener.settimeout(_POLL)
        self.port = self._listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, name="fakellm-accept", daemon=True)
        self._accept_thread.start()
        return self

    def close(self) -> None:
        """Stop accepting, end every connection, join every thread, remove generated certs.

        Raises ``RuntimeError`` if a thread refuses to finish, so a leak fails the test
        instead of hanging the session.
        """
        self._stop.set()
        if self._accept_thread is not None:
            self._accept_thread.join(5)
        if self._listener is not None:
            self._listener.close()
        with self._threads_lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)
        alive = [t.name for t in threads if t.is_alive()]
        if self._cert_dir is None and self.certs is not None:
            shutil.rmtree(self.certs.directory, ignore_errors=True)
        if alive or (self._accept_thread is not None and self._accept_thread.is_alive()):
            raise RuntimeError(f"fake LLM server threads did not stop: {alive}")

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _record_error(self, where: str) -> None:
        with self._errors_lock:
            self.errors.append(f"{where}:\n{traceback.format_exc()}")

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                raw, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if not self._stop.is_set():
                    self._record_error("accept")
                return
            conn_id = next(self._conn_ids)
            thread = threading.Thread(
                target=self._connection,
                args=(raw, peer, conn_id),
                name=f"fakellm-conn-{conn_id}",
                daemon=True,
            )
            with self._threads_lock:
                self._threads.add(thread)
            thread.start()

    def _connection(self, raw: socket.socket, peer: tuple[str, int], conn_id: int) -> None:
        assert self._ssl is not None
        tls: ssl.SSLSocket | None = None
        try:
            raw.settimeout(_SEND_TIMEOUT)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if not self.tls:
                self._serve_http1(raw, peer, conn_id)  # type: ignore[arg-type] # same send/recv calls
                return
            tls = self._ssl.wrap_socket(raw, server_side=True)
            if tls.selected_alpn_protocol() == "h2":
                _H2Connection(self, tls, peer, conn_id).run()
            else:
                self._serve_http1(tls, peer, conn_id)
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            # A client giving up mid-handshake or mid-response is normal; a handshake the
            # client rejected (untrusted CA, ...) is worth reporting to the test.
            if isinstance(exc, ssl.SSLError) and tls is None and "EOF" not in str(exc):
                self._record_error(f"TLS handshake with {peer}")
        except Exception:
            self._record_error(f"connection {conn_id}")
        finally:
            with contextlib.suppress(OSError):
                (tls or raw).close()
            with self._threads_lock:
                self._threads.discard(threading.current_thread())

    # ------------------------------------------------------------- shared request logic

    def _pick_scenario(self, headers: list[tuple[str, str]]) -> Scenario | None:
        name = next((v for k, v in headers if k == SCENARIO_HEADER), None)
        if name is None:
            chosen = self.default_scenario
            return chosen if isinstance(chosen, Scenario) else self.scenarios[chosen]
        return self.scenarios.get(name)

    def _prepare(
        self,
        *,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        http_version: str,
        stream_id: int | None,
        peer: tuple[str, int],
        conn_id: int,
    ) -> _Plan:
        """Turn a complete request into an exchange record and a send plan."""
        try:
            request_json: Any = json.loads(body) if body else None
        except ValueError:
            request_json = None
        scenario = self._pick_scenario(headers)
        exchange = Exchange(
            id=next(self._ids),
            connection_id=conn_id,
            peer=peer,
            http_version=http_version,
            stream_id=stream_id,
            method=method,
            path=target,
            request_headers=headers,
            request_body=body,
            request_json=request_json,
            scenario=scenario.name if scenario else "",
            t_request=time.monotonic(),
        )
        llm_route = route(method, target)
        if scenario is None:
            rendered = Rendered(
                400,
                [("content-type", "application/json")],
                body=b'{"error":"unknown scenario"}',
                error="unknown scenario",
            )
            scenario = self.scenarios["default"]
        elif llm_route is None:
            rendered = self._non_llm(target)
        else:
            if isinstance(request_json, dict) and request_json.get("tools"):
                with self._fail_lock:
                    failing = self._fail_first.pop(0) if self._fail_first else None
                if failing is not None:
                    scenario = replace(scenario, error_status=failing)
            rendered = render(llm_route, request_json, scenario)
            exchange.provider = llm_route.provider
        exchange.status = rendered.status
        exchange.response = rendered.response
        exchange.error = rendered.error
        exchange.stream = rendered.events is not None

        accepts_gzip = "gzip" in (next((v for k, v in headers if k == "accept-encoding"), "") or "")
        use_gzip = scenario.gzip and accepts_gzip
        delay_override = next((v for k, v in headers if k == DELAY_HEADER), None)
        event_delay = float(delay_override) / 1000 if delay_override else scenario.event_delay

        response_headers = [("date", email.utils.formatdate(usegmt=True)), *rendered.headers]
        if use_gzip:
            response_headers.append(("content-encoding", "gzip"))
            exchange.content_encoding = "gzip"
        segments: list[_Segment] = []
        content_length: int | None = None
        if rendered.events is not None:
            exchange.response_body = b"".join(rendered.events)
            compressor = zlib.compressobj(wbits=31) if use_gzip else None
            for n, event in enumerate(rendered.events):
                delay = scenario.first_event_delay if n == 0 else event_delay
                if compressor is not None:
                    data = compressor.compress(event) + compressor.flush(zlib.Z_SYNC_FLUSH)
                    if n == len(rendered.events) - 1:
                        data += compressor.flush(zlib.Z_FINISH)
                    segments.append(_Segment(delay, data))
                    continue
                parts = _split_inside_utf8(event) if scenario.split_utf8 else [event]
                if scenario.split_events and len(parts) == 1 and len(event) > 1:
                    parts = [event[: len(event) // 2], event[len(event) // 2 :]]
                segments += [_Segment(delay if i == 0 else 0.0, p) for i, p in enumerate(parts)]
        else:
            payload = rendered.body or b""
            exchange.response_body = payload
            wire = gzip_module.compress(payload, mtime=0) if use_gzip else payload
            parts = _split_inside_utf8(wire) if scenario.split_utf8 and not use_gzip else [wire]
            if scenario.chunked and len(parts) == 1 and len(wire) > 1:
                parts = [wire[: len(wire) // 2], wire[len(wire) // 2 :]]
            segments = [_Segment(0.0, p) for p in parts]
            if not scenario.chunked:
                content_length = len(wire)
        if method == "HEAD":
            segments = []
        exchange.response_headers = response_headers
        self.exchanges._append(exchange)
        return _Plan(exchange, rendered.status, response_headers, segments, content_length)

    @staticmethod
    def _non_llm(target: str) -> Rendered:
        """A boring 200 for anything that is not an LLM endpoint (negative-classification tests)."""
        if target.startswith("/simple"):
            html = (
                "<!DOCTYPE html><html><head><title>Links for requests</title></head>"
                '<body><a href="requests-2.32.3-py3-none-any.whl">requests-2.32.3</a></body></html>'
            )
            return Rendered(200, [("content-type", "text/html; charset=utf-8")], body=html.encode())
        body = json.dumps({"object": "fake", "path": target, "ok": True}).encode()
        return Rendered(200, [("content-type", "application/json")], body=body)

    # ------------------------------------------------------------------- HTTP/1.1

    def _recv(self, tls: ssl.SSLSocket) -> bytes | None:
        """Read some bytes, waking up regularly to honour shutdown; ``None`` when closing."""
        tls.settimeout(_POLL)
        try:
            while not self._stop.is_set():
                try:
                    return tls.recv(65536)
                except TimeoutError:
                    continue
        finally:
            tls.settimeout(_SEND_TIMEOUT)
        return None

    def _h11_next(self, conn: h11.Connection, tls: ssl.SSLSocket) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = self._recv(tls)
            if data is None:
                return None
            conn.receive_data(data)

    def _serve_http1(self, tls: ssl.SSLSocket, peer: tuple[str, int], conn_id: int) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
        while not self._stop.is_set():
            try:
                event = self._h11_next(conn, tls)
                if not isinstance(event, h11.Request):
                    return
                body = bytearray()
                while True:
                    part = self._h11_next(conn, tls)
                    if isinstance(part, h11.Data):
                        body += part.data
                    elif isinstance(part, h11.EndOfMessage):
                        break
                    else:
                        return
            except h11.RemoteProtocolError:
                return
            headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers]
            plan = self._prepare(
                method=event.method.decode(),
                target=event.target.decode("latin-1"),
                headers=headers,
                body=bytes(body),
                http_version=event.http_version.decode(),
                stream_id=None,
                peer=peer,
                conn_id=conn_id,
            )
            if not self._send_http1(conn, tls, plan):
                return
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    def _send_http1(self, conn: h11.Connection, tls: ssl.SSLSocket, plan: _Plan) -> bool:
        """Write one response; every segment is its own ``sendall`` (own TLS record/chunk)."""
        headers = list(plan.headers)
        if plan.content_length is not None:
            headers.append(("content-length", str(plan.content_length)))
        elif conn.their_http_version == b"1.1":
            headers.append(("transfer-encoding", "chunked"))
        try:
            tls.sendall(conn.send(h11.Response(status_code=plan.status, headers=headers)))
            for segment in plan.segments:
                if segment.delay and self._stop.wait(segment.delay):
                    self.exchanges._finished(plan.exchange, aborted=True)
                    return False
                if plan.exchange.t_first_byte is None:
                    plan.exchange.t_first_byte = time.monotonic()
                tls.sendall(conn.send(h11.Data(data=segment.data)))
            tls.sendall(conn.send(h11.EndOfMessage()))
        except (OSError, ssl.SSLError):
            self.exchanges._finished(plan.exchange, aborted=True)
            return False
        self.exchanges._finished(plan.exchange)
        return True


@dataclass
class _H2Stream:
    headers: list[tuple[str, str]]
    body: bytearray = field(default_factory=bytearray)
    plan: _Plan | None = None
    pending: deque[_Segment] = field(default_factory=deque)
    due: float = 0.0


class _H2Connection:
    """One HTTP/2 connection: all socket I/O on the calling thread, streams interleaved."""

    def __init__(
        self, server: FakeLLMServer, tls: ssl.SSLSocket, peer: tuple[str, int], conn_id: int
    ) -> None:
        self.server = server
        self.tls = tls
        self.peer = peer
        self.conn_id = conn_id
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.streams: dict[int, _H2Stream] = {}

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.tls.sendall(data)

    def run(self) -> None:
        self.h2.initiate_connection()
        self.flush()
        try:
            while not self.server._stop.is_set():
                self.send_due()
                if not self.receive(self.next_timeout()):
                    return
        finally:
            for stream in self.streams.values():
                if stream.plan is not None:
                    self.server.exchanges._finished(stream.plan.exchange, aborted=True)

    def next_timeout(self) -> float:
        now = time.monotonic()
        dues = [
            s.due
            for sid, s in self.streams.items()
            if s.pending and self.h2.local_flow_control_window(sid) > 0
        ]
        return max(0.0, min([_POLL, *(d - now for d in dues)]))

    def receive(self, timeout: float) -> bool:
        """Read and process whatever the client sent within ``timeout``; False on EOF."""
        if not self.tls.pending():
            readable, _, _ = select.select([self.tls], [], [], timeout)
            if not readable:
                return True
        self.tls.settimeout(_POLL)
        try:
            data = self.tls.recv(65536)
        except TimeoutError:
            return True
        finally:
            self.tls.settimeout(_SEND_TIMEOUT)
        if not data:
            return False
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            return False
        for event in events:
            self.handle(event)
        self.flush()
        return not any(isinstance(e, h2.events.ConnectionTerminated) for e in events)

    def handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers]
            self.streams[event.stream_id] = _H2Stream(headers=headers)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.body += event.data
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.start_response(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None and stream.plan is not None:
                self.server.exchanges._finished(stream.plan.exchange, aborted=True)

    def start_response(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        pseudo = dict((k, v) for k, v in stream.headers if k.startswith(":"))
        plan = self.server._prepare(
            method=pseudo.get(":method", "GET"),
            target=pseudo.get(":path", "/"),
            headers=[(k, v) for k, v in stream.headers if not k.startswith(":")],
            body=bytes(stream.body),
            http_version="2",
            stream_id=stream_id,
            peer=self.peer,
            conn_id=self.conn_id,
        )
        headers = [(":status", str(plan.status)), *plan.headers]
        if plan.content_length is not None:
            headers.append(("content-length", str(plan.content_length)))
        self.h2.send_headers(stream_id, [(k.encode(), v.encode()) for k, v in headers])
        self.flush()
        stream.plan = plan
        stream.pending = deque(plan.segments)
        stream.due = time.monotonic() + (stream.pending[0].delay if stream.pending else 0.0)

    def send_due(self) -> None:
        """Send every segment whose time has come, within flow-control windows."""
        now = time.monotonic()
        for stream_id, stream in list(self.streams.items()):
            if stream.plan is None:
                continue
            exchange = stream.plan.exchange
            while stream.pending and stream.due <= now:
                segment = stream.pending[0]
                window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
                if window <= 0:
                    break
                piece, rest = segment.data[:window], segment.data[window:]
                if exchange.t_first_byte is None:
                    exchange.t_first_byte = time.monotonic()
                self.h2.send_data(stream_id, piece)
                self.flush()
                if rest:
                    stream.pending[0] = _Segment(0.0, rest)
                    continue
                stream.pending.popleft()
                if stream.pending:
                    stream.due = now + stream.pending[0].delay
            if not stream.pending:
                self.h2.end_stream(stream_id)
                self.flush()
                del self.streams[stream_id]
                self.server.exchanges._finished(exchange)
