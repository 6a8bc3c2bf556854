"""Claude Code's and Gemini CLI's own telemetry, as their pinned releases really export it (records
captured by vigil's receiver from the real agents, ids and prompt-bearing attributes removed), mapped
into LLM calls by the merge (pure logic), and the receiver taking the chunked bodies Gemini CLI sends."""

from __future__ import annotations

import gzip
import http.client
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from vigild.correlate.agent_telemetry import TelemetryMerger, TelemetryRecord
from vigild.correlate.intent import LlmCall, TelemetryCheck
from vigild.daemon.telemetry_receiver import TelemetryReceiver

DATA = Path(__file__).resolve().parent / "data" / "telemetry"
PID = 4242


def recorded(name: str) -> list[TelemetryRecord]:
    doc = json.loads((DATA / name).read_text())
    return [TelemetryRecord(ts_ns=r["ts_ns"], pid=PID, name=r["name"], attributes=r["attributes"],
                            resource=r["resource"]) for r in doc["records"]]


def merged(records: list[TelemetryRecord], tls: Sequence[LlmCall] = ()) -> list[LlmCall | TelemetryCheck]:
    merger = TelemetryMerger(comm_of=lambda pid: "agent", clock=lambda: 0)
    for call in tls:
        merger.observe_tls(call)
    for record in records:
        merger.feed(record)
    return merger.flush()


def tls_twin(provider: str, ts_ns: int, tokens: tuple[int, int], tools: list[dict[str, Any]], *,
             request_id: str | None = None, response_id: str | None = None, model: str = "m") -> LlmCall:
    return LlmCall(ts_ns=ts_ns, pid=PID, tid=PID, comm="agent", conn_id=3, provider=provider, endpoint="/x",
                   host="127.0.0.1", model=model, stream=True, status=200, http_version="1.1",
                   input_tokens=tokens[0], output_tokens=tokens[1], cache_read_input_tokens=0, tool_calls=tools,
                   request_id=request_id, response_id=response_id)


def by_name(records: list[TelemetryRecord], name: str) -> list[TelemetryRecord]:
    return [r for r in records if r.name == name]


# ---- Claude Code 2.1.332 ----

def test_claude_code_records_become_its_llm_calls_when_tls_is_blind() -> None:
    records = recorded("claude-2.1.332.json")
    first_request, second_request = by_name(records, "api_request")
    (decision,) = by_name(records, "tool_decision")
    out = merged(records)
    assert all(isinstance(e, LlmCall) for e in out) and len(out) == 2
    first, second = sorted(out, key=lambda e: e.ts_ns)
    assert (first.source, first.provider, first.model, first.status) == ("telemetry", "anthropic",
                                                                          "claude-sonnet-4-5", 200)
    assert (first.input_tokens, first.output_tokens, second.input_tokens, second.output_tokens) == (900, 40, 120, 6)
    assert first.cost_usd == pytest.approx(0.0033) and first.duration_ms == 53.0
    assert first.ts_ns == first_request.ts_ns - 53_000_000  # when it was sent, not when it was logged
    assert first.request_id == first_request.attributes["request_id"] != second.request_id
    assert second.request_id == second_request.attributes["request_id"]
    (tool,) = first.tool_calls
    assert tool == {"id": decision.attributes["tool_use_id"], "name": "Bash", "success": True, "duration_ms": 33.0}
    assert second.tool_calls == []


def test_claude_code_calls_are_matched_to_tls_by_request_id_and_checked() -> None:
    records = recorded("claude-2.1.332.json")
    first_request, second_request = by_name(records, "api_request")
    tool_id = by_name(records, "tool_decision")[0].attributes["tool_use_id"]
    # dated far apart from the telemetry on purpose: the request id, not the time, pairs them
    tls = [tls_twin("anthropic", first_request.ts_ns + 9 * 10**9, (900, 40), [{"id": tool_id, "name": "Bash"}],
                    request_id=first_request.attributes["request_id"], model="claude-sonnet-4-5"),
           tls_twin("anthropic", first_request.ts_ns + 9 * 10**9, (120, 7), [],
                    request_id=second_request.attributes["request_id"], model="claude-sonnet-4-5")]
    out = merged(records, tls)
    assert all(isinstance(e, TelemetryCheck) for e in out) and len(out) == 2
    good, bad = sorted(out, key=lambda e: e.ts_ns)
    assert good.agree and good.agent == "claude" and "tool_call_ids" in good.compared and "model" in good.compared
    assert not bad.agree and bad.mismatches == [{"field": "output_tokens", "tls": 7, "telemetry": 6}]


