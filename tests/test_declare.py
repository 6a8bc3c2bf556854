"""Declared needs: `vigil declare` inside a tool call under a real `vigil run` (real socket, real
cgroups, real OOM), clamping to the host bounds, SO_PEERCRED admission, and the pure rules."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.helpers import TraceResult, VIGIL, events_and_output
from vigild.daemon.service.control import CommandError, request
from vigild.daemon.tools.declare import (
    Bounds,
    DeclareError,
    Needs,
    PeerControlServer,
    parse_hint,
    parse_needs,
)

DATA = Path(__file__).parent / "data" / "control"
PY = sys.executable
ALLOC = str(DATA / "alloc.py")
AGENT = str(DATA / "fake_agent.py")
MIB = 1 << 20


def vigil_run(args: list[str], tools: list[list[str]], timeout: float = 120) -> TraceResult:
    proc = subprocess.run([*VIGIL, "run", "-o", "json", "--no-tls", "--no-effects", *args, "--", PY, AGENT,
                           json.dumps(tools)], check=False, capture_output=True, text=True, timeout=timeout)
    events, other = events_and_output(proc.stdout, proc.stderr)
    return TraceResult(proc.returncode, events, proc.stderr, other)


# ---- pure ----

def test_parse_needs_sizes_counts_and_refusals() -> None:
    needs = parse_needs({"memory_max": "2G", "mem-high": "1.5G", "pids_max": "64", "cpu_weight": 200, "timeout": "5m"})
    assert needs == Needs(memory_high=int(1.5 * (1 << 30)), memory_max=2 << 30, pids_max=64, cpu_weight=200,
                          timeout_s=300.0)
    for bad in ({"memory_max": "lots"}, {"cpu_weight": 0}, {"pids_max": True}, {"timeout": -1},
                {"memroy_max": "1G"}, {"memory_high": "2G", "memory_max": "1G"}):
        with pytest.raises(DeclareError):
            parse_needs(bad)


def test_clamp_reports_what_it_cut_and_page_aligns() -> None:
    bounds = Bounds(memory_high=1 << 30, memory_max=1 << 30, pids_max=100, timeout_s=60)
    needs, clamps = bounds.clamp(Needs(memory_max=4 << 30, memory_high=100 * MIB + 5, pids_max=50, timeout_s=600))
    assert needs == Needs(memory_max=1 << 30, memory_high=100 * MIB, pids_max=50, timeout_s=60)
    assert {(c.need, c.declared, c.applied) for c in clamps} == {("memory_max", 4 << 30, 1 << 30),
                                                                  ("timeout_s", 600, 60)}


def test_hint_in_a_command() -> None:
    assert parse_hint("pytest -x tests/  # vigil: mem-max=2G timeout=300") == {"mem-max": "2G", "timeout": "300"}
    assert parse_hint("echo '# no hint here'") is None
    with pytest.raises(DeclareError):
        parse_hint("make # vigil: lots")


# ---- real ----

@pytest.mark.usefixtures("root")
def test_declared_limit_applies_to_the_running_call() -> None:
    """The tool call runs `vigil declare --mem-max 64M -- python alloc.py 200` under a 1G default:
    the declaration lowers its own call's limit before the allocation, which is OOM-killed at 64M."""
    declare = [*VIGIL, "declare", "--mem-max", "64M", "--timeout", "60", "--", PY, ALLOC, "200"]
    result = vigil_run(["--tool-mem-max", "1G"], [declare, [PY, ALLOC, "100"]])
    assert result.returncode == 0, result.stderr
    ends = result.of_type("tool_end")
    assert len(ends) == 2, result.stderr
    declared, other = ends
    assert declared["outcome"] == "oom_killed", declared
    assert declared["limits"]["memory_max"] == 64 * MIB and declared["limits"]["timeout_s"] == 60
    assert "memory.max" in declared["limits_hit"] and declared["peak_memory_bytes"] <= 64 * MIB
    assert other["outcome"] == "ok" and other["limits"]["memory_max"] == 1 << 30  # the next call: default again
    change = result.of_type("limit_change")
    assert len(change) == 1 and change[0]["tool_call"] == declared["tool_call"]
    assert change[0]["old"]["memory_max"] == 1 << 30 and change[0]["new"]["memory_max"] == 64 * MIB
    assert change[0]["who"]["pid"] == declared["pid"] and change[0]["clamped"] == []
    assert "declared for this tool call" in result.stderr


