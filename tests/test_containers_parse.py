"""Container identity from cgroup paths as runtimes really write them (docker, podman, containerd,
CRI-O, kubelet's cgroupfs and systemd drivers, systemd-nspawn, LXC; v1 and v2), and the names the
runtimes' state files tell."""

from __future__ import annotations

import json

import pytest

from vigild.correlate.containers import (
    Container,
    container_label,
    name_from_docker_config,
    name_from_podman_containers,
    names_from_oci_annotations,
    parse_cgroup_path,
    parse_proc_cgroup,
    pod_from_log_dirs,
    resource_attributes,
)

CID = "124668a8e3fdc2f9b1a237362542d8fb6c8effdf8511e261ae80174ac5e03f48"
POD = "8e3c4a7b-2f1d-4c5e-9a6b-0d1e2f3a4b5c"

SHAPES = [
    # (path, id, runtime, container cgroup, pod uid)
    (f"/system.slice/docker-{CID}.scope", CID, "docker", f"/system.slice/docker-{CID}.scope", None),
    (f"/docker/{CID}", CID, "docker", f"/docker/{CID}", None),
    (f"/machine.slice/libpod-{CID}.scope", CID, "podman", f"/machine.slice/libpod-{CID}.scope", None),
    (f"/machine.slice/libpod-{CID}.scope/container/tools/call-3", CID, "podman",
     f"/machine.slice/libpod-{CID}.scope", None),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope/container", CID, "podman",
     f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope", None),
    (f"/libpod_parent/libpod-{CID}", CID, "podman", f"/libpod_parent/libpod-{CID}", None),
    (f"/process_api/abc/fleet-test/libpod-{CID}", CID, "podman", f"/process_api/abc/fleet-test/libpod-{CID}", None),
    (f"/system.slice/nerdctl-{CID}.scope", CID, "containerd", f"/system.slice/nerdctl-{CID}.scope", None),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD.replace('-', '_')}.slice/"
     f"cri-containerd-{CID}.scope", CID, "containerd",
     f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD.replace('-', '_')}.slice/"
     f"cri-containerd-{CID}.scope", POD),
    (f"/kubepods.slice/kubepods-pod{POD.replace('-', '_')}.slice/crio-{CID}.scope", CID, "cri-o",
     f"/kubepods.slice/kubepods-pod{POD.replace('-', '_')}.slice/crio-{CID}.scope", POD),
    (f"/kubepods/besteffort/pod{POD}/{CID}", CID, "kubernetes", f"/kubepods/besteffort/pod{POD}/{CID}", POD),
    (f"/kubepods/pod{POD}/{CID}", CID, "kubernetes", f"/kubepods/pod{POD}/{CID}", POD),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD.replace('-', '_')}.slice/"
     f"docker-{CID}.scope", CID, "docker",
     f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD.replace('-', '_')}.slice/"
     f"docker-{CID}.scope", POD),
    ("/machine.slice/systemd-nspawn@build\\x2dbox.service/payload", "build-box", "systemd-nspawn",
     "/machine.slice/systemd-nspawn@build\\x2dbox.service", None),
    ("/machine.slice/machine-sandbox.scope", "sandbox", "systemd-nspawn", "/machine.slice/machine-sandbox.scope",
     None),
    ("/lxc.payload.agent1/init.scope", "agent1", "lxc", "/lxc.payload.agent1", None),
    ("/lxc/agent1", "agent1", "lxc", "/lxc/agent1", None),
    ("/machine.slice/machine-lxc\\x2d4242\\x2dbuilder.scope", "lxc-4242-builder", "libvirt-lxc",
     "/machine.slice/machine-lxc\\x2d4242\\x2dbuilder.scope", None),
    # a reader in its own cgroup namespace sees the host's components after "/.."
    (f"/../../kubepods.slice/kubepods-pod{POD.replace('-', '_')}.slice/cri-containerd-{CID}.scope", CID,
     "containerd", f"/kubepods.slice/kubepods-pod{POD.replace('-', '_')}.slice/cri-containerd-{CID}.scope", POD),
]


@pytest.mark.parametrize(("path", "cid", "runtime", "cgroup", "pod_uid"), SHAPES, ids=[s[2] + ":" + s[0][:40] for s in SHAPES])
def test_real_world_paths(path: str, cid: str, runtime: str, cgroup: str, pod_uid: str | None) -> None:
    c = parse_cgroup_path(path)
    assert c == Container(cid, runtime, cgroup, pod_uid=pod_uid)


