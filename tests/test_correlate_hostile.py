"""Input a model, a proxy or a hostile peer controls must not blind the decoder.

Each case here once made vigil drop an LLM call (and the tool calls it asked for) or spend
seconds on one body: a Unicode digit in Content-Length, JSON nested a thousand deep, a non-LLM
``…/v1/messages`` API cut by the capture, and compression bombs.
"""

from __future__ import annotations

import gzip
import json
import time
import zlib

import brotli
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.wire import (
    Capture,
    anthropic_request,
    anthropic_sse,
    failures,
    http_request,
    http_response,
    https_requests,
    llm_calls,
    run,
)
from vigild.correlate import TlsStreamDecoder
from vigild.correlate.llm_common import MAX_JSON_DEPTH, TOO_DEEP
from vigild.correlate.numbers import ascii_decimal, ascii_hex

TOOL_INPUT = {"command": "ls -la"}


def _tool_call_exchange(cap: Capture) -> Capture:
    return (cap.write(anthropic_request(stream=True))
            .read(http_response(200, anthropic_sse([("tool_use", "toolu_after", "bash", TOOL_INPUT)]),
                                "text/event-stream", chunked=True)))


@pytest.mark.parametrize("length", ["1\u00b2", "\u0661\u0662", "+5", " 5_0", "0x10", "99999999999999999999999"])
def test_unicode_or_odd_content_length_does_not_blind_the_connection(length: str) -> None:
    """A response with a bogus Content-Length is reported; the next call on the connection decodes."""
    cap = Capture().write(http_request("GET", "/status", "api.example.com"))
    cap.read(f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\nok".encode())
    events, decoder = run(_tool_call_exchange(cap).chunks)
    calls = llm_calls(events)
    assert [c.tool_calls[0]["id"] for c in calls] == ["toolu_after"], [e.to_dict() for e in events]
    assert calls[0].tool_calls[0]["arguments"] == TOOL_INPUT
    assert "internal_error" not in decoder.failures


def test_ascii_numbers_only() -> None:
    assert ascii_decimal("42") == 42 and ascii_hex("1aF") == 0x1AF
    for bad in ("1\u00b2", "\u0661", "+1", "-1", " 1", "1_0", "", "1" * 20):
        assert ascii_decimal(bad) is None, bad
    for bad in ("0x10", "+a", "g", "1" * 17, "\uff11"):
        assert ascii_hex(bad) is None, bad


def _nested(depth: int) -> object:
    """``depth`` levels of objects in lists (shallow enough for json.dumps to build)."""
    value: object = {"leaf": True}
    for _ in range(depth):
        value = {"a": [value]}
    return value


@pytest.mark.parametrize("depth", [200, 1_000, 5_000])
def test_deeply_nested_tool_arguments_keep_the_call(depth: int) -> None:
    """Tool arguments nested past the cap: the call and the tool call survive, the depth is cut."""
    # Built as text: json.dumps itself refuses to encode a structure this deep.
    args = '{"path": "/tmp/x", "deep": ' + '{"a": [' * depth + '{"leaf": true}' + ']}' * depth + '}'
    cap = Capture().write(anthropic_request(stream=True)).read(
        http_response(200, anthropic_sse([("text", "ok"), ("tool_use", "toolu_deep", "bash", args)]),
                      "text/event-stream", chunked=True))
    events, decoder = run(cap.chunks)
    [call] = llm_calls(events)
    [tool] = call.tool_calls
    assert tool["id"] == "toolu_deep" and tool["name"] == "bash"
    assert "internal_error" not in decoder.failures
    if "arguments" in tool:  # cut at the cap: the shallow part is kept
        assert tool["arguments"]["path"] == "/tmp/x"
        assert TOO_DEEP in json.dumps(tool["arguments"])
        assert "deeper" in tool["error"]
    else:  # refused by the parser itself: kept raw, with the reason
        assert "nested" in tool["error"]
    json.dumps(call.to_dict())


def test_deeply_nested_response_body_is_cut_and_counted() -> None:
    body = json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                       "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
                       "usage": {"input_tokens": 3, "output_tokens": 1},
                       "metadata": _nested(MAX_JSON_DEPTH * 3)}).encode()
    cap = Capture().write(anthropic_request(stream=False)).read(http_response(200, body))
    events, decoder = run(cap.chunks)
    [call] = llm_calls(events)
    assert call.text == "hi" and call.input_tokens == 3
    assert "json_too_deep" in [f.reason for f in failures(events)]
    assert "internal_error" not in decoder.failures


