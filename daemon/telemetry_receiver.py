"""An OTLP/HTTP receiver on loopback for the agents' own telemetry (a second source of intent).

Claude Code, Codex and Gemini CLI export OpenTelemetry logs, metrics and traces; `vigil run
--agent-telemetry` points them here. Each request is attributed to the process that sent it by
the kernel's view of the connection (the client's TCP socket inode in /proc/net/tcp, then which
tracked process holds that inode): what a process claims in its payload is never trusted for
that. Log records become flat `TelemetryRecord`s for the pipeline (correlate/agent_telemetry.py
turns them into LLM calls); metrics and traces are accepted and counted but not used.

Protocols: OTLP/HTTP with protobuf or JSON bodies, optionally gzip. OTLP/gRPC is not served (an
agent configured for it gets a connection error, which it reports on its own stderr).
"""

from __future__ import annotations

import gzip
import logging
import os
import queue
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from vigild.correlate.agent_telemetry import TelemetryRecord

log = logging.getLogger("vigild.telemetry")

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_TRAILERS = 64  # trailer lines after a chunked body, at most
_SIGNALS = {"/v1/logs": ExportLogsServiceRequest, "/v1/metrics": ExportMetricsServiceRequest,
            "/v1/traces": ExportTraceServiceRequest}


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as plain Python."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def _attrs(pairs: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in pairs}


def log_records(request: ExportLogsServiceRequest, pid: int | None) -> list[TelemetryRecord]:
    records = []
    for resource_logs in request.resource_logs:
        resource = _attrs(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for rec in scope_logs.log_records:
                attributes = _attrs(rec.attributes)
                # The semantic-convention attribute first: Codex fills OTLP's event_name field
                # with a source location ("otel/src/events/session_telemetry.rs:803").
                name = str(attributes.get("event.name") or rec.event_name or "")
                if not name and rec.body.WhichOneof("value") == "string_value":
                    name = rec.body.string_value
                records.append(TelemetryRecord(ts_ns=rec.time_unix_nano or rec.observed_time_unix_nano, pid=pid,
                                               name=name, attributes=attributes, resource=resource))
    return records


def _hex_endpoint(host: str, port: int) -> tuple[str, str]:
    """How /proc/net/tcp (or tcp6) writes an endpoint: the address as native-endian 32-bit words."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    raw = socket.inet_pton(family, host)
    words = struct.unpack(f"={len(raw) // 4}I", raw)
    table = "tcp6" if family == socket.AF_INET6 else "tcp"
    return table, "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def socket_inode(local: tuple[str, int], remote: tuple[str, int], proc: str = "/proc") -> int | None:
    """Inode of the TCP socket whose local end is `local` and remote end `remote`, in vigil's
    network namespace (the agent's, when it talks to this loopback receiver)."""
    table, want_local = _hex_endpoint(*local)
    _, want_remote = _hex_endpoint(*remote)
    try:
        with open(f"{proc}/net/{table}") as f:
            next(f, None)
            for line in f:
                parts = line.split()
                if len(parts) > 9 and parts[1] == want_local and parts[2] == want_remote:
                    return int(parts[9]) or None
    except OSError:
        return None
    return None


def pid_holding(inode: int, candidates: Iterable[int], proc: str = "/proc") -> int | None:
    """The first candidate process with an fd on socket `inode`."""
    target = f"socket:[{inode}]"
    for pid in candidates:
        try:
            fds = os.listdir(f"{proc}/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{proc}/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None


def read_chunked(stream: BinaryIO, limit: int) -> bytes | None:
    """A `Transfer-Encoding: chunked` request body, or None if malformed, empty or over `limit`.

    Hand-written because http.server hands request bodies over undecoded, and pulling in a
    whole HTTP stack (h11, aiohttp) for one receiver on loopback is more than this takes."""
    body = bytearray()
    while True:
        line = stream.readline(1024)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            return None
        if size < 0 or len(body) + size > limit:
            return None
        if size == 0:
            break
        chunk = stream.read(size)
        if len(chunk) != size or stream.readline(3) not in (b"\r\n", b"\n"):
            return None
        body += chunk
    for _ in range(MAX_TRAILERS):  # trailer lines: none are used
        if stream.readline(1024) in (b"\r\n", b"\n", b""):
            return bytes(body) if body else None
    return None


class _Http6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class TelemetryReceiver:
    """OTLP/HTTP on 127.0.0.1 (port 0: any free one). `candidates()` lists the pids a sender may
    be (the tracked processes); records go to `records`, a queue the pipeline drains."""

    def __init__(self, candidates: Callable[[], Iterable[int]], host: str = "127.0.0.1", port: int = 0) -> None:
        self.candidates = candidates
        self.records: queue.SimpleQueue[TelemetryRecord] = queue.SimpleQueue()
        self.counts: Counter[str] = Counter()
        self.unattributed = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                status, reply = receiver._handle(self)
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf" if status == 200 else "text/plain")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("otlp %s", format % args)

        server_class = _Http6Server if ":" in host else ThreadingHTTPServer
        self._server = server_class((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="vigil-otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> TelemetryReceiver:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever: only when it runs
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def _sender(self, handler: BaseHTTPRequestHandler) -> int | None:
        peer = handler.client_address
        inode = socket_inode((peer[0], peer[1]), self._server.server_address[:2])
        pid = pid_holding(inode, list(self.candidates())) if inode else None
        if pid is None:
            self.unattributed += 1
        return pid

    def _handle(self, handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        path = handler.path.split("?", 1)[0]
        kind = _SIGNALS.get(path)
        if kind is None:
            self.counts["unknown_path"] += 1
            return 404, b"OTLP/HTTP paths: /v1/logs, /v1/metrics, /v1/traces\n"
        if (handler.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            body = read_chunked(handler.rfile, MAX_BODY_BYTES)  # Gemini CLI's exporter sends so
            if body is None:
                self.counts["bad_chunks"] += 1
                handler.close_connection = True  # where the next request starts is unknown
                return 400, b"a chunked body of 1 byte to 16 MiB, well-formed, is needed\n"
        else:
            length = int(handler.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY_BYTES:
                self.counts["bad_length"] += 1
                return 413 if length > 0 else 400, b"a body of 1 byte to 16 MiB is needed\n"
            body = handler.rfile.read(length)
        pid = self._sender(handler)  # while the connection is open
        try:
            if (handler.headers.get("Content-Encoding") or "").lower() == "gzip":
                body = gzip.decompress(body)
            message = kind()
            if (handler.headers.get("Content-Type") or "").startswith("application/json"):
                json_format.Parse(body, message, ignore_unknown_fields=True)
            else:
                message.ParseFromString(body)
        except (DecodeError, json_format.ParseError, OSError, EOFError, ValueError) as exc:
            self.counts["undecodable"] += 1
            return 400, f"cannot decode the {path} body: {exc}\n".encode()
        self.counts[path] += 1
        if isinstance(message, ExportLogsServiceRequest):
            for record in log_records(message, pid):
                self.records.put(record)
        return 200, b""  # an empty Export*ServiceResponse: everything accepted
