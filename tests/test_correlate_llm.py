"""Provider decoding end to end: TLS chunks in, LlmCall/HttpsRequest events out.

Captures are built with the wire builders, cut at byte boundaries chosen by hypothesis, and
decoded through the public TlsStreamDecoder; every field of the resulting event is checked.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.wire import (
    ANTHROPIC_KEY,
    GOOGLE_KEY,
    MS,
    OPENAI_KEY,
    Capture,
    anthropic_json,
    anthropic_request,
    anthropic_sse,
    failures,
    gemini_chunks,
    gemini_json_array,
    gemini_request,
    gemini_sse,
    http_request,
    http_response,
    https_requests,
    llm_calls,
    openai_chat_json,
    openai_chat_request,
    openai_chat_sse,
    responses_json,
    responses_request,
    responses_sse,
    run,
    sse_event,
)
from vigild.correlate import TlsStreamDecoder

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
cuts = st.lists(st.integers(min_value=1, max_value=20_000), max_size=25)


def _assert_no_secrets(events: list) -> None:
    blob = json.dumps([e.to_dict() for e in events])
    for secret in (ANTHROPIC_KEY, OPENAI_KEY, GOOGLE_KEY):
        assert secret not in blob


# -- Anthropic ---------------------------------------------------------------------------------

ANTHROPIC_BLOCKS = [
    ("text", "I'll check the weather and read the file. Ünïcödé ✓ 日本"),
    ("tool_use", "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", {"location": "San Francisco, CA", "unit": "f"}),
    ("tool_use", "toolu_01PZ4BXhEBeJvA1bKkDCrPzp", "read_file", {"path": "/work/src/main.py", "lines": [1, 20]}),
]


@FAST
@given(req_cuts=cuts, resp_cuts=cuts, chunked=st.booleans())
def test_anthropic_streaming_two_tools_and_text(req_cuts: list[int], resp_cuts: list[int], chunked: bool) -> None:
    request = anthropic_request(stream=True)
    body = anthropic_sse(ANTHROPIC_BLOCKS, input_tokens=472, output_tokens=89, cache_read=100, cache_creation=7)
    response = http_response(200, body, "text/event-stream; charset=utf-8", chunked=[97, 13, 500] if chunked else False,
                             headers=[("request-id", "req_011CRx")])
    cap = Capture(comm="claude").write(request, req_cuts).wait(200 * MS).read(response, resp_cuts)
    events, decoder = run(cap.chunks)
    calls = llm_calls(events)
    assert len(calls) == 1 and not failures(events) and not decoder.failures
    call = calls[0]
    assert call.provider == "anthropic" and call.endpoint == "/v1/messages" and call.host == "api.anthropic.com"
    assert call.model == "claude-sonnet-4-5-20250929" and call.stream is True and call.status == 200
    assert call.comm == "claude" and call.pid == 4242 and call.conn_id == 0x7F3A_0000_1000
    assert call.ts_ns == cap.chunks[0].ts_ns
    assert call.input_tokens == 472 and call.output_tokens == 89
    assert call.cache_read_input_tokens == 100 and call.cache_creation_input_tokens == 7
    assert call.finish_reason == "tool_use"
    assert call.text == ANTHROPIC_BLOCKS[0][1]
    assert call.tool_calls == [
        {"id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather",
         "arguments": {"location": "San Francisco, CA", "unit": "f"}},
        {"id": "toolu_01PZ4BXhEBeJvA1bKkDCrPzp", "name": "read_file",
         "arguments": {"path": "/work/src/main.py", "lines": [1, 20]}},
    ]
    assert call.request_tools == ["get_weather", "read_file"]
    assert call.request_messages is None  # content capture is off by default
    assert call.response_id == "msg_01XFDUDYJgAACzvnptvVoYEL" and call.request_id == "req_011CRx"
    assert call.truncated is False and call.error is None and call.http_version == "1.1"
    last_ts = cap.chunks[-1].ts_ns
    assert call.duration_ms == (last_ts - call.ts_ns) / 1e6
    assert call.ttft_ms is not None and 200 < call.ttft_ms <= call.duration_ms
    out = call.to_dict()
    assert out["type"] == "llm_call" and out["ts_ns"] == call.ts_ns
    json.dumps(out)
    _assert_no_secrets(events)


def test_anthropic_ttft_is_first_content_delta_not_message_start() -> None:
    body = anthropic_sse([("text", "Hello there")])
    head_end = body.index(b"content_block_delta")
    response = http_response(200, body, "text/event-stream")
    offset = response.index(body) + head_end
    cap = Capture().write(anthropic_request(stream=True)).wait(500 * MS)
    cap.read(response[:offset]).wait(1000 * MS).read(response[offset:])
    call = llm_calls(run(cap.chunks)[0])[0]
    start = cap.chunks[0].ts_ns
    assert call.ttft_ms == (cap.chunks[-1].ts_ns - start) / 1e6
    assert call.ttft_ms > 1500


def test_anthropic_non_streaming_with_tool_use() -> None:
    blocks = [("text", "Sure."), ("tool_use", "toolu_1", "bash", {"command": "ls -la"})]
    cap = Capture().write(anthropic_request(stream=False)).read(
        http_response(200, anthropic_json(blocks, stop_reason="tool_use"), encoding="gzip"))
    events, _ = run(cap.chunks)
    call = llm_calls(events)[0]
    assert call.stream is False and call.ttft_ms is None
    assert call.text == "Sure." and call.finish_reason == "tool_use"
    assert call.tool_calls == [{"id": "toolu_1", "name": "bash", "arguments": {"command": "ls -la"}}]
    assert (call.input_tokens, call.output_tokens) == (25, 30)
    assert call.response_id == "msg_013Zva2CMHLNnXjNJJKqJ2EF"


def test_anthropic_invalid_tool_json_is_kept_raw_with_error() -> None:
    body = anthropic_sse([("tool_use", "toolu_x", "edit", '{"path": "a.py", "text": "unterminated')])
    cap = Capture().write(anthropic_request(stream=True)).read(http_response(200, body, "text/event-stream"))
    call = llm_calls(run(cap.chunks)[0])[0]
    (tool,) = call.tool_calls
    assert tool["id"] == "toolu_x" and tool["name"] == "edit" and "arguments" not in tool
    assert tool["arguments_raw"] == '{"path": "a.py", "text": "unterminated'
    assert tool["error"].startswith("invalid JSON")


def test_anthropic_overloaded_error_event_and_http_error() -> None:
    body = (sse_event("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 5, "output_tokens": 1}}})
        + sse_event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))
    cap = Capture().write(anthropic_request(stream=True)).read(http_response(200, body.encode(), "text/event-stream"))
    cap.write(anthropic_request(stream=False)).read(http_response(
        429, b'{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens exceeded"}}'))
    first, second = llm_calls(run(cap.chunks)[0])
    assert first.error == "overloaded_error: Overloaded" and first.input_tokens == 5
    assert second.status == 429 and second.error == "rate_limit_error: Number of request tokens exceeded"
    assert second.model == "claude-sonnet-4-5-20250929"


def test_content_capture_includes_redacted_messages_and_headers() -> None:
    request = anthropic_request(stream=False, content=f"my key is {OPENAI_KEY}, password hunter2")
    cap = Capture().write(request).read(http_response(200, anthropic_json([("text", "ok")])))
    events, _ = run(cap.chunks, TlsStreamDecoder(capture_content=True))
    call = llm_calls(events)[0]
    assert call.request_messages == [
        {"role": "system", "content": "You are a helpful agent."},
        {"role": "user", "content": "my key is [REDACTED], password hunter2"},
    ]
    headers = dict(call.request_headers or [])
    assert headers["x-api-key"] == "[REDACTED]" and headers["anthropic-version"] == "2023-06-01"
    _assert_no_secrets(events)


# -- OpenAI Chat Completions -------------------------------------------------------------------

@FAST
@given(req_cuts=cuts, resp_cuts=cuts, encoding=st.sampled_from([None, "gzip", "br"]))
def test_openai_chat_streaming_tool_calls_by_index(req_cuts: list[int], resp_cuts: list[int],
                                                   encoding: str | None) -> None:
    calls_wire = [("call_abc123", "get_weather", '{"location": "Boston, MA", "unit": "celsius"}'),
                  ("call_def456", "get_time", '{"timezone": "America/New_York"}')]
    body = openai_chat_sse("Let me check both.", calls_wire, usage=(82, 17))
    response = http_response(200, body, "text/event-stream", chunked=True, encoding=encoding)
    cap = Capture(comm="codex").write(openai_chat_request(stream=True), req_cuts).read(response, resp_cuts)
    events, decoder = run(cap.chunks)
    (call,) = llm_calls(events)
    assert not decoder.failures
    assert call.provider == "openai" and call.endpoint == "/v1/chat/completions" and call.stream is True
    assert call.model == "gpt-4o-2024-08-06" and call.status == 200
    assert call.text == "Let me check both."
    assert call.tool_calls == [
        {"id": "call_abc123", "name": "get_weather", "arguments": {"location": "Boston, MA", "unit": "celsius"}},
        {"id": "call_def456", "name": "get_time", "arguments": {"timezone": "America/New_York"}},
    ]
    assert call.finish_reason == "tool_calls"
    assert (call.input_tokens, call.output_tokens, call.cache_read_input_tokens) == (82, 17, 0)
    assert call.request_tools == ["get_weather", "get_time"]
    assert call.response_id == "chatcmpl-AbC123" and call.truncated is False
    assert call.ttft_ms is not None and call.ttft_ms <= call.duration_ms
    _assert_no_secrets(events)


def test_openai_chat_stream_without_usage_and_non_streaming() -> None:
    body = openai_chat_sse("Hi!", [], finish_reason="stop", usage=None)
    cap = Capture().write(openai_chat_request(stream=True, include_usage=False)).read(
        http_response(200, body, "text/event-stream"))
    cap.write(openai_chat_request(stream=False)).read(http_response(
        200, openai_chat_json(None, [("call_1", "get_weather", '{"city":"Oslo"}')], finish_reason="tool_calls")))
    streamed, plain = llm_calls(run(cap.chunks)[0])
    assert streamed.text == "Hi!" and streamed.input_tokens is None and streamed.finish_reason == "stop"
    assert plain.stream is False and plain.text == ""
    assert plain.tool_calls == [{"id": "call_1", "name": "get_weather", "arguments": {"city": "Oslo"}}]
    assert (plain.input_tokens, plain.output_tokens, plain.cache_read_input_tokens) == (19, 10, 4)


def test_openai_compatible_path_prefix_is_recognised_by_shape() -> None:
    request = http_request("POST", "/api/v1/chat/completions", "openrouter.ai",
                           {"model": "meta/llama", "messages": [{"role": "user", "content": "x"}]})
    cap = Capture().write(request).read(http_response(200, openai_chat_json("y", [])))
    (call,) = llm_calls(run(cap.chunks)[0])
    assert call.provider == "openai" and call.endpoint == "/api/v1/chat/completions" and call.text == "y"


# -- OpenAI Responses --------------------------------------------------------------------------

@FAST
@given(resp_cuts=cuts)
def test_responses_streaming_with_function_call(resp_cuts: list[int]) -> None:
    body = responses_sse("Checking the weather.", ("call_12345xyz", "get_weather", '{"location":"Paris, France"}'))
    cap = Capture().write(responses_request(stream=True)).read(
        http_response(200, body, "text/event-stream", chunked=True), resp_cuts)
    events, decoder = run(cap.chunks)
    (call,) = llm_calls(events)
    assert not decoder.failures
    assert call.provider == "openai" and call.endpoint == "/v1/responses" and call.stream is True
    assert call.model == "gpt-4.1-2025-04-14"
    assert call.text == "Checking the weather."
    assert call.tool_calls == [
        {"id": "call_12345xyz", "name": "get_weather", "arguments": {"location": "Paris, France"}}]
    assert (call.input_tokens, call.output_tokens) == (37, 11)
    assert call.finish_reason == "completed" and call.response_id == "resp_67ccd2bed1ec8190"
    assert call.request_tools == ["get_weather", "web_search"]
    assert call.ttft_ms is not None


def test_responses_stream_cut_before_completion_keeps_deltas() -> None:
    body = responses_sse("Partial answer", ("call_1", "f", '{"a": 1}'))
    cut = body.index(b"event: response.completed")
    response = http_response(200, body, "text/event-stream", length=False)
    end = response.index(body) + cut
    cap = Capture().write(responses_request(stream=True)).read(response[:end])
    (call,) = llm_calls(run(cap.chunks)[0])  # read-until-close body, ended by close
    assert call.text == "Partial answer"
    assert call.tool_calls == [{"id": "call_1", "name": "f", "arguments": {"a": 1}}]
    assert call.input_tokens is None and call.finish_reason is None


def test_responses_non_streaming() -> None:
    cap = Capture().write(responses_request(stream=False)).read(
        http_response(200, responses_json("Hello.", ("call_7", "get_weather", '{"x": true}'))))
    (call,) = llm_calls(run(cap.chunks)[0])
    assert call.stream is False and call.text == "Hello."
    assert call.tool_calls == [{"id": "call_7", "name": "get_weather", "arguments": {"x": True}}]
    assert (call.input_tokens, call.output_tokens, call.finish_reason) == (36, 87, "completed")


# -- Gemini ------------------------------------------------------------------------------------

@FAST
@given(resp_cuts=cuts, sse=st.booleans())
def test_gemini_streaming_sse_and_json_array(resp_cuts: list[int], sse: bool) -> None:
    chunks = gemini_chunks("Here are the files you asked for.", ("list_files", {"dir": "/tmp", "all": True}),
                           "gemini-2.5-flash")
    body = gemini_sse(chunks) if sse else gemini_json_array(chunks)
    ctype = "text/event-stream" if sse else "application/json; charset=UTF-8"
    cap = Capture(comm="gemini").write(gemini_request("gemini-2.5-flash", "streamGenerateContent", sse=sse,
                                                      key_in_url=True)).wait(300 * MS)
    cap.read(http_response(200, body, ctype, chunked=True), resp_cuts)
    events, decoder = run(cap.chunks)
    (call,) = llm_calls(events)
    assert not decoder.failures
    assert call.provider == "gemini" and call.model == "gemini-2.5-flash" and call.stream is True
    assert call.endpoint == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert call.text == "Here are the files you asked for."
    assert call.tool_calls == [{"id": None, "name": "list_files", "arguments": {"dir": "/tmp", "all": True}}]
    assert (call.input_tokens, call.output_tokens, call.finish_reason) == (31, 14, "STOP")
    assert call.request_tools == ["list_files"] and call.response_id == "abcResponseId"
    assert call.ttft_ms is not None and 300 < call.ttft_ms <= call.duration_ms
    _assert_no_secrets(events)


def test_gemini_non_streaming_and_error() -> None:
    chunks = gemini_chunks("Done", None, "gemini-2.0-flash")
    merged = chunks[-1]
    merged["candidates"][0]["content"]["parts"] = [{"text": "Done"}]
    cap = Capture().write(gemini_request("gemini-2.0-flash", "generateContent", sse=False)).read(
        http_response(200, json.dumps(merged).encode()))
    cap.write(gemini_request("gemini-2.0-flash", "generateContent", sse=False)).read(http_response(
        400, b'{"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}}'))
    ok, bad = llm_calls(run(cap.chunks)[0])
    assert ok.stream is False and ok.text == "Done" and ok.ttft_ms is None and ok.output_tokens == 14
    assert bad.status == 400 and bad.error == "INVALID_ARGUMENT: API key not valid."


# -- not a model call --------------------------------------------------------------------------

def test_other_https_is_https_request_never_llm_call() -> None:
    chat_app = http_request("POST", "/v1/messages?token=abcdef123456", "api.slack-like.example",
                            {"channel": "C1", "text": "hello"})
    cap = Capture().write(chat_app).read(http_response(200, b'{"ok":true}'))
    cap.write(http_request("GET", "/repos/a/b", "api.github.com")).read(http_response(404, b"nope", "text/plain"))
    events, _ = run(cap.chunks)
    assert not llm_calls(events)
    first, second = https_requests(events)
    assert (first.method, first.host, first.path, first.status) == (
        "POST", "api.slack-like.example", "/v1/messages?token=[REDACTED]", 200)
    assert first.request_bytes == len(json.dumps({"channel": "C1", "text": "hello"})) and first.response_bytes == 11
    assert (second.method, second.path, second.status, second.response_bytes) == ("GET", "/repos/a/b", 404, 4)
    assert second.content_type == "text/plain" and second.duration_ms is not None
    assert second.to_dict()["type"] == "https_request"


def test_invalid_json_response_is_counted_and_call_still_reported() -> None:
    cap = Capture().write(openai_chat_request(stream=False)).read(http_response(200, b'{"choices": [oops'))
    events, decoder = run(cap.chunks)
    (call,) = llm_calls(events)
    assert call.status == 200 and call.text == ""
    assert decoder.failures["invalid_json"] == 1
    (failure,) = failures(events)
    assert failure.reason == "invalid_json" and "response body" in failure.detail
    assert failure.to_dict()["type"] == "parse_failure"
