"""Wire-capture builders for the correlate tests.

The builders serialise exactly what the providers put on the wire (event names, field names,
SSE framing and line endings, HTTP/1.1 framing). tests/test_correlate_wire.py feeds the same
bytes to the official ``anthropic`` and ``openai`` SDKs, so a builder drifting away from the real
format fails there; the builders need no SDK, so the decoder tests run without them.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

import brotli
from vigild.correlate import TlsChunk, TlsStreamDecoder
from vigild.correlate.intent import Event, HttpsRequest, LlmCall, ParseFailure

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
ANTHROPIC_KEY = "sk-ant-api03-" + "Zx9" * 30 + "AA"
OPENAI_KEY = "sk-proj-" + "Ab3dE" * 10
GOOGLE_KEY = "AIza" + "SyD3xampleKeyForTests_0123456789a"[:35]


# -- byte-level helpers ------------------------------------------------------------------------

def split(data: bytes, cuts: list[int] | tuple[int, ...] = ()) -> list[bytes]:
    """Cut ``data`` at the given offsets (any order, duplicates and out-of-range ignored)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    pieces = []
    prev = 0
    for point in points:
        pieces.append(data[prev:point])
        prev = point
    pieces.append(data[prev:])
    return [p for p in pieces if p]


@dataclass
class Capture:
    """The chunk sequence one connection produces, as the SSL uprobes would deliver it."""

    pid: int = 4242
    conn_id: int = 0x7F3A_0000_1000
    comm: str = "agent"
    tid: int = 4243
    ts: int = T0
    step_ns: int = MS
    chunks: list[TlsChunk] = field(default_factory=list)

    def _add(self, direction: str, data: bytes, cuts: list[int] | tuple[int, ...], lost: int = 0) -> Capture:
        for i, piece in enumerate(split(data, cuts)):
            self.ts += self.step_ns
            self.chunks.append(TlsChunk(self.ts, self.pid, self.tid, self.comm, self.conn_id, direction, piece,
                                        lost if i == 0 else 0))
        return self

    def write(self, data: bytes, cuts: list[int] | tuple[int, ...] = (), lost: int = 0) -> Capture:
        return self._add("write", data, cuts, lost)

    def read(self, data: bytes, cuts: list[int] | tuple[int, ...] = (), lost: int = 0) -> Capture:
        return self._add("read", data, cuts, lost)

    def wait(self, ns: int) -> Capture:
        self.ts += ns
        return self


def run(chunks: list[TlsChunk], decoder: TlsStreamDecoder | None = None, *,
        close: list[tuple[int, int]] | None = None) -> tuple[list[Event], TlsStreamDecoder]:
    """Feed chunks, then close the given (pid, conn_id) pairs (default: every connection seen)."""
    decoder = decoder or TlsStreamDecoder()
    events: list[Event] = []
    last_ts = T0
    for chunk in chunks:
        events += decoder.feed(chunk)
        last_ts = max(last_ts, chunk.ts_ns)
    keys = close if close is not None else list(dict.fromkeys((c.pid, c.conn_id) for c in chunks))
    for pid, conn_id in keys:
        events += decoder.close(pid, conn_id, last_ts + MS)
    return events, decoder


