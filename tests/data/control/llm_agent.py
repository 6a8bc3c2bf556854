"""A fake agent that asks the model (the fakellm server, Anthropic streaming) what to do, runs
each bash tool call it gets with `bash -c COMMAND`, then runs one process nobody asked for."""

import os
import ssl
import subprocess

import anthropic
import httpx2

TOOLS = [{"name": "bash", "description": "Run a shell command",
          "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}]

with httpx2.Client(verify=ssl.create_default_context(cafile=os.environ["FAKELLM_CA"])) as http:
    client = anthropic.Anthropic(base_url=os.environ["FAKELLM_URL"], api_key=os.environ["FAKELLM_ANTHROPIC_KEY"],
                                 http_client=http, max_retries=0)
    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=1024, tools=TOOLS,
                                messages=[{"role": "user", "content": "Say hello from the shell."}]) as stream:
        message = stream.get_final_message()
for block in message.content:
    if block.type == "tool_use" and block.name == "bash":
        subprocess.run(["bash", "-c", block.input["command"]], check=True)
subprocess.run(["/bin/true", "unrequested"], check=True)
