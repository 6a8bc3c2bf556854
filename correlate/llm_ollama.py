"""Ollama's native API (``POST …/api/chat`` and ``…/api/generate``), one JSON object or NDJSON.

Local models are reached this way over plain HTTP (Ollama on port 11434, and servers imitating
it). Unlike the hosted APIs it streams unless the request says ``"stream": false``, and a stream
is newline-delimited JSON (``application/x-ndjson``), not SSE: one object per line, the last with
``"done": true``, ``done_reason`` and the token counts (``prompt_eval_count``, ``eval_count``).
Tool calls (chat only) arrive whole in one line, arguments as an object; Ollama gives them no id
unless a newer server adds one. Ollama has no response id.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vigild.correlate.body import BodyBuffer
from vigild.correlate.exchange import HttpMessage
from vigild.correlate.llm_common import (
    LlmResult,
    as_dict,
    as_int,
    as_list,
    as_str,
    error_message,
    parse_json,
    tool_call,
)

PROVIDER = "ollama"


def path_matches(method: str, path: str) -> bool:
    return method == "POST" and (path.endswith("/api/chat") or path.endswith("/api/generate"))


def matches(method: str, path: str, request: Any) -> bool:
    """``…/api/chat`` with a ``messages`` list, or ``…/api/generate`` with a ``prompt`` string,
    both naming a model."""
    if not path_matches(method, path) or not isinstance(request, dict) or not isinstance(request.get("model"), str):
        return False
    if path.endswith("/api/chat"):
        return isinstance(request.get("messages"), list)
    return isinstance(request.get("prompt"), str)


def decode(request: dict[str, Any], response: HttpMessage | None) -> LlmResult:
    result = LlmResult(PROVIDER, model=as_str(request.get("model")), stream=request.get("stream") is not False)
    result.request_tools = [str(as_dict(t.get("function")).get("name") or t.get("type"))
                            for t in as_list(request.get("tools")) if isinstance(t, dict)]
    messages = request.get("messages")
    result.request_messages = list(messages) if isinstance(messages, list) else \
        [{"role": "user", "content": request.get("prompt")}]
    if response is None:
        return result
    for ts_ns, obj in _lines(response.body, result):
        if "error" in obj and "done" not in obj:
            result.error = error_message(obj)
            continue
        _line(ts_ns, obj, result)
    if response.status >= 400 and result.error is None:
        result.error = f"HTTP {response.status}"
    return result


def _line(ts_ns: int, obj: dict[str, Any], result: LlmResult) -> None:
    result.model = as_str(obj.get("model")) or result.model
    message = as_dict(obj.get("message"))
    text = message.get("content") if message else obj.get("response")
    if isinstance(text, str) and text:
        result.token_at(ts_ns)
        result.text_parts.append(text)
    for call in as_list(message.get("tool_calls")):
        if isinstance(call, dict):
            result.token_at(ts_ns)
            function = as_dict(call.get("function"))
            result.tool_calls.append(tool_call(as_str(call.get("id")), as_str(function.get("name")),
                                               function.get("arguments")))
    if obj.get("done") is True:
        result.finish_reason = as_str(obj.get("done_reason"))
        result.input_tokens = as_int(obj.get("prompt_eval_count"))
        result.output_tokens = as_int(obj.get("eval_count"))


def _lines(body: BodyBuffer, result: LlmResult) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each JSON object of the body with the ts of its last byte; a single JSON body is one line.

    A gap in the capture (a None segment) drops the line it cut; an unparseable line in a body
    the capture did not cut is recorded once as an ``invalid_json`` problem."""
    partial = b""
    reported = False
    last_ts = 0
    for ts_ns, segment in body.segments:
        last_ts = ts_ns
        if segment is None:
            partial = b""
            continue
        partial += segment
        *complete, partial = partial.split(b"\n")
        for raw in complete:
            obj, reported = _parse(raw, result, body.truncated, reported)
            if obj is not None:
                yield ts_ns, obj
    obj, reported = _parse(partial, result, body.truncated, reported)
    if obj is not None:
        yield last_ts, obj


def _parse(raw: bytes, result: LlmResult, truncated: bool, reported: bool) -> tuple[dict[str, Any] | None, bool]:
    if not raw.strip():
        return None, reported
    try:
        obj = parse_json(raw, result.problems)
    except ValueError as exc:
        if not truncated and not reported:
            result.invalid_json("NDJSON line", exc)
            reported = True
        return None, reported
    return (obj if isinstance(obj, dict) else None), reported
