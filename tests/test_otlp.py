"""OTLP export: a recorded session, sent to a real OTLP/HTTP receiver run by the test, decoded with
opentelemetry-proto and checked span by span against the stored events."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from fakellm import CLIENTS_DIR, FakeLLMServer, client_env
from support.helpers import vigil, vigil_trace
from support.otlp_receiver import OtlpReceiver, attrs, spans_of
from vigild.correlate.process_tree import ProcessInfo
from vigild.correlate.sessions import Session
from vigild.daemon.crypto import generate_key_file
from vigild.daemon.sinks import otlp
from vigild.daemon.sinks.otlp import OtlpExportError, export_session, traces_url
from vigild.daemon.store import Store

PROMPT = "List the files and show me the hostname."
CONTENT_ATTRS = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
                 "gen_ai.tool.call.arguments")


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.close()


def by_name(spans: list[Span], prefix: str) -> list[Span]:
    return [s for s in spans if s.name.startswith(prefix)]


def assert_one_tree(spans: list[Span]) -> Span:
    """One trace, one root, every parent present; returns the root."""
    assert len({s.trace_id for s in spans}) == 1
    ids = {s.span_id for s in spans}
    assert len(ids) == len(spans)
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 1
    assert all(s.parent_span_id in ids for s in spans if s.parent_span_id)
    return roots[0]


# ---- end to end: a real client traced by vigil, exported by the CLI ----

@pytest.mark.usefixtures("root")
def test_traced_llm_session_exports_genai_spans(tmp_path: Path, receiver: OtlpReceiver) -> None:
    db = tmp_path / "vigil.db"
    with FakeLLMServer() as srv:
        script = f"{sys.executable} {CLIENTS_DIR / 'anthropic_client.py'} >/dev/null; /bin/echo done; exit 0"
        result = vigil_trace(["--db", str(db), "--capture-content", "--", "bash", "-c", script],
                             env=client_env(srv), timeout=120)
        assert result.returncode == 0, result.stderr
        assert srv.errors == []
    session_id = result.events[0]["session_id"]
    store = Store(db)
    calls = store.events(session_id, ("llm_call",))
    assert len(calls) == 2 and all(c["request_messages"] for c in calls)

    env = {**os.environ, "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}
    out = vigil(["export", str(session_id), "--otlp-endpoint", receiver.url, "--db", str(db)], env=env)
    assert out.returncode == 0, out.stderr
    (plain,) = receiver.received
    assert plain.path == "/v1/traces" and plain.headers.get("content-encoding") == "gzip"
    spans = spans_of(plain)
    assert out.stdout.strip() == f"exported session {session_id}: {len(spans)} spans"
    root = assert_one_tree(spans)
    assert root.name == "session bash"
    assert attrs(root)["vigil.session.id"] == session_id and attrs(root)["process.exit.code"] == 0
    resource = attrs(plain.request.resource_spans[0].resource)
    assert resource["service.name"] == "vigild" and resource["vigil.session.id"] == session_id

    # Under `vigil trace` each child bash runs is a tool call the model did not ask for: its process
    # hangs under that call's execute_tool span, which hangs under the session.
    span_by_id = {s.span_id: s for s in spans}

    def ran_by_a_tool_call(span: Span) -> bool:
        call = span_by_id[span.parent_span_id]
        return call.name.startswith("execute_tool ") and call.parent_span_id == root.span_id

    (python,) = [s for s in by_name(spans, "process ") if attrs(s)["process.pid"] == calls[0]["pid"]]
    assert ran_by_a_tool_call(python)
    assert attrs(python)["process.command_args"][1].endswith("anthropic_client.py")
    (echo,) = [s for s in by_name(spans, "process ") if attrs(s)["process.command_args"] == ["/bin/echo", "done"]]
    assert ran_by_a_tool_call(echo) and attrs(echo)["process.exit.code"] == 0
    assert echo.parent_span_id != python.parent_span_id  # two tool calls, one span each

    chats = sorted(by_name(spans, "chat "), key=lambda s: s.start_time_unix_nano)
    assert len(chats) == len(calls)
    for span, call in zip(chats, calls, strict=True):
        a = attrs(span)
        assert span.name == f"chat {call['model']}" and span.kind == Span.SPAN_KIND_CLIENT
        assert span.parent_span_id == python.span_id
        assert span.start_time_unix_nano == call["ts_ns"]
        assert span.end_time_unix_nano == call["ts_ns"] + int(call["duration_ms"] * 1e6)
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == "anthropic"
        assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == call["model"]
        assert a["gen_ai.response.id"] == call["response_id"]
        assert a["gen_ai.response.finish_reasons"] == [call["finish_reason"]]
        assert a["gen_ai.usage.input_tokens"] == call["input_tokens"]
        assert a["gen_ai.usage.output_tokens"] == call["output_tokens"]
        assert a["gen_ai.request.stream"] == call["stream"]
        assert a["url.path"] == "/v1/messages" and a["http.response.status_code"] == 200
        assert not set(CONTENT_ATTRS) & set(a)
    assert PROMPT.encode() not in plain.raw
    assert calls[0]["text"].encode() not in plain.raw

    out = vigil(["export", str(session_id), "--otlp-endpoint", receiver.url + "/v1/traces", "--db", str(db),
                 "--capture-content"])
    assert out.returncode == 0, out.stderr
    content = spans_of(receiver.received[1])
    assert sorted((s.trace_id, s.span_id, s.parent_span_id) for s in content) == \
        sorted((s.trace_id, s.span_id, s.parent_span_id) for s in spans)  # idempotent re-export
    for span, call in zip(sorted(by_name(content, "chat "), key=lambda s: s.start_time_unix_nano), calls,
                          strict=True):
        a = attrs(span)
        assert json.loads(a["gen_ai.input.messages"]) == [{"role": "user", "parts": [{"type": "text",
                                                                                       "content": PROMPT}]}]
        assert json.loads(a["gen_ai.system_instructions"]) == [{"type": "text", "content": "You are a coding agent."}]
        (answer,) = json.loads(a["gen_ai.output.messages"])
        assert answer["role"] == "assistant" and answer["finish_reason"] == "tool_call"
        assert answer["parts"][0] == {"type": "text", "content": call["text"]}
        assert [(p["id"], p["name"], p["arguments"]) for p in answer["parts"][1:]] == \
            [(t["id"], t["name"], t["arguments"]) for t in call["tool_calls"]]


# ---- unit level: a session written into a store, with tool calls and effects ----

T0 = 1_800_000_000_000_000_000
MS = 1_000_000
SID = 4242


def ev(kind: str, at_ms: int, pid: int | None, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "ts_ns": T0 + at_ms * MS, "session_id": SID, "pid": pid, **fields}


def agent_store(path: Path, key_file: Path | None = None) -> Store:
    """An agent (pid 100) asks for `bash ls -la`; the tool (pid 200) runs `ls` (pid 201), which
    opens a file and connects out; plus an unrequested tool still running at the end."""
    store = Store(path, key_file=key_file)
    session = Session(id=SID, root_pid=100, started_ns=T0, argv=["claude", "-p", "hi"], agent="claude",
                      cwd="/src", uid=1000, host="box", ended_ns=T0 + 900 * MS, exit_code=0)
    store.upsert_session(session)
    for info in (ProcessInfo(100, 1, SID, "claude", T0, 0, "/usr/bin/claude", ["claude", "-p", "hi"], T0 + 900 * MS, 0),
                 ProcessInfo(200, 100, SID, "bash", T0 + 300 * MS, 1, "/bin/bash", ["bash", "-c", "ls -la"],
                             T0 + 500 * MS, 2),
                 ProcessInfo(201, 200, SID, "ls", T0 + 310 * MS, 2, "/bin/ls", ["ls", "-la"], T0 + 490 * MS, 2),
                 ProcessInfo(300, 100, SID, "sleep", T0 + 700 * MS, 1, "/bin/sleep", ["sleep", "9"])):
        store.upsert_process(info)
    tool_call = {"id": "toolu_1", "name": "bash", "arguments": {"command": "ls -la"}}
    for event in (
        ev("session_start", 0, 100, argv=["claude", "-p", "hi"]),
        ev("llm_call", 100, 100, provider="openai", endpoint="/v1/chat/completions", host="api.openai.com",
           model="gpt-5", stream=False, status=200, input_tokens=10, output_tokens=5, duration_ms=150.5,
           finish_reason="tool_calls", text="running it", tool_calls=[tool_call], response_id="chatcmpl-1",
           request_messages=[{"role": "user", "content": "please list"}], conn_id=7),
        ev("tool_start", 301, 200, tool_call=200, tool_call_id="toolu_1", tool_name="bash",
           argv=["bash", "-c", "ls -la"], filename="/bin/bash", response_id="chatcmpl-1", unrequested=False),
        ev("exec", 311, 201, argv=["ls", "-la"], filename="/bin/ls"),
        ev("file_open", 320, 201, path="/etc/hostname", flags=0, ret=3),
        ev("net_connect", 330, 201, remote_addr="10.0.0.9", remote_port=443, family="ipv4", sock_type="stream"),
        ev("mem_spike", 340, 201, tool_call=200, rss_bytes=300 << 20),
        ev("tool_end", 500, 200, tool_call=200, tool_call_id="toolu_1", tool_name="bash", argv=["bash", "-c", "ls -la"],
           duration_ms=199.0, outcome="exit", exit_code=2, signal=None, limits_hit=["memory.high"],
           peak_memory_bytes=310 << 20, unrequested=False, response_id="chatcmpl-1"),
        ev("https_request", 600, 100, method="GET", host="registry.npmjs.org", path="/x", status=404,
           http_version="1.1", request_bytes=0, response_bytes=10, duration_ms=20.0, conn_id=8),
        ev("detection", 650, 100, tool_call=None, name="secret_read", reason="read a private key",
           evidence=[{"type": "file_open", "path": "/root/.ssh/id_rsa"}]),
        ev("dns_query", 660, 100, server="1.1.1.1", name="example.com", qtype="A"),
        ev("tool_start", 701, 300, tool_call=300, tool_call_id=None, tool_name=None, argv=["sleep", "9"],
           unrequested=True),
        ev("some_future_event", 800, 300, detail="whatever"),
        {"type": "lost", "ts_ns": T0 + 850 * MS, "session_id": SID, "kind": "exec", "count": 3, "total": 3},
        ev("session_end", 900, 100, argv=["claude", "-p", "hi"]),
    ):
        store.add_event(event)
    store.commit()
    return store


def test_tool_calls_and_effects_structure(tmp_path: Path, receiver: OtlpReceiver) -> None:
    store = agent_store(tmp_path / "v.db")
    sent = export_session(store, SID, receiver.url, capture_content=False, headers={"x-scope": "team-a"})
    (got,) = receiver.received
    assert got.headers["x-scope"] == "team-a"
    spans = spans_of(got)
    assert sent == len(spans) == 8  # root, chat, GET, 2 tools, 3 processes (the agent's own is the root)
    root = assert_one_tree(spans)
    named = {s.name: s for s in spans}
    assert root.name == "invoke_agent claude"
    assert attrs(root)["gen_ai.agent.name"] == "claude" and attrs(root)["gen_ai.operation.name"] == "invoke_agent"
    assert attrs(root)["process.command_args"] == ["claude", "-p", "hi"] and attrs(root)["process.pid"] == 100
    assert (root.start_time_unix_nano, root.end_time_unix_nano) == (T0, T0 + 900 * MS)

    chat = named["chat gpt-5"]
    assert chat.parent_span_id == root.span_id
    assert attrs(chat)["gen_ai.provider.name"] == "openai" and attrs(chat)["server.address"] == "api.openai.com"
    assert chat.end_time_unix_nano == T0 + 100 * MS + 150_500_000

    tool = named["execute_tool bash"]
    a = attrs(tool)
    assert tool.parent_span_id == root.span_id and tool.kind == Span.SPAN_KIND_INTERNAL
    assert a["gen_ai.operation.name"] == "execute_tool" and a["gen_ai.tool.call.id"] == "toolu_1"
    assert a["gen_ai.tool.name"] == "bash" and a["vigil.tool.outcome"] == "exit" and a["process.exit.code"] == 2
    assert a["vigil.tool.limits_hit"] == ["memory.high"] and a["vigil.tool.peak_memory_bytes"] == 310 << 20
    assert "gen_ai.tool.call.arguments" not in a
    assert tool.status.code == Status.STATUS_CODE_ERROR and tool.status.message == "exit"
    assert (tool.start_time_unix_nano, tool.end_time_unix_nano) == (T0 + 301 * MS, T0 + 500 * MS)
    assert [link.span_id for link in tool.links] == [chat.span_id]
    assert [e.name for e in tool.events] == ["mem_spike"]
    assert attrs(tool.events[0])["vigil.rss_bytes"] == 300 << 20

    bash, ls = named["process bash"], named["process ls"]
    assert bash.parent_span_id == tool.span_id and ls.parent_span_id == bash.span_id
    assert attrs(ls)["process.parent_pid"] == 200 and attrs(ls)["process.command_args"] == ["ls", "-la"]
    effects = {e.name: e for e in ls.events}
    assert set(effects) == {"exec", "file_open", "net_connect"}
    assert attrs(effects["file_open"])["file.path"] == "/etc/hostname"
    assert effects["file_open"].time_unix_nano == T0 + 320 * MS
    net = attrs(effects["net_connect"])
    assert (net["network.peer.address"], net["network.peer.port"]) == ("10.0.0.9", 443)

    unrequested = named["execute_tool unknown"]
    assert attrs(unrequested)["vigil.tool.unrequested"] is True and not unrequested.links
    assert unrequested.end_time_unix_nano == T0 + 900 * MS  # never ended: until the session's end
    sleep = named["process sleep"]
    assert sleep.parent_span_id == unrequested.span_id
    assert [e.name for e in sleep.events] == ["some_future_event"]

    http = named["GET"]
    assert http.parent_span_id == root.span_id and http.kind == Span.SPAN_KIND_CLIENT
    assert attrs(http)["http.response.status_code"] == 404 and http.status.code == Status.STATUS_CODE_ERROR
    root_events = {e.name: attrs(e) for e in root.events}
    assert root_events["detection"]["vigil.name"] == "secret_read"
    assert root_events["detection"]["vigil.reason"] == "read a private key"
    assert json.loads(root_events["detection"]["vigil.evidence"]) == [{"type": "file_open", "path": "/root/.ssh/id_rsa"}]
    assert root_events["dns_query"]["dns.question.name"] == "example.com"
    assert root_events["lost"]["vigil.count"] == 3
    assert b"please list" not in got.raw and b"running it" not in got.raw and b"ls -la\"}" not in got.raw


def test_content_only_with_capture(tmp_path: Path, receiver: OtlpReceiver) -> None:
    store = agent_store(tmp_path / "v.db")
    export_session(store, SID, receiver.url, capture_content=True)
    named = {s.name: s for s in spans_of(receiver.received[0])}
    chat = attrs(named["chat gpt-5"])
    assert json.loads(chat["gen_ai.input.messages"]) == [{"role": "user", "parts": [{"type": "text",
                                                                                      "content": "please list"}]}]
    assert json.loads(chat["gen_ai.output.messages"]) == [{
        "role": "assistant", "finish_reason": "tool_call",
        "parts": [{"type": "text", "content": "running it"},
                  {"type": "tool_call", "id": "toolu_1", "name": "bash", "arguments": {"command": "ls -la"}}]}]
    assert json.loads(attrs(named["execute_tool bash"])["gen_ai.tool.call.arguments"]) == {"command": "ls -la"}


def test_long_sessions_go_in_several_requests(tmp_path: Path, receiver: OtlpReceiver,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otlp, "MAX_SPANS_PER_REQUEST", 3)
    assert export_session(agent_store(tmp_path / "v.db"), SID, receiver.url) == 8
    assert [len(spans_of(r)) for r in receiver.received] == [3, 3, 2]
    assert_one_tree([s for r in receiver.received for s in spans_of(r)])


def test_encrypted_store_exports_content_only_with_its_key(tmp_path: Path, receiver: OtlpReceiver) -> None:
    key = tmp_path / "k"
    generate_key_file(key)
    agent_store(tmp_path / "v.db", key_file=key).close()
    export_session(Store(tmp_path / "v.db", key_file=key), SID, receiver.url, capture_content=True)
    export_session(Store(tmp_path / "v.db"), SID, receiver.url, capture_content=True)
    keyed, blind = receiver.received
    assert b"please list" in keyed.raw and b"running it" in keyed.raw
    assert b"please list" not in blind.raw and b"running it" not in blind.raw and b"ls -la\"}" not in blind.raw
    chat = attrs({s.name: s for s in spans_of(blind)}["chat gpt-5"])
    assert "gen_ai.input.messages" not in chat and chat["gen_ai.usage.input_tokens"] == 10


def test_export_errors_are_clear(tmp_path: Path) -> None:
    store = agent_store(tmp_path / "v.db")
    with pytest.raises(OtlpExportError, match="no session 1 in"):
        export_session(store, 1, "http://127.0.0.1:9")
    refusing = OtlpReceiver(status=400)
    try:
        with pytest.raises(OtlpExportError, match="did not accept session 4242's trace: .*400"):
            export_session(store, SID, refusing.url, timeout=2)
    finally:
        refusing.close()
    out = vigil(["export", "4242", "--db", str(tmp_path / "v.db"), "--otlp-endpoint", "http://127.0.0.1:9",
                 "--timeout", "1"])
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.splitlines()[-1].startswith("vigil: error: the OTLP endpoint http://127.0.0.1:9/v1/traces")


def test_traces_url() -> None:
    assert traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert traces_url("https://c/otlp/v1/traces") == "https://c/otlp/v1/traces"
