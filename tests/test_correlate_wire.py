"""The wire-capture builders (support/wire.py) are faithful: the official ``anthropic`` and
``openai`` SDKs (through an httpx transport that returns the built bytes) parse what they build.
Without an SDK these tests skip; the decoder tests that use the builders do not need one."""

from __future__ import annotations

import json

import pytest

from support.wire import Capture, anthropic_sse, gemini_chunks, gemini_json_array, gemini_sse, openai_chat_sse, \
    responses_sse, split

httpx = pytest.importorskip("httpx2", reason="the SDK checks need httpx2 (the anthropic/openai SDKs' transport)")


def _client_transport(body: bytes, content_type: str) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": content_type})
    return httpx.MockTransport(handler)


def test_anthropic_stream_builder_parses_with_official_sdk() -> None:
    anthropic = pytest.importorskip("anthropic")

    body = anthropic_sse([("text", "Checking."), ("tool_use", "toolu_01A", "get_weather", {"city": "Paris"}),
                          ("tool_use", "toolu_01B", "read_file", {"path": "/etc/hosts"})])
    client = anthropic.Anthropic(api_key="x", http_client=httpx.Client(
        transport=_client_transport(body, "text/event-stream")))
    with client.messages.stream(model="claude-test-model", max_tokens=10,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[0].text == "Checking."
    assert final.content[2].input == {"path": "/etc/hosts"}
    assert final.usage.output_tokens == 89 and final.stop_reason == "tool_use"


def test_openai_chat_stream_builder_parses_with_official_sdk() -> None:
    openai = pytest.importorskip("openai")

    body = openai_chat_sse("Let me look.", [("call_a", "get_weather", '{"city": "Paris"}'),
                                            ("call_b", "get_time", '{"tz": "CET"}')])
    client = openai.OpenAI(api_key="x", http_client=httpx.Client(
        transport=_client_transport(body, "text/event-stream")))
    with client.beta.chat.completions.stream(model="gpt-4o", messages=[{"role": "user", "content": "hi"}]) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Let me look."
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("call_a", "get_weather", '{"city": "Paris"}'), ("call_b", "get_time", '{"tz": "CET"}')]
    assert final.usage is not None and final.usage.completion_tokens == 17


def test_responses_stream_builder_parses_with_official_sdk() -> None:
    openai = pytest.importorskip("openai")

    body = responses_sse("It is sunny.", ("call_9", "get_weather", '{"city":"Paris"}'))
    client = openai.OpenAI(api_key="x", http_client=httpx.Client(
        transport=_client_transport(body, "text/event-stream")))
    kinds = []
    final = None
    for event in client.responses.create(model="gpt-4.1", input="hi", stream=True):
        kinds.append(event.type)
        if event.type == "response.completed":
            final = event.response
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final is not None and final.output_text == "It is sunny."
    assert final.output[1].type == "function_call" and final.output[1].arguments == '{"city":"Paris"}'


def test_gemini_builders_are_valid_json() -> None:
    chunks = gemini_chunks("Here are the files.", ("list_files", {"dir": "/tmp"}), "gemini-2.0-flash")
    assert json.loads(gemini_json_array(chunks)) == chunks
    events = [e for e in gemini_sse(chunks).decode().split("\r\n\r\n") if e]
    assert [json.loads(e.removeprefix("data: ")) for e in events] == chunks


def test_split_and_capture_keep_every_byte() -> None:
    data = bytes(range(200))
    assert b"".join(split(data, [5, 5, 0, 199, 300, 17])) == data
    cap = Capture().write(data, [50, 100]).read(b"xy")
    assert [c.direction for c in cap.chunks] == ["write", "write", "write", "read"]
    assert b"".join(c.data for c in cap.chunks[:3]) == data
    assert all(a.ts_ns < b.ts_ns for a, b in zip(cap.chunks, cap.chunks[1:], strict=False))
