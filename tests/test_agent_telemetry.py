"""The agents' telemetry: vigil's OTLP/HTTP receiver fed by the real OpenTelemetry SDK exporter in
another process (attributed to that process by the kernel's socket table), and the merge of
telemetry with TLS-decoded calls (pure logic, Codex 0.169.0's record shapes as captured)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from vigild.correlate.agent_telemetry import GRACE_NS, QUIET_NS, TWIN_WAIT_NS, TelemetryMerger, TelemetryRecord
from vigild.correlate.intent import LlmCall, TelemetryCheck
from vigild.daemon.cli.telemetry_setup import codex_overrides, with_telemetry
from vigild.daemon.telemetry_receiver import TelemetryReceiver
from vigild.daemon.store import Store
from support.vigild_proc import Vigild, free_port

CONV = "01a2324f-dffd-7f51-aaa9-bf63fe5e3eaf"
EXPORTER = r"""
import sys
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
provider = LoggerProvider()
provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=sys.argv[1] + "/v1/logs")))
logger = provider.get_logger("codex_otel.log_only")
for attrs in ({"event.name": "codex.api_request", "conversation.id": "c1", "duration_ms": "11",
               "http.response.status_code": "200", "endpoint": "/responses", "model": "gpt-5-codex"},
              {"event.name": "codex.sse_event", "event.kind": "response.completed", "conversation.id": "c1",
               "input_token_count": "1234", "output_token_count": "56", "cached_token_count": "0"}):
    logger.emit(body="event", attributes=attrs, event_name="otel/src/events/session_telemetry.rs:803")
