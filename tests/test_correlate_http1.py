"""HTTP/1.1 reassembly through the public decoder: framing, content codings, keep-alive pairing,
per-connection isolation, mid-stream starts, capture gaps, large bodies and the size cap."""

from __future__ import annotations

import json
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st
from support.wire import (
    MS,
    Capture,
    anthropic_request,
    anthropic_sse,
    compress,
    failures,
    http_request,
    http_response,
    https_requests,
    llm_calls,
    openai_chat_json,
    openai_chat_request,
    openai_chat_sse,
    run,
)
from vigild.correlate import TlsChunk, TlsStreamDecoder
from vigild.correlate.intent import HttpsRequest

cuts = st.lists(st.integers(min_value=1, max_value=3000), max_size=30)


@settings(max_examples=60, deadline=None)
@given(resp_cuts=cuts, sizes=st.lists(st.integers(1, 300), min_size=1, max_size=8),
       encoding=st.sampled_from(["gzip", "br", "deflate"]))
def test_chunked_and_compressed_response(resp_cuts: list[int], sizes: list[int], encoding: str) -> None:
    body = json.dumps({"items": [{"n": i, "name": f"item-{i}"} for i in range(60)]}).encode()
    cap = Capture().write(http_request("GET", "/api/items?page=2", "example.com")).read(
        http_response(200, body, chunked=sizes, encoding=encoding), resp_cuts)
    events, decoder = run(cap.chunks)
    (req,) = https_requests(events)
    assert not decoder.failures and req.truncated is False
    assert (req.method, req.host, req.path, req.status) == ("GET", "example.com", "/api/items?page=2", 200)
    assert req.request_bytes == 0 and req.response_bytes == len(compress(body, encoding))
    assert req.duration_ms == (cap.chunks[-1].ts_ns - cap.chunks[0].ts_ns) / 1e6


def test_raw_deflate_and_interim_100_continue() -> None:
    raw = zlib.compressobj(wbits=-15)
    body = raw.compress(openai_chat_json("deflated", [])) + raw.flush()
    response = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Encoding: deflate\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    cap = Capture().write(openai_chat_request(stream=False)).read(response)
    (call,) = llm_calls(run(cap.chunks)[0])
    assert call.text == "deflated" and call.status == 200 and not call.truncated


@settings(max_examples=40, deadline=None)
@given(write_cuts=cuts, read_cuts=cuts)
def test_keep_alive_three_requests_on_one_connection(write_cuts: list[int], read_cuts: list[int]) -> None:
    cap = Capture()
    cap.write(openai_chat_request(stream=False), write_cuts).read(
        http_response(200, openai_chat_json("first", [])), read_cuts)
    cap.write(http_request("GET", "/health", "api.openai.com"), write_cuts).read(
        http_response(200, b"ok", "text/plain", chunked=[1]), read_cuts)
    cap.write(openai_chat_request(stream=True), write_cuts).read(
        http_response(200, openai_chat_sse("third", [], finish_reason="stop"), "text/event-stream", chunked=True),
        read_cuts)
    events, decoder = run(cap.chunks)
    assert not decoder.failures
    assert [type(e).__name__ for e in events] == ["LlmCall", "HttpsRequest", "LlmCall"]
    first, health, third = events
    assert first.text == "first" and first.stream is False
    assert isinstance(health, HttpsRequest) and health.path == "/health" and health.response_bytes == 2
    assert third.text == "third" and third.stream is True
    assert first.ts_ns < health.ts_ns < third.ts_ns


def test_pipelined_requests_pair_in_order() -> None:
    a = http_request("GET", "/a", "h")
    b = http_request("GET", "/b", "h")
    cap = Capture().write(a + b).read(http_response(200, b"AA", "text/plain") + http_response(404, b"B", "text/plain"))
    reqs = https_requests(run(cap.chunks)[0])
    assert [(r.path, r.status, r.response_bytes) for r in reqs] == [("/a", 200, 2), ("/b", 404, 1)]