def only(events: list[Event], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def llm_calls(events: list[Event]) -> list[LlmCall]:
    return only(events, LlmCall)


def https_requests(events: list[Event]) -> list[HttpsRequest]:
    return only(events, HttpsRequest)


def failures(events: list[Event]) -> list[ParseFailure]:
    return only(events, ParseFailure)


# -- HTTP/1.1 ----------------------------------------------------------------------------------

def http_request(method: str, path: str, host: str, body: bytes | dict[str, Any] | None = None,
                 headers: list[tuple[str, str]] | None = None, *, chunked: bool = False) -> bytes:
    payload = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    if isinstance(body, dict):
        lines.append("Content-Type: application/json")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = chunk_body(payload, [max(1, len(payload) // 3)] * 3)
    elif payload or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def chunk_body(payload: bytes, sizes: list[int]) -> bytes:
    """Chunked transfer coding with the given chunk sizes (the rest in one last chunk)."""
    out = bytearray()
    pos = 0
    for size in sizes:
        if pos >= len(payload):
            break
        piece = payload[pos:pos + size]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
        pos += size
    if pos < len(payload):
        out += b"%x\r\n" % (len(payload) - pos) + payload[pos:] + b"\r\n"
    out += b"0\r\n\r\n"
    return bytes(out)


def compress(payload: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.compress(payload)
    if encoding == "br":
        return brotli.compress(payload)
    if encoding == "deflate":
        return zlib.compress(payload)
    return payload


def http_response(status: int, body: bytes, content_type: str = "application/json", *,
                  chunked: bool | list[int] = False, encoding: str | None = None, length: bool = True,
                  headers: list[tuple[str, str]] | None = None) -> bytes:
    payload = compress(body, encoding)
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests"}.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}", "Date: Mon, 01 Jan 2024 00:00:00 GMT"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    if encoding:
        lines.append(f"Content-Encoding: {encoding}")
    if chunked is not False:
        lines.append("Transfer-Encoding: chunked")
        sizes = chunked if isinstance(chunked, list) else [max(1, len(payload) // 4)] * 4
        payload = chunk_body(payload, sizes)
    elif length:
        lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


# -- Anthropic Messages ------------------------------------------------------------------------

def anthropic_request(*, stream: bool, model: str = "claude-sonnet-4-5-20250929",
                      tools: list[str] = ("get_weather", "read_file"), content: str = "What's the weather?") -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 1024,
        "system": "You are a helpful agent.",
        "messages": [{"role": "user", "content": content}],
        "tools": [{"name": n, "description": f"tool {n}", "input_schema": {"type": "object"}} for n in tools],
    }
    if stream:
        body["stream"] = True
    return http_request("POST", "/v1/messages", "api.anthropic.com", body, [
        ("x-api-key", ANTHROPIC_KEY), ("anthropic-version", "2023-06-01"), ("User-Agent", "Anthropic/Python 0.40.0"),
        ("Accept", "application/json"),
    ])


def sse_event(event: str | None, data: dict[str, Any] | str, eol: str = "\n") -> str:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    lines = ([f"event: {event}"] if event else []) + [f"data: {payload}"]
    return eol.join(lines) + eol + eol


def _pieces(text: str, n: int) -> list[str]:
    size = max(1, len(text) // n)
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def anthropic_sse(blocks: list[tuple], *, model: str = "claude-sonnet-4-5-20250929",
                  msg_id: str = "msg_01XFDUDYJgAACzvnptvVoYEL",
                  stop_reason: str = "tool_use", input_tokens: int = 472, output_tokens: int = 89,
                  cache_read: int = 0, cache_creation: int = 0) -> bytes:
    """Streamed Messages response. ``blocks``: ("text", str) or ("tool_use", id, name, input_dict)."""
    out = [sse_event("message_start", {"type": "message_start", "message": {
        "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": cache_creation,
                  "cache_read_input_tokens": cache_read, "output_tokens": 1}}})]
    out.append(sse_event("ping", {"type": "ping"}))
    for index, block in enumerate(blocks):
        if block[0] == "text":
            out.append(sse_event("content_block_start", {"type": "content_block_start", "index": index,
                                                         "content_block": {"type": "text", "text": ""}}))
            for piece in _pieces(block[1], 4):
                out.append(sse_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                             "delta": {"type": "text_delta", "text": piece}}))
        else:
            _, tool_id, name, tool_input = block
            out.append(sse_event("content_block_start", {"type": "content_block_start", "index": index,
                                                         "content_block": {"type": "tool_use", "id": tool_id,
                                                                           "name": name, "input": {}}}))
            raw = tool_input if isinstance(tool_input, str) else json.dumps(tool_input)
            for piece in [""] + _pieces(raw, 3):
                out.append(sse_event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                             "delta": {"type": "input_json_delta",
                                                                       "partial_json": piece}}))
        out.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    out.append(sse_event("message_delta", {"type": "message_delta",
                                           "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                           "usage": {"output_tokens": output_tokens}}))
    out.append(sse_event("message_stop", {"type": "message_stop"}))
    return "".join(out).encode()


def anthropic_json(blocks: list[tuple], *, model: str = "claude-sonnet-4-5-20250929", stop_reason: str = "end_turn",
                   input_tokens: int = 25, output_tokens: int = 30) -> bytes:
    content = []
    for block in blocks:
        if block[0] == "text":
            content.append({"type": "text", "text": block[1]})
        else:
            content.append({"type": "tool_use", "id": block[1], "name": block[2], "input": block[3]})
    return json.dumps({"id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
                       "model": model, "content": content, "stop_reason": stop_reason, "stop_sequence": None,
                       "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                                 "cache_read_input_tokens": 0, "output_tokens": output_tokens}}).encode()


# -- OpenAI Chat Completions -------------------------------------------------------------------

def openai_chat_request(*, stream: bool, model: str = "gpt-4o-2024-08-06", include_usage: bool = True) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Weather?"}],
        "tools": [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
                  for n in ("get_weather", "get_time")],
    }
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    return http_request("POST", "/v1/chat/completions", "api.openai.com", body, [
        ("Authorization", f"Bearer {OPENAI_KEY}"), ("User-Agent", "OpenAI/Python 1.55.0")])


def openai_chat_sse(text: str, tool_calls: list[tuple[str, str, str]], *, model: str = "gpt-4o-2024-08-06",
                    finish_reason: str = "tool_calls", usage: tuple[int, int] | None = (82, 17)) -> bytes:
    """Streamed chat completion; ``tool_calls``: (id, name, arguments JSON string)."""
    base = {"id": "chatcmpl-AbC123", "object": "chat.completion.chunk", "created": 1727000000, "model": model,
            "system_fingerprint": "fp_abc"}

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        obj = dict(base, choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra)
        if usage is not None:
            obj["usage"] = None
        return sse_event(None, obj)

    out = [chunk({"role": "assistant", "content": "" if text else None, "refusal": None})]
    for piece in (_pieces(text, 3) if text else []):
        out.append(chunk({"content": piece}))
    for index, (call_id, name, arguments) in enumerate(tool_calls):
        out.append(chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                          "function": {"name": name, "arguments": ""}}]}))
        for piece in _pieces(arguments, 3):
            out.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    out.append(chunk({}, finish_reason))
    if usage is not None:
        out.append(sse_event(None, dict(base, choices=[], usage={
            "prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage),
            "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}})))
    out.append(sse_event(None, "[DONE]"))
    return "".join(out).encode()


def openai_chat_json(text: str | None, tool_calls: list[tuple[str, str, str]], *, model: str = "gpt-4o-2024-08-06",
                     finish_reason: str = "stop") -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if tool_calls:
        message["tool_calls"] = [{"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                                 for i, n, a in tool_calls]
    return json.dumps({"id": "chatcmpl-XyZ", "object": "chat.completion", "created": 1727000000, "model": model,
                       "choices": [{"index": 0, "message": message, "logprobs": None,
                                    "finish_reason": finish_reason}],
                       "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
                                 "prompt_tokens_details": {"cached_tokens": 4}}}).encode()


# -- OpenAI Responses --------------------------------------------------------------------------

def responses_request(*, stream: bool, model: str = "gpt-4.1") -> bytes:
    body: dict[str, Any] = {"model": model, "instructions": "Be brief.", "input": "Weather in Paris?",
                            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
                                      {"type": "web_search"}]}
    if stream:
        body["stream"] = True
    return http_request("POST", "/v1/responses", "api.openai.com", body, [("Authorization", f"Bearer {OPENAI_KEY}")])


def _responses_object(status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None,
                      model: str) -> dict[str, Any]:
    return {"id": "resp_67ccd2bed1ec8190", "object": "response", "created_at": 1741476542, "status": status,
            "error": None, "incomplete_details": None, "instructions": "Be brief.", "model": model,
            "output": output, "parallel_tool_calls": True, "tools": [], "usage": usage}


def responses_sse(text: str, call: tuple[str, str, str] | None, *, model: str = "gpt-4.1-2025-04-14") -> bytes:
    """Streamed Responses API output: a message with ``text`` then an optional function call."""
    seq = 0
    out: list[str] = []

    def emit(kind: str, **fields: Any) -> None:
        nonlocal seq
        out.append(sse_event(kind, {"type": kind, "sequence_number": seq, **fields}))
        seq += 1

    emit("response.created", response=_responses_object("in_progress", [], None, model))
    emit("response.in_progress", response=_responses_object("in_progress", [], None, model))
    items: list[dict[str, Any]] = []
    msg_item = {"id": "msg_67ccd2bf17f0", "type": "message", "status": "in_progress", "role": "assistant",
                "content": []}
    emit("response.output_item.added", output_index=0, item=msg_item)
    emit("response.content_part.added", item_id=msg_item["id"], output_index=0, content_index=0,
         part={"type": "output_text", "text": "", "annotations": []})
    for piece in _pieces(text, 3):
        emit("response.output_text.delta", item_id=msg_item["id"], output_index=0, content_index=0, delta=piece)
    emit("response.output_text.done", item_id=msg_item["id"], output_index=0, content_index=0, text=text)
    part = {"type": "output_text", "text": text, "annotations": []}
    emit("response.content_part.done", item_id=msg_item["id"], output_index=0, content_index=0, part=part)
    done_msg = dict(msg_item, status="completed", content=[part])
    emit("response.output_item.done", output_index=0, item=done_msg)
    items.append(done_msg)
    if call is not None:
        call_id, name, arguments = call
        fc = {"id": "fc_12345xyz", "type": "function_call", "status": "in_progress", "arguments": "",
              "call_id": call_id, "name": name}
        emit("response.output_item.added", output_index=1, item=fc)
        for piece in _pieces(arguments, 3):
            emit("response.function_call_arguments.delta", item_id=fc["id"], output_index=1, delta=piece)
        emit("response.function_call_arguments.done", item_id=fc["id"], output_index=1, arguments=arguments)
        done_fc = dict(fc, status="completed", arguments=arguments)
        emit("response.output_item.done", output_index=1, item=done_fc)
        items.append(done_fc)
    usage = {"input_tokens": 37, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 11,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 48}
    emit("response.completed", response=_responses_object("completed", items, usage, model))
    return "".join(out).encode()


def responses_json(text: str, call: tuple[str, str, str] | None, *, model: str = "gpt-4.1-2025-04-14") -> bytes:
    output: list[dict[str, Any]] = [{"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
                                     "content": [{"type": "output_text", "text": text, "annotations": []}]}]
    if call is not None:
        output.append({"id": "fc_1", "type": "function_call", "status": "completed", "call_id": call[0],
                       "name": call[1], "arguments": call[2]})
    usage = {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 87,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 123}
    return json.dumps(_responses_object("completed", output, usage, model)).encode()


# -- Gemini ------------------------------------------------------------------------------------

def gemini_request(model: str, method: str, *, sse: bool, key_in_url: bool = False) -> bytes:
    query = ("?alt=sse" if sse else "") + (("&" if sse else "?") + f"key={GOOGLE_KEY}" if key_in_url else "")
    body = {"contents": [{"role": "user", "parts": [{"text": "List files"}]}],
            "tools": [{"functionDeclarations": [{"name": "list_files", "parameters": {"type": "OBJECT"}}]}],
            "systemInstruction": {"parts": [{"text": "You are an agent."}]},
            "generationConfig": {"temperature": 0.2}}
    headers = [] if key_in_url else [("x-goog-api-key", GOOGLE_KEY)]
    return http_request("POST", f"/v1beta/models/{model}:{method}{query}", "generativelanguage.googleapis.com",
                        body, headers)


def gemini_chunks(text: str, call: tuple[str, dict[str, Any]] | None, model: str) -> list[dict[str, Any]]:
    """The GenerateContentResponse objects of one streamed call (text pieces, then a call)."""
    chunks = []
    pieces = _pieces(text, 3)
    for piece in pieces:
        chunks.append({"candidates": [{"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}],
                       "usageMetadata": {"promptTokenCount": 31, "totalTokenCount": 31},
                       "modelVersion": model, "responseId": "abcResponseId"})
    last: dict[str, Any] = {"candidates": [{"content": {"parts": [], "role": "model"}, "finishReason": "STOP",
                                            "index": 0}],
                            "usageMetadata": {"promptTokenCount": 31, "candidatesTokenCount": 14,
                                              "totalTokenCount": 45,
                                              "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 31}]},
                            "modelVersion": model, "responseId": "abcResponseId"}
    if call is not None:
        last["candidates"][0]["content"]["parts"].append({"functionCall": {"name": call[0], "args": call[1]}})
    else:
        last["candidates"][0]["content"]["parts"].append({"text": ""})
    chunks.append(last)
    return chunks


def gemini_sse(chunks: list[dict[str, Any]]) -> bytes:
    return "".join(sse_event(None, c, eol="\r\n") for c in chunks).encode()


def gemini_json_array(chunks: list[dict[str, Any]]) -> bytes:
    """``:streamGenerateContent`` without ``alt=sse``: one pretty-printed JSON array, streamed."""
    return ("[" + ",\r\n".join(json.dumps(c, indent=2) for c in chunks) + "]").encode()
