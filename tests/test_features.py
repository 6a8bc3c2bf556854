"""A sensor the kernel refuses costs that feature only, and vigil says so: one line on stderr (or in
vigild's log), `vigil status` lists it unavailable with the reason, vigild's exporter serves
vigil_feature_available{feature} 0 for it and 1 for the others; lineage and TLS go on working.

The refusal is forced with the VIGIL_TEST_REPLACE_OBJECT hook (vigild.bpf.objects): effects.bpf.o
is replaced by tests/data/refused_effects.bpf.c, which every verifier refuses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakellm import FAKE_ANTHROPIC_KEY, FakeLLMServer, client_env
from support.helpers import vigil, vigil_trace
from vigild.bpf.build import compile_object, find_clang, generate_vmlinux_h
from vigild.bpf.features import FEATURES, Features
from vigild.bpf.loader import BpfError, load_leaving_out_refused
from vigild.bpf.objects import REPLACE_ENV
from support.vigild_proc import Vigild, metric_value

DATA = Path(__file__).parent / "data"
REFUSAL = "invalid mem access 'scalar'"  # what every verifier says about refused_effects.bpf.c


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("refused")
    generate_vmlinux_h(work)
    return work


@pytest.fixture(scope="module")
def refused_object(build_dir: Path) -> Path:
    return compile_object(DATA / "refused_effects.bpf.c", build_dir, build_dir, find_clang())


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv
        assert srv.errors == []


def test_features_say_each_unavailable_feature_once() -> None:
    told: list[str] = []
    features = Features(told.append)
    features.available("lineage")
    features.turned_off("tls", "--no-tls")
    features.unavailable("effects", "refused\nverifier log that is not said")
    features.unavailable("effects", "refused")
    assert told == [f"effects unavailable: refused; lost: {FEATURES['effects']}"]
    state = features.as_dict()
    assert list(state) == list(FEATURES)
    assert state["lineage"]["available"] and state["lineage"]["reason"] is None
    assert state["tls"] == {"available": False, "reason": "--no-tls", "gives": FEATURES["tls"]}
    assert state["effects"]["reason"] == "refused"
    assert state["oom_kills"] == {"available": False, "reason": "not started", "gives": FEATURES["oom_kills"]}
    with pytest.raises(KeyError):
        features.available("telepathy")


@pytest.mark.usefixtures("root")
def test_a_refused_optional_program_is_left_out_and_the_rest_attaches(build_dir: Path) -> None:
    """How control.bpf.o loses one feature and keeps the other on a kernel refusing one program."""
    obj_path = compile_object(DATA / "one_refused.bpf.c", build_dir, build_dir, find_clang())
    obj, refused = load_leaving_out_refused(obj_path, lambda _obj: None, ["refused"])
    try:
        assert list(refused) == ["refused"] and REFUSAL in refused["refused"]
        obj.attach("kept")
        with pytest.raises(BpfError):
            obj.attach("refused")
    finally:
        obj.close()
    with pytest.raises(BpfError) as info:  # a program that is not optional still fails the load
        load_leaving_out_refused(obj_path, lambda _obj: None, [])
    assert info.value.program == "refused" and info.value.reason is not None and REFUSAL in info.value.reason


@pytest.mark.usefixtures("root")
def test_trace_loses_effects_only_and_says_it_once(refused_object: Path, server: FakeLLMServer,
                                                   tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    body = json.dumps({"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]})
    script = tmp_path / "agent.sh"
    script.write_text(
        f"echo x > {target}\n"
        f"curl -sS -o /dev/null --cacert {server.ca_path} {server.url}/v1/messages "
        f"-H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' "
        f"-H 'x-api-key: {FAKE_ANTHROPIC_KEY}' -d '{body}'\n")
    env = {**client_env(server), REPLACE_ENV: f"effects.bpf.o={refused_object}"}
    result = vigil_trace(["--", "bash", str(script)], env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "unavailable" in line]
    assert len(said) == 1, result.stderr
    assert said[0].startswith("vigil: warning: effects unavailable: ") and REFUSAL in said[0]
    assert not [e for e in result.events if e["type"].startswith(("file_", "net_", "dns_"))]
    # lineage: the script and curl ran, traced; TLS: the LLM call was decoded
    assert [e["argv"][0] for e in result.of_type("exec")] == ["bash", "curl"]
    calls = result.of_type("llm_call")
    assert [(c["provider"], c["model"], c["comm"]) for c in calls] == [("anthropic", "claude-sonnet-4-6", "curl")]
    assert target.read_text() == "x\n"


@pytest.mark.usefixtures("root")
def test_vigild_status_and_metric_name_the_unavailable_feature(refused_object: Path, tmp_path: Path) -> None:
    config = "[discovery]\ndefault_agents = false\n\n[[agents]]\nname = \"probe\"\ncomm = \"featureprobe\"\n"
    daemon = Vigild(tmp_path, config, prefix=("env", f"{REPLACE_ENV}=effects.bpf.o={refused_object}"))
    daemon.start(timeout=120)
    try:
        features = daemon.status()["features"]
        assert features["effects"]["available"] is False and REFUSAL in features["effects"]["reason"]
        assert features["lineage"]["available"] and features["tls"]["available"]
        assert features["memory_spikes"] == {"available": False, "gives": FEATURES["memory_spikes"],
                                             "reason": "tool calls are not governed ([tools] enabled = false)"}
        metrics = daemon.metrics()
        assert metric_value(metrics, "vigil_feature_available", feature="effects") == 0
        assert metric_value(metrics, "vigil_feature_available", feature="lineage") == 1
        assert metric_value(metrics, "vigil_feature_available", feature="tls") == 1
        # warned once (an info line may say how TLS uprobes attach: links "unavailable" before 6.6)
        said = [line for line in daemon.log if "unavailable" in line and not line.startswith(("INFO", "DEBUG"))]
        assert len(said) == 1 and "effects unavailable" in said[0] and REFUSAL in said[0], daemon.log

        text = vigil(["status", "--socket", str(daemon.socket)], env={**os.environ, "COLUMNS": "200"})
        assert text.returncode == 0, text.stderr
        line = next(ln for ln in text.stdout.splitlines() if "feature effects" in ln)
        assert "unavailable:" in line and REFUSAL in line
        assert any("feature tls" in ln and ln.rstrip().endswith("available") for ln in text.stdout.splitlines())
    finally:
        assert daemon.stop() == 0, daemon.log