@pytest.mark.parametrize("path", [
    "/", "/user.slice/user-0.slice/session-1.scope", "/system.slice/vigild.service",
    f"/machine.slice/libpod-conmon-{CID}.scope",        # podman's monitor, not the container
    f"/kubepods.slice/kubepods-pod{POD.replace('-', '_')}.slice/crio-conmon-{CID}.scope",
    "/machine.slice/machine-qemu\\x2d1\\x2dwin11.scope",  # a libvirt VM
    f"/docker/{CID[:12]}",                              # a short id is no container id
    "/process_api/4981a52cd1a392284b78c6e108b6745d",
])
def test_paths_that_are_no_container(path: str) -> None:
    assert parse_cgroup_path(path) is None


def test_pod_without_container_scope_is_no_container() -> None:
    """The pod's slice alone (the pause process's parent) names no container."""
    assert parse_cgroup_path(f"/kubepods.slice/kubepods-pod{POD.replace('-', '_')}.slice") is None


def test_innermost_container_wins() -> None:
    inner = "a" * 64
    c = parse_cgroup_path(f"/system.slice/docker-{CID}.scope/libpod_parent/libpod-{inner}")
    assert c is not None and c.id == inner and c.runtime == "podman"


def test_proc_cgroup_hybrid_prefers_v2_then_any_v1_line() -> None:
    hybrid_v1_only = (f"9:name=systemd:/libpod_parent/libpod-{CID}\n4:memory:/libpod_parent/libpod-{CID}\n0::/\n")
    c = parse_proc_cgroup(hybrid_v1_only)
    assert c is not None and c.id == CID and c.runtime == "podman"
    other = "b" * 64
    both = f"4:memory:/docker/{other}\n0::/system.slice/docker-{CID}.scope\n"
    assert parse_proc_cgroup(both).id == CID  # type: ignore[union-attr]
    assert parse_proc_cgroup("0::/user.slice/user-0.slice/session-1.scope\n") is None
    assert parse_proc_cgroup("garbage\n\n") is None


def test_kubelet_pod_log_dirs_name_the_pod() -> None:
    names = ["kube-system_coredns-5d78c9869d-abcde_11111111-2222-3333-4444-555555555555",
             f"ci_agent-runner-7_{POD}", "not a pod dir"]
    assert pod_from_log_dirs(names, POD) == ("ci", "agent-runner-7")
    assert pod_from_log_dirs(names, "99999999-2222-3333-4444-555555555555") is None


def test_oci_annotations_of_containerd_and_crio() -> None:
    containerd = {"annotations": {"io.kubernetes.cri.container-name": "agent",
                                  "io.kubernetes.cri.sandbox-name": "runner-7",
                                  "io.kubernetes.cri.sandbox-namespace": "ci"}}
    crio = {"annotations": {"io.kubernetes.container.name": "agent", "io.kubernetes.pod.name": "runner-7",
                            "io.kubernetes.pod.namespace": "ci"}}
    assert names_from_oci_annotations(json.dumps(containerd)) == ("agent", "runner-7", "ci")
    assert names_from_oci_annotations(json.dumps(crio)) == ("agent", "runner-7", "ci")
    assert names_from_oci_annotations(json.dumps({"ociVersion": "1.0.2"})) == (None, None, None)
    assert names_from_oci_annotations("[1, 2]") == (None, None, None)
    with pytest.raises(ValueError):
        names_from_oci_annotations("{not json")


def test_podman_and_docker_stores_name_the_container() -> None:
    store = json.dumps([{"id": "c" * 64, "names": ["other"]}, {"id": CID, "names": ["web", "alias"]}])
    assert name_from_podman_containers(store, CID) == "web"
    assert name_from_podman_containers(store, "d" * 64) is None
    assert name_from_docker_config(json.dumps({"Name": "/builder"})) == "builder"
    assert name_from_docker_config(json.dumps({"Name": 3})) is None


def test_names_complete_but_never_overwrite() -> None:
    c = Container(CID, "containerd", "/x", name="agent").with_names("other", "runner-7", "ci")
    assert (c.name, c.pod_name, c.pod_namespace) == ("agent", "runner-7", "ci")


def test_round_trip_label_and_otel_resource() -> None:
    c = Container(CID, "containerd", "/k", name="agent", pod_uid=POD, pod_name="runner-7", pod_namespace="ci")
    assert c.to_dict()["pod_namespace"] == "ci" and "name" not in Container(CID, "docker", "/d").to_dict()
    assert container_label(c.to_dict()) == f"containerd {CID[:12]} agent (pod ci/runner-7)"
    assert container_label(None) == "-"
    assert resource_attributes(c.to_dict()) == {
        "container.id": CID, "container.runtime": "containerd", "container.name": "agent",
        "k8s.pod.uid": POD, "k8s.pod.name": "runner-7", "k8s.namespace.name": "ci"}
    assert resource_attributes(None) == {}
