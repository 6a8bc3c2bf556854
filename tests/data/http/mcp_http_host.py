"""An MCP host over streamable HTTP: asks the model (the fakellm server over plain HTTP, openai
SDK) which tool to call, then calls it on the MCP server at URL with the official `mcp` SDK.

    python mcp_http_host.py URL [CA]

Prints the tool's result status and text as JSON."""

import asyncio
import json
import os
import ssl
import sys

import httpx
import openai
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client


def ask_model() -> tuple[str, dict]:
    client = openai.OpenAI(base_url=os.environ["FAKELLM_URL"] + "/v1", api_key=os.environ["FAKELLM_OPENAI_KEY"],
                           max_retries=0)
    tools = [{"type": "function", "function": {"name": "notes__read_notes",
                                               "parameters": {"type": "object",
                                                              "properties": {"path": {"type": "string"}}}}}]
    reply = client.chat.completions.create(model="qwen2.5-coder", tools=tools,
                                           messages=[{"role": "user", "content": "Read the notes."}])
    call = reply.choices[0].message.tool_calls[0]
    return call.function.name.removeprefix("notes__"), json.loads(call.function.arguments)


async def main() -> None:
    tool, arguments = ask_model()
    verify = ssl.create_default_context(cafile=sys.argv[2]) if len(sys.argv) > 2 else True

    def client(headers=None, timeout=None, auth=None):  # noqa: ANN001, ANN202 - the SDK's factory protocol
        return httpx.AsyncClient(headers=headers, timeout=timeout, auth=auth, verify=verify, follow_redirects=True)

    async with streamablehttp_client(sys.argv[1], httpx_client_factory=client) as (read, write, _), \
            ClientSession(read, write) as session:
        await session.initialize()
        await session.list_tools()
        result = await session.call_tool(tool, arguments)
    text = "".join(c.text for c in result.content if c.type == "text")
    print(json.dumps({"is_error": result.isError, "text": text}))


asyncio.run(main())
