"""The fake model's agent-driving mode: one call of the agent's own shell tool, found in the
tools the request declares (in each API's shape), then text once the tool result is back."""

from __future__ import annotations

import http.client
import json
import ssl

from fakellm import FakeLLMServer
from fakellm.driving import DONE_TEXT, driving_reply, driving_scenario

COMMAND = "echo hi > out.txt"
SCHEMA = {"type": "object", "properties": {"command": {"type": "string"}, "description": {"type": "string"}},
          "required": ["command", "description"]}


def test_each_dialect_gets_one_call_of_its_shell_tool_then_text() -> None:
    respond = driving_reply(COMMAND)
    turn1 = {
        "gemini": {"tools": [{"functionDeclarations": [{"name": "read_file", "parametersJsonSchema": {}},
                                                       {"name": "run_shell_command", "parametersJsonSchema": SCHEMA}]}],
                   "contents": [{"role": "user", "parts": [{"text": "go"}]}]},
        "anthropic": {"tools": [{"name": "Bash", "input_schema": SCHEMA}], "messages": [{"role": "user", "content": "go"}]},
        "openai_chat": {"tools": [{"type": "function", "function": {"name": "bash", "parameters": SCHEMA}}],
                        "messages": [{"role": "user", "content": "go"}]},
        "openai_responses": {"tools": [{"type": "function", "name": "exec_command",
                                        "parameters": {"properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}],
                             "input": [{"role": "user", "content": "go"}]},
    }
    expected = {"gemini": ("run_shell_command", "command"), "anthropic": ("Bash", "command"),
                "openai_chat": ("bash", "command"), "openai_responses": ("exec_command", "cmd")}
    for provider, request in turn1.items():
        (call,) = respond(provider, request).tool_calls
        name, key = expected[provider]
        assert call.name == name and call.arguments[key] == COMMAND
        if key == "command":
            assert call.arguments["description"]  # a required string the agent validates
    turn2 = {
        "gemini": {**turn1["gemini"], "contents": [{"role": "user", "parts": [{"functionResponse": {"name": "x"}}]}]},
        "anthropic": {**turn1["anthropic"], "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
        "openai_chat": {**turn1["openai_chat"], "messages": [{"role": "tool", "content": "hi"}]},
        "openai_responses": {**turn1["openai_responses"], "input": [{"type": "function_call_output", "output": ""}]},
    }
    for provider, request in turn2.items():
        reply = respond(provider, request)
        assert reply.tool_calls == () and reply.text == DONE_TEXT


def test_a_request_without_a_shell_tool_gets_text() -> None:
    reply = driving_reply(COMMAND)("anthropic", {"tools": [{"name": "Read", "input_schema": {}}], "messages": []})
    assert reply.tool_calls == ()


def test_a_driven_stream_with_split_events_round_trips_over_tls() -> None:
    """Every event written in two TLS records still makes one valid stream for a real client."""
    with FakeLLMServer(default_scenario=driving_scenario(COMMAND), http2=False) as server:
        conn = http.client.HTTPSConnection(server.host, server.port,
                                           context=ssl.create_default_context(cafile=server.ca_path))
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "go"}],
                "tools": [{"type": "function", "function": {"name": "bash", "parameters": SCHEMA}}]}
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
        raw = conn.getresponse().read().decode()
        conn.close()
        (exchange,) = server.exchanges.wait_finished(1)
    assert server.errors == []
    assert exchange.response is not None and exchange.response.tool_calls[0].arguments["command"] == COMMAND
    assert raw.rstrip().endswith("data: [DONE]")
