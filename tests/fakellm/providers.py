"""Wire formats of the four LLM APIs the fake server imitates.

Everything here is pure (request JSON + :class:`~fakellm.scripts.Reply` in, bytes out), so the
transport code in :mod:`fakellm.server` only moves bytes.  The payloads copy the real APIs field
for field — ids with the real prefixes and shapes, ``object``/``type`` fields, ``created``
timestamps, the exact SSE event order — because the official SDKs parse them with their own
models and the tracer's decoders must be tested against the real shapes, not simplified ones.
"""

from __future__ import annotations

import json
import secrets
import string
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from .scripts import Reply, Scenario, split_pieces

_BASE62 = string.ascii_letters + string.digits


def _rand(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _hex(n: int) -> str:
    return secrets.token_hex((n + 1) // 2)[:n]


def _dumps(obj: Any) -> str:
    """Compact JSON with raw UTF-8, as the real APIs send it (no ``\\uXXXX`` escapes)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@dataclass
class ToolCallRecord:
    """A tool call as it went out on the wire (``id`` is ``None`` for Gemini, which has none)."""

    id: str | None
    name: str
    arguments: dict[str, Any]


@dataclass
class LLMResponse:
    """The structured content of one response, for comparing against what a tracer decoded.

    ``finish_reason`` is the provider's own value (``tool_use``, ``tool_calls``, ``STOP``,
    ``completed`` …); ``response_id`` is the top-level id (``msg_…``, ``chatcmpl-…``, ``resp_…``,
    Gemini ``responseId``).
    """

    provider: str
    model: str
    response_id: str
    text: str
    tool_calls: list[ToolCallRecord]
    input_tokens: int
    output_tokens: int
    finish_reason: str
    stream: bool


@dataclass
class Rendered:
    """A response ready for the transport: either ``body`` or a list of stream ``events``."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | None = None
    events: list[bytes] | None = None
    response: LLMResponse | None = None
    error: str | None = None


@dataclass(frozen=True)
class Route:
    """Which dialect a request path speaks; Gemini puts model and streaming in the URL."""

    provider: str
    model_from_path: str | None = None
    gemini_stream: bool = False
    gemini_sse: bool = False


def route(method: str, target: str) -> Route | None:
    """Map ``POST`` + request target to a dialect, or ``None`` for "not an LLM call"."""
    if method != "POST":
        return None
    parsed = urllib.parse.urlsplit(target)
    path = parsed.path
    if path == "/v1/messages":
        return Route("anthropic")
    if path == "/v1/chat/completions":
        return Route("openai_chat")
    if path == "/v1/responses":
        return Route("openai_responses")
    if path == "/api/chat":
        return Route("ollama_chat")
    if path == "/api/generate":
        return Route("ollama_generate")
    prefix = "/v1beta/models/"
    if path.startswith(prefix) and ":" in path:
        model, _, verb = path[len(prefix) :].rpartition(":")
        if verb in ("generateContent", "streamGenerateContent"):
            query = urllib.parse.parse_qs(parsed.query)
            return Route(
                "gemini",
                model_from_path=urllib.parse.unquote(model),
                gemini_stream=verb == "streamGenerateContent",
                gemini_sse=query.get("alt") == ["sse"],
            )
    return None


@dataclass
class _Ctx:
    """Per-request values shared by the renderers."""

    reply: Reply
    scenario: Scenario
    request: dict[str, Any]
    model: str
    stream: bool
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))


def _sse(data: str, event: str | None = None, sep: str = "\n\n") -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}{sep}".encode()


def render(route_: Route, request: Any, scenario: Scenario) -> Rendered:
    """Build the response for one LLM request according to ``scenario``."""
    provider = route_.provider
    if not isinstance(request, dict):
        return _error(provider, 400, "invalid_request_error", "request body is not a JSON object")
    if scenario.error_status is not None:
        kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(scenario.error_status, "api_error")
        return _error(provider, scenario.error_status, kind, f"fake {kind} (scenario {scenario.name})")
    reply = scenario.reply_for(provider, request)
    if provider == "gemini":
        stream = route_.gemini_stream
        model = reply.model or route_.model_from_path or "gemini-2.5-flash"
    elif provider.startswith("ollama"):
        stream = request.get("stream") is not False  # Ollama streams unless told not to
        model = reply.model or str(request.get("model") or "unknown-model")
    else:
        stream = request.get("stream") is True
        model = reply.model or str(request.get("model") or "unknown-model")
    ctx = _Ctx(reply=reply, scenario=scenario, request=request, model=model, stream=stream)
    if provider == "anthropic":
        return _anthropic(ctx)
    if provider == "openai_chat":
        return _openai_chat(ctx)
    if provider == "openai_responses":
        return _openai_responses(ctx)
    if provider.startswith("ollama"):
        return _ollama(ctx, chat=provider == "ollama_chat")
    return _gemini(ctx, sse=route_.gemini_sse)


