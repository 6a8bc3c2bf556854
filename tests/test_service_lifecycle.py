"""vigild's life: SIGHUP reloads (a broken config is refused and the running one kept), new agents
named by a reload are tracked, SIGTERM detaches every BPF program and exits 0."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import vigil
from vigild_proc import Vigild, bpf_prog_ids, loaded_prog_ids, metric_value

pytestmark = pytest.mark.usefixtures("root")

CONFIG = """
[discovery]
default_agents = false

[[agents]]
name = "first"
comm = "{comm}"
"""


def run_agent(workdir: Path, name: str) -> None:
    script = workdir / name
    script.write_text("#!/bin/sh\nls / >/dev/null\n")
    script.chmod(0o755)
    subprocess.run([str(script)], check=True)


def wait_sessions(daemon: Vigild, agent: str, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while metric_value(daemon.metrics(), "vigil_agent_sessions_started_total", agent=agent) < count:
        assert time.monotonic() < deadline, f"no session of {agent}: {daemon.log}"
        time.sleep(0.1)


def test_reload_and_clean_stop(tmp_path: Path) -> None:
    daemon = Vigild(tmp_path, CONFIG.format(comm="firstagent")).start()
    try:
        held = bpf_prog_ids(daemon.pid)
        assert held and held <= loaded_prog_ids()
        run_agent(tmp_path, "firstagent")
        wait_sessions(daemon, "first", 1)

        daemon.config.write_text(CONFIG.format(comm="firstagent") + "\n[capture]\ncontent = maybe\n")
        daemon.signal(signal.SIGHUP)
        line = daemon.wait_log("reload refused")
        assert f"{daemon.config}:10: TOML syntax" in line and "keeping the running configuration" in line
        assert daemon.proc is not None and daemon.proc.poll() is None
        assert metric_value(daemon.metrics(), "vigil_config_reloads_total", outcome="failed") == 1
        run_agent(tmp_path, "firstagent")  # the old configuration still works
        wait_sessions(daemon, "first", 2)

        daemon.config.write_text(CONFIG.format(comm="firstagent").replace('"first"', '"second"')
                                 .replace("firstagent", "secondagent"))
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("reloaded")
        assert daemon.status()["agents"] == ["second"]
        run_agent(tmp_path, "secondagent")
        wait_sessions(daemon, "second", 1)
        run_agent(tmp_path, "firstagent")  # no longer an agent
        time.sleep(0.5)
        assert metric_value(daemon.metrics(), "vigil_agent_sessions_started_total", agent="first") == 2

        status = vigil(["status", "--socket", str(daemon.socket), "-o", "json"])
        assert status.returncode == 0 and '"sessions_total": 3' in status.stdout
    finally:
        assert daemon.stop() == 0, daemon.log
    deadline = time.monotonic() + 5
    while held & loaded_prog_ids() and time.monotonic() < deadline:
        time.sleep(0.1)  # the kernel frees programs after an RCU grace period
    assert not held & loaded_prog_ids()
    assert daemon.log[-1].endswith("stopped")
    assert not daemon.socket.exists()


def test_refuses_to_start_twice_on_one_socket(tmp_path: Path) -> None:
    first = Vigild(tmp_path, CONFIG.format(comm="twiceagent")).start()
    try:
        second = Vigild(tmp_path, CONFIG.format(comm="twiceagent")).start()  # the first one answers
        assert second.proc is not None and second.proc.wait(20) == 1
        second.wait_log("another vigild serves")
        assert first.status()["pid"] == first.pid  # its socket survived
    finally:
        assert first.stop() == 0


def test_tool_calls_in_cgroups_and_nothing_left_at_sigterm(tmp_path: Path) -> None:
    """With [tools] enabled the service runs each tool call of a tracked agent in its own cgroup;
    SIGTERM mid-call ends the call and leaves no cgroup, no held process and no program behind."""
    config = CONFIG.format(comm="toolagent") + '\n[tools]\nenabled = true\nmemory_max = "128M"\n'
    daemon = Vigild(tmp_path, config).start()
    script = tmp_path / "toolagent"
    script.write_text("#!/bin/sh\nsleep 30\n")
    script.chmod(0o755)
    agent = subprocess.Popen([str(script)])
    groups: list[Path] = []
    try:
        held = bpf_prog_ids(daemon.pid)
        deadline = time.monotonic() + 10
        while not groups and time.monotonic() < deadline:
            groups = [p for p in Path("/sys/fs/cgroup/memory").glob(f"**/vigil-run-{daemon.pid}/tools/call-*")]
            time.sleep(0.1)
        assert groups, daemon.log
        limit = int((groups[0] / "memory.limit_in_bytes").read_text())
        assert limit == 128 << 20
        sleeper = int((groups[0] / "cgroup.procs").read_text().split()[0])
        assert Path(f"/proc/{sleeper}/cmdline").read_bytes().split(b"\0")[0] == b"sleep"
    finally:
        assert daemon.stop() == 0, daemon.log
        agent.wait(timeout=10)
    assert not list(Path("/sys/fs/cgroup").glob(f"*/**/vigil-run-{daemon.pid}"))
    assert not Path(f"/proc/{sleeper}").exists() or "T" not in Path(f"/proc/{sleeper}/stat").read_text().split()[2]
    deadline = time.monotonic() + 5
    while held & loaded_prog_ids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not held & loaded_prog_ids()


def test_session_left_open_by_a_killed_vigild_is_closed_at_the_next_start(tmp_path: Path) -> None:
    """SIGKILL while an agent runs: the next vigild on the same store ends that session, says why."""
    from vigild.daemon.store import Store

    script = tmp_path / "slowagent"
    script.write_text("#!/bin/sh\nls / >/dev/null\nexec sleep 30\n")
    script.chmod(0o755)
    daemon = Vigild(tmp_path, CONFIG.format(comm="slowagent")).start()
    agent = subprocess.Popen([str(script)])
    try:
        wait_sessions(daemon, "first", 1)
        time.sleep(1.5)  # the store commits at least once a second
        daemon.signal(signal.SIGKILL)
        assert daemon.proc is not None and daemon.proc.wait(10) == -signal.SIGKILL
    finally:
        agent.kill()
        agent.wait()
    [row] = [r for r in Store(daemon.db).sessions() if r["agent"] == "first"]
    assert row["ended_ns"] is None  # as the killed vigild left it

    restarted = Vigild(tmp_path, CONFIG.format(comm="slowagent")).start()
    try:
        restarted.wait_log(r"closed 1 session\(s\) a previous vigild left open")
        [row] = [r for r in Store(daemon.db).sessions() if r["agent"] == "first"]
        assert row["ended_ns"] is not None and row["ended_ns"] >= row["started_ns"]
        assert row["end_reason"].startswith("abandoned:") and str(daemon.pid) in row["end_reason"]
        listing = vigil(["sessions", "--db", str(daemon.db), "-o", "json"])
        assert '"end_reason": "abandoned:' in listing.stdout
    finally:
        assert restarted.stop() == 0, restarted.log
