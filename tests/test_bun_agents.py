"""Real Bun-compiled agents under vigil: Claude Code (old, middle, latest) and opencode, each
inside a loopback-only network namespace against the fake model server. Every LLM call the
server answered must be decoded field by field; with the locator off, vigil must say it is blind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bunagents.install import LATEST_CLAUDE, agent_binary

TESTS = Path(__file__).resolve().parent


def drive(tmp_path: Path, release: str, vigil: str = "trace", vigil_args: tuple[str, ...] = (),
          output: str = "json") -> dict[str, Any]:
    agent = "opencode" if release.startswith("opencode") else "claude"
    spec = {"agent": agent, "binary": str(agent_binary(release)), "vigil": vigil, "output": output,
            "vigil_args": ["--db", str(tmp_path / "vigil.db"), *vigil_args], "work": str(tmp_path / "work"),
            "timeout": 400}
    env = {**os.environ, "PYTHONPATH": str(TESTS), "VIGIL_TLS_CACHE": str(tmp_path / "tls-cache")}
    script = f"ip link set lo up && exec {sys.executable} -m bunagents.driver \"$0\""
    proc = subprocess.run(["unshare", "-n", "--", "bash", "-c", script, json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=450, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert not result["server_errors"], result["server_errors"]
    return result


def check_every_call_decoded(result: dict[str, Any]) -> list[dict[str, Any]]:
    exchanges = result["exchanges"]
    calls = [e for e in result["events"] if e["type"] == "llm_call"]
    assert len(exchanges) >= 2, result["stderr"]
    assert len(calls) == len(exchanges), (calls, exchanges, result["stderr"])
    assert sorted(c["model"] for c in calls) == sorted(x["model"] for x in exchanges)
    for call in calls:
        assert call["provider"] == "anthropic" and call["endpoint"] == "/v1/messages"
        assert call["status"] == 200 and call["stream"] is True and not call["truncated"]
        assert call["input_tokens"] == 412
    with_tool = [c for c in calls if c["tool_calls"]]
    without = [c for c in calls if not c["tool_calls"]]
    assert len(with_tool) == 1 and with_tool[0]["output_tokens"] == 87
    (tool,) = with_tool[0]["tool_calls"]
    assert tool["name"] in ("Bash", "bash")
    assert tool["arguments"] == {"command": "echo vigil-was-here", "description": "say hi"}
    assert tool["id"].startswith("toolu_")
    assert all(c["output_tokens"] == 9 and c["text"] == "Done: vigil-was-here ✓" for c in without)
    hooked = [e for e in result["events"] if e["type"] == "capture_hooked" and e["stack"] == "boringssl"]
    # "locator (late)": the first search outlasted the exec's hold (slow emulated guests); the
    # process ran on and was hooked when it ended, before its first call here
    assert len(hooked) == 1 and hooked[0]["how"] in ("locator", "locator (late)"), hooked
    assert not [e for e in result["events"] if e["type"] in ("capture_blind", "parse_failure", "lost")]
    return calls


def test_latest_claude_code_under_trace(tmp_path: Path) -> None:
    result = drive(tmp_path, LATEST_CLAUDE)
    check_every_call_decoded(result)
    # the tool call ran, as the agent's child, echoing what the model asked for
    assert any(e["type"] == "exec" and "echo vigil-was-here" in " ".join(e["argv"]) for e in result["events"])


def test_latest_claude_code_under_run(tmp_path: Path) -> None:
    result = drive(tmp_path, LATEST_CLAUDE, vigil="run")
    check_every_call_decoded(result)
    # the command ran as a tool call of its own (which LLM tool call it is linked to is the
    # command linker's business: Claude Code's shell-snapshot helpers come first)
    starts = [e for e in result["events"] if e["type"] == "tool_start" and "vigil-was-here" in " ".join(e["argv"])]
    assert len(starts) == 1 and starts[0]["held"] and not starts[0]["placement_error"]


@pytest.mark.parametrize("release", ["claude-code-2.1.113", "claude-code-2.1.220", "opencode-1.18.33"])
def test_other_releases_under_trace(tmp_path: Path, release: str) -> None:
    check_every_call_decoded(drive(tmp_path, release))


def test_blind_is_said_when_the_locator_is_off(tmp_path: Path) -> None:
    result = drive(tmp_path, LATEST_CLAUDE, vigil_args=("--no-tls-locate",), output="text")
    assert result["exchanges"], result["stderr"]
    blind = [line for line in result["stdout"].splitlines() if " BLIND " in line]
    assert blind, result["stdout"][-3000:]
    assert "traffic without plaintext" in blind[0] and "claude" in blind[0]
    assert "llm " not in result["stdout"]  # nothing decoded, and nothing pretends it was


CLIENT = """
await Bun.sleep(Number(process.argv[3]));
for (let i = 0; i < 3; i++) {
  const r = await fetch(process.argv[2] + "/v1/messages", {method: "POST", headers: {
    "content-type": "application/json", "x-api-key": "sk-ant-api03-test-not-a-key",
    "anthropic-version": "2023-06-01", "x-fake-scenario": "text_only"},
    body: JSON.stringify({model: "claude-sonnet-4-5", max_tokens: 64, stream: true,
                          messages: [{role: "user", content: "hi " + i}]})});
  await r.text();
}
"""


def test_running_bun_process_is_hooked_when_adopted(tmp_path: Path) -> None:
    """`vigil trace -p PID` of a Bun process that is already running: hooked at adoption, so its
    next calls are all decoded."""
    from fakellm import FakeLLMServer

    script = tmp_path / "client.mjs"
    script.write_text(CLIENT)
    with FakeLLMServer(http2=False) as server:
        env = {**os.environ, "BUN_BE_BUN": "1", "NODE_EXTRA_CA_CERTS": server.ca_path}
        client = subprocess.Popen([str(agent_binary("opencode-1.18.33")), str(script), server.url, "8000"], env=env)
        try:
            vigil = subprocess.run([sys.executable, "-m", "vigild.daemon.cli", "trace", "-o", "json", "--no-effects",
                                    "-p", str(client.pid), "--timeout", "120"],
                                   env={**os.environ, "VIGIL_TLS_CACHE": str(tmp_path / "cache")},
                                   capture_output=True, text=True, timeout=180, check=False)
        finally:
            client.kill()
            client.wait()
        events = [json.loads(line) for line in vigil.stdout.splitlines() if line.startswith("{")]
        exchanges = server.exchanges.wait_finished(3)
    assert vigil.returncode == 0, vigil.stderr
    calls = [e for e in events if e["type"] == "llm_call"]
    assert len(exchanges) == 3 and len(calls) == 3, (calls, vigil.stderr)
    assert sorted(c["response_id"] for c in calls) == sorted(e.response.response_id for e in exchanges)
    assert [e["how"] for e in events if e["type"] == "capture_hooked"] == ["locator"]
