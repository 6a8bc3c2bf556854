"""Labels an agent or a model controls: bounded and free of credentials (pure, no kernel)."""

from __future__ import annotations

from prometheus_client import generate_latest
from vigild.daemon.sinks.metrics import OTHER, build_registry


def _llm_call(model: str) -> dict:
    return {"type": "llm_call", "session_id": 1, "provider": "openai", "model": model, "status": 200,
            "input_tokens": 1, "output_tokens": 1, "tool_calls": []}


class _Event:
    def __init__(self, data: dict) -> None:
        self.data = data
        self.type = data["type"]

    def to_dict(self) -> dict:
        return self.data


def _series(page: str, name: str) -> list[str]:
    return [line for line in page.splitlines() if line.startswith(name + "{")]


def test_model_names_past_the_cap_fold_into_other() -> None:
    registry, sink = build_registry(lambda: {}, max_label_values=25)
    for i in range(1_500):
        sink.handle(event := _Event(_llm_call(f"model-{i}")), event.to_dict())
    page = generate_latest(registry).decode()
    calls = _series(page, "vigil_llm_calls_total")
    models = {line.split('model="', 1)[1].split('"', 1)[0] for line in calls}
    assert len(models) == 26 and OTHER in models
    folded = [line for line in page.splitlines() if line.startswith('vigil_metric_label_values_folded_total{label="model"}')]
    assert folded and float(folded[0].rsplit(" ", 1)[1]) >= 1_500 - 25  # one or more per refused call


def test_credential_shaped_model_label_is_scrubbed() -> None:
    secret = "sk-proj-" + "Ab3dE" * 10
    registry, sink = build_registry(lambda: {})
    sink.handle(event := _Event(_llm_call(f"gpt-4o?key={secret}")), event.to_dict())
    sink.handle(event := _Event(_llm_call(secret)), event.to_dict())
    page = generate_latest(registry).decode()
    assert secret not in page
    assert 'model="[REDACTED]"' in page


def test_build_info_and_agent_series_start_at_zero() -> None:
    registry, sink = build_registry(lambda: {})
    sink.handle(event := _Event({"type": "session_start", "session_id": 9, "agent": "claude-code", "pid": 1, "argv": ["x"]}), event.to_dict())
    page = generate_latest(registry).decode()
    [info] = [line for line in page.splitlines() if line.startswith("vigil_build_info{")]
    assert 'version="' in info and 'kernel="' in info and info.endswith(" 1.0")
    for series in ('vigil_detections_total{agent="claude-code",kind="secret_egress"} 0.0',
                   'vigil_file_effects_total{agent="claude-code",kind="open"} 0.0',
                   'vigil_net_effects_total{agent="claude-code",kind="net_connect"} 0.0',
                   'vigil_unrequested_processes_total{agent="claude-code"} 0.0'):
        assert series in page, series


def test_memory_buckets_put_a_capped_call_at_its_cap() -> None:
    """p95 of calls capped at 512 MiB must read 512 MiB, not the next x4 bucket (~1 GiB)."""
    from vigild.daemon.sinks.metrics import MEMORY_BYTES

    assert float(512 << 20) in MEMORY_BYTES
    assert all(b / a <= 2 for a, b in zip(MEMORY_BYTES, MEMORY_BYTES[1:]))
