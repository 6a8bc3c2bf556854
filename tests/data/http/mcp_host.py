"""An MCP host: asks the model (the fakellm server over plain HTTP, openai SDK) what to do, then
carries out its tool call through an MCP server over stdio with the official `mcp` SDK.

    python mcp_host.py SERVER_COMMAND ARG...

Without FAKELLM_URL it calls read_text_file on $MCP_FILE itself. Prints the tool's result status
and text as JSON."""

import asyncio
import json
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def ask_model() -> tuple[str, dict]:
    import openai

    client = openai.OpenAI(base_url=os.environ["FAKELLM_URL"] + "/v1", api_key=os.environ["FAKELLM_OPENAI_KEY"],
                           max_retries=0)
    tools = [{"type": "function", "function": {"name": "filesystem__read_text_file",
                                               "parameters": {"type": "object",
                                                              "properties": {"path": {"type": "string"}}}}}]
    reply = client.chat.completions.create(model="qwen2.5-coder", tools=tools,
                                           messages=[{"role": "user", "content": "Read the notes."}])
    call = reply.choices[0].message.tool_calls[0]
    return call.function.name.removeprefix("filesystem__"), json.loads(call.function.arguments)


async def main() -> None:
    if os.environ.get("FAKELLM_URL"):
        tool, arguments = ask_model()
    else:
        tool, arguments = "read_text_file", {"path": os.environ["MCP_FILE"]}
    server = StdioServerParameters(command=sys.argv[1], args=sys.argv[2:])
    async with stdio_client(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        await session.list_tools()
        result = await session.call_tool(tool, arguments)
    text = "".join(c.text for c in result.content if c.type == "text")
    print(json.dumps({"is_error": result.isError, "text": text}))


asyncio.run(main())
