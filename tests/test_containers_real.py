"""An agent in a real podman container, watched and governed by a real vigild from the host.

The root filesystem is built here (no registry is reachable): a directory with the host's /usr
bound read-only and the agent script. The container gets a 256 MiB memory limit, vigild a 64 MiB
per-call one: the call over 64 MiB is OOM-killed in its own group inside the container's cgroup,
a call allowed 1 GiB by policy is still stopped by the container's 256 MiB above it, the agent
goes on, and the session carries the container's id and runtime. Runs on the hybrid host (memory
on v1: runc, since crun refuses hybrid hosts) and on pure v2 in the guest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support.cgroup_teardown import destroy
from support.require import need
from support.helpers import vigil
from support.run_cgroups import enclosing_dirs, leftovers, memory_version
from vigild.cgroups import HostCgroups, detect
from support.vigild_proc import Vigild

pytestmark = pytest.mark.usefixtures("root")

AGENT = """#!/bin/sh
python3 -c 'x=bytearray(200*2**20)'
echo "first call: $?"
python3 -c 'import time; y=[]
for _ in range(400): y.append(bytearray(2**20))
print("second call survived")'
echo "second call: $?"
echo alive
"""

CONFIG = """
[discovery]
default_agents = false

[[agents]]
name = "ctragent"
comm = "ctragent"

[tools]
enabled = true
memory_max = "64M"

[[policies]]
match = "*range(400)*"
memory_max = "1G"
"""


def _rootfs(top: Path) -> Path:
    """A container root: the host's /usr (bound read-only at run time) behind the usual links."""
    root = top / "rootfs"
    for name in ("usr", "tmp", "proc", "sys", "dev", "etc", "agent", "run", "var"):
        (root / name).mkdir(parents=True)
    for name in ("bin", "lib", "lib64", "sbin"):
        (root / name).symlink_to(f"usr/{name}")
    (root / "tmp").chmod(0o1777)
    script = root / "agent" / "ctragent"
    script.write_text(AGENT)
    script.chmod(0o755)
    return root


def _podman(name: str, parent: str, rootfs: Path) -> list[str]:
    # runc: crun refuses hybrid hosts; the ulimits: podman's defaults raise them, which needs
    # CAP_SYS_RESOURCE that this machine's root lacks.
    return ["podman", "run", "--rm", "--name", name, "--runtime", "runc", "--network", "none",
            "--cgroup-manager", "cgroupfs", "--cgroup-parent", parent, "--memory", "256m",
            "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096", "-v", "/usr:/usr:ro",
            "--rootfs", str(rootfs), "/agent/ctragent"]


def _remove_container(name: str, host: HostCgroups, parent: str) -> None:
    subprocess.run(["podman", "rm", "-f", "--time", "0", name], capture_output=True, timeout=120)
    for hierarchy in (*host.v1, *([host.v2] if host.v2 else [])):
        destroy(hierarchy.mount / parent.lstrip("/"))


def _tool_ends(tree: object) -> list[dict]:
    if isinstance(tree, dict):
        found = [tree] if tree.get("type") == "tool_end" else []
        return found + [e for v in tree.values() for e in _tool_ends(v)]
    if isinstance(tree, list):
        return [e for item in tree for e in _tool_ends(item)]
    return []


def test_agent_in_podman_container_calls_limited_inside_its_cgroup(tmp_path: Path) -> None:
    need(shutil.which("podman") is not None and shutil.which("runc") is not None,
         "podman and runc are not installed (apt-get install podman runc)")
    daemon = Vigild(tmp_path, CONFIG).start()
    # The container's groups go below the test's own cgroup (one path in every hierarchy: podman's
    # cgroupfs manager uses one parent for all), removed at the end.
    host = detect()
    memory = host.hierarchy_for("memory")
    assert memory is not None
    own = next(d for d in enclosing_dirs() if memory.mount in d.parents or d == memory.mount)
    parent = "/" + str(own.relative_to(memory.mount) / f"fleet-{os.getpid()}")
    name = f"vigil-fleet-{os.getpid()}"
    control = own / "cgroup.subtree_control"
    enabled = control.read_text().split() if memory.version == 2 else []
    try:
        ran = subprocess.run(_podman(name, parent, _rootfs(tmp_path)), capture_output=True, text=True,
                             timeout=600)
        assert ran.returncode == 0, (ran.stdout, ran.stderr, daemon.log)
        lines = ran.stdout.splitlines()
        assert lines[-1] == "alive" and "first call: 137" in lines, ran.stdout
        assert "second call survived" not in ran.stdout and "second call: 137" in lines, ran.stdout
        placement = daemon.status()["tool_placement"]
        assert placement["below_vigild"] == {}, placement  # `vigil status` would name any fallback
        _remove_container(name, host, parent)  # first: on v2 vigild gives its leaf back only to a bare cgroup
        if memory.version == 2:  # runc enabled every controller for the container's parent: undo it
            for controller in set(control.read_text().split()) - set(enabled):
                control.write_text(f"-{controller}")
        assert daemon.stop() == 0, daemon.log
    finally:
        _remove_container(name, host, parent)
        daemon.kill_group()
    sessions = vigil(["sessions", "--db", str(daemon.db), "-o", "json"], timeout=120)
    rows = [json.loads(line) for line in sessions.stdout.splitlines()]
    mine = [r for r in rows if r["agent"] == "ctragent"]
    assert len(mine) == 1, sessions.stdout
    container = mine[0]["container"]
    assert container["runtime"] == "podman" and len(container["id"]) == 64, container
    assert container["cgroup"] == f"{parent}/libpod-{container['id']}"
    assert container.get("name") == name  # from podman's containers.json
    shown = vigil(["show", "--db", str(daemon.db), "-o", "json", str(mine[0]["id"])], timeout=120)
    ends = list({e["tool_call"]: e for e in _tool_ends(json.loads(shown.stdout))}.values())
    by_argv = {"first" if "200*2**20" in " ".join(e["argv"]) else "second": e
               for e in ends if "python3" in " ".join(e["argv"])}
    assert set(by_argv) == {"first", "second"}, ends
    # The first call hit its own 64 MiB limit, the second the container's 256 MiB above its 1 GiB.
    assert by_argv["first"]["outcome"] == "oom_killed" and "memory.max" in by_argv["first"]["limits_hit"]
    assert by_argv["first"]["peak_memory_bytes"] <= 64 << 20, by_argv["first"]
    second = by_argv["second"]
    assert second["outcome"] == "oom_killed" and second["limits"]["memory_max"] == 1 << 30, second
    # Killed near the container's 256 MiB, far below its own 1 GiB. On v2 the call's memory.peak can
    # pass the container's limit by the charge that the container then refused (the kernel charges
    # a group before its parent and keeps the watermark when it backs out): measured 1.2 MiB on 6.12.
    assert second["peak_memory_bytes"] <= (256 + 8) << 20, second
    assert second["limits_hit"] == ["enclosing memory.max"], second
    placed = [line for line in daemon.log if "tool calls of agents in" in line and "go below it" in line]
    assert placed and f"libpod-{container['id']}" in placed[0], daemon.log
    assert not [line for line in daemon.log if "run below vigild's own cgroup" in line], daemon.log
    if memory_version() == 1:
        assert str(memory.mount / container["cgroup"].lstrip("/")) in placed[0]
    assert leftovers(daemon.pid) == []
