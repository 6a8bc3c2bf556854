"""Intent over plain HTTP (local models, gateways): real clients against the fakellm server
without TLS, traced by `vigil trace` / `vigil run` with the real socket-payload sensor
(bpf/sockdata.bpf.c); every decoded llm_call must match what the server sent, field by field."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakellm import CLIENTS_DIR, FAKE_OPENAI_KEY, Exchange, FakeLLMServer, Reply, Scenario, ToolCallSpec, client_env
from support.helpers import VIGIL, TraceResult, events_and_output, vigil, vigil_trace
from support.intent_match import assert_matches as assert_llm_call_matches

pytestmark = pytest.mark.usefixtures("root")

AGENT = Path(__file__).parent / "data" / "http" / "openai_agent.py"


@pytest.fixture
def plain() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(tls=False) as srv:
        yield srv
        assert srv.errors == []


def trace(srv: FakeLLMServer, argv: list[str], *extra: str) -> TraceResult:
    result = vigil_trace([*extra, "--", *argv], env=client_env(srv), timeout=300)  # TCG guests are slow
    assert result.returncode == 0, result.stderr
    return result


def assert_matches(call: dict[str, Any], exchange: Exchange) -> None:
    """The decoded llm_call equals what the server sent, field by field, read from plain HTTP/1.1."""
    assert_llm_call_matches(call, exchange)
    sent = exchange.response
    assert sent is not None and call["response_id"] == (sent.response_id or None)
    assert call["http_version"] == exchange.http_version == "1.1"
    assert call["source"] == "http"


def on_traced_sockets(result: TraceResult) -> None:
    """Every plain-HTTP call is keyed by its socket: conn_id is the sock_id its connect reported."""
    sockets = {e["sock_id"] for e in result.of_type("net_connect")}
    assert {c["conn_id"] for c in result.of_type("llm_call")} <= sockets


def test_openai_sdk_over_plain_http(plain: FakeLLMServer) -> None:
    result = trace(plain, [sys.executable, str(CLIENTS_DIR / "openai_client.py")])
    exchanges = plain.exchanges.wait_finished(4)
    assert {e.stream for e in exchanges} == {True, False}
    calls = result.of_type("llm_call")
    assert len(calls) == 4
    by_response = {e.response.response_id: e for e in exchanges if e.response}
    for call in calls:
        assert_matches(call, by_response[call["response_id"]])
        assert call["session_id"] == result.events[0]["session_id"] and call["comm"] == "python"
        assert call["tool_calls"]
    on_traced_sockets(result)
    # the API key crossed the wire in clear; nothing vigil prints holds it
    assert FAKE_OPENAI_KEY not in result.stdout + result.stderr
    assert FAKE_OPENAI_KEY[8:30] not in result.stdout


def test_curl_against_ollama_chat_stream_and_generate(plain: FakeLLMServer, tmp_path: Path) -> None:
    chat = json.dumps({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}],
                       "tools": [{"type": "function", "function": {"name": "bash"}}]})
    generate = json.dumps({"model": "llama3.2", "prompt": "hi", "stream": False})
    script = tmp_path / "ollama.sh"
    script.write_text(f"curl -sS -o /dev/null {plain.url}/api/chat -d '{chat}'\n"
                      f"curl -sS -o /dev/null {plain.url}/api/generate -d '{generate}'\n"
                      f"curl -sS -o /dev/null {plain.url}/api/tags\n")
    result = trace(plain, ["bash", str(script)])
    exchanges = plain.exchanges.wait_finished(3)
    calls = sorted(result.of_type("llm_call"), key=lambda c: c["ts_ns"])
    assert [c["endpoint"] for c in calls] == ["/api/chat", "/api/generate"]
    for call, exchange in zip(calls, exchanges[:2], strict=True):
        assert_matches(call, exchange)
        assert call["comm"] == "curl"
    assert calls[0]["stream"] is True and len(calls[0]["tool_calls"]) == 2
    assert calls[0]["request_tools"] == ["bash"]
    assert calls[1]["stream"] is False and calls[1]["tool_calls"] == []
    other = result.of_type("https_request")
    assert [(r["method"], r["path"], r["status"]) for r in other] == [("GET", "/api/tags", 200)]
    on_traced_sockets(result)


def test_tls_connections_are_read_once(plain: FakeLLMServer) -> None:
    """Over HTTPS the socket carries ciphertext whose first write is a TLS record, not a request
    line: the socket sensor leaves it alone and each call is decoded once, from the TLS hooks."""
    with FakeLLMServer(http2=False) as tls:
        result = trace(tls, [sys.executable, str(CLIENTS_DIR / "openai_client.py")])
        tls.exchanges.wait_finished(4)
        assert tls.errors == []
    calls = result.of_type("llm_call")
    assert len(calls) == 4 and {c["source"] for c in calls} == {"tls"}
    assert not result.of_type("parse_failure")


def test_vigil_run_links_a_local_model_tool_call(plain: FakeLLMServer) -> None:
    command = "echo plain-http-tool-call && uname -s"
    plain.scenarios["one_bash"] = Scenario("one_bash", default_reply=Reply(
        text="Running it.", tool_calls=(ToolCallSpec("bash", {"command": command}),)))
    plain.default_scenario = "one_bash"
    proc = subprocess.run([*VIGIL, "run", "-o", "json", "--tool-mem-max", "256M", "--", sys.executable, str(AGENT)],
                          env=client_env(plain), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    exchanges = plain.exchanges.wait_finished(1)
    events, other = events_and_output(proc.stdout, proc.stderr)
    assert "plain-http-tool-call" in other
    llm = [e for e in events if e["type"] == "llm_call"]
    assert len(llm) == 1
    assert_matches(llm[0], exchanges[0])
    start = next(e for e in events if e["type"] == "tool_start" and e["argv"] == ["bash", "-c", command])
    assert start["tool_call_id"] == llm[0]["tool_calls"][0]["id"] == exchanges[0].response.tool_calls[0].id
    assert start["tool_name"] == "bash" and start["unrequested"] is False


def test_http_port_must_be_a_port() -> None:
    ran = vigil(["trace", "--http-port", "70000", "--", "true"])
    assert ran.returncode == 2 and "not a TCP port: '70000'" in ran.stderr
