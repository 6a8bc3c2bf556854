"""Intent capture end to end: real clients, traced by `vigil trace` with the real TLS uprobes,
against the local HTTPS fake; every decoded llm_call must match what the server sent."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakellm import CLIENTS_DIR, FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY, FakeLLMServer, client_env
from support.helpers import VIGIL, TraceResult, parse_json_lines, vigil_trace
from support.intent_match import PROVIDER, SECRETS, assert_matches, assert_no_secret, matched

pytestmark = pytest.mark.usefixtures("root")


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv
        assert srv.errors == []


def trace(srv: FakeLLMServer, argv: list[str], *extra: str, scenario: str | None = None) -> TraceResult:
    # a deadline, not a timing: the openai SDK's import alone takes 60-220 s in a loaded TCG guest
    result = vigil_trace([*extra, "--", *argv], env=client_env(srv, scenario), timeout=360)
    assert result.returncode == 0, result.stderr
    return result


def test_openai_sdk_chat_and_responses(server: FakeLLMServer) -> None:
    result = trace(server, [sys.executable, str(CLIENTS_DIR / "openai_client.py")])
    exchanges = server.exchanges.wait_finished(4)
    assert {e.provider for e in exchanges} == {"openai_chat", "openai_responses"}
    assert {e.stream for e in exchanges} == {True, False}
    matched(result, exchanges)
    assert all(c["tool_calls"] for c in result.of_type("llm_call"))
    assert_no_secret(json.dumps(result.events) + result.stderr)


def test_anthropic_sdk_stream_with_two_tool_uses_and_plain(server: FakeLLMServer) -> None:
    result = trace(server, [sys.executable, str(CLIENTS_DIR / "anthropic_client.py")])
    exchanges = server.exchanges.wait_finished(2)
    matched(result, exchanges)
    streamed = [c for c in result.of_type("llm_call") if c["stream"]]
    assert len(streamed) == 1 and len(streamed[0]["tool_calls"]) == 2 and streamed[0]["text"]
    assert_no_secret(json.dumps(result.events))


@pytest.mark.parametrize("http", ["--http1.1", "--http2"])
def test_curl(server: FakeLLMServer, http: str, tmp_path: Path) -> None:
    body = json.dumps({"model": "claude-sonnet-4-6", "max_tokens": 64, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]})
    gemini = json.dumps({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    script = tmp_path / "calls.sh"
    script.write_text(
        f"curl -sS -o /dev/null {http} --cacert {server.ca_path} {server.url}/v1/messages "
        f"-H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' -H 'x-api-key: {FAKE_ANTHROPIC_KEY}' "
        f"-d '{body}'\n"
        f"curl -sS -o /dev/null {http} --cacert {server.ca_path} "
        f"'{server.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={SECRETS[2]}' "
        f"-H 'content-type: application/json' -d '{gemini}'\n"
        f"curl -sS -o /dev/null {http} --cacert {server.ca_path} {server.url}/simple/requests/\n"
    )
    result = trace(server, ["bash", str(script)])
    exchanges = server.exchanges.wait_finished(3)
    assert {e.http_version for e in exchanges} == {"2" if http == "--http2" else "1.1"}
    llm = [e for e in exchanges if e.provider]
    calls = result.of_type("llm_call")
    assert sorted(c["provider"] for c in calls) == ["anthropic", "gemini"]
    for call in calls:
        exchange = next(e for e in llm if PROVIDER[e.provider or ""] == call["provider"])
        assert_matches(call, exchange)
    other = result.of_type("https_request")
    assert [(r["method"], r["path"], r["status"]) for r in other] == [("GET", "/simple/requests/", 200)]
    assert all(c["comm"] == "curl" for c in calls)
    assert_no_secret(json.dumps(result.events))


def test_node_fetch(server: FakeLLMServer) -> None:
    node = shutil.which("node")
    assert node, "node is needed (setup.sh --dev installs nodejs)"
    result = trace(server, [node, str(CLIENTS_DIR / "node_fetch.js")])
    exchanges = server.exchanges.wait_finished(2)
    matched(result, exchanges)
    assert {c["comm"] for c in result.of_type("llm_call")} == {"node"}
    assert_no_secret(json.dumps(result.events))


def test_four_concurrent_streams_do_not_mix(server: FakeLLMServer) -> None:
    result = trace(server, [sys.executable, str(CLIENTS_DIR / "concurrent_streams.py")])
    exchanges = server.exchanges.wait_finished(4)
    assert len({e.connection_id for e in exchanges}) == 4
    matched(result, exchanges)
    assert len({c["conn_id"] for c in result.of_type("llm_call")}) == 4


def test_four_concurrent_streams_on_one_http2_connection(server: FakeLLMServer) -> None:
    result = trace(server, [sys.executable, str(CLIENTS_DIR / "concurrent_streams.py"), "--http2"])
    exchanges = server.exchanges.wait_finished(4)
    assert len({e.connection_id for e in exchanges}) == 1 and {e.http_version for e in exchanges} == {"2"}
    matched(result, exchanges)
    assert len({c["conn_id"] for c in result.of_type("llm_call")}) == 1


def test_nothing_stored_holds_a_credential(server: FakeLLMServer, tmp_path: Path) -> None:
    db = tmp_path / "vigil.db"
    trace(server, [sys.executable, str(CLIENTS_DIR / "anthropic_client.py")], "--db", str(db), "--capture-content")
    server.exchanges.wait_finished(2)
    rows = sqlite3.connect(db).execute("SELECT data FROM events WHERE type = 'llm_call'").fetchall()
    assert len(rows) == 2
    stored = "\n".join(r[0] for r in rows)
    assert '"request_messages"' in stored  # content capture was on ...
    assert_no_secret(stored)  # ... and still no key
    assert_no_secret(db.read_bytes().decode("latin-1"))


def test_library_loaded_from_an_unusual_path_is_hooked(server: FakeLLMServer, tmp_path: Path) -> None:
    """A private copy of libssl (another inode: what a venv or a container brings) is found in the
    process's maps after it loads, and hooked before the process uses it."""
    libdir = tmp_path / "lib"
    libdir.mkdir()
    maps = Path("/proc/self/maps").read_text()
    libssl = next(line.split()[-1] for line in maps.splitlines() if "/libssl.so" in line)
    shutil.copy(libssl, libdir / Path(libssl).name)
    script = tmp_path / "late_client.py"
    script.write_text(
        f"import ssl, sys, time, runpy\nsys.path.insert(0, {str(CLIENTS_DIR)!r})\n"
        "time.sleep(1.0)  # the library is mapped now; give the scan a moment, as any real setup takes\n"
        f"sys.argv = ['anthropic_client.py']\nrunpy.run_path({str(CLIENTS_DIR / 'anthropic_client.py')!r}, run_name='__main__')\n"
    )
    env = client_env(server)
    env["LD_LIBRARY_PATH"] = str(libdir)
    result = vigil_trace(["--", sys.executable, str(script)], env=env, timeout=120, verbose=True)
    assert result.returncode == 0, result.stderr
    assert "hooked openssl in /proc/" in result.stderr and f"{libdir}/libssl.so" in result.stderr
    matched(result, server.exchanges.wait_finished(2))


