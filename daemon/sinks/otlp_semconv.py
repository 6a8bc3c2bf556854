"""Stored events → OpenTelemetry attributes, named per the semantic conventions: GenAI (`gen_ai.*`)
for model and tool calls, `process.*`, `file.*`, `network.*`, `http.*` for effects, and
`vigil.*` for what no convention names.

Message content (`gen_ai.input.messages`, `gen_ai.output.messages`, `gen_ai.system_instructions`,
`gen_ai.tool.call.arguments`) is built only when the caller asks for it: it is what the user and
the model said, and the conventions make it opt-in. Provider-native messages are mapped to the
conventions' `{role, parts: [{type, ...}]}` shape; parts of a kind they do not name pass through
under their own `type`.
"""

from __future__ import annotations

import json
from typing import Any

AttrValue = str | bool | int | float | list[str] | list[int] | list[float] | list[bool]
Attributes = dict[str, AttrValue]

# vigil's provider names → gen_ai.provider.name well-known values.
PROVIDERS = {"anthropic": "anthropic", "openai": "openai", "gemini": "gcp.gemini"}

# Provider finish reasons → the conventions' output-message finish_reason values.
FINISH_REASONS = {
    "end_turn": "stop", "stop_sequence": "stop", "stop": "stop", "completed": "stop",
    "max_tokens": "length", "length": "length", "incomplete": "length", "max_output_tokens": "length",
    "tool_use": "tool_call", "tool_calls": "tool_call", "function_call": "tool_call",
    "safety": "content_filter", "content_filter": "content_filter", "refusal": "content_filter",
}

# Fields every kernel event has; they become the span's or are implied by it.
COMMON_FIELDS = frozenset({"type", "ts", "ts_ns", "session_id", "pid", "tid", "ppid", "uid", "comm", "cgroup_id"})
# Fields that may hold prompt or response content: never exported as generic attributes.
CONTENT_FIELDS = frozenset({"request_messages", "text", "request_headers", "response_headers", "arguments",
                            "arguments_raw", "tool_calls", "content_encrypted"})
# Effect fields with a conventional name.
EFFECT_NAMES = {
    "path": "file.path",
    "remote_addr": "network.peer.address",
    "remote_port": "network.peer.port",
    "local_addr": "network.local.address",
    "local_port": "network.local.port",
    "family": "network.type",
}
# ... and those whose conventional name depends on the event (a detection has a `name` too).
EFFECT_NAMES_BY_TYPE = {"dns_query": {"name": "dns.question.name"}}


def clean(attrs: dict[str, Any]) -> Attributes:
    """Drop unset values; OTLP has no null, and an empty attribute says nothing."""
    return {k: v for k, v in attrs.items() if v is not None and v != [] and v != ""}


def scalar(value: Any) -> AttrValue | None:
    """An attribute value for any JSON value: scalars and lists of strings as they are, the rest
    as JSON text."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return json.dumps(value, sort_keys=True, default=str)


def session_attributes(session: dict[str, Any]) -> Attributes:
    """The root span's attributes: the agent (when known) and its root process."""
    agent = session.get("agent")
    return clean({
        "gen_ai.operation.name": "invoke_agent" if agent else None,
        "gen_ai.agent.name": agent,
        "vigil.session.id": session["id"],
        "process.pid": session["root_pid"],
        "process.command_args": scalar(session.get("argv")),
        "process.working_directory": session.get("cwd"),
        "process.user.id": session.get("uid"),
        "process.exit.code": session.get("exit_code"),
        "vigil.process.signal": session.get("signal"),
        "error.type": ("signal" if session.get("signal") else "exit_code") if _failed(session) else None,
    })


