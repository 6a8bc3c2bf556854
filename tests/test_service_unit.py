"""The systemd unit: `systemd-analyze verify` accepts it, and vigild does its job with exactly the
capabilities its CapabilityBoundingSet grants (an agent of another user, with its own OpenSSL,
making LLM calls; the control socket handed to a group)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.require import need
from fakellm import CLIENTS_DIR, FakeLLMServer, client_env
from support.vigild_proc import Vigild, metric_value

pytestmark = pytest.mark.usefixtures("root")

UNIT = Path(__file__).resolve().parent.parent / "daemon" / "service" / "vigild.service"
NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]


def directive(name: str) -> list[str]:
    return re.findall(rf"^{name}=(.*)$", UNIT.read_text(), re.MULTILINE)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path sits below 0700 directories)."""
    path = Path(tempfile.mkdtemp(prefix="vigild-unit-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    need(shutil.which("systemd-analyze") is not None, "systemd-analyze (Debian package systemd) is missing")
    unit = tmp_path / "vigild.service"  # ExecStart pointed at this checkout's vigild
    vigild = Path(sys.executable).with_name("vigild")
    unit.write_text(re.sub(r"^ExecStart=.*$", f"ExecStart={vigild}", UNIT.read_text(), flags=re.MULTILINE))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "vigild.service" not in result.stderr, result.stderr


def test_unit_essentials() -> None:
    assert directive("ProtectSystem") == ["strict"]
    assert set(directive("ReadWritePaths")[0].split()) >= {"/sys/fs/cgroup", "/sys/fs/bpf"}
    assert directive("StateDirectory") == ["vigild"] and directive("RuntimeDirectory") == ["vigild"]
    assert directive("LimitMEMLOCK") == ["infinity"] and directive("Restart") == ["on-failure"]
    assert directive("Delegate") == ["yes"]
    assert "CAP_SYS_ADMIN" in directive("CapabilityBoundingSet")[0]


def test_vigild_works_with_the_units_capabilities(open_dir: Path) -> None:
    need(shutil.which("setpriv") is not None and shutil.which("node") is not None, "setpriv or node is missing")
    caps = [c.lower().removeprefix("cap_") for c in directive("CapabilityBoundingSet")[0].split()]
    bounding = "--bounding-set=-all," + ",".join("+" + c for c in caps)
    client = open_dir / "node_fetch.js"
    shutil.copy(CLIENTS_DIR / "node_fetch.js", client)
    agent = open_dir / "unitagent"
    # exec: the LLM client is the agent itself (a child would be an observed tool call nobody asked for)
    agent.write_text(f"#!/bin/sh\nexec node {client} >/dev/null\n")
    agent.chmod(0o755)
    daemon = Vigild(open_dir, """
[discovery]
default_agents = false

[[agents]]
name = "unit"
comm = "unitagent"

[control]
group = "nogroup"
""", prefix=("setpriv", bounding, "--inh-caps=-all"))
    with FakeLLMServer() as server:
        ca = open_dir / "ca.pem"
        shutil.copy(server.ca_path, ca)
        ca.chmod(0o644)
        env = {**client_env(server), "NODE_EXTRA_CA_CERTS": str(ca), "HOME": str(open_dir)}
        daemon.start()
        try:
            subprocess.run([*NOBODY, str(agent)], env=env, cwd=open_dir, check=True, timeout=60)
            deadline = time.monotonic() + 10
            while metric_value(daemon.metrics(), "vigil_llm_calls_total", agent="unit") < 2:
                assert time.monotonic() < deadline, daemon.log
                time.sleep(0.1)
            metrics = daemon.metrics()
            assert metric_value(metrics, "vigil_uprobe_attaches_total", outcome="failed") == 0
            assert daemon.socket.stat().st_gid == 65534
        finally:
            assert daemon.stop() == 0, daemon.log
    assert not [line for line in daemon.log if line.startswith(("WARNING", "ERROR"))], daemon.log
