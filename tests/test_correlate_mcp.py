"""The MCP stdio decoder on its own (pure): pipe writes in, mcp_call events out — pairing by pipe,
messages cut anywhere, effects while calls are in flight, links to the model's tool calls."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from vigild.correlate.intent import LlmCall, ParseFailure
from vigild.correlate.mcp import McpCall, McpTracker

MS = 1_000_000
HOST, SERVER, OTHER_SERVER = 100, 200, 300
TO_SERVER, FROM_SERVER, TO_OTHER, FROM_OTHER = 11, 12, 21, 22  # pipe inodes


@dataclass
class Effect:
    """The fields of an effects event the tracker reads."""

    type: str
    pid: int
    ppid: int
    ts_ns: int
    path: str = ""


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def request(rid: int, method: str, params: dict[str, Any] | None = None) -> bytes:
    return line({"method": method, "params": params or {}, "jsonrpc": "2.0", "id": rid})


def answer(rid: int, result: dict[str, Any] | None = None, error: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
    body.update({"error": error} if error else {"result": result or {}})
    return line(body)


def host_writes(t: McpTracker, ts: int, data: bytes, pipe: int = TO_SERVER) -> list:
    return t.feed_pipe(ts * MS, HOST, "host", pipe, 5, data)


def server_writes(t: McpTracker, ts: int, data: bytes, pid: int = SERVER, stdin: int = TO_SERVER,
                  pipe: int = FROM_SERVER) -> list:
    return t.feed_pipe(ts * MS, pid, "node", pipe, stdin, data)


def initialized(t: McpTracker, pid: int = SERVER, stdin: int = TO_SERVER, pipe: int = FROM_SERVER) -> McpCall:
    host_writes(t, 1, request(0, "initialize", {"protocolVersion": "2025-06-18"}), pipe=stdin)
    [init] = server_writes(t, 2, answer(0, {"serverInfo": {"name": "fs", "version": "1.2"}}), pid, stdin, pipe)
    return init


def test_initialize_and_a_tool_call_cut_in_every_place() -> None:
    t = McpTracker()
    init = initialized(t)
    assert (init.method, init.server, init.server_version, init.server_pid, init.duration_ms) == \
        ("initialize", "fs", "1.2", SERVER, 1.0)
    wire = request(1, "tools/call", {"name": "read_text_file", "arguments": {"path": "/w/a"}})
    for i in range(len(wire)):  # one byte at a time
        assert host_writes(t, 3, wire[i:i + 1]) == []
    t.observe_effect(Effect("file_open", SERVER, HOST, 4 * MS, "/w/a"))
    t.observe_effect(Effect("file_open", 999, 1, 4 * MS, "/elsewhere"))  # not the server
    [call] = server_writes(t, 5, answer(1, {"content": [{"type": "text", "text": "x"}]}))
    assert (call.tool, call.arguments, call.status, call.request_id, call.duration_ms) == \
        ("read_text_file", {"path": "/w/a"}, "ok", "1", 2.0)
    assert call.effects == [{"type": "file_open", "pid": SERVER, "ts_ns": 4 * MS, "path": "/w/a"}]
    assert call.attribution == "exact"


def test_two_servers_with_the_same_ids_do_not_mix() -> None:
    t = McpTracker()
    initialized(t)
    other = initialized(t, OTHER_SERVER, TO_OTHER, FROM_OTHER)
    assert other.server_pid == OTHER_SERVER
    host_writes(t, 3, request(1, "tools/call", {"name": "a"}))
    host_writes(t, 3, request(1, "tools/call", {"name": "b"}), pipe=TO_OTHER)
    [b] = server_writes(t, 4, answer(1, error={"code": -32602, "message": "no such tool"}), OTHER_SERVER, TO_OTHER,
                        FROM_OTHER)
    [a] = server_writes(t, 5, answer(1, {"isError": True, "content": []}))
    assert (a.tool, a.status, a.server_pid) == ("a", "tool_error", SERVER)
    assert (b.tool, b.status, b.error, b.server_pid) == ("b", "error", "no such tool", OTHER_SERVER)


def test_concurrent_calls_share_effects_and_say_so() -> None:
    t = McpTracker()
    initialized(t)
    host_writes(t, 3, request(1, "tools/call", {"name": "a"}) + request(2, "tools/call", {"name": "b"}))
    t.observe_effect(Effect("fork", 201, SERVER, 4 * MS))
    t.observe_effect(Effect("file_open", 201, SERVER, 5 * MS, "/w/child"))  # a process the server started
    [two] = server_writes(t, 6, answer(2))
    [one] = server_writes(t, 7, answer(1))
    for call in (one, two):
        assert call.attribution == "concurrent" and [e["path"] for e in call.effects] == ["/w/child"]


def test_links_to_the_models_tool_call_once() -> None:
    t = McpTracker()
    initialized(t)
    t.observe_llm(LlmCall(ts_ns=0, pid=HOST, tid=HOST, comm="host", conn_id=1, provider="openai",
                          endpoint="/v1/chat/completions", host="h", model="m", stream=False, status=200,
                          http_version="1.1",
                          tool_calls=[{"id": "call_1", "name": "mcp__fs__read", "arguments": {"path": "/w/a"}},
                                      {"id": "call_2", "name": "mcp__fs__read", "arguments": {"path": "/w/b"}}]))
    host_writes(t, 3, request(1, "tools/call", {"name": "read", "arguments": {"path": "/w/b"}}))
    host_writes(t, 3, request(2, "tools/call", {"name": "read", "arguments": {"path": "/w/b"}}))
    [first] = server_writes(t, 4, answer(1))
    [second] = server_writes(t, 4, answer(2))
    assert (first.llm_tool_call_id, first.llm_tool_name) == ("call_2", "mcp__fs__read")
    assert second.llm_tool_call_id is None  # the model asked once


def test_other_json_on_a_pipe_is_left_alone_and_gaps_are_said() -> None:
    t = McpTracker()
    assert t.feed_pipe(MS, HOST, "host", 77, 0, b'{"calls": []}\n' + request(1, "tools/list")) == []
    assert t.feed_pipe(2 * MS, HOST, "host", 77, 0, request(2, "tools/list")) == []  # ignored from then on
    initialized(t)
    events = t.feed_pipe(3 * MS, HOST, "host", TO_SERVER, 5, b'ol"}\n' + request(3, "tools/list"), lost_bytes=40)
    assert [e.reason for e in events if isinstance(e, ParseFailure)] == ["capture_gap"]
    [listed] = server_writes(t, 4, answer(3, {"tools": [{"name": "read"}, {"name": "write"}]}))
    assert listed.tools == ["read", "write"]
    host_writes(t, 5, request(4, "tools/call", {"name": "slow"}))
    [pending] = t.flush()
    assert (pending.status, pending.duration_ms, pending.tool) == ("no_response", None, "slow")


def http_call(ts: int, method: str, server: str | None = None, tool: str | None = None) -> McpCall:
    return McpCall(ts_ns=ts * MS, pid=HOST, comm="host", transport="http", method=method, request_id=str(ts),
                   server=server, tool=tool, arguments={} if tool else None, endpoint="127.0.0.1:8000/mcp")


def test_http_calls_wait_for_their_endpoints_initialize() -> None:
    t = McpTracker()
    assert t.observe_http(http_call(2, "tools/list")) == []  # its exchange ended before the initialize's
    released = t.observe_http(http_call(1, "initialize", server="notes"))
    assert [(c.method, c.server) for c in released] == [("initialize", "notes"), ("tools/list", "notes")]
    assert [c.server for c in t.observe_http(http_call(3, "tools/call", tool="read"))] == ["notes"]
    other = McpTracker()
    assert other.observe_http(http_call(1, "tools/call", tool="read")) == []
    assert [c.method for c in other.observe_http(http_call(20_000, "tools/list"))] == ["tools/call", "tools/list"]
    assert other.observe_http(http_call(20_001, "ping")) == [] and [c.method for c in other.flush()] == ["ping"]