provider.shutdown()
"""


@pytest.fixture(params=["127.0.0.1", "::1"])
def receiver(request: pytest.FixtureRequest) -> Iterator[TelemetryReceiver]:
    rec = TelemetryReceiver(candidates=lambda: [], host=request.param).start()
    yield rec
    rec.close()


def drain(rec: TelemetryReceiver) -> list[TelemetryRecord]:
    out = []
    while not rec.records.empty():
        out.append(rec.records.get())
    return out


def test_sdk_exporter_records_arrive_attributed_to_the_sending_process(receiver: TelemetryReceiver) -> None:
    children: list[int] = []
    receiver.candidates = lambda: [os.getpid(), *children]
    proc = subprocess.Popen([sys.executable, "-c", EXPORTER, receiver.endpoint], stderr=subprocess.PIPE, text=True)
    children.append(proc.pid)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    records = drain(receiver)
    assert [r.name for r in records] == ["codex.api_request", "codex.sse_event"]  # not the source location
    assert {r.pid for r in records} == {proc.pid}
    assert records[1].attributes["input_token_count"] == "1234"
    assert receiver.counts["/v1/logs"] == 2 and receiver.unattributed == 0


def test_sender_that_is_not_tracked_is_kept_but_unattributed(receiver: TelemetryReceiver) -> None:
    proc = subprocess.run([sys.executable, "-c", EXPORTER, receiver.endpoint], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    records = drain(receiver)
    assert len(records) == 2 and {r.pid for r in records} == {None}
    assert receiver.unattributed == 2


@pytest.mark.parametrize(("path", "body", "headers", "status"), [
    ("/v1/logs", b"\xff\xff\xff", {"Content-Type": "application/x-protobuf"}, 400),
    ("/v1/logs", b"{not json", {"Content-Type": "application/json"}, 400),
    ("/v1/logs", b"\x1f\x8b broken gzip", {"Content-Encoding": "gzip"}, 400),
    ("/v2/other", b"x", {}, 404),
])
def test_bad_requests_get_a_clear_error_and_the_receiver_lives_on(receiver: TelemetryReceiver, path: str,
                                                                  body: bytes, headers: dict[str, str],
                                                                  status: int) -> None:
    request = urllib.request.Request(receiver.endpoint + path, data=body, headers=headers, method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == status and err.value.read()
    good = urllib.request.Request(receiver.endpoint + "/v1/logs", data=json.dumps({"resourceLogs": []}).encode(),
                                  headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(good, timeout=10) as response:
        assert response.status == 200


def test_codex_gets_its_exporter_through_config_overrides() -> None:
    argv = with_telemetry(["codex", "exec", "hi"], "http://127.0.0.1:9")
    assert argv[:1] == ["codex"] and argv[-2:] == ["exec", "hi"]
    assert argv[1:-2] == codex_overrides("http://127.0.0.1:9")
    assert 'endpoint = "http://127.0.0.1:9/v1/logs"' in argv[2] and "otel.log_user_prompt=false" in argv
    assert with_telemetry(["claude", "-p", "x"], "http://127.0.0.1:9") == ["claude", "-p", "x"]


# ---- the merge (pure logic) ----

class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000_000_000

    def __call__(self) -> int:
        return self.now


def rec(name: str, ts: int, **attrs: str) -> TelemetryRecord:
    return TelemetryRecord(ts_ns=ts, pid=42, name=name, attributes={"event.name": name, "conversation.id": CONV,
                                                                     "model": "gpt-5-codex", **attrs})


def codex_turn(ts: int, tokens: tuple[int, int], call_id: str | None) -> list[TelemetryRecord]:
    out = [rec("codex.api_request", ts, duration_ms="11", endpoint="/responses",
               **{"http.response.status_code": "200"}),
           rec("codex.sse_event", ts + 1, **{"event.kind": "response.created"}),
           rec("codex.sse_event", ts + 2, **{"event.kind": "response.completed", "input_token_count": str(tokens[0]),
                                             "output_token_count": str(tokens[1]), "cached_token_count": "0"})]
    if call_id:
        out += [rec("codex.tool_decision", ts + 3, call_id=call_id, tool_name="exec_command", decision="approved"),
                rec("codex.tool_result", ts + 4, call_id=call_id, tool_name="exec_command", success="true",
                    duration_ms="346", arguments='{"cmd":"ls"}')]
    return out


def tls_call(ts: int, tokens: tuple[int, int], call_ids: list[str]) -> LlmCall:
    return LlmCall(ts_ns=ts, pid=42, tid=43, comm="tokio-rt-worker", conn_id=7, provider="openai",
                   endpoint="/v1/responses", host="127.0.0.1", model="gpt-5-codex", stream=True, status=200,
                   http_version="1.1", input_tokens=tokens[0], output_tokens=tokens[1], cache_read_input_tokens=0,
                   tool_calls=[{"id": i, "name": "exec_command", "arguments": {"cmd": "ls"}} for i in call_ids],
                   response_id=f"resp_{ts}")


def feed_all(merger: TelemetryMerger, records: list[TelemetryRecord]) -> list[LlmCall | TelemetryCheck]:
    """Feed, and what comes out before any time passes (nothing: calls wait for TLS)."""
    for r in records:
        merger.feed(r)
    return merger.expire()


def test_without_tls_the_telemetry_becomes_the_llm_calls() -> None:
    merger = TelemetryMerger(comm_of=lambda pid: "codex", clock=Clock())
    t = 5_000_000_000
    out = feed_all(merger, codex_turn(t, (1234, 56), "call_1") + codex_turn(t + 10**9, (1400, 7), None))
    out += merger.flush()
    assert [type(e) for e in out] == [LlmCall, LlmCall]
    first, second = (e.to_dict() for e in out)
    assert first["source"] == "telemetry" and first["comm"] == "codex" and first["ts_ns"] == t - 11_000_000
    assert (first["input_tokens"], first["output_tokens"], first["status"]) == (1234, 56, 200)
    assert first["tool_calls"] == [{"id": "call_1", "name": "exec_command", "arguments": {"cmd": "ls"},
                                    "success": True, "duration_ms": 346.0}]
    assert (second["input_tokens"], second["tool_calls"]) == (1400, [])


def test_with_tls_each_call_is_checked_field_by_field() -> None:
    merger = TelemetryMerger(clock=Clock())
    t = 5_000_000_000
    merger.observe_tls(tls_call(t - 20_000_000, (1234, 56), ["call_1"]))
    merger.observe_tls(tls_call(t + 10**9, (1400, 8), []))  # the agent reports 7: a mismatch
    out = feed_all(merger, codex_turn(t, (1234, 56), "call_1") + codex_turn(t + 10**9, (1400, 7), None))
    out += merger.flush()
    assert [type(e) for e in out] == [TelemetryCheck, TelemetryCheck]
    ok, bad = out
    assert ok.agree and ok.response_id == f"resp_{t - 20_000_000}" and "tool_call_ids" in ok.compared
    assert not bad.agree and bad.mismatches == [{"field": "output_tokens", "tls": 8, "telemetry": 7}]


def test_a_tls_call_too_far_away_in_time_is_not_taken() -> None:
    merger = TelemetryMerger(clock=Clock())
    merger.observe_tls(tls_call(60 * 10**9, (1, 1), []))
    out = feed_all(merger, codex_turn(5 * 10**9, (1, 1), None)) + merger.flush()
    assert [type(e) for e in out] == [LlmCall]


def test_a_quiet_call_is_closed_by_expire_not_before() -> None:
    clock = Clock()
    merger = TelemetryMerger(clock=clock)
    assert feed_all(merger, codex_turn(5 * 10**9, (3, 4), None)) == []
    clock.now += QUIET_NS - 1
    assert merger.expire() == []
    clock.now += 1
    assert merger.expire() == []  # complete: now it waits GRACE_NS for TLS
    clock.now += GRACE_NS
    assert [e.input_tokens for e in merger.expire() if isinstance(e, LlmCall)] == [3]


def test_tls_arriving_after_the_agents_batch_is_still_matched() -> None:
    """The agent's batch completes call 1 (call 2 began) before TLS has reported call 1."""
    clock = Clock()
    merger = TelemetryMerger(clock=clock)
    t = 5_000_000_000
    assert feed_all(merger, codex_turn(t, (10, 1), "c1") + codex_turn(t + 10**9, (20, 2), None)) == []
    merger.observe_tls(tls_call(t, (10, 1), ["c1"]))
    clock.now += GRACE_NS
    out = merger.expire()
    assert [type(e) for e in out] == [TelemetryCheck] and out[0].agree


