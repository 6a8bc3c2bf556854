"""HTTP/2: real frames produced by the ``h2`` library acting as client and server, two concurrent
streams on one connection, random chunk boundaries; and the no-preface and gap cases."""

from __future__ import annotations

import gzip
import json

import h2.config
import h2.connection
import h2.events
from hypothesis import given, settings
from hypothesis import strategies as st
from support.wire import (
    ANTHROPIC_KEY,
    MS,
    Capture,
    anthropic_sse,
    failures,
    https_requests,
    llm_calls,
    openai_chat_sse,
    run,
)


class _Pair:
    """An h2 client and server wired together; every byte each one sends is recorded in order."""

    def __init__(self) -> None:
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                           header_encoding="utf-8"))
        self.wire: list[tuple[str, bytes]] = []
        self.client.initiate_connection()
        self.pump()
        self.server.initiate_connection()
        self.pump()

    def pump(self) -> None:
        for _ in range(4):
            out = self.client.data_to_send()
            if out:
                self.wire.append(("write", out))
                for event in self.server.receive_data(out):
                    if isinstance(event, h2.events.DataReceived):
                        self.server.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            back = self.server.data_to_send()
            if back:
                self.wire.append(("read", back))
                for event in self.client.receive_data(back):
                    if isinstance(event, h2.events.DataReceived):
                        self.client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)

    def request(self, stream_id: int, path: str, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.client.send_headers(stream_id, [(":method", "POST"), (":scheme", "https"), (":path", path),
                                             (":authority", "api.example.com"), ("content-type", "application/json"),
                                             ("authorization", f"Bearer {ANTHROPIC_KEY}"),
                                             ("x-api-key", ANTHROPIC_KEY)])
        self.client.send_data(stream_id, payload, end_stream=True)
        self.pump()

    def respond_headers(self, stream_id: int, content_type: str, encoding: str | None = None) -> None:
        headers = [(":status", "200"), ("content-type", content_type), ("request-id", f"req_{stream_id}")]
        if encoding:
            headers.append(("content-encoding", encoding))
        self.server.send_headers(stream_id, headers)
        self.pump()

    def respond_data(self, stream_id: int, data: bytes, end: bool = False) -> None:
        self.server.send_data(stream_id, data, end_stream=end)
        self.pump()


def _two_streams() -> _Pair:
    pair = _Pair()
    pair.request(1, "/v1/messages", {"model": "claude-opus-4-1", "stream": True, "max_tokens": 5,
                                     "messages": [{"role": "user", "content": "one"}]})
    pair.request(3, "/v1/chat/completions", {"model": "gpt-4o", "stream": True,
                                             "messages": [{"role": "user", "content": "two"}]})
    anthropic_body = anthropic_sse([("text", "Stream one says hi"),
                                    ("tool_use", "toolu_9", "grep", {"pattern": "TODO"})])
    openai_body = gzip.compress(openai_chat_sse("Stream three", [], finish_reason="stop"))
    pair.respond_headers(3, "text/event-stream", "gzip")
    pair.respond_headers(1, "text/event-stream")
    # Interleave DATA frames of the two streams.
    for i in range(0, max(len(anthropic_body), len(openai_body)), 700):
        if i < len(anthropic_body):
            pair.respond_data(1, anthropic_body[i:i + 700])
        if i < len(openai_body):
            pair.respond_data(3, openai_body[i:i + 700])
    pair.respond_data(3, b"", end=True)
    pair.respond_data(1, b"", end=True)
    return pair


@settings(max_examples=40, deadline=None)
@given(cut_seed=st.lists(st.integers(1, 5000), max_size=12))
def test_two_concurrent_streams_on_one_connection(cut_seed: list[int]) -> None:
    cap = Capture()
    for direction, data in _two_streams().wire:
        if direction == "write":
            cap.write(data, cut_seed)
        else:
            cap.read(data, cut_seed)
    events, decoder = run(cap.chunks)
    assert not decoder.failures
    calls = {c.provider: c for c in llm_calls(events)}
    assert set(calls) == {"anthropic", "openai"}
    one, three = calls["anthropic"], calls["openai"]
    assert one.http_version == "2" and one.host == "api.example.com" and one.endpoint == "/v1/messages"
    assert one.text == "Stream one says hi" and one.tool_calls == [
        {"id": "toolu_9", "name": "grep", "arguments": {"pattern": "TODO"}}]
    assert one.model == "claude-sonnet-4-5-20250929" and one.request_id == "req_1" and not one.truncated
    assert three.text == "Stream three" and three.finish_reason == "stop" and three.request_id == "req_3"
    assert three.stream and three.ttft_ms is not None and three.ttft_ms <= three.duration_ms
    blob = json.dumps([e.to_dict() for e in events])
    assert ANTHROPIC_KEY not in blob


def test_connection_seen_from_the_middle_is_reported_not_guessed() -> None:
    wire = _two_streams().wire
    preface_len = len(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    cap = Capture()
    # Start after the first write (preface + SETTINGS + first request): HPACK context is lost.
    for direction, data in wire[2:]:
        if direction == "write":
            cap.write(data)
        else:
            cap.read(data)
    assert preface_len < len(wire[0][1])
    events, decoder = run(cap.chunks)
    assert not llm_calls(events) and not https_requests(events)
    assert decoder.failures == {"h2_no_preface": 1}
    (failure,) = failures(events)
    assert "HPACK" in failure.detail


def test_gap_in_http2_abandons_connection_with_truncated_streams() -> None:
    pair = _Pair()
    pair.request(1, "/v1/messages", {"model": "claude-x", "stream": True, "messages": []})
    pair.respond_headers(1, "text/event-stream")
    cap = Capture()
    for direction, data in pair.wire:
        (cap.write if direction == "write" else cap.read)(data)
    cap.read(b"\x00\x00\x05\x00\x00\x00\x00\x00\x01hello", lost=300)
    cap.wait(10 * MS)
    events, decoder = run(cap.chunks)
    (call,) = llm_calls(events)
    assert call.truncated is True and call.status == 200 and call.model == "claude-x"
    assert decoder.failures == {"gap": 1}