@settings(max_examples=40, deadline=None)
@given(order=st.permutations(list(range(12))))
def test_two_interleaved_streaming_connections_from_one_pid(order: list[int]) -> None:
    """Concurrent streams of one process (even one thread) must not mix: keyed by SSL*, not tid."""
    one = Capture(conn_id=0x1000, tid=7).write(anthropic_request(stream=True)).read(
        http_response(200, anthropic_sse([("text", "alpha " * 30)], msg_id="msg_A"), "text/event-stream",
                      chunked=True), list(range(200, 5000, 400)))
    two = Capture(conn_id=0x2000, tid=7).write(openai_chat_request(stream=True)).read(
        http_response(200, openai_chat_sse("beta " * 30, [], finish_reason="stop"), "text/event-stream",
                      chunked=True), list(range(150, 5000, 350)))
    # Interleave: each connection keeps its own order, the merge order is drawn by hypothesis.
    queues = [list(one.chunks), list(two.chunks)]
    merged = []
    picks = [i % 2 for i in order] * 20
    for pick in picks:
        if queues[pick]:
            merged.append(queues[pick].pop(0))
    merged += queues[0] + queues[1]
    ts = merged[0].ts_ns
    merged = [TlsChunk(ts + i * MS, c.pid, c.tid, c.comm, c.conn_id, c.direction, c.data) for i, c in enumerate(merged)]
    events, decoder = run(merged)
    calls = {c.conn_id: c for c in llm_calls(events)}
    assert not decoder.failures and len(calls) == 2
    assert calls[0x1000].provider == "anthropic" and calls[0x1000].text == "alpha " * 30
    assert calls[0x1000].response_id == "msg_A"
    assert calls[0x2000].provider == "openai" and calls[0x2000].text == "beta " * 30


def test_response_without_length_ends_at_close() -> None:
    cap = Capture().write(http_request("GET", "/stream", "h")).read(b"HTTP/1.1 200 OK\r\n\r\npart one, ").read(
        b"part two")
    events, _ = run(cap.chunks, close=[])
    assert events == []
    decoder = TlsStreamDecoder()
    for chunk in cap.chunks:
        decoder.feed(chunk)
    (req,) = decoder.close(cap.pid, cap.conn_id, cap.ts + 5 * MS)
    assert isinstance(req, HttpsRequest) and req.response_bytes == 18 and not req.truncated
    assert req.duration_ms == (cap.ts + 5 * MS - cap.chunks[0].ts_ns) / 1e6


def test_mid_stream_start_resynchronises_at_next_request() -> None:
    cap = Capture()
    cap.write(b'"role": "user", "content": "tail of an earlier request body"}]}')
    cap.read(b'data: {"choices": []}\n\n')
    cap.write(openai_chat_request(stream=False)).read(http_response(200, openai_chat_json("after resync", [])))
    events, decoder = run(cap.chunks)
    (call,) = llm_calls(events)
    assert call.text == "after resync"
    assert decoder.failures == {"mid_stream_start": 1}
    (failure,) = failures(events)
    assert failure.reason == "mid_stream_start" and "next write" in failure.detail


def test_response_bytes_before_first_request_are_skipped() -> None:
    cap = Capture().read(b"tail of a previous response\r\n").write(http_request("GET", "/x", "h")).read(
        b"more stale bytes").read(http_response(200, b"x", "text/plain"))
    events, decoder = run(cap.chunks)
    (req,) = https_requests(events)
    assert req.path == "/x" and req.status == 200
    assert decoder.failures == {"mid_stream_start": 1}


def test_gap_inside_sized_body_is_skipped_and_marked_truncated() -> None:
    body = b"A" * 1000 + b"B" * 1000
    response = http_response(200, body, "application/octet-stream")
    head = response[:-2000]
    cap = Capture().write(http_request("GET", "/blob", "h")).read(head + b"A" * 500)
    cap.read(b"B" * 1000, lost=500)
    cap.write(http_request("GET", "/next", "h")).read(http_response(200, b"ok", "text/plain"))
    events, decoder = run(cap.chunks)
    blob, nxt = https_requests(events)
    assert blob.truncated is True and blob.response_bytes == 2000 and blob.status == 200
    assert nxt.path == "/next" and nxt.truncated is False
    assert not decoder.failures  # a skippable gap is not a parse failure; the event says truncated


def test_gap_across_message_boundary_resyncs_and_counts_failure() -> None:
    cap = Capture().write(http_request("GET", "/one", "h")).read(http_response(200, b"x" * 100, "text/plain")[:-50])
    cap.read(b"garbage after the lost bytes", lost=5000)
    cap.write(http_request("GET", "/two", "h")).read(http_response(201, b"y", "text/plain"))
    events, decoder = run(cap.chunks)
    one, two = https_requests(events)
    assert one.path == "/one" and one.truncated is True
    assert two.path == "/two" and two.status == 201 and not two.truncated
    assert decoder.failures == {"gap": 1}


