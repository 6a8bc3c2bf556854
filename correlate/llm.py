"""Recognise a model call by endpoint path and body shape, and hand it to its provider decoder.

Never by host name: agents reach models through proxies, gateways, Azure/Vertex endpoints and
local servers that speak the same wire formats, while a host-name list would also mislabel any
other API those hosts serve. The body-shape check keeps, say, a chat app's own ``/v1/messages``
from being reported as a model call.
"""

from __future__ import annotations

from typing import Any

from vigild.correlate import llm_anthropic, llm_gemini, llm_ollama, llm_openai_chat, llm_openai_responses
from vigild.correlate.exchange import Exchange
from vigild.correlate.llm_common import LlmResult, parse_json


# The JSON key one of which a provider's request body must show in its first bytes when the body
# itself could not be parsed (cut by the capture, or nested past what the parser accepts).
_REQUEST_KEYS: dict[Any, tuple[bytes, ...]] = {
    llm_anthropic: (b'"messages"',),
    llm_openai_chat: (b'"messages"',),
    llm_openai_responses: (b'"input"', b'"prompt"', b'"previous_response_id"'),
    llm_gemini: (b'"contents"',),
    llm_ollama: (b'"messages"', b'"prompt"'),
}
_PREFIX_BYTES = 64 * 1024


def _request_json(exchange: Exchange) -> tuple[Any, bool]:
    """The request body as JSON; second value True when it could not be parsed."""
    raw = exchange.request.body.content()
    if not raw.strip():
        return None, False
    try:
        return parse_json(raw), False
    except ValueError:
        return None, True


def _answered_as_model(result: LlmResult) -> bool:
    """The response carried something only a model's answer in that provider's shape has."""
    return bool(result.response_id or result.text_parts or result.tool_calls or result.finish_reason
                or result.input_tokens is not None or result.output_tokens is not None)


def _decode(module: Any, payload: dict[str, Any], exchange: Exchange, path: str) -> LlmResult:
    if module is llm_gemini:
        return llm_gemini.decode(payload, exchange.response, path)
    result: LlmResult = module.decode(payload, exchange.response)
    return result


def decode_llm(exchange: Exchange) -> LlmResult | None:
    """Decode ``exchange`` as a model call, or return None when it is not one.

    A request whose body parses must have its provider's shape. One whose body cannot be parsed
    (cut by the capture, or nested too deep) is a model call only when the endpoint matches, its
    first bytes carry the provider's request key, *and* the response was decoded as that
    provider's answer: the endpoint alone would make any ``…/v1/messages`` API a model.
    """
    request = exchange.request
    method = request.method.upper()
    path = request.target.split("?", 1)[0]
    body, unparseable = _request_json(exchange)
    payload: dict[str, Any] = body if isinstance(body, dict) else {}
    prefix = request.body.content()[:_PREFIX_BYTES] if unparseable else b""
    for module in (llm_anthropic, llm_openai_chat, llm_openai_responses, llm_gemini, llm_ollama):
        if module.matches(method, path, body):
            return _decode(module, payload, exchange, path)
        if unparseable and module.path_matches(method, path) and any(k in prefix for k in _REQUEST_KEYS[module]):
            result = _decode(module, payload, exchange, path)
            return result if _answered_as_model(result) else None
    return None
