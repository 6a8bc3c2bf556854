"""The exporter's event sink and health collector, without the kernel: events in, samples out."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import generate_latest

from vigild.daemon.sinks.metrics import build_registry
from support.vigild_proc import metric_value


@dataclass
class Ev:
    type: str
    fields: dict[str, Any] = field(default_factory=dict)
    ts_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **self.fields}


LLM = {"session_id": 7, "provider": "anthropic", "status": 200, "input_tokens": 100, "output_tokens": 20,
       "cache_read_input_tokens": 50, "duration_ms": 1500.0, "ttft_ms": 200.0, "tool_calls": [{"name": "bash"}]}


def feed(drop: frozenset[str] = frozenset(), health: dict[str, Any] | None = None) -> str:
    registry, sink = build_registry(lambda: health or {}, drop)
    for event in (Ev("session_start", {"session_id": 7, "agent": "claude"}),
                  Ev("llm_call", {**LLM, "model": "claude-sonnet-4-6"}),
                  Ev("llm_call", {**LLM, "model": "claude-haiku-4-5", "status": 529, "ttft_ms": None}),
                  Ev("tool_end", {"session_id": 7, "tool_name": "bash", "outcome": "oom_killed", "duration_ms": 2500,
                                  "peak_memory_bytes": 300 << 20, "limits_hit": ["memory_max"]}),
                  Ev("file_write", {"session_id": 7}),
                  Ev("file_open", {"session_id": 7, "opens": 1}),
                  Ev("file_open", {"session_id": 7, "opens": 41, "folded": True}),
                  Ev("llm_call", {**LLM, "session_id": 99, "model": "gpt-4.1", "provider": "openai"}),
                  Ev("session_end", {"session_id": 7, "agent": "claude"})):
        sink.handle(event, event.to_dict())
    return generate_latest(registry).decode()


def test_events_become_samples_with_the_sessions_agent() -> None:
    text = feed()
    assert metric_value(text, "vigil_llm_calls_total", agent="claude", outcome="ok") == 1
    assert metric_value(text, "vigil_llm_calls_total", agent="claude", outcome="http_5xx") == 1
    assert metric_value(text, "vigil_llm_calls_total", agent="unknown", provider="openai") == 1
    assert metric_value(text, "vigil_llm_tokens_total", agent="claude", type="cache_read") == 100
    assert metric_value(text, "vigil_llm_ttft_seconds_count", agent="claude") == 1
    assert metric_value(text, "vigil_llm_call_duration_seconds_sum", model="claude-sonnet-4-6") == 1.5
    assert metric_value(text, "vigil_llm_tool_requests_total", tool="bash") == 3
    assert metric_value(text, "vigil_tool_calls_total", tool="bash", outcome="oom_killed") == 1
    assert metric_value(text, "vigil_tool_call_peak_memory_bytes_bucket", le="2.68435456e+08") == 0
    assert metric_value(text, "vigil_tool_call_peak_memory_bytes_bucket", le="1.073741824e+09") == 1
    assert metric_value(text, "vigil_tool_limits_hit_total", limit="memory_max") == 1
    assert metric_value(text, "vigil_file_effects_total", kind="write") == 1
    assert metric_value(text, "vigil_file_effects_total", kind="open") == 42  # every open, folded ones too
    assert metric_value(text, "vigil_folded_opens_total", agent="claude") == 41
    assert metric_value(text, "vigil_agent_sessions", agent="claude") == 0
    assert "session_id" not in text and "pid=" not in text


def test_dropped_labels_are_summed_away() -> None:
    text = feed(frozenset({"model", "agent"}))
    assert "model=" not in text and "agent=" not in text
    assert metric_value(text, "vigil_llm_calls_total", provider="anthropic") == 2
    assert metric_value(text, "vigil_uprobe_attaches_total") == 0


def test_health_reports_known_labels_as_zero() -> None:
    text = feed(health={"events_by_kind": {"exec": 5}, "drops_by_kind": {"exec": 1},
                        "attach_ok": {"openssl": 2}, "tracked_processes": 3, "parse_failures": {"evicted": 1},
                        "ring_backlog_peak_bytes": 4096, "ring_backlog_limit_bytes": 1 << 27})
    assert metric_value(text, "vigil_kernel_events_total", kind="exec") == 5
    assert metric_value(text, "vigil_ringbuf_drops_total", kind="fork") == 0
    assert metric_value(text, "vigil_ringbuf_drops_total", kind="exec") == 1
    assert metric_value(text, "vigil_uprobe_attaches_total", library="gnutls", outcome="failed") == 0
    assert metric_value(text, "vigil_uprobe_attaches_total", library="openssl", outcome="ok") == 2
    assert metric_value(text, "vigil_decode_errors_total", reason="short_record") == 0
    assert metric_value(text, "vigil_parse_failures_total", reason="evicted") == 1
    assert metric_value(text, "vigil_tracked_processes") == 3
    assert metric_value(text, "vigil_ring_backlog_peak_bytes") == 4096
    assert metric_value(text, "vigil_ring_backlog_limit_bytes") == 1 << 27
    assert metric_value(text, "vigil_process_resident_memory_bytes") > 0


def test_blind_connections_by_agent_and_reason() -> None:
    reason = "no TLS library hooked for this executable"
    text = feed(health={"tls_blind_connections": {("claude", reason): 2, ("opencode", "rustls is statically linked"): 1}})
    assert metric_value(text, "vigil_tls_blind_connections_total", agent="claude", reason=reason) == 2
    assert metric_value(text, "vigil_tls_blind_connections_total", agent="opencode") == 1


def test_every_kernel_kind_is_a_named_label() -> None:
    """Kind labels come from the one table (bpf/events.py Kind), never a kind number."""
    from vigild.bpf.events import Kind

    text = feed(health={"events_by_kind": {}, "drops_by_kind": {}})
    for kind in Kind:
        assert metric_value(text, "vigil_kernel_events_total", kind=kind.label) == 0
        assert metric_value(text, "vigil_ringbuf_drops_total", kind=kind.label) == 0
    assert not re.search(r'kind="\d+"', text)
    assert metric_value(text, "vigil_decode_errors_total", reason="unknown_kind") == 0
