"""Drive a real agent through one shell tool call with the fake server (Responses API).

A real agent declares its own tools and only runs a call of one of them, with its own argument
schema. So the reply is chosen from the request body rather than from a fixed scenario: turn 1
(no tool output in the input yet) answers with one call of the declared shell tool, turn 2 (the
input carries the tool's output) ends with text. Any other request (title generation, a
compaction) gets plain text.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from .scripts import SCENARIO_HEADER, Reply, Scenario, ToolCallSpec
from .server import FakeLLMServer

# The agents' shell tools and the argument that holds the command line, in order of preference.
SHELL_TOOLS = {"exec_command": "cmd", "shell": "command", "local_shell": "command"}
DRIVER_TEXT = "Done: the command ran."
TOOL_INPUT_TOKENS = 1234
TOOL_OUTPUT_TOKENS = 56
FINAL_INPUT_TOKENS = 1400
FINAL_OUTPUT_TOKENS = 7
# Codex's exec_command returns "still running" after yield_time_ms (10 s by default) and the
# turn goes on without the result; slow machines (an emulated guest) need longer.
YIELD_ARG = "yield_time_ms"
YIELD_MS = 120_000


def declared_tools(request: Any) -> list[dict[str, Any]]:
    tools = request.get("tools") if isinstance(request, dict) else None
    return [t for t in tools or [] if isinstance(t, dict)]


def shell_tool(request: Any) -> tuple[str, str, bool, bool] | None:
    """(name, command argument, argument is a list, has a yield time) of the first shell tool
    the request declares."""
    by_name = {t.get("name"): t for t in declared_tools(request)}
    for name, arg in SHELL_TOOLS.items():
        tool = by_name.get(name)
        if tool is None:
            continue
        properties = (tool.get("parameters") or {}).get("properties") or {}
        schema = properties.get(arg) or {}
        return name, arg, schema.get("type") == "array", YIELD_ARG in properties
    return None


def has_tool_output(request: Any) -> bool:
    items = request.get("input") if isinstance(request, dict) else None
    return any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in items or [])


class AgentDrivingServer(FakeLLMServer):
    """A FakeLLMServer whose Responses replies follow the two-turn tool-call script above.

    ``command`` is the shell command the model asks for. The scenario chosen for each request is
    registered under a fresh name and named in the request's scenario header, so the exchange log
    records which reply each request got."""

    def __init__(self, command: str, **kwargs: Any) -> None:
        super().__init__(http2=False, **kwargs)
        self.command = command
        self._names = itertools.count(1)

    def _scenario_for(self, request: Any) -> Scenario:
        tool = shell_tool(request)
        if tool is None or has_tool_output(request):
            reply = Reply(text=DRIVER_TEXT, tool_calls=(), input_tokens=FINAL_INPUT_TOKENS,
                          output_tokens=FINAL_OUTPUT_TOKENS)
        else:
            name, arg, as_list, has_yield = tool
            value: Any = ["bash", "-lc", self.command] if as_list else self.command
            arguments = {arg: value, **({YIELD_ARG: YIELD_MS} if has_yield else {})}
            reply = Reply(text="", tool_calls=(ToolCallSpec(name, arguments),),
                          input_tokens=TOOL_INPUT_TOKENS, output_tokens=TOOL_OUTPUT_TOKENS)
        return Scenario(f"driver-{next(self._names)}", default_reply=reply, piece_chars=8)

    def _prepare(self, *, headers: list[tuple[str, str]], body: bytes, **kwargs: Any) -> Any:
        try:
            request = json.loads(body) if body else None
        except ValueError:
            request = None
        scenario = self._scenario_for(request)
        self.scenarios[scenario.name] = scenario
        return super()._prepare(headers=[*headers, (SCENARIO_HEADER, scenario.name)], body=body, **kwargs)
