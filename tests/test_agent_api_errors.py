"""API errors the real, pinned agents meet, in their sessions: the fake model answers an agent's
first turns with errors (VIGIL_FAKE_FAIL_FIRST), in a loopback-only network namespace. Where TLS
reads the calls (Gemini CLI), each refused attempt is an `llm_call` with its status and error,
checked against the agent's own `api_error` record; where TLS is blind (Codex or Claude Code with
the TLS search off), the agent's telemetry makes the same failed `llm_call`. Codex's shell tool call,
run after its retry got through, is linked to the model's id once the telemetry names it, and
`vigil show` and the OTLP export tell it under that LLM call, with no alert left."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.helpers import vigil
from support.require import need
from realagents.harness import RealRun, missing_prerequisite, run_agent

from vigild.daemon.sinks.otlp import session_spans
from vigild.daemon.store import Store

pytestmark = pytest.mark.usefixtures("root")

COMMAND = "echo api-errors-ok > tool-out.txt"


def _run(name: str, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: str,
         *extra: str, agent_env: dict[str, str] | None = None) -> RealRun:
    reason = missing_prerequisite(name)
    need(reason is None, reason or "")
    monkeypatch.setenv("VIGIL_FAKE_FAIL_FIRST", fail)
    if agent_env:
        monkeypatch.setenv("VIGIL_AGENT_ENV", json.dumps(agent_env))
    run = run_agent(name, mode, tmp_path / f"{name}-{mode}", COMMAND, extra=["--agent-telemetry", *extra])
    assert run.server_errors == []
    assert [e["status"] for e in run.llm_exchanges()][:len(fail.split(","))] == [int(s) for s in fail.split(",")]
    return run


def _in_order(run: RealRun) -> list[dict[str, Any]]:
    return sorted(run.of_type("llm_call"), key=lambda c: c["ts_ns"])


def test_unread_codex_refused_then_linked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "vigil.db"
    # TLS reads Codex's rustls: with the search off, only its telemetry tells the calls
    run = _run("codex", "run", tmp_path, monkeypatch, "500", "--db", str(db), "--no-tls-locate")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.file("tool-out.txt").read_text() == "api-errors-ok\n"
    calls = _in_order(run)
    assert [(c["source"], c["status"], c["error"]) for c in calls] == [
        ("telemetry", 500, "http 500"), ("telemetry", 200, None), ("telemetry", 200, None)]
    assert calls[0]["input_tokens"] is None and calls[0]["tool_calls"] == []
    (tool,) = calls[1]["tool_calls"]
    (start,) = run.of_type("tool_start")
    (link,) = run.of_type("tool_linked")
    assert (link["tool_call"], link["tool_call_id"], link["source"]) == (start["tool_call"], tool["id"], "telemetry")
    assert run.of_type("detection") == []
    shown = vigil(["show", str(start["session_id"]), "--db", str(db), "-o", "json"], timeout=60)
    assert shown.returncode == 0, shown.stderr
    tree = json.loads(shown.stdout)
    assert tree["unrequested"] == [] and tree["summary"]["unrequested"] == 0
    asked = [(e["llm_call"]["status"], [n["tool_call"] for n in e["tool_calls"]]) for e in tree["timeline"]]
    assert sorted(asked) == sorted([(500, []), (200, [start["tool_call"]]), (200, [])])
    (node,) = [n for e in tree["timeline"] for n in e["tool_calls"]]
    assert node["start"]["tool_call_id"] == tool["id"] and node["start"]["linked_by"] == "telemetry"
    # the OTLP export: the tool span carries the model's id and links to the chat span that asked
    store = Store(db)
    try:
        spans = session_spans(store, start["session_id"])
    finally:
        store.close()
    (tool_span,) = [s for s in spans if s.name.startswith("execute_tool")]
    chats = {s.context.span_id for s in spans if s.name.startswith("chat")}
    assert tool_span.attributes["gen_ai.tool.call.id"] == tool["id"]
    assert tool_span.attributes["vigil.tool.unrequested"] is False
    assert [link.context.span_id for link in tool_span.links] and {
        link.context.span_id for link in tool_span.links} <= chats


def test_gemini_cli_errors_read_by_tls_agree_with_its_api_error_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run("gemini", "trace", tmp_path, monkeypatch, "500,429")
    assert run.returncode == 0, run.stderr[-3000:]
    sent = run.llm_exchanges()
    calls = _in_order(run)
    assert [(c["source"], c["status"]) for c in calls] == [("tls", s["status"]) for s in sent]
    assert [bool(c["error"]) for c in calls] == [s["status"] >= 400 for s in sent]
    assert "UNAVAILABLE" in calls[0]["error"] and "RESOURCE_EXHAUSTED" in calls[1]["error"]
    checks = run.of_type("telemetry_check")
    assert len(checks) == len(sent) and all(c["agree"] for c in checks), [c["mismatches"] for c in checks]
    assert all("status" in c["compared"] for c in checks)


def test_claude_codes_final_api_error_fills_its_blind_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Claude Code logs `api_error` only when it stops retrying: with no retries, its one request
    fails, the prompt fails, and the session still says what the API answered."""
    run = _run("claude", "trace", tmp_path, monkeypatch, "500", "--no-tls-locate",
               agent_env={"CLAUDE_CODE_MAX_RETRIES": "0"})
    assert run.returncode != 0  # the agent's own status: its prompt failed
    assert [e["status"] for e in run.llm_exchanges()] == [500]
    (call,) = run.of_type("llm_call")
    assert (call["source"], call["status"], call["provider"]) == ("telemetry", 500, "anthropic")
    assert call["error"] == "fake api_error (scenario drive)" and call["request_id"].startswith("req_")
    assert call["model"] == "claude-sonnet-4-5" and call["input_tokens"] is None
    assert run.of_type("capture_blind"), "blind is said, telemetry or not"
