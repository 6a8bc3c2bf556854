"""Ollama's native API decoded from captured bytes (pure: chunks in, events out): NDJSON lines cut
anywhere, one-object answers, errors, and requests that only look like Ollama's."""

from __future__ import annotations

import json

import pytest

from vigild.correlate import TlsStreamDecoder
from vigild.correlate.intent import LlmCall, ParseFailure
from vigild.correlate.tls_stream import TlsChunk

MS = 1_000_000
TOOL_CALL = {"function": {"index": 0, "name": "read_file", "arguments": {"path": "/etc/hostname"}}}


def request(path: str, body: dict) -> bytes:
    raw = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:11434\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(raw)}\r\n\r\n").encode() + raw


def chunked_response(content_type: str, lines: list[dict], status: int = 200) -> bytes:
    head = f"HTTP/1.1 {status} OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    body = b""
    for line in lines:
        data = json.dumps(line).encode() + b"\n"
        body += f"{len(data):x}\r\n".encode() + data + b"\r\n"
    return head + body + b"0\r\n\r\n"


def decode(req: bytes, resp: bytes, cut: int) -> list:
    """Feed the request whole and the response in pieces of `cut` bytes, 1 ms apart."""
    dec = TlsStreamDecoder()
    events = dec.feed(TlsChunk(1_000 * MS, 7, 7, "agent", 42, "write", req, source="http"))
    for i in range(0, len(resp), cut):
        events += dec.feed(TlsChunk(1_001 * MS + i * MS, 7, 7, "agent", 42, "read", resp[i:i + cut], source="http"))
    return events + dec.close(7, 42, 2_000 * MS)


CHAT_STREAM = [
    {"model": "llama3.2", "created_at": "t", "message": {"role": "assistant", "content": "Let me "}, "done": False},
    {"model": "llama3.2", "created_at": "t", "message": {"role": "assistant", "content": "look ✓"}, "done": False},
    {"model": "llama3.2", "created_at": "t", "message": {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]},
     "done": False},
    {"model": "llama3.2", "created_at": "t", "message": {"role": "assistant", "content": ""}, "done": True,
     "done_reason": "stop", "prompt_eval_count": 26, "eval_count": 9},
]


@pytest.mark.parametrize("cut", [1, 7, 50, 100_000])
def test_chat_stream_cut_anywhere(cut: int) -> None:
    req = request("/api/chat", {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}],
                                "tools": [{"type": "function", "function": {"name": "read_file"}}]})
    events = decode(req, chunked_response("application/x-ndjson", CHAT_STREAM), cut)
    [call] = [e for e in events if isinstance(e, LlmCall)]
    assert not [e for e in events if isinstance(e, ParseFailure)]
    assert (call.provider, call.endpoint, call.model, call.stream, call.status) == \
        ("ollama", "/api/chat", "llama3.2", True, 200)
    assert call.text == "Let me look ✓"
    assert call.tool_calls == [{"id": None, "name": "read_file", "arguments": {"path": "/etc/hostname"}}]
    assert (call.input_tokens, call.output_tokens, call.finish_reason) == (26, 9, "stop")
    assert call.request_tools == ["read_file"] and call.source == "http" and call.conn_id == 42
    assert call.ttft_ms is not None and call.ttft_ms >= 1.0  # the first text line, not the headers


def test_generate_one_object() -> None:
    answer = {"model": "qwen2.5", "created_at": "t", "response": "4", "done": True, "done_reason": "length",
              "prompt_eval_count": 3, "eval_count": 1}
    events = decode(request("/api/generate", {"model": "qwen2.5", "prompt": "2+2?", "stream": False}),
                    chunked_response("application/json; charset=utf-8", [answer]), 13)
    [call] = [e for e in events if isinstance(e, LlmCall)]
    assert (call.endpoint, call.stream, call.text, call.finish_reason) == ("/api/generate", False, "4", "length")
    assert (call.input_tokens, call.output_tokens, call.ttft_ms, call.tool_calls) == (3, 1, None, [])


def test_error_answer() -> None:
    events = decode(request("/api/chat", {"model": "nope", "messages": []}),
                    chunked_response("application/json", [{"error": "model \"nope\" not found, try pulling it first"}],
                                     status=404), 1000)
    [call] = [e for e in events if isinstance(e, LlmCall)]
    assert call.status == 404 and call.error == 'model "nope" not found, try pulling it first'
    assert call.text == "" and call.tool_calls == []


def test_invalid_line_is_said_once() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nContent-Length: 24\r\n\r\n"
    events = decode(request("/api/chat", {"model": "m", "messages": []}), head + b"{not json\n{also not}\n  \n", 5)
    assert [e for e in events if isinstance(e, LlmCall)]
    assert [e.reason for e in events if isinstance(e, ParseFailure)] == ["invalid_json"]


@pytest.mark.parametrize("path, body", [
    ("/api/chat", {"messages": [{"role": "user", "content": "no model"}]}),
    ("/api/generate", {"model": "m", "prompt": ["not", "a", "string"]}),
    ("/api/embed", {"model": "m", "input": "hi"}),
])
def test_other_shapes_are_not_model_calls(path: str, body: dict) -> None:
    answer = {"model": "m", "response": "x", "done": True}
    events = decode(request(path, body), chunked_response("application/json", [answer]), 1000)
    assert not [e for e in events if isinstance(e, LlmCall)]
    assert [type(e).__name__ for e in events] == ["HttpsRequest"]
