"""Drive the fake server with the official ``anthropic`` SDK, as Claude-based agents do.

Two calls: Messages streaming (``messages.stream``; the SDK rebuilds text and tool inputs from
``text_delta`` / ``input_json_delta`` events) and Messages non-streaming, both with tools.
Prints ``{"calls": [...]}`` in call order, each with ``id, model, text,
tool_calls[{id, name, arguments}], input_tokens, output_tokens, finish_reason, stream``.

anthropic 2.x uses ``httpx2`` → CPython ``ssl`` → OpenSSL ``SSL_write_ex`` / ``SSL_read_ex``.

Run: ``python anthropic_client.py --url https://127.0.0.1:PORT --ca ca.pem`` (or
``FAKELLM_URL`` / ``FAKELLM_CA``; ``--scenario`` / ``FAKELLM_SCENARIO`` picks a scenario).
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
from _common import FAKE_ANTHROPIC_KEY, anthropic_summary, emit, parse_args, scenario_headers, tls_context

TOOLS: list[Any] = [
    {
        "name": "bash",
        "description": "Run a shell command",
        "input_schema": {
            "type": "object",
            "properties": {"command": {"type": "string"}},
            "required": ["command"],
        },
    },
    {
        "name": "read_file",
        "description": "Read a file",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    },
]
MESSAGES: list[Any] = [{"role": "user", "content": "List the files and show me the hostname."}]
MODEL = "claude-sonnet-4-6"


def streaming(client: anthropic.Anthropic) -> dict[str, Any]:
    events = 0
    with client.messages.stream(
        model=MODEL, max_tokens=1024, system="You are a coding agent.", messages=MESSAGES, tools=TOOLS
    ) as stream:
        for _ in stream:
            events += 1
        message = stream.get_final_message()
    return {**anthropic_summary(message, stream=True), "chunks": events}


def non_streaming(client: anthropic.Anthropic) -> dict[str, Any]:
    message = client.messages.create(
        model=MODEL, max_tokens=1024, system="You are a coding agent.", messages=MESSAGES, tools=TOOLS
    )
    return anthropic_summary(message, stream=False)


def main() -> None:
    args = parse_args(__doc__ or "")
    with httpx2.Client(verify=tls_context(args.ca)) as http:
        client = anthropic.Anthropic(
            base_url=args.url,
            api_key=FAKE_ANTHROPIC_KEY,
            http_client=http,
            max_retries=0,
            default_headers=scenario_headers(args.scenario),
        )
        emit({"calls": [streaming(client), non_streaming(client)]})


if __name__ == "__main__":
    main()