def _json_headers() -> list[tuple[str, str]]:
    return [("content-type", "application/json")]


def _sse_headers() -> list[tuple[str, str]]:
    return [("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache")]


def _error(provider: str, status: int, kind: str, message: str) -> Rendered:
    """The provider's own error envelope, so SDKs raise their typed exceptions."""
    if provider == "anthropic":
        body: dict[str, Any] = {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": "req_011C" + _rand(_BASE62, 20),
        }
    elif provider == "gemini":
        grpc = {429: "RESOURCE_EXHAUSTED", 400: "INVALID_ARGUMENT"}.get(status, "UNAVAILABLE")
        body = {"error": {"code": status, "message": message, "status": grpc}}
    else:
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return Rendered(status=status, headers=_json_headers(), body=_dumps(body).encode(), error=kind)


# --------------------------------------------------------------------------- Anthropic Messages


def _anthropic(ctx: _Ctx) -> Rendered:
    reply = ctx.reply
    msg_id = "msg_01" + _rand(_BASE62, 22)
    ctx.tool_calls = [
        ToolCallRecord(tc.id or "toolu_01" + _rand(_BASE62, 22), tc.name, dict(tc.arguments))
        for tc in reply.tool_calls
    ]
    stop_reason = reply.finish_reason or ("tool_use" if ctx.tool_calls else "end_turn")
    headers_extra = [("request-id", "req_011C" + _rand(_BASE62, 20))]
    usage = {
        "input_tokens": reply.input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": reply.output_tokens,
        "service_tier": "standard",
    }
    response = LLMResponse(
        provider="anthropic",
        model=ctx.model,
        response_id=msg_id,
        text=reply.text,
        tool_calls=ctx.tool_calls,
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
        finish_reason=stop_reason,
        stream=ctx.stream,
    )
    blocks: list[dict[str, Any]] = []
    if reply.text:
        blocks.append({"type": "text", "text": reply.text})
    blocks += [{"type": "tool_use", "id": t.id, "name": t.name, "input": t.arguments} for t in ctx.tool_calls]
    if not ctx.stream:
        body = {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": ctx.model,
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        return Rendered(200, _json_headers() + headers_extra, body=_dumps(body).encode(), response=response)

    def ev(name: str, data: dict[str, Any]) -> bytes:
        return _sse(_dumps(data), event=name)

    start_usage = dict(usage, output_tokens=1)
    events = [
        ev(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": ctx.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        )
    ]
    ping = _sse('{"type": "ping"}', event="ping")
    pieces = ctx.scenario.piece_chars
    for index, block in enumerate(blocks):
        start: dict[str, Any]
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
        else:
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        events.append(
            ev("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
        )
        if index == 0:
            events.append(ping)
        if block["type"] == "text":
            deltas = [{"type": "text_delta", "text": p} for p in split_pieces(block["text"], pieces)]
        else:
            # The real API opens every tool_use block with an empty partial_json.
            raw = json.dumps(block["input"], ensure_ascii=False)
            deltas = [
                {"type": "input_json_delta", "partial_json": p} for p in ["", *split_pieces(raw, pieces)]
            ]
        for delta in deltas:
            events.append(
                ev("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            )
        events.append(ev("content_block_stop", {"type": "content_block_stop", "index": index}))
    if not blocks:
        events.append(ping)
    events.append(
        ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": reply.output_tokens},
            },
        )
    )
    events.append(ev("message_stop", {"type": "message_stop"}))
    return Rendered(200, _sse_headers() + headers_extra, events=events, response=response)


# ---------------------------------------------------------------------- OpenAI Chat Completions


def _openai_usage(reply: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _openai_headers() -> list[tuple[str, str]]:
    return [("x-request-id", "req_" + _hex(32)), ("openai-processing-ms", "42")]


def _openai_chat(ctx: _Ctx) -> Rendered:
    reply = ctx.reply
    cmpl_id = reply.response_id or "chatcmpl-" + _rand(_BASE62, 29)
    fingerprint = "fp_" + _hex(10)
    ctx.tool_calls = [
        ToolCallRecord(tc.id or "call_" + _rand(_BASE62, 24), tc.name, dict(tc.arguments))
        for tc in reply.tool_calls
    ]
    finish = reply.finish_reason or ("tool_calls" if ctx.tool_calls else "stop")
    response = LLMResponse(
        provider="openai_chat",
        model=ctx.model,
        response_id=cmpl_id,
        text=reply.text,
        tool_calls=ctx.tool_calls,
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
        finish_reason=finish,
        stream=ctx.stream,
    )
    arguments = [_dumps(t.arguments) for t in ctx.tool_calls]
    if not ctx.stream:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text or None,
            "refusal": None,
            "annotations": [],
        }
        if ctx.tool_calls:
            message["tool_calls"] = [
                {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": a}}
                for t, a in zip(ctx.tool_calls, arguments, strict=True)
            ]
        body = {
            "id": cmpl_id,
            "object": "chat.completion",
            "created": ctx.created,
            "model": ctx.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": _openai_usage(reply),
            "service_tier": "default",
            "system_fingerprint": fingerprint,
        }
        return Rendered(
            200, _json_headers() + _openai_headers(), body=_dumps(body).encode(), response=response
        )

    options = ctx.request.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        obj: dict[str, Any] = {
            "id": cmpl_id,
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": ctx.model,
            "service_tier": "default",
            "system_fingerprint": fingerprint,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            obj["usage"] = None
        return _sse(_dumps(obj))

    pieces = ctx.scenario.piece_chars
    events = [chunk({"role": "assistant", "content": "" if reply.text else None, "refusal": None})]
    if reply.text:
        events += [chunk({"content": p}) for p in split_pieces(reply.text, pieces)]
    for index, (tool, args) in enumerate(zip(ctx.tool_calls, arguments, strict=True)):
        first = {
            "index": index,
            "id": tool.id,
            "type": "function",
            "function": {"name": tool.name, "arguments": ""},
        }
        events.append(chunk({"tool_calls": [first]}))
        events += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]})
            for p in split_pieces(args, pieces)
        ]
    events.append(chunk({}, finish_reason=finish))
    if include_usage:
        events.append(
            _sse(
                _dumps(
                    {
                        "id": cmpl_id,
                        "object": "chat.completion.chunk",
                        "created": ctx.created,
                        "model": ctx.model,
                        "service_tier": "default",
                        "system_fingerprint": fingerprint,
                        "choices": [],
                        "usage": _openai_usage(reply),
                    }
                )
            )
        )
    events.append(_sse("[DONE]"))
    return Rendered(200, _sse_headers() + _openai_headers(), events=events, response=response)


# ------------------------------------------------------------------------ OpenAI Responses API


def _openai_responses(ctx: _Ctx) -> Rendered:
    reply = ctx.reply
    resp_id = "resp_" + _hex(48)
    msg_id = "msg_" + _hex(48)
    ctx.tool_calls = [
        ToolCallRecord(tc.id or "call_" + _rand(_BASE62, 24), tc.name, dict(tc.arguments))
        for tc in reply.tool_calls
    ]
    fc_ids = ["fc_" + _hex(48) for _ in ctx.tool_calls]
    arguments = [_dumps(t.arguments) for t in ctx.tool_calls]
    status = "incomplete" if reply.finish_reason == "incomplete" else "completed"
    response = LLMResponse(
        provider="openai_responses",
        model=ctx.model,
        response_id=resp_id,
        text=reply.text,
        tool_calls=ctx.tool_calls,
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
        finish_reason=status,
        stream=ctx.stream,
    )
    usage = {
        "input_tokens": reply.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": reply.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": reply.input_tokens + reply.output_tokens,
    }

    def text_part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}

    def message_item(item_status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": msg_id,
            "type": "message",
            "status": item_status,
            "content": content,
            "role": "assistant",
        }

    def call_item(i: int, item_status: str, args: str) -> dict[str, Any]:
        tool = ctx.tool_calls[i]
        return {
            "id": fc_ids[i],
            "type": "function_call",
            "status": item_status,
            "arguments": args,
            "call_id": tool.id,
            "name": tool.name,
        }

    final_output: list[dict[str, Any]] = []
    if reply.text:
        final_output.append(message_item(status, [text_part(reply.text)]))
    final_output += [call_item(i, "completed", a) for i, a in enumerate(arguments)]

    def envelope(
        env_status: str, output: list[dict[str, Any]], env_usage: dict[str, Any] | None
    ) -> dict[str, Any]:
        req = ctx.request
        return {
            "id": resp_id,
            "object": "response",
            "created_at": ctx.created,
            "status": env_status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if env_status == "incomplete" else None,
            "instructions": req.get("instructions"),
            "max_output_tokens": req.get("max_output_tokens"),
            "max_tool_calls": None,
            "model": ctx.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": req.get("previous_response_id"),
            "prompt_cache_key": None,
            "reasoning": {"effort": None, "summary": None},
            "safety_identifier": None,
            "service_tier": "default",
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": req.get("tools") or [],
            "top_logprobs": 0,
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": env_usage,
            "user": None,
            "metadata": {},
        }

    headers = _openai_headers()
    if not ctx.stream:
        body = envelope(status, final_output, usage)
        return Rendered(200, _json_headers() + headers, body=_dumps(body).encode(), response=response)

    seq = 0

    def ev(name: str, data: dict[str, Any]) -> bytes:
        nonlocal seq
        payload = {"type": name, "sequence_number": seq, **data}
        seq += 1
        return _sse(_dumps(payload), event=name)

    pieces = ctx.scenario.piece_chars
    events = [
        ev("response.created", {"response": envelope("in_progress", [], None)}),
        ev("response.in_progress", {"response": envelope("in_progress", [], None)}),
    ]
    output_index = 0
    if reply.text:
        events.append(
            ev("response.output_item.added", {"output_index": 0, "item": message_item("in_progress", [])})
        )
        loc = {"item_id": msg_id, "output_index": 0, "content_index": 0}
        events.append(ev("response.content_part.added", {**loc, "part": text_part("")}))
        events += [
            ev("response.output_text.delta", {**loc, "delta": p, "logprobs": []})
            for p in split_pieces(reply.text, pieces)
        ]
        events.append(ev("response.output_text.done", {**loc, "text": reply.text, "logprobs": []}))
        events.append(ev("response.content_part.done", {**loc, "part": text_part(reply.text)}))
        events.append(ev("response.output_item.done", {"output_index": 0, "item": final_output[0]}))
        output_index = 1
    for i, args in enumerate(arguments):
        oi = output_index + i
        events.append(
            ev("response.output_item.added", {"output_index": oi, "item": call_item(i, "in_progress", "")})
        )
        events += [
            ev(
                "response.function_call_arguments.delta",
                {"item_id": fc_ids[i], "output_index": oi, "delta": p},
            )
            for p in split_pieces(args, pieces)
        ]
        events.append(
            ev(
                "response.function_call_arguments.done",
                {"item_id": fc_ids[i], "output_index": oi, "arguments": args},
            )
        )
        events.append(
            ev("response.output_item.done", {"output_index": oi, "item": call_item(i, "completed", args)})
        )
    final_name = "response.completed" if status == "completed" else "response.incomplete"
    events.append(ev(final_name, {"response": envelope(status, final_output, usage)}))
    return Rendered(200, _sse_headers() + headers, events=events, response=response)