def test_a_claude_code_tool_still_running_keeps_its_call_open() -> None:
    records = recorded("claude-2.1.332.json")
    merger = TelemetryMerger(clock=lambda: 0)
    for record in records:
        if record.name != "tool_result":
            merger.feed(record)
    merger.clock = lambda: 10**12  # long quiet: the call without its tool's result stays open
    assert len([e for e in merger.expire() if isinstance(e, LlmCall)]) == 0
    assert [c.tool_calls for c in merger.flush() if isinstance(c, LlmCall) and c.tool_calls][0][0]["name"] == "Bash"


# ---- Gemini CLI 0.61.0 ----

def test_gemini_cli_records_become_its_llm_calls_when_tls_is_blind() -> None:
    records = recorded("gemini-0.61.0.json")
    first_request, _ = by_name(records, "gemini_cli.api_request")
    details = [r.attributes["gen_ai.response.id"] for r in by_name(records, "gen_ai.client.inference.operation.details")
               if "gen_ai.response.id" in r.attributes]
    out = merged(records)
    assert all(isinstance(e, LlmCall) for e in out) and len(out) == 2
    first, second = sorted(out, key=lambda e: e.ts_ns)
    assert (first.source, first.provider, first.model, first.status) == ("telemetry", "gemini",
                                                                          "gemini-2.5-pro", 200)
    assert first.ts_ns == first_request.ts_ns
    assert (first.input_tokens, first.output_tokens, second.input_tokens, second.output_tokens) == (900, 40, 120, 6)
    assert [first.response_id, second.response_id] == details
    assert first.tool_calls == [{"id": None, "name": "run_shell_command", "success": True, "duration_ms": 96.0}]
    assert second.tool_calls == [] and first.finish_reason == "stop"


def test_gemini_cli_calls_are_checked_by_response_id_and_tool_names() -> None:
    records = recorded("gemini-0.61.0.json")
    ids = [r.attributes["gen_ai.response.id"] for r in by_name(records, "gen_ai.client.inference.operation.details")
           if "gen_ai.response.id" in r.attributes]
    start = by_name(records, "gemini_cli.api_request")[0].ts_ns
    tls = [tls_twin("gemini", start, (900, 40), [{"id": "x", "name": "run_shell_command"}], response_id=ids[0],
                    model="gemini-2.5-pro"),
           tls_twin("gemini", start, (120, 6), [{"id": "y", "name": "write_file"}], response_id=ids[1],
                    model="gemini-2.5-pro")]
    out = merged(records, tls)
    assert all(isinstance(e, TelemetryCheck) for e in out) and len(out) == 2
    good, bad = sorted(out, key=lambda e: e.response_id == ids[1])
    assert good.agree and good.agent == "gemini" and good.response_id == ids[0]
    assert "tool_names" in good.compared and "tool_call_ids" not in good.compared
    assert bad.mismatches == [{"field": "tool_names", "tls": ["write_file"], "telemetry": []}]


# ---- API errors (the fake model answered errors first: VIGIL_FAKE_FAIL_FIRST) ----

def calls_of(name: str, tls: Sequence[LlmCall] = ()) -> list[LlmCall | TelemetryCheck]:
    return sorted(merged(recorded(name), tls), key=lambda e: e.ts_ns)


def test_claude_codes_api_error_is_a_failed_llm_call() -> None:
    (error,) = by_name(recorded("claude-2.1.332-api-error.json"), "api_error")
    (call,) = calls_of("claude-2.1.332-api-error.json")
    assert isinstance(call, LlmCall) and call.source == "telemetry"
    assert (call.status, call.error, call.model) == (500, "fake api_error (scenario drive)", "claude-sonnet-4-5")
    assert call.request_id == error.attributes["request_id"] and call.input_tokens is None
    assert call.finish_reason is None and call.tool_calls == []
    assert call.ts_ns == error.ts_ns - int(error.attributes["duration_ms"] * 1e6)


