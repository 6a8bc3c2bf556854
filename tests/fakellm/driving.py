"""Agent-driving replies: the fake model makes a real agent run one command through its own shell tool.

Turn 1 (a request that declares a shell tool and carries no tool result yet) answers with one call
of that tool, its name and argument key taken from the tools the request itself declares, so the
same server drives Gemini CLI, qwen-code, Claude Code, Codex and opencode without knowing which
one it talks to. Turn 2 (the request carries the tool's result) ends with text, and so does every
request that declares no shell tool (title generation, next-speaker checks, summaries).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .scripts import Reply, Scenario, ToolCallSpec

# Shell tools of the agents the tests drive, by the name the agent declares, and the argument that
# carries the command. A declared tool not in this table is still used when its schema has one of
# COMMAND_KEYS as a required string property.
SHELL_TOOLS: dict[str, str] = {
    "run_shell_command": "command",   # Gemini CLI, qwen-code
    "Bash": "command",                # Claude Code
    "exec_command": "cmd",            # Codex
    "shell": "command",               # Codex (older), generic
    "bash": "command",                # opencode
}
COMMAND_KEYS = ("command", "cmd")
DONE_TEXT = "Done ✓: the command ran."


def declared_tools(provider: str, request: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, JSON schema of the arguments) of every function tool the request declares."""
    found: list[tuple[str, dict[str, Any]]] = []
    for tool in request.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        if provider == "gemini":
            for decl in tool.get("functionDeclarations") or tool.get("function_declarations") or []:
                schema = decl.get("parametersJsonSchema") or decl.get("parameters") or {}
                found.append((str(decl.get("name")), schema))
        elif provider == "openai_chat" and isinstance(tool.get("function"), dict):
            fn = tool["function"]
            found.append((str(fn.get("name")), fn.get("parameters") or {}))
        elif provider == "anthropic":
            found.append((str(tool.get("name")), tool.get("input_schema") or {}))
        elif "name" in tool:  # Responses API: flat function tools
            found.append((str(tool["name"]), tool.get("parameters") or {}))
    return found


def shell_tool(provider: str, request: dict[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
    """(tool name, command argument, schema) of the request's shell tool, or None."""
    tools = declared_tools(provider, request)
    for name, schema in tools:
        if name in SHELL_TOOLS:
            return name, SHELL_TOOLS[name], schema
    for name, schema in tools:
        props = schema.get("properties") or {}
        for key in COMMAND_KEYS:
            if key in (schema.get("required") or []) and (props.get(key) or {}).get("type") == "string":
                return name, key, schema
    return None


def carries_tool_result(provider: str, request: dict[str, Any]) -> bool:
    """Whether the conversation already holds a tool result (turn 2 and later)."""
    if provider == "gemini":
        return any("functionResponse" in part for content in request.get("contents") or []
                   for part in (content.get("parts") or []) if isinstance(part, dict))
    if provider == "anthropic":
        return any(isinstance(block, dict) and block.get("type") == "tool_result"
                   for message in request.get("messages") or []
                   for block in (message.get("content") if isinstance(message.get("content"), list) else []))
    if provider == "openai_chat":
        return any(message.get("role") == "tool" for message in request.get("messages") or [])
    items = request.get("input")
    return isinstance(items, list) and any(
        isinstance(item, dict) and str(item.get("type", "")).endswith("call_output") for item in items)


def tool_arguments(command: str, key: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The command under its key, plus a short value for every other required string argument
    (Claude Code's and Gemini CLI's `description`)."""
    args: dict[str, Any] = {key: command}
    props = schema.get("properties") or {}
    for name in schema.get("required") or []:
        if name not in args and (props.get(name) or {}).get("type") == "string":
            args[name] = "run the test command"
    return args


def driving_reply(command: str) -> Callable[[str, Any], Reply]:
    """The `respond` function of a Scenario that makes the agent run `command` once."""

    def respond(provider: str, request: Any) -> Reply:
        tool = shell_tool(provider, request) if isinstance(request, dict) else None
        if tool is None or carries_tool_result(provider, request):
            return Reply(text=DONE_TEXT, tool_calls=(), input_tokens=120, output_tokens=6)
        name, key, schema = tool
        return Reply(text="", tool_calls=(ToolCallSpec(name, tool_arguments(command, key, schema)),),
                     input_tokens=900, output_tokens=40)

    return respond


def driving_scenario(command: str, name: str = "drive") -> Scenario:
    """A scenario that drives an agent through one shell tool call running `command`; stream
    events carry small pieces and each is written in two TLS records."""
    return Scenario(name, respond=driving_reply(command), piece_chars=7, split_events=True)