# ------------------------------------------------------------------------------------- Gemini


def _gemini(ctx: _Ctx, *, sse: bool) -> Rendered:
    reply = ctx.reply
    response_id = _rand(_BASE62 + "-_", 22)
    ctx.tool_calls = [ToolCallRecord(None, tc.name, dict(tc.arguments)) for tc in reply.tool_calls]
    finish = reply.finish_reason or "STOP"
    response = LLMResponse(
        provider="gemini",
        model=ctx.model,
        response_id=response_id,
        text=reply.text,
        tool_calls=ctx.tool_calls,
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
        finish_reason=finish,
        stream=ctx.stream,
    )
    full_usage = {
        "promptTokenCount": reply.input_tokens,
        "candidatesTokenCount": reply.output_tokens,
        "totalTokenCount": reply.input_tokens + reply.output_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": reply.input_tokens}],
    }
    call_parts = [{"functionCall": {"name": t.name, "args": t.arguments}} for t in ctx.tool_calls]

    def chunk(parts: list[dict[str, Any]], final: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
        if final:
            candidate["finishReason"] = finish
        candidate["index"] = 0
        usage = (
            full_usage
            if final
            else {"promptTokenCount": reply.input_tokens, "totalTokenCount": reply.input_tokens}
        )
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": ctx.model,
            "responseId": response_id,
        }

    headers = [("x-gemini-service-tier", "standard")]
    if not ctx.stream:
        parts = ([{"text": reply.text}] if reply.text else []) + call_parts
        return Rendered(
            200, _json_headers() + headers, body=_dumps(chunk(parts, True)).encode(), response=response
        )
    text_parts = (
        [{"text": p} for p in split_pieces(reply.text, ctx.scenario.piece_chars)] if reply.text else []
    )
    # Like the real stream, the last chunk carries the tail of the text together with the
    # function calls, finishReason and the complete usage.
    chunks = [chunk([part], False) for part in text_parts[:-1]]
    chunks.append(chunk(text_parts[-1:] + call_parts, True))
    if sse:
        # Gemini frames its SSE with CRLF blank lines, unlike OpenAI and Anthropic.
        return Rendered(
            200,
            [("content-type", "text/event-stream")] + headers,
            events=[_sse(_dumps(c), sep="\r\n\r\n") for c in chunks],
            response=response,
        )
    # Without alt=sse the stream is one JSON array delivered element by element.
    framed = [("[" if i == 0 else ",\r\n") + _dumps(c) for i, c in enumerate(chunks)]
    framed[-1] += "]"
    return Rendered(200, _json_headers() + headers, events=[f.encode() for f in framed], response=response)


