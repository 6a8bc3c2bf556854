"""The fake LLM server against real clients (no BPF): is the ground truth itself right?

End-to-end tracer tests trust ``FakeLLMServer.exchanges`` as the truth to compare decoded events
with.  These tests make sure that truth is what real clients actually receive: the official
SDKs, curl (HTTP/1.1 and HTTP/2) and Node's fetch parse the server's responses into exactly the
text, tool calls, usage and finish reasons recorded in the exchange log.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakellm import (
    CLIENTS_DIR,
    DEFAULT_TEXT,
    FAKE_ANTHROPIC_KEY,
    FAKE_OPENAI_KEY,
    SCENARIOS,
    Exchange,
    FakeLLMServer,
    client_env,
)

CURL = shutil.which("curl")
NODE = shutil.which("node")


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv
        assert srv.errors == []
    assert not [t for t in threading.enumerate() if t.name.startswith("fakellm")]


def run_client(argv: list[str], srv: FakeLLMServer, scenario: str | None = None) -> dict[str, Any]:
    proc = subprocess.run(argv, env=client_env(srv, scenario), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    summary: dict[str, Any] = json.loads(proc.stdout)
    return summary


def assert_call_matches(call: dict[str, Any], exchange: Exchange) -> None:
    """What the client reconstructed equals what the server says it sent, field by field."""
    sent = exchange.response
    assert sent is not None and exchange.status == 200
    assert call["id"] == sent.response_id
    assert call["model"] == sent.model
    assert call["text"] == sent.text
    assert call["tool_calls"] == [
        {"id": t.id, "name": t.name, "arguments": t.arguments} for t in sent.tool_calls
    ]
    assert call["input_tokens"] == sent.input_tokens
    assert call["output_tokens"] == sent.output_tokens
    assert call["finish_reason"] == sent.finish_reason
    assert call["stream"] == sent.stream == exchange.stream


def api_key_sent(exchange: Exchange) -> str | None:
    """The API key a request carried: ``x-api-key`` or, as anthropic 2.x sends it, a Bearer token."""
    authorization = exchange.header("authorization") or ""
    return exchange.header("x-api-key") or authorization.removeprefix("Bearer ") or None


def sse(body: bytes) -> list[tuple[str | None, str]]:
    """(event, data) pairs of an SSE body."""
    out = []
    for block in body.decode().replace("\r\n", "\n").split("\n\n"):
        if not block:
            continue
        event = next((line[7:] for line in block.split("\n") if line.startswith("event: ")), None)
        data = "\n".join(line[6:] for line in block.split("\n") if line.startswith("data: "))
        out.append((event, data))
    return out


def test_openai_sdk(server: FakeLLMServer) -> None:
    calls = run_client([sys.executable, str(CLIENTS_DIR / "openai_client.py")], server)["calls"]
    exchanges = server.exchanges.wait_finished(4)
    assert [e.provider for e in exchanges] == [
        "openai_chat",
        "openai_chat",
        "openai_responses",
        "openai_responses",
    ]
    for call, exchange in zip(calls, exchanges, strict=True):
        assert_call_matches(call, exchange)
        assert api_key_sent(exchange) == FAKE_OPENAI_KEY
        assert exchange.http_version == "1.1"
    assert calls[0]["text"] == DEFAULT_TEXT
    assert [t["name"] for t in calls[0]["tool_calls"]] == ["bash", "read_file"]
    assert calls[0]["tool_calls"][0]["id"].startswith("call_")

    chat_stream = sse(exchanges[1].response_body)
    assert chat_stream[-1] == (None, "[DONE]")
    usage_chunk = json.loads(chat_stream[-2][1])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 87
    argument_pieces = [
        json.loads(d)["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
        for _, d in chat_stream[:-2]
        if "tool_calls" in json.loads(d)["choices"][0]["delta"]
    ]
    assert len([p for p in argument_pieces if p]) > 4  # arguments really arrive in pieces

    kinds = [event for event, _ in sse(exchanges[3].response_body)]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-1] == "response.completed"
    assert {
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    } <= set(kinds)


def test_anthropic_sdk(server: FakeLLMServer) -> None:
    calls = run_client([sys.executable, str(CLIENTS_DIR / "anthropic_client.py")], server)["calls"]
    exchanges = server.exchanges.wait_finished(2)
    for call, exchange in zip(calls, exchanges, strict=True):
        assert exchange.provider == "anthropic"
        assert api_key_sent(exchange) == FAKE_ANTHROPIC_KEY
        assert_call_matches(call, exchange)
    assert calls[0]["finish_reason"] == "tool_use"
    assert all(t["id"].startswith("toolu_01") for t in calls[0]["tool_calls"])

    events = sse(exchanges[0].response_body)
    assert all(json.loads(data)["type"] == event for event, data in events)
    kinds = [event for event, _ in events]
    assert kinds[:3] == ["message_start", "content_block_start", "ping"]
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 3
    tool_start = json.loads(events[kinds.index("content_block_start", 2)][1])
    assert tool_start["content_block"]["input"] == {}
    partial = [json.loads(d)["delta"]["partial_json"] for _, d in events if '"input_json_delta"' in d]
    assert partial[0] == "" and "".join(partial).startswith('{"command": "ls -la"}')


@pytest.mark.skipif(NODE is None, reason="node not installed")
def test_node_fetch(server: FakeLLMServer) -> None:
    assert NODE is not None
    calls = run_client([NODE, str(CLIENTS_DIR / "node_fetch.js")], server)["calls"]
    exchanges = server.exchanges.wait_finished(2)
    assert [e.provider for e in exchanges] == ["anthropic", "openai_chat"]
    for call, exchange in zip(calls, exchanges, strict=True):
        assert_call_matches(call, exchange)
    assert api_key_sent(exchanges[0]) == FAKE_ANTHROPIC_KEY


@pytest.mark.parametrize("http2", [False, True], ids=["4-connections", "h2-multiplexed"])
def test_concurrent_streams(server: FakeLLMServer, http2: bool) -> None:
    argv = [sys.executable, str(CLIENTS_DIR / "concurrent_streams.py"), *(["--http2"] if http2 else [])]
    streams = run_client(argv, server)["streams"]
    exchanges = {e.header("x-client-tag"): e for e in server.exchanges.wait_finished(4)}
    assert len(exchanges) == 4
    for result in streams:
        exchange = exchanges[result["tag"]]
        assert exchange.scenario == "slow"
        assert_call_matches(result, exchange)
    # All four were in flight at the same time.
    assert max(e.t_request for e in exchanges.values()) < min(e.t_last_byte or 0 for e in exchanges.values())
    if http2:
        assert {e.http_version for e in exchanges.values()} == {"2"}
        assert len({e.connection_id for e in exchanges.values()}) == 1
        assert len({e.stream_id for e in exchanges.values()}) == 4
    else:
        assert len({e.connection_id for e in exchanges.values()}) == 4


def curl(
    srv: FakeLLMServer, path: str, version: str, tmp_path: Path, *extra: str, body: Any = None
) -> tuple[int, str, bytes]:
    """Run curl; return (status, HTTP version as curl saw it, body bytes)."""
    assert CURL is not None
    out = tmp_path / "body"
    argv = [
        CURL,
        "-sS",
        "--cacert",
        srv.ca_path,
        version,
        "-o",
        str(out),
        "-w",
        "%{http_code} %{http_version}",
        *extra,
    ]
    if body is not None:
        argv += ["-H", "content-type: application/json", "--data-binary", json.dumps(body)]
    proc = subprocess.run([*argv, srv.url + path], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    status, http_version = proc.stdout.split()
    return int(status), http_version, out.read_bytes()


ANTHROPIC_STREAM = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 64,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}
OPENAI_CHAT = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


@pytest.mark.skipif(CURL is None, reason="curl not installed")
@pytest.mark.parametrize(("flag", "version"), [("--http1.1", "1.1"), ("--http2", "2")])
def test_curl(server: FakeLLMServer, tmp_path: Path, flag: str, version: str) -> None:
    key = ["-H", f"x-api-key: {FAKE_ANTHROPIC_KEY}", "-H", "anthropic-version: 2023-06-01"]
    requests = [
        ("/v1/messages", key, ANTHROPIC_STREAM),
        ("/v1/chat/completions", ["-H", f"authorization: Bearer {FAKE_OPENAI_KEY}"], OPENAI_CHAT),
        (
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            ["-H", "x-goog-api-key: AIzaFake"],
            GEMINI,
        ),
        ("/v1beta/models/gemini-2.5-flash:generateContent", [], GEMINI),
        ("/simple/requests/", [], None),
    ]
    bodies = []
    for path, headers, body in requests:
        status, seen_version, got = curl(server, path, flag, tmp_path, *headers, body=body)
        assert (status, seen_version) == (200, version)
        bodies.append(got)
    exchanges = server.exchanges.wait_finished(len(requests))
    for exchange, got in zip(exchanges, bodies, strict=True):
        assert exchange.http_version == version
        assert got == exchange.response_body
    assert [e.provider for e in exchanges] == ["anthropic", "openai_chat", "gemini", "gemini", None]
    assert api_key_sent(exchanges[0]) == FAKE_ANTHROPIC_KEY
    gemini_chunks = [json.loads(d) for _, d in sse(bodies[2])]
    parts = [p for c in gemini_chunks for p in c["candidates"][0]["content"]["parts"]]
    assert "".join(p.get("text", "") for p in parts) == DEFAULT_TEXT
    assert [p["functionCall"]["name"] for p in parts if "functionCall" in p] == ["bash", "read_file"]
    assert gemini_chunks[-1]["usageMetadata"]["candidatesTokenCount"] == exchanges[2].response.output_tokens  # type: ignore[union-attr]
    assert exchanges[2].response.model == "gemini-2.5-flash"  # type: ignore[union-attr]
    assert b"<html>" in bodies[4]


@pytest.mark.skipif(CURL is None, reason="curl not installed")
@pytest.mark.parametrize("flag", ["--http1.1", "--http2"])
def test_curl_delivery_scenarios(server: FakeLLMServer, tmp_path: Path, flag: str) -> None:
    """gzip + chunked, a body bigger than HTTP/2 flow-control windows, and an error status."""
    scenario = ["-H", "x-fake-scenario: gzip_chunked", "--compressed"]
    status, _, got = curl(server, "/v1/messages", flag, tmp_path, *scenario, body=ANTHROPIC_STREAM)
    assert status == 200
    status, _, got_plain = curl(server, "/v1/chat/completions", flag, tmp_path, *scenario, body=OPENAI_CHAT)
    assert status == 200
    status, _, large = curl(
        server, "/v1/messages", flag, tmp_path, "-H", "x-fake-scenario: large", body=ANTHROPIC_STREAM
    )
    assert status == 200 and len(large) > 100_000  # > the 64 KiB default HTTP/2 window
    status, _, error = curl(
        server, "/v1/messages", flag, tmp_path, "-H", "x-fake-scenario: rate_limited", body=ANTHROPIC_STREAM
    )
    assert status == 429 and json.loads(error)["error"]["type"] == "rate_limit_error"
    exchanges = server.exchanges.wait_finished(4)
    assert [e.content_encoding for e in exchanges] == ["gzip", "gzip", None, None]
    assert [got, got_plain, large, error] == [e.response_body for e in exchanges]
    assert exchanges[3].status == 429 and exchanges[3].response is None


def test_stream_writes_split_inside_utf8(server: FakeLLMServer) -> None:
    """Raw HTTP/1.1: some chunk ends mid-character, yet the chunks join into the recorded body."""
    ctx = ssl.create_default_context(cafile=server.ca_path)
    request = json.dumps(ANTHROPIC_STREAM).encode()
    with (
        socket.create_connection((server.host, server.port)) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(request), request)
        )
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    chunks = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        chunks.append(rest[:size])
        rest = rest[size + 2 :]
    assert b"".join(chunks) == server.exchanges.wait_finished(1)[0].response_body

    def valid_utf8(b: bytes) -> bool:
        try:
            b.decode()
        except UnicodeDecodeError:
            return False
        return True

    assert not all(valid_utf8(c) for c in chunks)


def test_scenario_selection_and_ttft(server: FakeLLMServer) -> None:
    """Header-selected and default scenarios on one keep-alive connection; TTFT delay honoured."""
    ctx = ssl.create_default_context(cafile=server.ca_path)
    conn = http.client.HTTPSConnection(server.host, server.port, context=ctx)
    try:
        for scenario in ("text_only", "slow", None):
            headers = {
                "content-type": "application/json",
                **({"x-fake-scenario": scenario} if scenario else {}),
            }
            conn.request("POST", "/v1/messages", json.dumps(ANTHROPIC_STREAM), headers)
            assert conn.getresponse().read()
        server.default_scenario = "tools_only"
        conn.request(
            "POST", "/v1/chat/completions", json.dumps(OPENAI_CHAT), {"content-type": "application/json"}
        )
        reply = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    text_only, slow, default, tools_only = server.exchanges.wait_finished(4)
    assert len({e.connection_id for e in (text_only, slow, default, tools_only)}) == 1  # keep-alive
    assert text_only.response.tool_calls == [] and text_only.response.finish_reason == "end_turn"  # type: ignore[union-attr]
    assert (
        slow.t_first_byte is not None
        and slow.t_first_byte - slow.t_request >= SCENARIOS["slow"].first_event_delay
    )
    assert default.scenario == "default"
    assert reply["choices"][0]["message"]["content"] is None
    assert len(reply["choices"][0]["message"]["tool_calls"]) == 2


def test_close_with_idle_keepalive_connection() -> None:
    """Shutting down must not wait for clients to hang up, nor leave threads behind."""
    with FakeLLMServer() as srv:
        ctx = ssl.create_default_context(cafile=srv.ca_path)
        raw = socket.create_connection((srv.host, srv.port))
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
        started = time.monotonic()
    assert time.monotonic() - started < 2
    assert not [t for t in threading.enumerate() if t.name.startswith("fakellm")]
    tls.close()
