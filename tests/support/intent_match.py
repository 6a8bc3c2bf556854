"""Checks that the llm_call events vigil decoded are what the fake model server sent, field by
field, and that no key the clients used shows anywhere."""

from __future__ import annotations

from typing import Any

from fakellm import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY, Exchange
from support.helpers import TraceResult

PROVIDER = {"anthropic": "anthropic", "openai_chat": "openai", "openai_responses": "openai", "gemini": "gemini",
            "ollama_chat": "ollama", "ollama_generate": "ollama"}
SECRETS = (FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY, "AIzaSyFakeGeminiKey0123456789abcdefghij")


def assert_matches(call: dict[str, Any], exchange: Exchange) -> None:
    """The decoded llm_call equals what the server says it sent, field by field."""
    sent = exchange.response
    assert sent is not None
    assert call["provider"] == PROVIDER[exchange.provider or ""]
    assert call["endpoint"] == exchange.path.split("?")[0]
    assert call["status"] == exchange.status
    assert call["model"] == sent.model
    assert call["stream"] == sent.stream
    assert call["text"] == sent.text
    assert call["tool_calls"] == [{"id": t.id, "name": t.name, "arguments": t.arguments} for t in sent.tool_calls]
    assert call["input_tokens"] == sent.input_tokens
    assert call["output_tokens"] == sent.output_tokens
    assert call["finish_reason"] == sent.finish_reason
    assert call["duration_ms"] is not None and call["duration_ms"] >= 0
    if sent.stream:
        assert call["ttft_ms"] is not None and 0 <= call["ttft_ms"] <= call["duration_ms"]


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
        assert secret[8:30] not in text  # nor a recognisable piece of it


def matched(result: TraceResult, exchanges: list[Exchange]) -> None:
    calls = result.of_type("llm_call")
    assert len(calls) == len(exchanges)
    by_response = {e.response.response_id: e for e in exchanges if e.response}
    for call in calls:
        assert call["response_id"] in by_response, call
        assert_matches(call, by_response[call["response_id"]])
        assert call["session_id"] == result.events[0]["session_id"]
