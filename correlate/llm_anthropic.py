"""Anthropic Messages API (``POST /v1/messages``), plain JSON and streamed SSE.

Streaming follows the documented event sequence: ``message_start`` (id, model, input usage),
``content_block_start``/``content_block_delta``/``content_block_stop`` per content block index
(``text_delta`` text, ``input_json_delta`` partial JSON that only parses once concatenated),
``message_delta`` (stop_reason, output usage), ``message_stop``; ``error`` events carry
overload errors that arrive after a 200 status.
"""

from __future__ import annotations

from typing import Any

from vigild.correlate.exchange import HttpMessage
from vigild.correlate.llm_common import (
    LlmResult,
    as_dict,
    as_int,
    as_list,
    as_str,
    error_message,
    is_event_stream,
    load_body_json,
    sse_events,
    sse_json,
    tool_call,
)

PROVIDER = "anthropic"
_TOOL_BLOCKS = ("tool_use", "server_tool_use")
_CONTENT_DELTAS = ("text_delta", "input_json_delta", "thinking_delta")


def path_matches(method: str, path: str) -> bool:
    return method == "POST" and path.endswith("/v1/messages")


def matches(method: str, path: str, request: Any) -> bool:
    """``POST …/v1/messages`` whose body is a Messages request (``messages`` list)."""
    return path_matches(method, path) and isinstance(request, dict) and isinstance(request.get("messages"), list)


def decode(request: dict[str, Any], response: HttpMessage | None) -> LlmResult:
    result = LlmResult(PROVIDER, model=as_str(request.get("model")), stream=request.get("stream") is True)
    result.request_tools = [str(t.get("name") or t.get("type")) for t in as_list(request.get("tools"))
                            if isinstance(t, dict)]
    system = request.get("system")
    if system:
        result.request_messages.append({"role": "system", "content": system})
    result.request_messages.extend(as_list(request.get("messages")))
    if response is None:
        return result
    if is_event_stream(response):
        result.stream = True
        _decode_stream(response, result)
        return result
    obj = load_body_json(response.body, result, "response body")
    if response.status >= 400 or (isinstance(obj, dict) and obj.get("type") == "error"):
        result.error = error_message(obj)
        return result
    if isinstance(obj, dict):
        _decode_message(obj, result)
    return result


def _usage(usage: dict[str, Any], result: LlmResult, *, output_only: bool = False) -> None:
    if not output_only and as_int(usage.get("input_tokens")) is not None:
        result.input_tokens = as_int(usage.get("input_tokens"))
    if as_int(usage.get("output_tokens")) is not None:
        result.output_tokens = as_int(usage.get("output_tokens"))
    if as_int(usage.get("cache_read_input_tokens")) is not None:
        result.cache_read_input_tokens = as_int(usage.get("cache_read_input_tokens"))
    if as_int(usage.get("cache_creation_input_tokens")) is not None:
        result.cache_creation_input_tokens = as_int(usage.get("cache_creation_input_tokens"))


def _decode_message(obj: dict[str, Any], result: LlmResult) -> None:
    result.response_id = as_str(obj.get("id"))
    result.model = as_str(obj.get("model")) or result.model
    for block in as_list(obj.get("content")):
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            result.text_parts.append(str(block.get("text", "")))
        elif block.get("type") in _TOOL_BLOCKS:
            result.tool_calls.append(tool_call(as_str(block.get("id")), as_str(block.get("name")), block.get("input")))
    result.finish_reason = as_str(obj.get("stop_reason"))
    _usage(as_dict(obj.get("usage")), result)


def _decode_stream(response: HttpMessage, result: LlmResult) -> None:
    # Blocks by index: type, id, name, text parts or partial JSON parts.
    blocks: dict[int, dict[str, Any]] = {}
    for ts_ns, _event, obj in sse_json(sse_events(response.body), result, response.body.truncated):
        kind = obj.get("type")
        if kind == "message_start":
            message = as_dict(obj.get("message"))
            result.response_id = as_str(message.get("id"))
            result.model = as_str(message.get("model")) or result.model
            _usage(as_dict(message.get("usage")), result)
        elif kind == "content_block_start":
            index = as_int(obj.get("index"))
            block = as_dict(obj.get("content_block"))
            if index is None:
                continue
            blocks[index] = {"type": block.get("type"), "id": as_str(block.get("id")),
                             "name": as_str(block.get("name")), "parts": [str(block.get("text") or "")]}
        elif kind == "content_block_delta":
            index = as_int(obj.get("index"))
            delta = as_dict(obj.get("delta"))
            dtype = delta.get("type")
            if dtype in _CONTENT_DELTAS:
                result.token_at(ts_ns)
            if index is None or index not in blocks:
                continue
            if dtype == "text_delta":
                blocks[index]["parts"].append(str(delta.get("text", "")))
            elif dtype == "input_json_delta":
                blocks[index]["parts"].append(str(delta.get("partial_json", "")))
        elif kind == "message_delta":
            delta = as_dict(obj.get("delta"))
            result.finish_reason = as_str(delta.get("stop_reason")) or result.finish_reason
            # message_delta usage is cumulative: output_tokens is final here; input counts, when
            # present, repeat message_start's.
            _usage(as_dict(obj.get("usage")), result, output_only=result.input_tokens is not None)
        elif kind == "error":
            result.error = error_message(obj)
    for index in sorted(blocks):
        block = blocks[index]
        if block["type"] == "text":
            result.text_parts.append("".join(block["parts"]))
        elif block["type"] in _TOOL_BLOCKS:
            result.tool_calls.append(tool_call(block["id"], block["name"], "".join(block["parts"])))
