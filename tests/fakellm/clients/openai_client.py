"""Drive the fake server with the official ``openai`` SDK, exactly as an agent would.

Four sequential calls on one keep-alive connection: Chat Completions (non-streaming, with tools),
Chat Completions streaming with ``stream_options.include_usage``, Responses (non-streaming) and
Responses streaming.  Prints ``{"calls": [...]}``, one entry per call in order, each with
``id, model, text, tool_calls[{id, name, arguments}], input_tokens, output_tokens,
finish_reason, stream`` as the *client* reconstructed them.

openai 3.x talks HTTP through ``httpx2`` (``httpcore2``), which wraps sockets with CPython's
``ssl`` module, i.e. OpenSSL's ``SSL_write_ex`` / ``SSL_read_ex`` in ``libssl.so.3``.

Run: ``python openai_client.py --url https://127.0.0.1:PORT --ca ca.pem`` (or the env vars
``FAKELLM_URL`` / ``FAKELLM_CA``; ``--scenario NAME`` / ``FAKELLM_SCENARIO`` picks a scenario).
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
from _common import FAKE_OPENAI_KEY, emit, parse_args, scenario_headers, tls_context

CHAT_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "bash",
            "description": "Run a shell command",
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        },
    },
]
RESPONSES_TOOLS: list[Any] = [{"type": "function", **t["function"]} for t in CHAT_TOOLS]
MESSAGES: list[Any] = [
    {"role": "system", "content": "You are a coding agent."},
    {"role": "user", "content": "List the files and show me the hostname."},
]


def chat(client: openai.OpenAI) -> dict[str, Any]:
    completion = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES, tools=CHAT_TOOLS)
    choice = completion.choices[0]
    assert completion.usage is not None
    return {
        "api": "chat",
        "stream": False,
        "id": completion.id,
        "model": completion.model,
        "text": choice.message.content or "",
        "tool_calls": [
            {"id": tc.id, "name": tc.function.name, "arguments": json.loads(tc.function.arguments)}
            for tc in choice.message.tool_calls or []
            if tc.type == "function"
        ],
        "input_tokens": completion.usage.prompt_tokens,
        "output_tokens": completion.usage.completion_tokens,
        "finish_reason": choice.finish_reason,
    }


def chat_stream(client: openai.OpenAI) -> dict[str, Any]:
    stream = client.chat.completions.create(
        model="gpt-4.1",
        messages=MESSAGES,
        tools=CHAT_TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    result: dict[str, Any] = {"api": "chat", "stream": True, "finish_reason": None, "chunks": 0}
    for chunk in stream:
        result["chunks"] += 1
        result["id"], result["model"] = chunk.id, chunk.model
        if chunk.usage is not None:
            result["input_tokens"] = chunk.usage.prompt_tokens
            result["output_tokens"] = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
            for tc in choice.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
            if choice.finish_reason:
                result["finish_reason"] = choice.finish_reason
    result["text"] = "".join(text)
    result["tool_calls"] = [
        {"id": c["id"], "name": c["name"], "arguments": json.loads(c["arguments"])}
        for _, c in sorted(calls.items())
    ]
    return result


def _responses_summary(response: Any, stream: bool) -> dict[str, Any]:
    assert response.usage is not None
    return {
        "api": "responses",
        "stream": stream,
        "id": response.id,
        "model": response.model,
        "text": response.output_text,
        "tool_calls": [
            {"id": item.call_id, "name": item.name, "arguments": json.loads(item.arguments)}
            for item in response.output
            if item.type == "function_call"
        ],
        "input_tokens": response.usage.input_tokens,
        "output_tokens": response.usage.output_tokens,
        "finish_reason": response.status,
    }


def responses(client: openai.OpenAI) -> dict[str, Any]:
    response = client.responses.create(
        model="gpt-4.1",
        instructions="You are a coding agent.",
        input=MESSAGES[1]["content"],
        tools=RESPONSES_TOOLS,
    )
    return _responses_summary(response, stream=False)


def responses_stream(client: openai.OpenAI) -> dict[str, Any]:
    """Rebuild the reply from the deltas, and check it against the final ``response.completed``."""
    stream = client.responses.create(
        model="gpt-4.1",
        instructions="You are a coding agent.",
        input=MESSAGES[1]["content"],
        tools=RESPONSES_TOOLS,
        stream=True,
    )
    text: list[str] = []
    arguments: dict[str, str] = {}
    final: Any = None
    events = 0
    for event in stream:
        events += 1
        if event.type == "response.output_text.delta":
            text.append(event.delta)
        elif event.type == "response.function_call_arguments.delta":
            arguments[event.item_id] = arguments.get(event.item_id, "") + event.delta
        elif event.type in ("response.completed", "response.incomplete"):
            final = event.response
    assert final is not None, "stream ended without response.completed"
    summary = _responses_summary(final, stream=True)
    delta_calls = [json.loads(a) for a in arguments.values()]
    if "".join(text) != summary["text"] or delta_calls != [c["arguments"] for c in summary["tool_calls"]]:
        raise SystemExit("Responses stream deltas disagree with response.completed")
    summary["chunks"] = events
    return summary


def main() -> None:
    args = parse_args(__doc__ or "")
    with httpx2.Client(verify=tls_context(args.ca)) as http:
        client = openai.OpenAI(
            base_url=f"{args.url}/v1",
            api_key=FAKE_OPENAI_KEY,
            http_client=http,
            max_retries=0,
            default_headers=scenario_headers(args.scenario),
        )
        emit({"calls": [chat(client), chat_stream(client), responses(client), responses_stream(client)]})


if __name__ == "__main__":
    main()
