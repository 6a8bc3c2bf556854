"""Turn a finished request/response pair into events: an LlmCall or an HttpsRequest, plus failures.

Kept apart from the framers so that HTTP/1.1 and HTTP/2 exchanges become identical events, and
apart from the provider decoders so that timing, identity, truncation and redaction are decided
in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from vigild.correlate.exchange import Exchange, HttpMessage
from vigild.correlate.intent import Event, HttpsRequest, LlmCall, ParseFailure
from vigild.correlate.llm import decode_llm
from vigild.correlate.mcp import mcp_http_call
from vigild.correlate.redact import redact_headers, redact_text, redact_url, redact_value


@dataclass(frozen=True)
class ConnIdentity:
    """Who owned the connection an exchange travelled on."""

    pid: int
    comm: str
    conn_id: int
    source: str = "tls"  # what carried it: "tls" (plaintext at the TLS library) or "http" (plain TCP)


def _ms(start: int, end: int | None) -> float | None:
    if end is None:
        return None
    return round((end - start) / 1e6, 3)


def _body_failures(message: HttpMessage | None, what: str, ident: ConnIdentity) -> list[ParseFailure]:
    if message is None:
        return []
    body = message.body
    ts_ns = message.start_ts
    if body.unsupported_encoding is not None:
        return [ParseFailure(ts_ns, ident.pid, ident.conn_id, ident.comm, "unsupported_encoding",
                             f"{what} body uses content-encoding {body.unsupported_encoding!r}, not decoded")]
    if body.error is not None:
        return [ParseFailure(ts_ns, ident.pid, ident.conn_id, ident.comm, "decompress_error",
                             f"{what} body could not be decompressed: {body.error}")]
    if body.limit is not None:
        return [ParseFailure(ts_ns, ident.pid, ident.conn_id, ident.comm, "decompress_limit",
                             f"{what} body decoding stopped: it {body.limit}")]
    return []


def events_for_exchange(exchange: Exchange, ident: ConnIdentity, *, capture_content: bool) -> list[Event]:
    """Events for one exchange; failures first, then the call itself."""
    request = exchange.request
    response = exchange.response
    events: list[Event] = []
    events += _body_failures(request, "request", ident)
    events += _body_failures(response, "response", ident)
    duration = _ms(request.start_ts, response.end_ts if response is not None else None)
    status = response.status if response is not None else 0
    req_headers = redact_headers(request.headers) if capture_content else None
    resp_headers = redact_headers(response.headers) if capture_content and response is not None else None
    host = redact_text(exchange.host)
    result = decode_llm(exchange)
    mcp = mcp_http_call(exchange, ident.pid, ident.comm, ident.conn_id) if result is None else None
    if mcp is not None:
        events.append(mcp)
        return events
    if result is None:
        events.append(HttpsRequest(
            ts_ns=request.start_ts, pid=ident.pid, tid=request.tid, comm=ident.comm, conn_id=ident.conn_id,
            method=request.method, host=host, path=redact_url(request.target), status=status,
            http_version=exchange.http_version, request_bytes=request.body.wire_bytes,
            response_bytes=response.body.wire_bytes if response is not None else 0, duration_ms=duration,
            content_type=response.header("content-type") if response is not None else None,
            truncated=exchange.truncated, request_headers=req_headers, response_headers=resp_headers,
        ))
        return events
    for reason, detail in result.problems:
        events.append(ParseFailure(request.start_ts, ident.pid, ident.conn_id, ident.comm, reason,
                                   redact_text(detail)))
    request_id = None
    if response is not None:
        request_id = response.header("request-id") or response.header("x-request-id")
    ttft = _ms(request.start_ts, result.first_token_ts) if result.stream else None
    events.append(LlmCall(
        ts_ns=request.start_ts, pid=ident.pid, tid=request.tid, comm=ident.comm, conn_id=ident.conn_id,
        provider=result.provider, endpoint=redact_url(request.target.split("?", 1)[0]), host=host,
        model=result.model, stream=result.stream, status=status, http_version=exchange.http_version,
        input_tokens=result.input_tokens, output_tokens=result.output_tokens,
        cache_read_input_tokens=result.cache_read_input_tokens,
        cache_creation_input_tokens=result.cache_creation_input_tokens,
        duration_ms=duration, ttft_ms=ttft, finish_reason=result.finish_reason,
        text=redact_text("".join(result.text_parts)), tool_calls=redact_value(result.tool_calls),
        request_tools=result.request_tools,
        request_messages=redact_value(result.request_messages) if capture_content else None,
        response_id=result.response_id, request_id=request_id,
        error=redact_text(result.error) if result.error else None,
        truncated=exchange.truncated, request_headers=req_headers, response_headers=resp_headers,
        source=ident.source,
    ))
    return events