PAUSED_STREAM_CLIENT = """
import http.client, json, ssl, sys
url, ca = sys.argv[1], sys.argv[2]
host, port = url.split("//")[1].split(":")
conn = http.client.HTTPSConnection(host, int(port), context=ssl.create_default_context(cafile=ca))
body = json.dumps({"model": "claude-sonnet-4-6", "max_tokens": 64, "stream": True,
                   "messages": [{"role": "user", "content": "hi"}]})
for i in range(2):
    conn.request("POST", "/v1/messages", body, {"content-type": "application/json",
                 "x-api-key": "sk-ant-api03-keepalive", "x-fake-scenario": "slow", "x-fake-delay-ms": "20"})
    response = conn.getresponse()
    if i == 0:  # the start of the stream is read; the rest waits until the test says go
        response.readline()
        print("streaming", flush=True)
        sys.stdin.readline()
    response.read()
"""


def test_attach_in_the_middle_of_a_stream(server: FakeLLMServer, tmp_path: Path) -> None:
    """Tracing starts while a streamed response is half-way through: that exchange cannot be
    decoded and says so; the next request on the same connection decodes in full. The client
    pauses inside the first stream until vigil has hooked its TLS, however long that takes."""
    script = tmp_path / "paused.py"
    script.write_text(PAUSED_STREAM_CLIENT)
    client = subprocess.Popen([sys.executable, str(script), server.url, server.ca_path],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert client.stdin is not None and client.stdout is not None
    tracer = None
    try:
        assert client.stdout.readline() == "streaming\n"
        tracer = subprocess.Popen([*VIGIL, "trace", "-o", "json", "-p", str(client.pid), "--timeout", "120"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert tracer.stdout is not None
        printed = [tracer.stdout.readline()]  # session_start: said once the client's TLS is hooked
        assert '"session_start"' in printed[0], tracer.stderr
        client.stdin.write("go\n")
        client.stdin.close()
        assert client.wait(timeout=60) == 0
        out, err = tracer.communicate(timeout=60)
    finally:
        client.kill()
        if tracer is not None:
            tracer.kill()
    assert tracer.returncode == 0, err
    events, _ = parse_json_lines("".join(printed) + out)
    result = TraceResult(tracer.returncode, events, err, [])
    exchanges = server.exchanges.wait_finished(2)
    calls = result.of_type("llm_call")
    assert len(calls) == 1
    assert_matches(calls[0], exchanges[1])
    failures = result.of_type("parse_failure")
    assert [f["reason"] for f in failures] == ["mid_stream_start"]


BIG_REQUEST_CLIENT = """
import http.client, json, ssl, sys
url, ca = sys.argv[1], sys.argv[2]
host, port = url.split("//")[1].split(":")
conn = http.client.HTTPSConnection(host, int(port), context=ssl.create_default_context(cafile=ca))
prompt = "review this file:\\n" + ("x = 1\\n" * (10 * 1024 * 1024 // 6))
body = json.dumps({"model": "claude-sonnet-4-6", "max_tokens": 64, "stream": True,
                   "messages": [{"role": "user", "content": prompt}]})
conn.request("POST", "/v1/messages", body, {"content-type": "application/json", "x-api-key": "sk-ant-api03-big"})
conn.getresponse().read()
print(len(body))
"""


def test_ten_megabyte_request_is_captured_whole(server: FakeLLMServer, tmp_path: Path) -> None:
    script = tmp_path / "big.py"
    script.write_text(BIG_REQUEST_CLIENT)
    result = trace(server, [sys.executable, str(script), server.url, server.ca_path], "--capture-content")
    (exchange,) = server.exchanges.wait_finished(1)
    (call,) = result.of_type("llm_call")
    assert_matches(call, exchange)
    assert call["truncated"] is False
    assert not result.of_type("lost")
    sent = exchange.request_json["messages"][0]["content"]
    assert call["request_messages"][0]["content"] == sent
    assert len(sent) > 10_000_000


def test_gnutls_client(server: FakeLLMServer, tmp_path: Path) -> None:
    """gnutls-cli speaks through libgnutls (gnutls_record_send/recv), not OpenSSL."""
    gnutls_cli = shutil.which("gnutls-cli")
    assert gnutls_cli, "gnutls-cli is needed (setup.sh --dev installs gnutls-bin)"
    body = json.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]})
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Authorization: Bearer {FAKE_OPENAI_KEY}\r\nConnection: close\r\n"
               f"Content-Length: {len(body)}\r\n\r\n{body}")
    (tmp_path / "request").write_text(request)
    script = tmp_path / "gnutls.sh"
    script.write_text(f"{gnutls_cli} --x509cafile {server.ca_path} -p {server.port} 127.0.0.1 "
                      f"< {tmp_path / 'request'} > {tmp_path / 'response'} 2>/dev/null; exit 0\n")
    result = trace(server, ["sh", str(script)])
    (exchange,) = server.exchanges.wait_finished(1)
    (call,) = result.of_type("llm_call")
    assert call["comm"] == "gnutls-cli"
    assert_matches(call, exchange)
    assert_no_secret(json.dumps(result.events))
