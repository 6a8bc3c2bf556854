"""Container sessions as operators see them: in the metrics (the runtime always, the pod namespace
and container name only where [metrics] container_labels allows them, within the label budget) and
in `vigil status` (where tool calls go, and why not inside an agent's cgroup)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import generate_latest

from vigild.correlate.containers import Container
from vigild.daemon.sinks.record import record_of
from vigild.correlate.sessions import Session
from vigild.daemon.config import ConfigError, load
from vigild.daemon.events import SessionStart
from vigild.daemon.sinks.metrics import build_registry

CID = "124668a8e3fdc2f9b1a237362542d8fb6c8effdf8511e261ae80174ac5e03f48"


def _page(container_labels: frozenset[str], max_values: int = 200, sessions: int = 1) -> str:
    registry, sink = build_registry(dict, max_label_values=max_values, container_labels=container_labels)
    for n in range(sessions):
        c = Container(CID, "containerd", "/x", name=f"agent-{n}", pod_namespace="team-secret-project")
        sink.handle(event := SessionStart(ts_ns=1, session=Session(id=n + 1, root_pid=10, started_ns=1, agent="claude",
                                                          container=c.to_dict())), record_of(event))
    sink.handle(event := SessionStart(ts_ns=1, session=Session(id=999, root_pid=11, started_ns=1, agent="claude")), record_of(event))
    return generate_latest(registry).decode()


def _samples(page: str) -> list[str]:
    return [line for line in page.splitlines() if line.startswith("vigil_container_sessions_started_total")]


def test_runtime_only_by_default() -> None:
    page = _page(frozenset())
    assert _samples(page) == ['vigil_container_sessions_started_total{agent="claude",runtime="containerd"} 1.0']
    assert "team-secret-project" not in page and "agent-0" not in page


def test_names_where_the_operator_allows_them() -> None:
    (sample,) = _samples(_page(frozenset({"namespace", "container"})))
    assert sample == ('vigil_container_sessions_started_total{agent="claude",container="agent-0",'
                      'namespace="team-secret-project",runtime="containerd"} 1.0')


def test_container_names_are_bounded() -> None:
    page = _page(frozenset({"container"}), max_values=3, sessions=10)
    names = {s.split('container="')[1].split('"')[0] for s in _samples(page)}
    assert names == {"agent-0", "agent-1", "agent-2", "other"}
    assert 'vigil_metric_label_values_folded_total{label="container"} 7.0' in page


def test_config_accepts_only_known_container_labels(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[metrics]\ncontainer_labels = ["namespace"]\n')
    assert load(path).container_labels == frozenset({"namespace"})
    path.write_text('[metrics]\ncontainer_labels = ["pod_uid"]\n')
    with pytest.raises(ConfigError, match="unknown container label 'pod_uid'"):
        load(path)


def test_status_names_where_calls_cannot_go_inside_the_agents_cgroup() -> None:
    """`vigil status` text: the agents' trees in use and each fallback with its reason."""
    import io

    from rich.console import Console

    from vigild.daemon.cli.status_view import print_status

    status = {"pid": 1, "uptime_s": 5, "programs_attached": 3, "tls_libraries_hooked": 0, "agents": ["a"],
              "sessions_open": 0, "sessions_total": 0, "tracked_processes": 0, "events_total": 0,
              "events_per_s": 0, "drops": 0, "store": {"path": "/x.db", "bytes": 0}, "sessions": [],
              "tool_placement": {"agent_trees": ["/sys/fs/cgroup/c/libpod-1/vigil-run-1"],
                                 "below_vigild": {"/sys/fs/cgroup/plain": "it is not delegated"}}}
    out = io.StringIO()
    print_status(status, Console(file=out, width=200))
    text = out.getvalue()
    assert "tool calls in      /sys/fs/cgroup/c/libpod-1/vigil-run-1" in text
    assert "tool calls of /sys/fs/cgroup/plain run below vigild's own cgroup: it is not delegated" in text
