"""The Kubernetes base (daemon/deploy/kubernetes), rendered by the real `kubectl kustomize` and
validated against the Kubernetes API schemas (kubernetes-validate, strict: unknown fields fail)
of the oldest and newest Kubernetes it ships; the ServiceMonitor (a CRD the schemas do not cover)
is checked against what it must select; the ConfigMap's config.toml loads in vigild."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from support.require import need
from vigild.daemon.config import load

BASE = Path(__file__).resolve().parent.parent / "daemon" / "deploy" / "kubernetes"
UNIT = Path(__file__).resolve().parent.parent / "daemon" / "service" / "vigild.service"
VERSIONS = ("1.25.0", "1.30.0", "1.37.0")


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    need(shutil.which("kubectl") is not None, "kubectl (for `kubectl kustomize`) is not installed")
    out = subprocess.run(["kubectl", "kustomize", str(BASE)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    return {d["kind"]: d for d in docs}


def test_renders_every_resource(rendered: dict[str, dict]) -> None:
    assert set(rendered) == {"Namespace", "ConfigMap", "Service", "DaemonSet", "ServiceMonitor"}


@pytest.mark.parametrize("version", VERSIONS)
def test_core_resources_validate_against_the_api_schemas(rendered: dict[str, dict], version: str) -> None:
    for kind in ("Namespace", "ConfigMap", "Service", "DaemonSet"):
        kubernetes_validate.validate(rendered[kind], version, strict=True)


def test_a_wrong_field_is_caught_by_the_schemas(rendered: dict[str, dict]) -> None:
    """The validation is real: a misspelt field and a wrong type are refused."""
    broken = yaml.safe_load(yaml.safe_dump(rendered["DaemonSet"]))
    broken["spec"]["template"]["spec"]["hostPid"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)
    broken = yaml.safe_load(yaml.safe_dump(rendered["DaemonSet"]))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "metrics"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_daemonset_has_the_node_agent_shape(rendered: dict[str, dict]) -> None:
    pod = rendered["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["privileged"] is False and security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/sys/fs/bpf", "/sys/kernel/btf", "/sys/fs/cgroup", "/etc/vigild", "/var/lib/vigild"} <= mounts
    host_paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert {"/sys/fs/bpf", "/sys/kernel/btf", "/sys/fs/cgroup"} <= host_paths
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    env = {e["name"]: e for e in container["env"]}
    assert env["VIGIL_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_capabilities_are_a_subset_of_the_measured_unit(rendered: dict[str, dict]) -> None:
    """The pod gets no capability the systemd unit (measured one by one) does without; CAP_CHOWN
    only serves a [control] group, which the base does not configure."""
    unit = re.search(r"^CapabilityBoundingSet=(.*)$", UNIT.read_text(), re.MULTILINE)
    assert unit is not None
    measured = {c.removeprefix("CAP_") for c in unit.group(1).split()}
    added = set(rendered["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]["securityContext"]
                ["capabilities"]["add"])
    assert added <= measured and {"BPF", "PERFMON", "SYS_ADMIN"} <= added
    assert added == measured - {"CHOWN"}


def test_service_and_monitor_select_the_daemonset(rendered: dict[str, dict]) -> None:
    pod_labels = rendered["DaemonSet"]["spec"]["template"]["metadata"]["labels"]
    service = rendered["Service"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = rendered["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in ports
    container_ports = {p["name"]: p["containerPort"] for p in
                       rendered["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert container_ports["metrics"] == 9464
    assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "host",
            "action": "replace"} in endpoint["relabelings"]


def test_configmap_config_loads_in_vigild(rendered: dict[str, dict], tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(rendered["ConfigMap"]["data"]["config.toml"])
    config = load(path)
    assert config.metrics_address == ("0.0.0.0", 9464)
    mounted = {m["mountPath"] for m in
               rendered["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert str(config.store_path.parent) in mounted and str(config.socket_path.parent) in mounted
