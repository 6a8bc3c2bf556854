"""MCP over stdio end to end: the official `mcp` SDK (1.x) as host, the official
@modelcontextprotocol/server-filesystem (npm) as server, traced with the real pipe capture of
bpf/sockdata.bpf.c; the mcp_call events must say what the server was asked, what it answered,
what it did meanwhile, and which model tool call asked for it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from fakellm import FakeLLMServer, Reply, Scenario, ToolCallSpec, client_env
from support.helpers import TraceResult, vigil, vigil_trace
from support.otlp_receiver import OtlpReceiver, attrs, spans_of

pytestmark = pytest.mark.usefixtures("root")

HOST = Path(__file__).parent / "data" / "http" / "mcp_host.py"
# Installed by `setup.sh --dev` (the version is pinned there) beside the real agents.
FS_SERVER = Path(os.environ.get("VIGIL_TEST_MCP_FS", "/var/cache/vigil-agents/mcp-server-filesystem/node_modules/"
                                "@modelcontextprotocol/server-filesystem/dist/index.js"))


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    assert FS_SERVER.exists(), f"{FS_SERVER} is missing: npm install @modelcontextprotocol/server-filesystem"
    path = tmp_path / "notes.txt"
    path.write_text("notes for the MCP test\n")
    return path


def host(notes: Path, env: dict[str, str], *extra: str) -> TraceResult:
    result = vigil_trace([*extra, "--", sys.executable, str(HOST), "node", str(FS_SERVER), str(notes.parent)],
                         env=env, timeout=400)  # TCG guests start node slowly
    assert result.returncode == 0, result.stderr
    return result


def mcp_calls(result: TraceResult) -> dict[str, dict[str, Any]]:
    calls = result.of_type("mcp_call")
    assert [c["method"] for c in calls] == ["initialize", "tools/list", "tools/call"]
    assert not [f for f in result.of_type("parse_failure") if "MCP" in f["detail"]]
    return {c["method"]: c for c in calls}


def test_tool_call_over_stdio_with_the_servers_file_read(notes: Path) -> None:
    result = host(notes, dict(os.environ, MCP_FILE=str(notes)))
    printed = [json.loads(line) for line in result.stdout_other if line.startswith('{"is_error"')]
    assert printed == [{"is_error": False, "text": notes.read_text()}]
    calls = mcp_calls(result)
    init, listed, call = calls["initialize"], calls["tools/list"], calls["tools/call"]
    host_pid = result.events[0]["pid"]
    for c in calls.values():
        assert c["pid"] == host_pid and c["transport"] == "stdio" and c["status"] == "ok"
        assert c["server"] == "secure-filesystem-server" and c["server_pid"] not in (None, host_pid)
        assert c["duration_ms"] is not None and c["duration_ms"] >= 0
    assert [c["request_id"] for c in calls.values()] == ["0", "1", "2"]
    assert init["server_version"] and "read_text_file" in listed["tools"]
    assert call["tool"] == "read_text_file" and call["arguments"] == {"path": str(notes)}
    assert call["attribution"] == "exact" and call["llm_tool_call_id"] is None
    reads = [e for e in call["effects"] if e["type"] == "file_open" and e["path"] == str(notes)]
    assert reads and all(e["pid"] == call["server_pid"] for e in reads)
    assert call["ts_ns"] <= reads[0]["ts_ns"] <= call["ts_ns"] + call["duration_ms"] * 1e6
    # the read belongs to that call only
    assert not [e for c in (init, listed) for e in c["effects"] if e.get("path") == str(notes)]


def test_tool_error_is_said(notes: Path) -> None:
    outside = "/etc/hostname"
    result = host(notes, dict(os.environ, MCP_FILE=outside))
    call = mcp_calls(result)["tools/call"]
    assert call["status"] == "tool_error" and call["arguments"] == {"path": outside}
    assert not [e for e in call["effects"] if e.get("path") == outside]


def test_mcp_call_links_to_the_models_tool_call(notes: Path, tmp_path: Path) -> None:
    """...and `vigil show` puts it under that LLM call, the OTLP export makes it an execute_tool
    span linked to the chat span, with the server's file read as a span event."""
    scenario = Scenario("read_notes", default_reply=Reply(
        text="", tool_calls=(ToolCallSpec("filesystem__read_text_file", {"path": str(notes)}),)))
    db = tmp_path / "vigil.db"
    with FakeLLMServer(tls=False, scenarios={"read_notes": scenario}, default_scenario="read_notes") as srv:
        result = host(notes, client_env(srv), "--db", str(db))
        exchanges = srv.exchanges.wait_finished(1)
        assert srv.errors == []
    [llm] = result.of_type("llm_call")
    call = mcp_calls(result)["tools/call"]
    model_call_id = exchanges[0].response.tool_calls[0].id
    assert llm["tool_calls"][0]["id"] == model_call_id
    assert call["llm_tool_call_id"] == model_call_id and call["llm_tool_name"] == "filesystem__read_text_file"
    assert call["ts_ns"] > llm["ts_ns"] and call["status"] == "ok"

    session = str(result.events[0]["session_id"])
    shown = vigil(["show", session, "--db", str(db)], env={**os.environ, "COLUMNS": "300"})
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    at = next(i for i, text in enumerate(lines) if "mcp secure-filesystem-server read_text_file ok" in text)
    assert model_call_id in lines[at] and "exact attribution" in lines[at]
    assert any(" llm " in text and "ollama" not in text for text in lines[:at])
    assert any(str(notes) in text for text in lines[at + 1:at + 4])

    receiver = OtlpReceiver()
    try:
        out = vigil(["export", session, "--otlp-endpoint", receiver.url, "--db", str(db)])
        assert out.returncode == 0, out.stderr
        spans = [s for r in receiver.received for s in spans_of(r)]
    finally:
        receiver.close()
    [tool] = [s for s in spans if s.name == "execute_tool read_text_file"]
    [chat] = [s for s in spans if s.name.startswith("chat ")]
    a = attrs(tool)
    assert (a["gen_ai.operation.name"], a["gen_ai.tool.call.id"], a["mcp.method.name"], a["vigil.mcp.status"]) == \
        ("execute_tool", model_call_id, "tools/call", "ok")
    assert [link.span_id for link in tool.links] == [chat.span_id]
    assert [attrs(e)["file.path"] for e in tool.events if e.name == "file_open"] == [str(notes)]