# ------------------------------------------------------------------------------ Ollama native API


def _ollama(ctx: _Ctx, *, chat: bool) -> Rendered:
    """Ollama's ``/api/chat`` and ``/api/generate``: one JSON object, or NDJSON lines when
    streaming (its default). Tool calls (chat only) come whole in one line, without ids, with
    arguments as an object; the last line has ``done: true``, ``done_reason`` and the counts."""
    reply = ctx.reply
    ctx.tool_calls = [ToolCallRecord(None, tc.name, dict(tc.arguments)) for tc in reply.tool_calls] if chat else []
    finish = reply.finish_reason or "stop"
    response = LLMResponse(
        provider="ollama_chat" if chat else "ollama_generate",
        model=ctx.model,
        response_id="",
        text=reply.text,
        tool_calls=ctx.tool_calls,
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
        finish_reason=finish,
        stream=ctx.stream,
    )
    created = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime(ctx.created))

    def line(text: str, *, tools: bool = False, done: bool = False) -> dict[str, Any]:
        obj: dict[str, Any] = {"model": ctx.model, "created_at": created}
        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if tools:
                message["tool_calls"] = [
                    {"function": {"index": i, "name": t.name, "arguments": t.arguments}}
                    for i, t in enumerate(ctx.tool_calls)
                ]
            obj["message"] = message
        else:
            obj["response"] = text
        obj["done"] = done
        if done:
            obj.update(done_reason=finish, total_duration=1_234_567_890, load_duration=12_345_678,
                       prompt_eval_count=reply.input_tokens, prompt_eval_duration=23_456_789,
                       eval_count=reply.output_tokens, eval_duration=987_654_321)
        return obj

    if not ctx.stream:
        body = line(reply.text, tools=bool(ctx.tool_calls), done=True)
        return Rendered(200, [("content-type", "application/json; charset=utf-8")], body=_dumps(body).encode(),
                        response=response)
    lines = [line(p) for p in split_pieces(reply.text, ctx.scenario.piece_chars)] if reply.text else []
    if ctx.tool_calls:
        lines.append(line("", tools=True))
    lines.append(line("", done=True))
    events = [(_dumps(obj) + "\n").encode() for obj in lines]
    return Rendered(200, [("content-type", "application/x-ndjson")], events=events, response=response)
