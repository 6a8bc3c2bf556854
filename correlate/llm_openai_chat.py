"""OpenAI Chat Completions (``POST …/chat/completions``), plain JSON and streamed chunks.

The same wire format is served by many OpenAI-compatible endpoints (Azure OpenAI deployments,
OpenRouter, vLLM, Ollama), which is why the path is matched by suffix and the body by shape.
Streamed tool calls arrive as fragments keyed by ``index``: id and function name in the first
fragment of an index, ``arguments`` as string pieces to concatenate. Only choice 0 is decoded;
agents do not request ``n > 1``.
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


def path_matches(method: str, path: str) -> bool:
    return method == "POST" and path.endswith("/chat/completions")


def matches(method: str, path: str, request: Any) -> bool:
    """``POST …/chat/completions`` whose body is a chat request (``messages`` list)."""
    return path_matches(method, path) and isinstance(request, dict) and isinstance(request.get("messages"), list)


def _tool_name(tool: dict[str, Any]) -> str:
    return str(as_dict(tool.get("function")).get("name") or tool.get("name") or tool.get("type"))


def decode(request: dict[str, Any], response: HttpMessage | None) -> LlmResult:
    result = LlmResult(PROVIDER, model=as_str(request.get("model")), stream=request.get("stream") is True)
    result.request_tools = [_tool_name(t) for t in as_list(request.get("tools")) if isinstance(t, dict)]
    result.request_messages = list(as_list(request.get("messages")))
    if response is None:
        return result
    if is_event_stream(response):
        result.stream = True
        _decode_stream(response, result)
        return result
    obj = load_body_json(response.body, result, "response body")
    if response.status >= 400 or (isinstance(obj, dict) and "error" in obj and "choices" not in obj):
        result.error = error_message(obj)
        return result
    if isinstance(obj, dict):
        _decode_completion(obj, result)
    return result


def _usage(usage: dict[str, Any], result: LlmResult) -> None:
    if not usage:
        return
    result.input_tokens = as_int(usage.get("prompt_tokens"))
    result.output_tokens = as_int(usage.get("completion_tokens"))
    cached = as_int(as_dict(usage.get("prompt_tokens_details")).get("cached_tokens"))
    if cached is not None:
        result.cache_read_input_tokens = cached


def _choice0(obj: dict[str, Any]) -> dict[str, Any]:
    for choice in as_list(obj.get("choices")):
        if isinstance(choice, dict) and as_int(choice.get("index")) in (0, None):
            return choice
    return {}


def _decode_completion(obj: dict[str, Any], result: LlmResult) -> None:
    result.response_id = as_str(obj.get("id"))
    result.model = as_str(obj.get("model")) or result.model
    choice = _choice0(obj)
    message = as_dict(choice.get("message"))
    content = message.get("content")
    if isinstance(content, str):
        result.text_parts.append(content)
    for call in as_list(message.get("tool_calls")):
        if isinstance(call, dict):
            function = as_dict(call.get("function"))
            result.tool_calls.append(tool_call(as_str(call.get("id")), as_str(function.get("name")),
                                               function.get("arguments")))
    result.finish_reason = as_str(choice.get("finish_reason"))
    _usage(as_dict(obj.get("usage")), result)


def _decode_stream(response: HttpMessage, result: LlmResult) -> None:
    calls: dict[int, dict[str, Any]] = {}
    for ts_ns, _event, obj in sse_json(sse_events(response.body), result, response.body.truncated):
        if "error" in obj and "choices" not in obj:
            result.error = error_message(obj)
            continue
        result.response_id = result.response_id or as_str(obj.get("id"))
        result.model = as_str(obj.get("model")) or result.model
        _usage(as_dict(obj.get("usage")), result)
        choice = _choice0(obj)
        if not choice:
            continue
        delta = as_dict(choice.get("delta"))
        content = delta.get("content")
        if isinstance(content, str) and content:
            result.token_at(ts_ns)
            result.text_parts.append(content)
        for fragment in as_list(delta.get("tool_calls")):
            if not isinstance(fragment, dict):
                continue
            result.token_at(ts_ns)
            index = as_int(fragment.get("index"))
            index = len(calls) if index is None else index
            call = calls.setdefault(index, {"id": None, "name": None, "arguments": []})
            function = as_dict(fragment.get("function"))
            call["id"] = call["id"] or as_str(fragment.get("id"))
            call["name"] = call["name"] or as_str(function.get("name"))
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                call["arguments"].append(arguments)
        if choice.get("finish_reason"):
            result.finish_reason = as_str(choice.get("finish_reason"))
    result.tool_calls = [tool_call(c["id"], c["name"], "".join(c["arguments"])) for _, c in sorted(calls.items())]
