"""The fleet's trace pipeline: the shipped OTel Collector config (otelcol is not packaged in Debian,
so its structure is checked: every pipeline component defined, an OTLP/HTTP receiver on the port
vigild's [otlp] endpoint names), and a session of an agent in a container exported by vigild to a
real OTLP/HTTP receiver in the shape the collector's otlp receiver takes (POST /v1/traces,
protobuf), with host.name and the container and pod as resource attributes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from support.otlp_receiver import OtlpReceiver, attrs, spans_of
from vigild.correlate.containers import Container
from vigild.correlate.sessions import Session
from vigild.daemon.sinks.otlp import export_session
from vigild.daemon.store import Store

COLLECTOR = Path(__file__).resolve().parent.parent / "daemon" / "deploy" / "fleet" / "otelcol.yaml"
CID = "124668a8e3fdc2f9b1a237362542d8fb6c8effdf8511e261ae80174ac5e03f48"
POD = "8e3c4a7b-2f1d-4c5e-9a6b-0d1e2f3a4b5c"
T0 = 1_800_000_000_000_000_000


def test_collector_pipeline_is_complete() -> None:
    config = yaml.safe_load(COLLECTOR.read_text())
    sections = {"receivers", "processors", "exporters"}
    assert sections <= set(config)
    for name, pipeline in config["service"]["pipelines"].items():
        assert name.split("/")[0] == "traces"
        for section in sections:
            for component in pipeline[section]:
                assert component in config[section], f"{component} is not defined in {section}"
    traces = config["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"] and "batch" in traces["processors"]
    # memory_limiter must come first (the collector's guidance): it refuses data before batching
    assert traces["processors"][0] == "memory_limiter"
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")


def test_session_host_comes_from_vigil_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_HOST", "node-7")
    assert Session(id=1, root_pid=1, started_ns=T0).host == "node-7"
    monkeypatch.delenv("VIGIL_HOST")
    assert Session(id=1, root_pid=1, started_ns=T0).host not in ("", "node-7")


def test_container_session_reaches_an_otlp_receiver_with_its_resource(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_HOST", "node-7")
    container = Container(CID, "containerd", f"/kubepods.slice/cri-containerd-{CID}.scope", name="agent",
                          pod_uid=POD, pod_name="runner-7", pod_namespace="ci")
    store = Store(tmp_path / "v.db")
    session = Session(id=77, root_pid=100, started_ns=T0, argv=["claude", "-p", "hi"], agent="claude",
                      ended_ns=T0 + 10**9, exit_code=0, container=container.to_dict())
    store.upsert_session(session)
    store.add_event({"type": "session_start", "ts_ns": T0, "session_id": 77, "pid": 100, **session.to_dict()})
    store.add_event({"type": "session_end", "ts_ns": T0 + 10**9, "session_id": 77, "pid": 100})
    store.commit()
    assert store.session(77)["container"] == container.to_dict()  # type: ignore[index]
    receiver = OtlpReceiver()
    try:
        assert export_session(store, 77, receiver.url) >= 1
    finally:
        receiver.close()
    (got,) = receiver.received
    assert got.path == "/v1/traces" and got.headers["content-type"] == "application/x-protobuf"
    (resource_spans,) = got.request.resource_spans
    resource = attrs(resource_spans.resource)
    assert resource["host.name"] == "node-7"
    assert {k: resource[k] for k in ("container.id", "container.runtime", "container.name", "k8s.pod.uid",
                                     "k8s.pod.name", "k8s.namespace.name")} == {
        "container.id": CID, "container.runtime": "containerd", "container.name": "agent",
        "k8s.pod.uid": POD, "k8s.pod.name": "runner-7", "k8s.namespace.name": "ci"}
    assert spans_of(got)