def test_sse_gap_drops_only_the_damaged_event() -> None:
    body = openai_chat_sse("abcdefghij", [], finish_reason="stop", usage=None)
    response = http_response(200, body, "text/event-stream", length=False)
    at = response.index(b'"content":"def"')
    cap = Capture().write(openai_chat_request(stream=True)).read(response[:at]).read(response[at + 5:], lost=5)
    (call,) = llm_calls(run(cap.chunks)[0])
    assert call.text == "abcghij" and call.truncated is True and call.finish_reason == "stop"


def test_ten_megabyte_bodies_decode() -> None:
    big_text = ("0123456789abcdef" * 65536) * 10  # 10 MiB of assistant text
    body = json.dumps({"id": "chatcmpl-big", "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": big_text}, "finish_reason": "length"}]}).encode()
    request_body = {"model": "m", "messages": [{"role": "user", "content": "x" * (10 * 1024 * 1024)}]}
    ssl_records = list(range(16384, 11 * 1024 * 1024, 16384))  # one chunk per 16 KiB TLS record
    cap = Capture().write(http_request("POST", "/v1/chat/completions", "h", request_body), ssl_records)
    cap.read(http_response(200, body, chunked=[16384] * 700, encoding="gzip"), ssl_records)
    events, decoder = run(cap.chunks)
    (call,) = llm_calls(events)
    assert not decoder.failures and not call.truncated
    assert len(call.text) == len(big_text) and call.finish_reason == "length"


def test_body_cap_marks_truncation() -> None:
    body = anthropic_sse([("text", "x" * 5000)])
    cap = Capture().write(anthropic_request(stream=True)).read(http_response(200, body, "text/event-stream"))
    events, decoder = run(cap.chunks, TlsStreamDecoder(max_body_bytes=2048))
    (call,) = llm_calls(events)
    assert call.truncated is True
    assert call.model == "claude-sonnet-4-5-20250929"  # request body under the cap still decodes


def test_corrupt_gzip_is_a_counted_decompress_error() -> None:
    response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                b"Content-Length: 20\r\n\r\n" + b"\x1f\x8b\x08\x00not really gzip!!")
    cap = Capture().write(http_request("GET", "/z", "h")).read(response)
    events, decoder = run(cap.chunks)
    (req,) = https_requests(events)
    assert req.truncated is True and req.response_bytes == 20
    assert decoder.failures == {"decompress_error": 1}


def test_head_request_and_204_have_no_body() -> None:
    cap = Capture().write(http_request("HEAD", "/file", "h")).read(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    cap.write(http_request("DELETE", "/file", "h")).read(b"HTTP/1.1 204 No Content\r\n\r\n")
    head, delete = https_requests(run(cap.chunks)[0])
    assert (head.method, head.status, head.response_bytes, head.truncated) == ("HEAD", 200, 0, False)
    assert (delete.method, delete.status, delete.truncated) == ("DELETE", 204, False)


def test_request_without_response_is_emitted_truncated_on_close_and_process_exit() -> None:
    cap = Capture().write(openai_chat_request(stream=True))
    decoder = TlsStreamDecoder()
    for chunk in cap.chunks:
        assert decoder.feed(chunk) == []
    (call,) = decoder.close_process(cap.pid)
    assert call.status == 0 and call.truncated is True and call.duration_ms is None
    assert decoder.open_connections == 0


def test_expire_and_flush_emit_pending() -> None:
    decoder = TlsStreamDecoder(idle_timeout_ns=10 * MS)
    cap = Capture().write(http_request("GET", "/slow", "h")).read(b"HTTP/1.1 200 OK\r\n\r\nbody")
    for chunk in cap.chunks:
        decoder.feed(chunk)
    assert decoder.expire(cap.ts + 5 * MS) == []
    (req,) = decoder.expire(cap.ts + 20 * MS)
    assert req.path == "/slow" and req.response_bytes == 4
    other = Capture(conn_id=99).write(http_request("GET", "/pending", "h"))
    for chunk in other.chunks:
        decoder.feed(chunk)
    (pending,) = decoder.flush()
    assert pending.path == "/pending" and pending.status == 0 and decoder.open_connections == 0