def test_truncated_non_llm_messages_api_is_not_a_model_call() -> None:
    """A chat app's own POST /api/v1/messages, cut by the capture, stays an https_request."""
    body = json.dumps({"channel": "general", "text": "x" * 5000}).encode()
    request = http_request("POST", "/api/v1/messages", "chat.example.com", body)
    cap = Capture().write(request[:-2000]).write(b"y", lost=1999)  # the rest was never captured
    cap.read(http_response(200, b'{"ok": true, "ts": "1700000000.000100"}'))
    events, _ = run(cap.chunks)
    assert llm_calls(events) == []
    assert [r.path for r in https_requests(events)] == ["/api/v1/messages"]


def test_truncated_real_model_request_is_still_a_model_call() -> None:
    """The same cut on a real Messages request: its first bytes and the answer say what it was."""
    request = anthropic_request(stream=True, content="z" * 6000)
    cap = Capture().write(request[:-3000]).write(b"y", lost=2999)
    cap.read(http_response(200, anthropic_sse([("tool_use", "toolu_cut", "bash", TOOL_INPUT)]),
                           "text/event-stream", chunked=True))
    events, _ = run(cap.chunks)
    [call] = llm_calls(events)
    assert call.truncated and call.tool_calls[0]["id"] == "toolu_cut"


def _bomb(encoding: str, size: int) -> bytes:
    zeros = b"\0" * size
    if encoding == "gzip":
        return gzip.compress(zeros, 9)
    if encoding == "deflate":
        return zlib.compress(zeros, 9)
    return brotli.compress(zeros)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "gzip, gzip"])
def test_compression_bombs_are_cut_fast(encoding: str) -> None:
    """256 MiB of zeros, read in 16 KiB pieces as the uprobes deliver them: cut (at the body cap, or
    at the ratio limit when the ratio is past what one deflate layer reaches), in well under a second."""
    payload = _bomb(encoding.split(",")[0].strip(), 256 << 20)
    if encoding == "gzip, gzip":
        payload = gzip.compress(payload, 9)
    response = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: {encoding}\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
    cap = Capture().write(anthropic_request(stream=False)).read(response, list(range(0, len(response), 16384)))
    decoder = TlsStreamDecoder()
    start = time.process_time()
    events, decoder = run(cap.chunks, decoder)
    spent = time.process_time() - start
    assert spent < 1.0, spent
    [call] = llm_calls(events)
    assert call.truncated
    if encoding in ("br", "gzip, gzip"):  # past what one deflate layer can reach: a bomb, said so
        assert "decompress_limit" in [f.reason for f in failures(events)], [f.to_dict() for f in failures(events)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(length=st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
                      max_size=12),
       body=st.binary(max_size=40))
def test_any_content_length_leaves_the_next_call_readable(length: str, body: bytes) -> None:
    """Whatever a peer puts in Content-Length, a later model call on the connection still decodes."""
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode("utf-8", "surrogatepass")
    cap = Capture().write(http_request("GET", "/status", "api.example.com")).read(head + body)
    events, decoder = run(_tool_call_exchange(cap).chunks)
    assert "toolu_after" in [c.tool_calls[0]["id"] for c in llm_calls(events) if c.tool_calls]
    assert "internal_error" not in decoder.failures
