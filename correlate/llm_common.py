"""Shared pieces of the provider decoders: the result record, JSON and SSE helpers, tool calls.

Provider decoders differ in wire shapes only; what they extract (model, text, tool calls, token
usage, time of the first generated token) is the same, so it is collected in one record that the
event builder turns into an ``LlmCall``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from vigild.correlate.body import BodyBuffer
from vigild.correlate.exchange import HttpMessage
from vigild.correlate.sse import SseDecoder, SseEvent


@dataclass
class LlmResult:
    """What one provider decoder extracted from a request/response pair."""

    provider: str
    model: str | None = None
    stream: bool = False
    text_parts: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    finish_reason: str | None = None
    first_token_ts: int | None = None
    response_id: str | None = None
    error: str | None = None
    request_tools: list[str] = field(default_factory=list)
    request_messages: list[Any] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def token_at(self, ts_ns: int) -> None:
        """Record the arrival of generated content; only the first one matters (TTFT)."""
        if self.first_token_ts is None:
            self.first_token_ts = ts_ns

    def invalid_json(self, what: str, exc: ValueError | str) -> None:
        self.problems.append(("invalid_json", f"{what}: {exc}"))


# Deeper JSON than this is cut (the subtree replaced by TOO_DEEP): no provider nests its wire
# format past ~10 levels, while a body nested ~1,000 deep would otherwise raise RecursionError in
# every recursive walk after the parser (redaction, dataclasses.asdict, the sinks' json.dumps).
MAX_JSON_DEPTH = 64
TOO_DEEP = "[nested too deep]"


def parse_json(data: bytes | str, problems: list[tuple[str, str]] | None = None) -> Any:
    """``json.loads`` that accepts bytes with a BOM and never returns more than MAX_JSON_DEPTH levels.

    Raises ValueError on anything invalid, including nesting the C parser itself refuses
    (RecursionError). Subtrees past the depth cap are replaced by :data:`TOO_DEEP` and, when
    ``problems`` is given, counted there as a ``json_too_deep`` problem; the rest is kept.
    """
    if isinstance(data, bytes):
        data = data.decode("utf-8-sig", errors="strict")
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested deeper than the parser allows") from None
    # Fewer opening brackets than the cap cannot nest past it: skips the walk for almost every body.
    if data.count("[") + data.count("{") > MAX_JSON_DEPTH and _cut_deep(value) and problems is not None \
            and all(reason != "json_too_deep" for reason, _ in problems):
        problems.append(("json_too_deep", f"JSON nested deeper than {MAX_JSON_DEPTH} levels was cut"))
    return value


def _cut_deep(root: Any) -> bool:
    """Replace containers deeper than MAX_JSON_DEPTH by TOO_DEEP, in place, without recursion."""
    cut = False
    stack: list[tuple[Any, int]] = [(root, 1)] if isinstance(root, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        entries = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        for key, child in entries:
            if not isinstance(child, (dict, list)):
                continue
            if depth >= MAX_JSON_DEPTH:
                node[key] = TOO_DEEP
                cut = True
            else:
                stack.append((child, depth + 1))
    return cut


def load_body_json(body: BodyBuffer, result: LlmResult, what: str) -> Any:
    """Parse a whole body as JSON; on failure record an ``invalid_json`` problem and return None.

    A body the capture truncated is expected to be unparseable; that is already reported through
    ``truncated`` and a gap/cap problem, so it is not counted twice.
    """
    raw = body.content()
    if not raw.strip():
        return None
    try:
        return parse_json(raw, result.problems)
    except ValueError as exc:
        if not body.truncated:
            result.invalid_json(what, exc)
        return None


def is_event_stream(response: HttpMessage) -> bool:
    content_type = (response.header("content-type") or "").lower()
    return content_type.startswith("text/event-stream")


def sse_events(body: BodyBuffer) -> Iterator[tuple[int, SseEvent]]:
    """Replay a body through the SSE decoder, yielding each event with the ts of its last byte."""
    decoder = SseDecoder()
    for ts_ns, segment in body.segments:
        if segment is None:
            decoder.reset_partial()
            continue
        for event in decoder.feed(segment):
            yield ts_ns, event
    last_ts = body.segments[-1][0] if body.segments else 0
    for event in decoder.finish():
        yield last_ts, event


def sse_json(events: Iterator[tuple[int, SseEvent]], result: LlmResult,
             truncated: bool) -> Iterator[tuple[int, SseEvent, Any]]:
    """Parse each event's data as JSON; ``[DONE]`` and undecodable events are skipped.

    Invalid JSON in an untruncated stream is recorded once per stream (a server bug or a
    non-LLM stream), never raised.
    """
    reported = False
    for ts_ns, event in events:
        data = event.data.strip()
        if not data or data == "[DONE]":
            continue
        try:
            obj = parse_json(data, result.problems)
        except ValueError as exc:
            if not truncated and not reported:
                result.invalid_json(f"SSE event {event.event!r}", exc)
                reported = True
            continue
        if isinstance(obj, dict):
            yield ts_ns, event, obj


def tool_call(call_id: str | None, name: str | None, arguments: Any) -> dict[str, Any]:
    """Normalised tool call: JSON-string arguments are parsed; invalid JSON is kept raw with an error."""
    if isinstance(arguments, str):
        if not arguments.strip():
            return {"id": call_id, "name": name, "arguments": {}}
        problems: list[tuple[str, str]] = []
        try:
            parsed = parse_json(arguments, problems)
        except ValueError as exc:
            return {"id": call_id, "name": name, "arguments_raw": arguments, "error": f"invalid JSON: {exc}"}
        if problems:
            return {"id": call_id, "name": name, "arguments": parsed, "error": problems[0][1]}
        return {"id": call_id, "name": name, "arguments": parsed}
    return {"id": call_id, "name": name, "arguments": arguments if arguments is not None else {}}


def error_message(obj: Any) -> str | None:
    """The human message of a provider error body ({"error": {...}} in all three APIs)."""
    if not isinstance(obj, dict):
        return None
    err = obj.get("error")
    if isinstance(err, dict):
        message = err.get("message")
        kind = err.get("type") or err.get("status") or err.get("code")
        if message and kind:
            return f"{kind}: {message}"
        return str(message or kind or err)
    if isinstance(err, str):
        return err
    return None


def as_int(value: Any) -> int | None:
    """Token counts as int; anything else (missing, null, malformed) as None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