def test_bad_records_cost_nothing() -> None:
    merger = TelemetryMerger(clock=Clock())
    unattributed = TelemetryRecord(ts_ns=1, pid=None, name="codex.api_request", attributes={})
    other = TelemetryRecord(ts_ns=1, pid=42, name="claude_code.api_request", attributes={})
    orphan = rec("codex.tool_result", 1, call_id="x", arguments="{")
    for record in (unattributed, other, orphan):
        merger.feed(record)
    assert merger.ignored == 3 and merger.flush() == []
    turn = codex_turn(5 * 10**9, (1, 2), None)
    broken = rec("codex.tool_result", 5 * 10**9 + 9, call_id="c9", tool_name="exec_command", arguments="{oops",
                 success="false")
    out = feed_all(merger, [*turn, broken]) + merger.flush()
    (call,) = out
    assert isinstance(call, LlmCall)
    assert call.tool_calls == [{"id": "c9", "name": "exec_command", "arguments_raw": "{oops", "error": "invalid_json",
                                "success": False, "duration_ms": None}]


def test_vigild_receives_a_tracked_agents_telemetry_into_its_session(tmp_path: Path, root: None) -> None:
    """The service with [telemetry] receive: an agent found by name exports Codex-shaped records;
    its session in the store gets the telemetry-sourced LLM call."""
    port = free_port()
    agent = tmp_path / "telagent"
    agent.write_text(f"#!{sys.executable}\nimport sys\nsys.argv[1:] = ['http://127.0.0.1:{port}']\n{EXPORTER}")
    agent.chmod(0o755)
    daemon = Vigild(tmp_path, f'[discovery]\ndefault_agents = false\n\n[[agents]]\nname = "tel"\n'
                              f'comm = "telagent"\n\n[telemetry]\nreceive = "127.0.0.1:{port}"\n').start(timeout=120)
    try:
        proc = subprocess.run([str(agent)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    finally:
        assert daemon.stop() == 0, daemon.log
    store = Store(daemon.db)
    try:
        (session,) = store.sessions()
        calls = store.events(session["id"], ("llm_call",))
    finally:
        store.close()
    assert len(calls) == 1, calls
    call = calls[0]
    assert call["source"] == "telemetry" and call["comm"] == "telagent"
    assert (call["input_tokens"], call["output_tokens"], call["status"], call["model"]) == (1234, 56, 200, "gpt-5-codex")


def test_a_long_tool_keeps_its_call_open_and_a_late_result_still_lands() -> None:
    clock = Clock()
    merger = TelemetryMerger(clock=clock)
    turn = codex_turn(5 * 10**9, (1, 2), "c1")
    feed_all(merger, turn[:-1])  # the decision, not the result: the tool is running
    clock.now += 10 * QUIET_NS
    assert merger.expire() == []
    merger.feed(turn[-1])
    clock.now += QUIET_NS + GRACE_NS
    assert merger.expire() == []  # closed by quiet now, waiting for TLS
    clock.now += GRACE_NS
    (call,) = merger.expire()
    assert isinstance(call, LlmCall) and call.tool_calls[0]["arguments"] == {"cmd": "ls"}


def test_a_decision_in_a_batch_after_its_call_went_quiet_still_joins_it() -> None:
    """A slow machine (a TCG guest) sends the tool decision more than a quiet spell after the
    response: the call waits for its TLS twin, and takes the decision and result meanwhile."""
    clock = Clock()
    merger = TelemetryMerger(clock=clock)
    turn = codex_turn(5 * 10**9, (1, 2), "c1")
    split = next(i for i, r in enumerate(turn) if r.name == "codex.tool_decision")
    feed_all(merger, turn[:split])
    clock.now += QUIET_NS
    assert merger.expire() == []  # quiet: closed, waiting for TLS
    feed_all(merger, turn[split:])
    clock.now += GRACE_NS
    (call,) = merger.expire()
    assert isinstance(call, LlmCall) and [t["id"] for t in call.tool_calls] == ["c1"]
    assert call.tool_calls[0]["arguments"] == {"cmd": "ls"} and merger.ignored == 0


def test_a_result_after_the_next_request_joins_its_own_call() -> None:
    merger = TelemetryMerger(clock=Clock())
    first = codex_turn(5 * 10**9, (1, 2), "c1")
    second = codex_turn(6 * 10**9, (3, 4), None)
    feed_all(merger, [*first[:-1], *second, first[-1]])
    calls = [e for e in merger.flush() if isinstance(e, LlmCall)]
    assert [c.tool_calls[0].get("arguments") for c in calls if c.tool_calls] == [{"cmd": "ls"}]
    assert merger.ignored == 0


def test_a_tls_twin_read_after_the_next_call_is_waited_for() -> None:
    """Codex read response 1's end only after call 2 ended: TLS reports call 2 first. Call 1 (a
    tool call id) is not set against call 2 (nearest in time, no such id); it waits for its twin."""
    clock = Clock()
    merger = TelemetryMerger(clock=clock)
    t = 5_000_000_000
    feed_all(merger, codex_turn(t, (10, 1), "c1") + codex_turn(t + 10**9, (20, 2), None))
    merger.observe_tls(tls_call(t + 10**9, (20, 2), []))
    clock.now += QUIET_NS
    assert merger.expire() == []  # call 2 is complete now
    clock.now += GRACE_NS
    out = merger.expire()  # call 2 resolves against its twin; call 1 waits
    assert [(type(e), e.agree) for e in out] == [(TelemetryCheck, True)]
    merger.observe_tls(tls_call(t, (10, 1), ["c1"]))
    clock.now += 1
    (late,) = merger.expire()
    assert isinstance(late, TelemetryCheck) and late.agree and "tool_call_ids" in late.compared


def test_a_twin_that_never_comes_is_waited_for_only_so_long() -> None:
    clock = Clock()
    merger = TelemetryMerger(clock=clock)
    t = 5_000_000_000
    merger.observe_tls(tls_call(t + 60 * 10**9, (1, 1), []))  # the process is read, this call is not
    feed_all(merger, codex_turn(t, (10, 1), "c1"))
    clock.now += QUIET_NS + GRACE_NS
    assert merger.expire() == []
    clock.now += TWIN_WAIT_NS
    (alone,) = merger.expire()
    assert isinstance(alone, LlmCall) and alone.source == "telemetry"
