"""A fake agent on a local model: asks an OpenAI-compatible endpoint over plain HTTP (the fakellm
server with tls=False) with the official openai SDK, streaming, and runs each bash tool call it
gets with `bash -c COMMAND`."""

import json
import os
import subprocess

import openai

TOOLS = [{"type": "function", "function": {"name": "bash", "description": "Run a shell command",
                                           "parameters": {"type": "object",
                                                          "properties": {"command": {"type": "string"}},
                                                          "required": ["command"]}}}]

client = openai.OpenAI(base_url=os.environ["FAKELLM_URL"] + "/v1", api_key=os.environ["FAKELLM_OPENAI_KEY"],
                       max_retries=0)
stream = client.chat.completions.create(model="qwen2.5-coder", tools=TOOLS, stream=True,
                                        stream_options={"include_usage": True},
                                        messages=[{"role": "user", "content": "Say hello from the shell."}])
calls: dict[int, dict[str, str]] = {}
for chunk in stream:
    for choice in chunk.choices:
        for tc in choice.delta.tool_calls or []:
            slot = calls.setdefault(tc.index, {"name": "", "arguments": ""})
            if tc.function and tc.function.name:
                slot["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                slot["arguments"] += tc.function.arguments
for call in calls.values():
    if call["name"] == "bash":
        subprocess.run(["bash", "-c", json.loads(call["arguments"])["command"]], check=True)
