"""An agent that asks a local model (the fakellm server, plain HTTP, OpenAI chat) for a tool call,
waits as an agent would before spawning it, and spawns nothing: with `vigil run`, whatever the
placement warmer writes meanwhile comes from the model's intent alone (no placement happens).
Plain http.client: nothing in it spawns a process."""

import http.client
import json
import os
import sys
import time
import urllib.parse

url = urllib.parse.urlsplit(os.environ["FAKELLM_URL"])
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
body = json.dumps({"model": "qwen2.5-coder", "messages": [{"role": "user", "content": "list the files"}],
                   "tools": [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]})
conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json",
                                                    "Authorization": "Bearer " + os.environ["FAKELLM_OPENAI_KEY"]})
reply = json.loads(conn.getresponse().read())
calls = reply["choices"][0]["message"].get("tool_calls") or []
print(json.dumps({"tool_calls": len(calls)}), file=sys.stderr)
time.sleep(float(sys.argv[1]))
