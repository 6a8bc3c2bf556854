"""Recognise a model call by endpoint path and body shape, and hand it to its provider decoder.

Never by host name: agents reach models through proxies, gateways, Azure/Vertex endpoints and
local servers that speak the same wire formats, while a host-name list would also mislabel any
other API those hosts serve. The body-shape check keeps, say, a chat app's own ``/v1/messages``
from being reported as a model call.
"""

from __future__ import annotations

from typing import Any

from vigild.correlate import llm_anthropic, llm_gemini, llm_openai_chat, llm_openai_responses
from vigild.correlate.exchange import Exchange
from vigild.correlate.llm_common import LlmResult, parse_json


def _request_json(exchange: Exchange) -> tuple[Any, bool]:
    """The request body as JSON; second value True when it could not be parsed."""
    raw = exchange.request.body.content()
    if not raw.strip():
        return None, False
    try:
        return parse_json(raw), False
    except ValueError:
        return None, True


def decode_llm(exchange: Exchange) -> LlmResult | None:
    """Decode ``exchange`` as a model call, or return None when it is not one."""
    request = exchange.request
    method = request.method.upper()
    path = request.target.split("?", 1)[0]
    body, unparseable = _request_json(exchange)
    # A request body cut by the capture (gap or size cap) cannot show its shape; the endpoint
    # path alone then decides, since the call certainly happened.
    relaxed = unparseable and request.is_truncated
    payload: dict[str, Any] = body if isinstance(body, dict) else {}
    for module in (llm_anthropic, llm_openai_chat, llm_openai_responses):
        if module.matches(method, path, body) or (relaxed and module.path_matches(method, path)):
            return module.decode(payload, exchange.response)
    if llm_gemini.matches(method, path, body) or (relaxed and llm_gemini.path_matches(method, path)):
        return llm_gemini.decode(payload, exchange.response, path)
    return None
