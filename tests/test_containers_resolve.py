"""The host side of container identity: names read from a runtime's state under a host root (a
directory laid out as the kubelet and containerd lay theirs out), cached per cgroup, and a process
that is in no container (this test's own) resolved to None."""

from __future__ import annotations

import json
import os
from pathlib import Path

from vigild.daemon.containers import ContainerResolver

CID = "124668a8e3fdc2f9b1a237362542d8fb6c8effdf8511e261ae80174ac5e03f48"
POD = "8e3c4a7b-2f1d-4c5e-9a6b-0d1e2f3a4b5c"
CGROUP = f"0::/kubepods.slice/kubepods-pod{POD.replace('-', '_')}.slice/cri-containerd-{CID}.scope\n"


def test_names_from_kubelet_and_containerd_state(tmp_path: Path) -> None:
    (tmp_path / "var/log/pods" / f"ci_runner-7_{POD}").mkdir(parents=True)
    bundle = tmp_path / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / CID
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({"annotations": {"io.kubernetes.cri.container-name": "agent"}}))
    resolver = ContainerResolver(tmp_path)
    c = resolver.of_proc_cgroup(CGROUP)
    assert c is not None
    assert (c.id, c.runtime, c.name, c.pod_uid, c.pod_name, c.pod_namespace) == \
        (CID, "containerd", "agent", POD, "runner-7", "ci")
    (bundle / "config.json").write_text("{broken")  # cached: the state is read once per cgroup
    assert resolver.of_proc_cgroup(CGROUP) is c


def test_unreadable_state_leaves_names_unknown(tmp_path: Path) -> None:
    bundle = tmp_path / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / CID
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text("{broken")
    c = ContainerResolver(tmp_path).of_proc_cgroup(CGROUP)
    assert c is not None and c.id == CID and c.name is None and c.pod_name is None


def test_a_process_in_no_container_and_a_gone_one(tmp_path: Path) -> None:
    resolver = ContainerResolver(tmp_path)
    own = Path("/proc/self/cgroup").read_text()
    assert resolver.of_pid(os.getpid()) is None, own
    assert resolver.of_pid(2**22 + 1) is None  # above pid_max: no such process
