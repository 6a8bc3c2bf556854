"""Run one Bun-compiled agent under vigil against the fake model server; print one JSON document.

Started by the tests as ``unshare -n -- python -m bunagents.driver SPEC_JSON`` so the agent and
the server share a namespace with loopback only: nothing can leave the machine. SPEC_JSON gives
``agent`` ("claude" | "opencode"), ``binary``, ``vigil`` (trace | run), ``vigil_args`` (extra
flags), ``work`` (a scratch directory). The output has vigil's JSON events, its text output when
asked, its stderr, the agent's exit status and the server's own record of every exchange.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fakellm.scripts import Reply, Scenario, ToolCallSpec
from fakellm.server import Exchange, FakeLLMServer

MODEL = "claude-sonnet-4-5"
# The first answer asks for one command of the agent's own shell tool, every later one is text:
# the agent runs the command, sends its result and ends (at least two LLM calls).
SHELL_TOOLS = {"claude": ("Bash", {"command": "echo vigil-was-here", "description": "say hi"}),
               "opencode": ("bash", {"command": "echo vigil-was-here", "description": "say hi"})}
QUIET = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1",
         "DISABLE_ERROR_REPORTING": "1", "IS_SANDBOX": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1",
         "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_LSP_DOWNLOAD": "1"}


def agent_command(spec: dict[str, Any], server: FakeLLMServer, work: Path) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, **QUIET, "HOME": str(work / "home"), "NODE_EXTRA_CA_CERTS": server.ca_path,
           "XDG_CONFIG_HOME": str(work / "config"), "XDG_DATA_HOME": str(work / "data"),
           "XDG_CACHE_HOME": str(work / "cache"), "XDG_STATE_HOME": str(work / "state")}
    if spec["agent"] == "claude":
        env.update(ANTHROPIC_BASE_URL=server.url, ANTHROPIC_API_KEY="sk-ant-api03-test-not-a-key")
        return [spec["binary"], "-p", "say hi", "--output-format", "json", "--dangerously-skip-permissions",
                "--max-turns", "4", "--model", MODEL], env
    config = {"$schema": "https://opencode.ai/config.json", "model": f"anthropic/{MODEL}", "autoupdate": False,
              "share": "disabled", "permission": {"bash": "allow", "edit": "allow"},
              "provider": {"anthropic": {"options": {"baseURL": f"{server.url}/v1",
                                                      "apiKey": "sk-ant-api03-test-not-a-key"}}},
              }
    env["OPENCODE_CONFIG_CONTENT"] = json.dumps(config)
    return [spec["binary"], "run", "--format", "json", "say hi"], env


def _after_first_call(server: FakeLLMServer, done: threading.Event) -> None:
    """Switch to text answers once the first LLM request has arrived (the tool call is sent)."""
    while not done.is_set() and not any(e.path.startswith("/v1/messages") for e in server.exchanges):
        time.sleep(0.005)
    server.default_scenario = "text"


def summary(exchange: Exchange) -> dict[str, Any]:
    body = exchange.request_json or {}
    return {"path": exchange.path, "status": exchange.status, "model": body.get("model"),
            "stream": body.get("stream"), "tools": [t.get("name") for t in body.get("tools") or []]}


def main() -> int:
    spec = json.loads(sys.argv[1])
    work = Path(spec["work"])
    for sub in ("home", "config", "data", "cache", "state"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    name, args = SHELL_TOOLS[spec["agent"]]
    first = Scenario("tool", default_reply=Reply(text="Running it, héllo ✓", tool_calls=(ToolCallSpec(name, args),)))
    then = Scenario("text", default_reply=Reply(text="Done: vigil-was-here ✓", tool_calls=(), output_tokens=9))
    with FakeLLMServer(http2=False, scenarios={"tool": first, "text": then}, default_scenario="tool") as server:
        done = threading.Event()
        threading.Thread(target=_after_first_call, args=(server, done), daemon=True).start()
        command, env = agent_command(spec, server, work)
        vigil = [sys.executable, "-m", "vigild.daemon.cli", spec["vigil"], "-o", spec.get("output", "json"),
                 *spec.get("vigil_args", []), "--", *command]
        started = time.monotonic()
        proc = subprocess.run(vigil, env=env, cwd=work, capture_output=True, text=True, timeout=spec.get("timeout", 300),
                              check=False)
        took = time.monotonic() - started
        done.set()
        server.exchanges.wait_finished(len(server.exchanges), timeout=5)
        exchanges = [summary(e) for e in server.exchanges if e.path.startswith("/v1/messages")]
        events = []
        for line in proc.stdout.splitlines():
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if isinstance(d, dict) and "ts_ns" in d:
                events.append(d)
        json.dump({"events": events, "stdout": proc.stdout if spec.get("output") == "text" else "",
                   "stderr": proc.stderr[-5000:], "status": proc.returncode, "seconds": took,
                   "exchanges": exchanges, "server_errors": server.errors}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