def test_gemini_clis_api_errors_are_failed_llm_calls_before_the_one_that_got_through() -> None:
    out = calls_of("gemini-0.61.0-api-errors.json")
    assert all(isinstance(e, LlmCall) for e in out)
    assert [(c.status, c.error) for c in out] == [  # type: ignore[union-attr]
        (500, "UNAVAILABLE: fake api_error (scenario drive)"),
        (429, "RESOURCE_EXHAUSTED: fake rate_limit_error (scenario drive)"), (200, None), (200, None)]
    failed, limited, first, _ = out
    assert failed.input_tokens is None and failed.duration_ms == 54 and limited.duration_ms == 13  # type: ignore[union-attr]
    assert [t["name"] for t in first.tool_calls] == ["run_shell_command"]  # type: ignore[union-attr]


def test_gemini_clis_api_error_is_checked_against_the_error_tls_read() -> None:
    errors = by_name(recorded("gemini-0.61.0-api-errors.json"), "gemini_cli.api_error")
    tls = [LlmCall(ts_ns=r.ts_ns - 10**7, pid=PID, tid=PID, comm="agent", conn_id=3, provider="gemini",
                   endpoint="/x", host="127.0.0.1", model="gemini-2.5-pro", stream=True,
                   status=r.attributes["status_code"], http_version="1.1") for r in errors]
    checks = [e for e in calls_of("gemini-0.61.0-api-errors.json", tls) if isinstance(e, TelemetryCheck)]
    assert len(checks) == 2 and all(c.agree for c in checks), checks
    assert all("status" in c.compared and "input_tokens" not in c.compared for c in checks)


def test_codexs_refused_attempt_is_a_failed_llm_call_and_its_retry_the_tool_call() -> None:
    out = calls_of("codex-0.171.0-api-errors.json")
    assert [(c.status, c.error, c.endpoint) for c in out] == [  # type: ignore[union-attr]
        (500, "http 500", "/responses"), (200, None, "/responses"), (200, None, "/responses")]
    (tool,) = out[1].tool_calls  # type: ignore[union-attr]
    assert tool["name"] == "exec_command" and tool["arguments"] == {"cmd": "echo err-ok > tool-out.txt"}


def test_records_of_no_call_are_counted_not_mapped() -> None:
    merger = TelemetryMerger(clock=lambda: 0)
    for record in recorded("claude-2.1.332.json") + recorded("gemini-0.61.0.json"):
        merger.feed(record)
    # Claude Code: settings, prompt, reply text; Gemini CLI: ripgrep fallback, prompt and routing
    # (before any call), approval-mode duration (no prompt id)
    assert merger.ignored == 3 + 4
    assert len(merger.flush()) == 4


# ---- the receiver: chunked request bodies ----

@pytest.fixture
def receiver() -> Iterator[TelemetryReceiver]:
    rec = TelemetryReceiver(candidates=lambda: [], host="127.0.0.1").start()
    yield rec
    rec.close()


def post_chunked(rec: TelemetryReceiver, chunks: list[bytes], headers: dict[str, str]) -> tuple[int, bytes]:
    host, port = rec.endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", "/v1/logs", body=iter(chunks), headers=headers, encode_chunked=True)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_a_chunked_body_is_received_whole(receiver: TelemetryReceiver) -> None:
    body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": "5", "attributes": [{"key": "event.name", "value": {"stringValue": "gemini_cli.tool_call"}},
                                             {"key": "function_name", "value": {"stringValue": "ls"}}]}]}]}]}).encode()
    packed = gzip.compress(body)
    status, _ = post_chunked(receiver, [packed[:7], packed[7:20], packed[20:]],
                             {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert status == 200
    record = receiver.records.get(timeout=5)
    assert (record.name, record.attributes["function_name"], record.ts_ns) == ("gemini_cli.tool_call", "ls", 5)


def test_a_malformed_chunked_body_gets_a_clear_error(receiver: TelemetryReceiver) -> None:
    host, port = receiver.endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("POST", "/v1/logs")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders(b"zz\r\nnot hex\r\n0\r\n\r\n")
        response = conn.getresponse()
        assert response.status == 400 and b"chunked" in response.read()
    finally:
        conn.close()
    assert receiver.counts["bad_chunks"] == 1 and receiver.records.empty()
