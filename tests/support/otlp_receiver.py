"""A minimal OTLP/HTTP traces endpoint on loopback, to receive what vigil exports."""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes
    request: ExportTraceServiceRequest


class OtlpReceiver:
    """A minimal OTLP/HTTP traces endpoint: `POST /v1/traces`, protobuf, optionally gzip."""

    def __init__(self, status: int = 200) -> None:
        self.received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                raw = gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body
                request = ExportTraceServiceRequest()
                request.ParseFromString(raw)
                receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                  raw, request))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(status if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def value(v: AnyValue) -> Any:
    """An OTLP attribute value as Python (arrays as lists)."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attrs(item: Any) -> dict[str, Any]:
    """A resource's or span's attributes as a dict."""
    return {kv.key: value(kv.value) for kv in item.attributes}


def spans_of(received: Received) -> list[Span]:
    """Every span of one received export."""
    return [s for rs in received.request.resource_spans for ss in rs.scope_spans for s in ss.spans]
