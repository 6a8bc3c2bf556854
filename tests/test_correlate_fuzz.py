"""Robustness: garbage, truncations and mutations of valid captures never raise out of the public
methods, never hit the decoder's internal-error path, and every event serialises to JSON."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.wire import (
    T0,
    anthropic_request,
    anthropic_sse,
    gemini_chunks,
    gemini_json_array,
    gemini_request,
    http_response,
    openai_chat_request,
    openai_chat_sse,
)
from vigild.correlate import ParseFailure, TlsChunk, TlsStreamDecoder
from vigild.correlate.http2 import PREFACE

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID = [
    (anthropic_request(stream=True),
     http_response(200, anthropic_sse([("text", "hi"), ("tool_use", "t", "f", {"a": 1})]), "text/event-stream",
                   chunked=True, encoding="gzip")),
    (openai_chat_request(stream=True),
     http_response(200, openai_chat_sse("x", [("c", "f", "{}")]), "text/event-stream", chunked=True)),
    (gemini_request("gemini-2.0-flash", "streamGenerateContent", sse=False),
     http_response(200, gemini_json_array(gemini_chunks("t", None, "g")), chunked=True, encoding="br")),
]

chunk_strategy = st.builds(
    lambda direction, data, lost, conn: (direction, data, lost, conn),
    st.sampled_from(["write", "read", "bogus"]),
    st.one_of(st.binary(max_size=300), st.sampled_from([PREFACE, b"GET / HTTP/1.1\r\n\r\n",
                                                         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                                                         b"POST /v1/messages HTTP/1.1\r\nContent-Length: 5\r\n\r\n{"])),
    st.sampled_from([0, 0, 0, 1, 70000]),
    st.integers(1, 3),
)


def _check(decoder: TlsStreamDecoder, events: list) -> None:
    for event in events:
        json.dumps(event.to_dict())
    assert "internal_error" not in decoder.failures, [e.detail for e in events if isinstance(e, ParseFailure)]


@FUZZ
@given(chunks=st.lists(chunk_strategy, max_size=25))
def test_garbage_never_raises(chunks: list) -> None:
    decoder = TlsStreamDecoder(max_body_bytes=4096)
    events = []
    for i, (direction, data, lost, conn) in enumerate(chunks):
        events += decoder.feed(TlsChunk(T0 + i, 1, 1, "fuzz", conn, direction, data, lost))
        if i % 7 == 6:
            events += decoder.expire(T0 + i + 10**12)
    events += decoder.close(1, 1, T0 + 10**6) + decoder.close_process(1) + decoder.flush()
    _check(decoder, events)


@FUZZ
@given(which=st.integers(0, len(VALID) - 1), data=st.data())
def test_mutated_and_truncated_captures_never_raise(which: int, data: st.DataObject) -> None:
    request, response = VALID[which]
    wire = [("write", bytearray(request)), ("read", bytearray(response))]
    for _, buf in wire:
        for _ in range(data.draw(st.integers(0, 4))):
            pos = data.draw(st.integers(0, len(buf) - 1))
            buf[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(wire[1][1])))
    wire[1] = ("read", wire[1][1][:cut])
    decoder = TlsStreamDecoder()
    events = []
    ts = T0
    for direction, buf in wire:
        points = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(buf) - 1)), max_size=8))))
        prev = 0
        for point in points + [len(buf)]:
            ts += 1000
            lost = data.draw(st.sampled_from([0, 0, 0, 0, 3]))
            events += decoder.feed(TlsChunk(ts, 9, 9, "m", 5, direction, bytes(buf[prev:point]), lost))
            prev = point
    events += decoder.flush()
    _check(decoder, events)
    assert events, "every capture with a request yields an event or a failure"