@pytest.mark.usefixtures("root")
def test_declaration_above_the_host_bound_is_clamped(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[limits]\nmemory_max = "96M"\ntimeout = "30s"\n')
    declare = [*VIGIL, "declare", "--mem-max", "4G", "--timeout", "3600", "--", PY, ALLOC, "200"]
    result = vigil_run(["--tool-mem-max", "1G", "--config", str(config)], [declare])
    assert result.returncode == 0, result.stderr
    end = result.of_type("tool_end")[0]
    assert end["limits"]["memory_max"] == 96 * MIB and end["limits"]["timeout_s"] == 30
    assert end["outcome"] == "oom_killed"
    change = result.of_type("limit_change")[0]
    assert {c["need"]: c["applied"] for c in change["clamped"]} == {"memory_max": 96 * MIB, "timeout_s": 30}
    assert "clamped" in change["why"]
    assert "memory_max 4096M is above the host bound: clamped to 96M" in result.stderr


@pytest.mark.usefixtures("root")
def test_declare_from_outside_any_session_is_refused_and_cmd_still_runs() -> None:
    """`vigil declare` outside a controlled session: vigil refuses, the command runs anyway."""
    run = subprocess.Popen([*VIGIL, "run", "-o", "json", "--no-tls", "--no-effects", "--socket",
                            f"/run/vigild/test-{os.getpid()}.sock", "--", "sleep", "20"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    path = Path(f"/run/vigild/test-{os.getpid()}.sock")
    try:
        _wait_for(path)
        with pytest.raises(CommandError, match="in no session"):
            request(path, "declare", memory_max="1G")
        done = subprocess.run([*VIGIL, "declare", "--socket", str(path), "--mem-max", "1G", "--", "echo", "ran"],
                              capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0 and done.stdout == "ran\n" and "in no session" in done.stderr
    finally:
        run.terminate()
        run.communicate(timeout=30)
    assert not path.exists()


def _wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _as_nobody(path: Path) -> str:
    """Connect from a forked child that dropped to uid/gid 65534 (after the imports: python cannot
    be exec'd by nobody here); returns what it got."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            request(path, "declare", memory_max="1G")
            answer = "accepted"
        except CommandError as exc:
            answer = f"refused: {exc}"
        except OSError as exc:
            answer = f"oserror: {exc.strerror}"
        os.write(write, answer.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return answer


@pytest.mark.usefixtures("root")
def test_non_root_non_member_peer_is_refused() -> None:
    directory = Path(f"/run/vigil-test-{os.getpid()}")
    directory.mkdir(mode=0o755)
    path = directory / "run.sock"
    server = PeerControlServer(path, uids=frozenset({0}))
    server.register("declare", lambda _request: "accepted")
    server.start()
    try:
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        assert _as_nobody(path) == "oserror: Permission denied"  # the file mode stops it first
        path.chmod(0o666)  # loosened: SO_PEERCRED still refuses
        assert _as_nobody(path).startswith("refused: permission denied")
        assert server.refused == 1
        assert request(path, "declare") == "accepted"  # root gets in
    finally:
        server.close()
        directory.rmdir()


@pytest.mark.usefixtures("root")
def test_the_agents_own_user_is_admitted() -> None:
    directory = Path(f"/run/vigil-test-{os.getpid()}")
    directory.mkdir(mode=0o755)
    path = directory / "run.sock"
    server = PeerControlServer(path, uids=frozenset({65534}))
    server.register("declare", lambda _request: "accepted")
    server.start()
    try:
        assert path.stat().st_uid == 65534 and oct(path.stat().st_mode & 0o777) == "0o600"
        assert _as_nobody(path) == "accepted"
    finally:
        server.close()
        directory.rmdir()


def test_socket_pair_credentials_are_the_kernels() -> None:
    """SO_PEERCRED reports the connecting process, whatever it claims in the request."""
    from vigild.daemon.service.control import peer_credentials

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_credentials(a) == (os.getpid(), os.getuid(), os.getgid())


@pytest.mark.usefixtures("root")
def test_a_session_process_that_dropped_privileges_is_admitted() -> None:
    """`vigil run`'s socket follows the session's processes, not the uid the agent started with."""
    directory = Path(f"/run/vigil-test-{os.getpid()}")
    directory.mkdir(mode=0o755)
    path = directory / "run.sock"
    server = PeerControlServer(path, uids=frozenset({os.getuid()}), member=lambda pid: False)
    server.register("declare", lambda _request: "accepted")
    server.start()
    try:
        assert oct(path.stat().st_mode & 0o777) == "0o666"
        assert _as_nobody(path).startswith("refused: permission denied")  # not in the session
        server.member = lambda pid: pid != os.getpid()  # the forked child is "in the session" now
        assert _as_nobody(path) == "accepted"
    finally:
        server.close()
        directory.rmdir()
