"""MCP over streamable HTTP, plain and TLS: the official `mcp` SDK as host (traced) and as server
(FastMCP, not traced), through the same HTTP decoders as LLM calls; the mcp_call events must say
what was asked and answered, and which model tool call asked for it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakellm import FakeLLMServer, Reply, Scenario, ToolCallSpec, client_env, generate_certs
from support.helpers import vigil_trace

pytestmark = pytest.mark.usefixtures("root")

DATA = Path(__file__).parent / "data" / "http"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(params=["http", "https"])
def mcp_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """(the MCP endpoint's URL, extra host arguments); the server is not traced."""
    port = free_port()
    argv = [sys.executable, str(DATA / "mcp_http_server.py"), str(port)]
    extra: list[str] = []
    if request.param == "https":
        certs = generate_certs(tmp_path / "pki")
        argv += [str(certs.server_cert), str(certs.server_key)]
        extra = [str(certs.ca_cert)]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the MCP server did not start"
                time.sleep(0.1)
        yield f"{request.param}://127.0.0.1:{port}/mcp", extra
    finally:
        server.terminate()
        server.wait(10)


def test_tool_call_over_streamable_http(mcp_server: tuple[str, list[str]], tmp_path: Path) -> None:
    url, extra = mcp_server
    notes = tmp_path / "notes.txt"
    notes.write_text("notes over HTTP\n")
    scenario = Scenario("read_notes", default_reply=Reply(
        text="", tool_calls=(ToolCallSpec("notes__read_notes", {"path": str(notes)}),)))
    with FakeLLMServer(tls=False, scenarios={"read_notes": scenario}, default_scenario="read_notes") as llm:
        result = vigil_trace(["--", sys.executable, str(DATA / "mcp_http_host.py"), url, *extra],
                             env=client_env(llm), timeout=300)
        exchanges = llm.exchanges.wait_finished(1)
        assert llm.errors == []
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout_other if line.startswith('{"is_error"')]
    assert printed == [{"is_error": False, "text": notes.read_text()}]
    calls = sorted(result.of_type("mcp_call"), key=lambda c: c["ts_ns"])
    assert [c["method"] for c in calls] == ["initialize", "tools/list", "tools/call"]
    init, listed, call = calls
    endpoint = url.split("://", 1)[1]
    for c in calls:
        assert (c["transport"], c["endpoint"], c["status"], c["server"]) == ("http", endpoint, "ok", "notes-server")
        assert c["duration_ms"] is not None and c["attribution"] is None and c["effects"] == []
    assert [c["request_id"] for c in calls] == ["0", "1", "2"]
    assert init["server_version"] and listed["tools"] == ["read_notes"]
    assert (call["tool"], call["arguments"]) == ("read_notes", {"path": str(notes)})
    model_call_id = exchanges[0].response.tool_calls[0].id
    assert (call["llm_tool_call_id"], call["llm_tool_name"]) == (model_call_id, "notes__read_notes")
    [llm_call] = result.of_type("llm_call")
    assert llm_call["source"] == "http" and llm_call["tool_calls"][0]["id"] == model_call_id
    # the MCP POSTs are not reported a second time as plain requests
    assert not [r for r in result.of_type("https_request") if r["method"] == "POST" and r["status"] == 200]
