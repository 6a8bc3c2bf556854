"""OpenAI Responses API (``POST …/v1/responses``), plain JSON and streamed typed events.

The final ``response.completed`` event (or the non-streamed body) carries the complete ``output``
list; when it is present it is authoritative. The deltas (``response.output_text.delta``,
``response.function_call_arguments.delta``, items from ``response.output_item.added``/``.done``)
are still assembled so that a stream cut before completion yields what was generated, and so the
first delta gives the time to first token.
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

PROVIDER = "openai"
_TEXT_DELTAS = ("response.output_text.delta", "response.function_call_arguments.delta",
                "response.reasoning_summary_text.delta", "response.refusal.delta")


def path_matches(method: str, path: str) -> bool:
    return method == "POST" and path.endswith("/responses")


def matches(method: str, path: str, request: Any) -> bool:
    """``POST …/responses`` whose body is a Responses request: a model plus input or a prompt."""
    return (path_matches(method, path) and isinstance(request, dict) and isinstance(request.get("model"), str)
            and any(key in request for key in ("input", "prompt", "previous_response_id"))
            and "messages" not in request)


def decode(request: dict[str, Any], response: HttpMessage | None) -> LlmResult:
    result = LlmResult(PROVIDER, model=as_str(request.get("model")), stream=request.get("stream") is True)
    result.request_tools = [str(t.get("name") or t.get("type")) for t in as_list(request.get("tools"))
                            if isinstance(t, dict)]
    if request.get("instructions"):
        result.request_messages.append({"role": "system", "content": request.get("instructions")})
    given = request.get("input")
    if isinstance(given, str):
        result.request_messages.append({"role": "user", "content": given})
    else:
        result.request_messages.extend(as_list(given))
    if response is None:
        return result
    if is_event_stream(response):
        result.stream = True
        _decode_stream(response, result)
        return result
    obj = load_body_json(response.body, result, "response body")
    if response.status >= 400 or (isinstance(obj, dict) and obj.get("error") and not obj.get("output")):
        result.error = error_message(obj)
        return result
    if isinstance(obj, dict):
        _decode_response(obj, result)
    return result


def _finish(obj: dict[str, Any], result: LlmResult) -> None:
    """Responses has no finish_reason: the status, or why the response is incomplete."""
    reason = as_str(as_dict(obj.get("incomplete_details")).get("reason"))
    result.finish_reason = reason or as_str(obj.get("status")) or result.finish_reason
    if isinstance(obj.get("error"), dict):
        result.error = error_message(obj)


def _usage(usage: dict[str, Any], result: LlmResult) -> None:
    if not usage:
        return
    result.input_tokens = as_int(usage.get("input_tokens"))
    result.output_tokens = as_int(usage.get("output_tokens"))
    cached = as_int(as_dict(usage.get("input_tokens_details")).get("cached_tokens"))
    if cached is not None:
        result.cache_read_input_tokens = cached


def _items(items: list[Any], result: LlmResult) -> None:
    result.text_parts = []
    result.tool_calls = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            for part in as_list(item.get("content")):
                if isinstance(part, dict) and part.get("type") == "output_text":
                    result.text_parts.append(str(part.get("text", "")))
        elif item.get("type") == "function_call":
            result.tool_calls.append(tool_call(as_str(item.get("call_id")) or as_str(item.get("id")),
                                               as_str(item.get("name")), item.get("arguments")))


def _decode_response(obj: dict[str, Any], result: LlmResult) -> None:
    result.response_id = as_str(obj.get("id")) or result.response_id
    result.model = as_str(obj.get("model")) or result.model
    _items(as_list(obj.get("output")), result)
    _finish(obj, result)
    _usage(as_dict(obj.get("usage")), result)


def _decode_stream(response: HttpMessage, result: LlmResult) -> None:
    # Items by output_index, assembled from deltas; replaced by .done items and the final output.
    items: dict[int, dict[str, Any]] = {}
    final: dict[str, Any] | None = None
    for ts_ns, event, obj in sse_json(sse_events(response.body), result, response.body.truncated):
        kind = obj.get("type") or event.event
        index = as_int(obj.get("output_index"))
        if kind in _TEXT_DELTAS:
            result.token_at(ts_ns)
        if kind == "response.created" or kind == "response.in_progress":
            created = as_dict(obj.get("response"))
            result.response_id = as_str(created.get("id")) or result.response_id
            result.model = as_str(created.get("model")) or result.model
        elif kind in ("response.output_item.added", "response.output_item.done") and index is not None:
            item = dict(as_dict(obj.get("item")))
            if item.get("type") == "message" and kind.endswith(".added"):
                item["content"] = [{"type": "output_text", "text": ""}]
            items[index] = item
        elif kind == "response.output_text.delta" and index is not None:
            item = items.setdefault(index, {"type": "message", "content": [{"type": "output_text", "text": ""}]})
            parts = as_list(item.get("content")) or [{"type": "output_text", "text": ""}]
            item["content"] = parts
            last = parts[-1] if isinstance(parts[-1], dict) else {}
            last["text"] = str(last.get("text", "")) + str(obj.get("delta", ""))
        elif kind == "response.function_call_arguments.delta" and index is not None:
            item = items.setdefault(index, {"type": "function_call", "arguments": ""})
            item["arguments"] = str(item.get("arguments") or "") + str(obj.get("delta", ""))
        elif kind == "response.function_call_arguments.done" and index is not None:
            item = items.setdefault(index, {"type": "function_call"})
            if isinstance(obj.get("arguments"), str):
                item["arguments"] = obj["arguments"]
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            final = as_dict(obj.get("response"))
        elif kind == "error":
            result.error = error_message({"error": obj}) if "message" in obj else error_message(obj)
    if final is not None and as_list(final.get("output")):
        _decode_response(final, result)
        return
    _items([items[i] for i in sorted(items)], result)
    if final is not None:
        result.response_id = as_str(final.get("id")) or result.response_id
        _finish(final, result)
        _usage(as_dict(final.get("usage")), result)
