"""A fake agent speaking OpenAI chat completions: it asks the model (the fakellm
server) what to do, runs each bash tool call with `bash -c COMMAND`, sends the results back, and
stops when the model answers without tool calls (at most 5 turns)."""

import json
import os
import ssl
import subprocess

import httpx2
import openai

TOOLS = [{"type": "function", "function": {
    "name": "bash", "description": "Run a shell command",
    "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}]

messages: list[dict] = [{"role": "user", "content": "Do the steps."}]
with httpx2.Client(verify=ssl.create_default_context(cafile=os.environ["FAKELLM_CA"])) as http:
    client = openai.OpenAI(base_url=os.environ["FAKELLM_URL"] + "/v1", api_key=os.environ["FAKELLM_OPENAI_KEY"],
                           http_client=http, max_retries=0)
    for _turn in range(5):
        reply = client.chat.completions.create(model="gpt-4.1", messages=messages, tools=TOOLS)
        message = reply.choices[0].message
        if not message.tool_calls:
            break
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            command = json.loads(call.function.arguments)["command"]
            done = subprocess.run(["bash", "-c", command], check=False)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": f"exit {done.returncode}"})
