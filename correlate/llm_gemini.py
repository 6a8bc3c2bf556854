"""Google Gemini ``…/models/{model}:generateContent`` and ``:streamGenerateContent``.

Covers the Generative Language API (``/v1beta/models/…``) and Vertex AI
(``/v1/projects/…/publishers/google/models/…``), which share the body format. A streamed call
is SSE with ``?alt=sse``; without it the server streams one JSON array whose elements arrive over
time, so those elements are split incrementally (see :class:`JsonArraySplitter`) to learn when
the first one arrived. Each element is a complete ``GenerateContentResponse`` holding the next
piece of text; ``usageMetadata`` is cumulative, so the last one counts.
"""

from __future__ import annotations

import re
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
    parse_json,
    sse_events,
    sse_json,
    tool_call,
)

PROVIDER = "gemini"
_PATH = re.compile(r"/models/([^/:]+):(generateContent|streamGenerateContent)\Z")


def path_matches(method: str, path: str) -> bool:
    return method == "POST" and _PATH.search(path) is not None


def matches(method: str, path: str, request: Any) -> bool:
    """``POST …/models/{model}:(stream)generateContent`` whose body has ``contents``."""
    return path_matches(method, path) and isinstance(request, dict) and isinstance(request.get("contents"), list)


class JsonArraySplitter:
    """Yields the top-level elements of a JSON array as their last byte arrives.

    Hand-written because the standard library has no incremental JSON parser and the only job
    here is to find element boundaries (depth and string state), not to build values: each
    element is then parsed with ``json``. The state machine works on bytes; UTF-8 continuation
    bytes never collide with the ASCII structural characters, so multibyte text is safe.
    """

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._current = bytearray()

    def reset(self) -> None:
        """Bytes were lost: drop the element in progress; depth is assumed back at the array level."""
        self._depth = 1 if self._depth else 0
        self._in_string = False
        self._escape = False
        self._current = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        elements: list[bytes] = []
        start = 0 if self._depth >= 2 else None
        for i, byte in enumerate(data):
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif byte == 0x5C:  # backslash
                    self._escape = True
                elif byte == 0x22:  # quote
                    self._in_string = False
                continue
            if byte == 0x22:
                self._in_string = True
            elif byte in (0x7B, 0x5B):  # { [
                self._depth += 1
                if self._depth == 2:
                    start = i
            elif byte in (0x7D, 0x5D):  # } ]
                self._depth = max(0, self._depth - 1)
                if self._depth == 1 and start is not None:
                    self._current += data[start:i + 1]
                    elements.append(bytes(self._current))
                    self._current = bytearray()
                    start = None
        if start is not None:
            self._current += data[start:]
        return elements


def decode(request: dict[str, Any], response: HttpMessage | None, path: str) -> LlmResult:
    match = _PATH.search(path)
    result = LlmResult(PROVIDER, model=match.group(1) if match else None,
                       stream=bool(match and match.group(2) == "streamGenerateContent"))
    for tool in as_list(request.get("tools")):
        declarations = as_dict(tool).get("functionDeclarations") or as_dict(tool).get("function_declarations")
        for declaration in as_list(declarations):
            result.request_tools.append(str(as_dict(declaration).get("name")))
        for key in as_dict(tool):
            if key not in ("functionDeclarations", "function_declarations"):
                result.request_tools.append(key)
    system = request.get("systemInstruction") or request.get("system_instruction")
    if system:
        result.request_messages.append({"role": "system", "content": system})
    result.request_messages.extend(as_list(request.get("contents")))
    if response is None:
        return result
    if response.status >= 400:
        result.error = error_message(_first_error(load_body_json(response.body, result, "error body")))
        return result
    if is_event_stream(response):
        for ts_ns, _event, obj in sse_json(sse_events(response.body), result, response.body.truncated):
            _chunk(obj, ts_ns, result)
    elif result.stream:
        _decode_json_array(response, result)
    else:
        obj = load_body_json(response.body, result, "response body")
        if isinstance(obj, dict):
            _chunk(obj, response.end_ts or response.start_ts, result)
    return result


def _first_error(obj: Any) -> Any:
    """Errors in a streamed call come as a one-element array."""
    if isinstance(obj, list) and obj:
        return obj[0]
    return obj


def _decode_json_array(response: HttpMessage, result: LlmResult) -> None:
    splitter = JsonArraySplitter()
    reported = False
    for ts_ns, segment in response.body.segments:
        if segment is None:
            splitter.reset()
            continue
        for element in splitter.feed(segment):
            try:
                obj = parse_json(element, result.problems)
            except ValueError as exc:
                if not response.body.truncated and not reported:
                    result.invalid_json("streamed array element", exc)
                    reported = True
                continue
            if isinstance(obj, dict):
                _chunk(obj, ts_ns, result)


def _chunk(obj: dict[str, Any], ts_ns: int, result: LlmResult) -> None:
    if "error" in obj and "candidates" not in obj:
        result.error = error_message(obj)
        return
    result.response_id = as_str(obj.get("responseId")) or result.response_id
    result.model = result.model or as_str(obj.get("modelVersion"))
    for candidate in as_list(obj.get("candidates")):
        candidate = as_dict(candidate)
        if as_int(candidate.get("index")) not in (0, None):
            continue
        for part in as_list(as_dict(candidate.get("content")).get("parts")):
            part = as_dict(part)
            call = part.get("functionCall") or part.get("function_call")
            if isinstance(call, dict):
                result.token_at(ts_ns)
                result.tool_calls.append(tool_call(as_str(call.get("id")), as_str(call.get("name")), call.get("args")))
            elif isinstance(part.get("text"), str) and not part.get("thought"):
                if part["text"]:
                    result.token_at(ts_ns)
                result.text_parts.append(part["text"])
        reason = as_str(candidate.get("finishReason") or candidate.get("finish_reason"))
        result.finish_reason = reason or result.finish_reason
    usage = as_dict(obj.get("usageMetadata"))
    if usage:
        result.input_tokens = as_int(usage.get("promptTokenCount"))
        result.output_tokens = as_int(usage.get("candidatesTokenCount"))
        cached = as_int(usage.get("cachedContentTokenCount"))
        if cached is not None:
            result.cache_read_input_tokens = cached