def chat_attributes(call: dict[str, Any], capture_content: bool) -> Attributes:
    """A `chat` span's attributes from an llm_call event."""
    host, _, port = str(call.get("host") or "").rpartition(":")
    if not host or not port.isdigit():
        host, port = str(call.get("host") or ""), ""
    ok = not call.get("error") and int(call.get("status") or 0) < 400
    ttft = call.get("ttft_ms")
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDERS.get(call.get("provider") or "", call.get("provider")),
        "gen_ai.request.model": call.get("model"),
        "gen_ai.request.stream": call.get("stream"),
        "gen_ai.response.model": call.get("model") if ok else None,
        "gen_ai.response.id": call.get("response_id"),
        "gen_ai.response.finish_reasons": [call["finish_reason"]] if call.get("finish_reason") else None,
        "gen_ai.response.time_to_first_chunk": ttft / 1000 if ttft is not None else None,
        "gen_ai.usage.input_tokens": call.get("input_tokens"),
        "gen_ai.usage.output_tokens": call.get("output_tokens"),
        "gen_ai.usage.cache_read.input_tokens": call.get("cache_read_input_tokens"),
        "gen_ai.usage.cache_creation.input_tokens": call.get("cache_creation_input_tokens"),
        "server.address": host,
        "server.port": int(port) if port else None,
        "url.path": call.get("endpoint"),
        "http.response.status_code": call.get("status"),
        "error.type": call.get("error") or (str(call["status"]) if not ok else None),
        "vigil.llm.request_id": call.get("request_id"),
        "vigil.llm.request_tools": call.get("request_tools"),
        "vigil.llm.truncated": call.get("truncated") or None,
    }
    if capture_content:
        messages = call.get("request_messages")
        if isinstance(messages, list):
            system = [m for m in messages if isinstance(m, dict) and m.get("role") == "system"]
            chat = [m for m in messages if not (isinstance(m, dict) and m.get("role") == "system")]
            attrs["gen_ai.system_instructions"] = _json([p for m in system for p in _parts(m)]) if system else None
            attrs["gen_ai.input.messages"] = _json([_message(m) for m in chat])
        attrs["gen_ai.output.messages"] = _json([output_message(call)])
    return clean(attrs)


def output_message(call: dict[str, Any]) -> dict[str, Any]:
    """The model's answer as one assistant message: its text, then the tool calls it asked for."""
    parts: list[dict[str, Any]] = []
    if call.get("text"):
        parts.append({"type": "text", "content": call["text"]})
    for tc in call.get("tool_calls") or ():
        arguments = tc.get("arguments", tc.get("arguments_raw"))
        parts.append({"type": "tool_call", "id": tc.get("id"), "name": tc.get("name"), "arguments": arguments})
    reason = call.get("finish_reason")
    return {"role": "assistant", "parts": parts,
            "finish_reason": FINISH_REASONS.get(str(reason).lower(), str(reason).lower()) if reason else "stop"}


def tool_attributes(start: dict[str, Any], end: dict[str, Any] | None, arguments: Any,
                    capture_content: bool) -> Attributes:
    """An `execute_tool` span's attributes from a tool_start (and its tool_end, once over)."""
    last = end or start
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": last.get("tool_name"),
        "gen_ai.tool.call.id": last.get("tool_call_id"),
        "gen_ai.tool.call.arguments": _json(arguments) if capture_content and arguments is not None else None,
        "process.pid": start.get("pid"),
        "process.command_args": scalar(start.get("argv")),
        "process.executable.path": start.get("filename"),
        "vigil.tool.call": start.get("tool_call"),
        "vigil.tool.unrequested": last.get("unrequested"),
        "vigil.tool.cgroup": start.get("cgroup"),
        "vigil.tool.limits": scalar(start.get("limits") or None),
    }
    if end is not None:
        attrs.update({
            "process.exit.code": end.get("exit_code"),
            "vigil.tool.outcome": end.get("outcome"),
            "vigil.tool.signal": end.get("signal"),
            "vigil.tool.peak_memory_bytes": end.get("peak_memory_bytes"),
            "vigil.tool.limits_hit": scalar(end.get("limits_hit")),
            "vigil.tool.oom_kills": end.get("oom_kills"),
            "vigil.tool.processes": end.get("processes"),
            "vigil.tool.killed_by_vigil": end.get("killed_by_vigil"),
            "error.type": end.get("outcome") if end.get("outcome") not in (None, "ok") else None,
        })
    return clean(attrs)


def mcp_attributes(call: dict[str, Any], capture_content: bool) -> Attributes:
    """An MCP call's span attributes (an `execute_tool` span for tools/call) from an mcp_call."""
    return clean({
        "gen_ai.operation.name": "execute_tool" if call.get("method") == "tools/call" else None,
        "gen_ai.tool.name": call.get("tool"),
        "gen_ai.tool.call.id": call.get("llm_tool_call_id"),
        "gen_ai.tool.call.arguments": _json(call.get("arguments"))
        if capture_content and call.get("arguments") is not None else None,
        "gen_ai.tool.type": "extension" if call.get("method") == "tools/call" else None,
        "mcp.method.name": call.get("method"),
        "jsonrpc.request.id": call.get("request_id"),
        "network.transport": "pipe" if call.get("transport") == "stdio" else "tcp",
        "vigil.mcp.server": call.get("server"),
        "vigil.mcp.server_version": call.get("server_version"),
        "vigil.mcp.server_pid": call.get("server_pid"),
        "vigil.mcp.status": call.get("status"),
        "vigil.mcp.attribution": call.get("attribution"),
        "error.type": call.get("status") if call.get("status") not in (None, "ok") else None,
    })


def process_attributes(proc: dict[str, Any]) -> Attributes:
    """A process span's attributes from a row of the processes table."""
    return clean({
        "process.pid": proc["pid"],
        "process.parent_pid": proc["ppid"],
        "process.command_args": scalar(proc.get("argv")),
        "process.executable.path": proc.get("filename"),
        "process.exit.code": proc.get("exit_code"),
        "vigil.process.comm": proc.get("comm"),
        "vigil.process.signal": proc.get("signal"),
        "vigil.process.depth": proc.get("depth"),
        "error.type": ("signal" if proc.get("signal") else "exit_code") if _failed(proc) else None,
    })


def http_attributes(req: dict[str, Any]) -> Attributes:
    """An https_request's span attributes (HTTP client conventions)."""
    return clean({
        "http.request.method": req.get("method"),
        "server.address": req.get("host"),
        "url.path": req.get("path"),
        "http.response.status_code": req.get("status"),
        "network.protocol.version": req.get("http_version"),
        "http.request.body.size": req.get("request_bytes"),
        "http.response.body.size": req.get("response_bytes"),
        "error.type": str(req["status"]) if int(req.get("status") or 0) >= 400 else None,
    })


def effect_attributes(event: dict[str, Any]) -> Attributes:
    """A span event's attributes for any other event (file and network effects, memory, OOM,
    detections, decode failures, losses): conventional names where they exist, `vigil.<field>`
    for the rest. Content fields are never among them."""
    attrs: dict[str, Any] = {"process.pid": event.get("pid")}
    names = {**EFFECT_NAMES, **EFFECT_NAMES_BY_TYPE.get(event["type"], {})}
    for key, value in event.items():
        if key in COMMON_FIELDS or key in CONTENT_FIELDS:
            continue
        attrs[names.get(key, f"vigil.{key}")] = scalar(value)
    return clean(attrs)


def _failed(proc: dict[str, Any]) -> bool:
    return bool(proc.get("signal")) or proc.get("exit_code") not in (None, 0)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _message(msg: Any) -> dict[str, Any]:
    """One provider-native request message (Anthropic, OpenAI Chat or Responses, Gemini) in the
    conventions' shape."""
    if not isinstance(msg, dict):
        return {"role": "user", "parts": [{"type": "text", "content": msg}]}
    kind = msg.get("type")
    if kind == "function_call":  # Responses input item
        return {"role": "assistant", "parts": [{"type": "tool_call", "id": msg.get("call_id"),
                                                "name": msg.get("name"), "arguments": msg.get("arguments")}]}
    if kind == "function_call_output":
        return {"role": "tool", "parts": [{"type": "tool_call_response", "id": msg.get("call_id"),
                                           "response": msg.get("output")}]}
    role = {"model": "assistant", "function": "tool"}.get(str(msg.get("role")), msg.get("role") or "user")
    return {"role": role, "parts": _parts(msg)}


def _parts(msg: dict[str, Any]) -> list[dict[str, Any]]:
    content = msg.get("content", msg.get("parts"))
    parts: list[dict[str, Any]] = []
    if isinstance(content, str):
        parts.append({"type": "text", "content": content})
    elif isinstance(content, list):
        parts += [_part(p) for p in content]
    elif content is not None:
        parts.append({"type": "text", "content": _json(content)})
    for tc in msg.get("tool_calls") or ():  # OpenAI Chat assistant message
        fn = tc.get("function") or {}
        parts.append({"type": "tool_call", "id": tc.get("id"), "name": fn.get("name"), "arguments": fn.get("arguments")})
    if msg.get("role") == "tool" and msg.get("tool_call_id"):  # OpenAI Chat tool result
        parts = [{"type": "tool_call_response", "id": msg["tool_call_id"], "response": content}]
    return parts


def _part(part: Any) -> dict[str, Any]:
    if isinstance(part, str):
        return {"type": "text", "content": part}
    if not isinstance(part, dict):
        return {"type": "text", "content": _json(part)}
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text") or (kind is None and "text" in part):
        return {"type": "text", "content": part.get("text")}
    if kind == "tool_use":
        return {"type": "tool_call", "id": part.get("id"), "name": part.get("name"), "arguments": part.get("input")}
    if kind == "tool_result":
        return {"type": "tool_call_response", "id": part.get("tool_use_id"), "response": part.get("content")}
    if "functionCall" in part:
        call = part["functionCall"] or {}
        return {"type": "tool_call", "id": call.get("id"), "name": call.get("name"), "arguments": call.get("args")}
    if "functionResponse" in part:
        resp = part["functionResponse"] or {}
        return {"type": "tool_call_response", "id": resp.get("id"), "response": resp.get("response")}
    return {**part, "type": kind or "unknown"}
