"""What processes nobody tracks pay for vigil's syscall programs (issue 14, goal 3): each syscall
tracepoint carries at most one of vigil's programs (the plain-HTTP sensor's are called from the
effects sensor's for tracked processes, not attached beside them), none sits on the entry of the
payload syscalls, and the plain-HTTP sensor still captures on its own when effects are off.
bench/untracked_cost.py measures the nanoseconds; these check the structure that they depend on.

Run on the host and in the pure cgroup v2 guests (6.1, 6.12): the tail call between the two
objects must load there too.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakellm import FakeLLMServer, client_env
from support.helpers import vigil_trace
from support.intent_match import assert_matches
from vigild.bpf.effects import EffectsSensor
from vigild.bpf.lineage import LineageSensor
from vigild.bpf.sockdata import CLOSE_SYSCALLS, EXIT_SYSCALLS, SockDataSensor
from vigild.bpf.syscall_tracepoints import tracefs_root

pytestmark = pytest.mark.usefixtures("root")


@pytest.fixture(scope="module")
def lineage() -> Iterator[LineageSensor]:
    sensor = LineageSensor()
    yield sensor
    sensor.close()


def our_attachments() -> Counter[tuple[str, str]]:
    """(program, tracepoint) -> how many times this process attached it, from bpftool."""
    names = {p["id"]: p.get("name", "?") for p in json.loads(
        subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout)}
    perf = json.loads(subprocess.run(["bpftool", "-j", "perf", "list"], capture_output=True, text=True,
                                     check=True).stdout)
    return Counter((names.get(a["prog_id"], "?"), a.get("tracepoint", "")) for a in perf
                   if a.get("pid") == os.getpid() and a.get("tracepoint", "").startswith("sys_"))


def prog_id(fd: int) -> int:
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("prog_id:"):
            return int(line.split()[1])
    raise AssertionError(f"fd {fd} is not a BPF program")


def prog_exists(ident: int) -> bool:
    return subprocess.run(["bpftool", "prog", "show", "id", str(ident)], capture_output=True).returncode == 0


def test_with_effects_every_syscall_tracepoint_runs_one_program(lineage: LineageSensor) -> None:
    effects = EffectsSensor(lineage.shared_maps, tracefs=tracefs_root(), chain_sock=True)
    sock = SockDataSensor(lineage.shared_maps, effects=effects)
    try:
        assert sock.chained == ["sock_exit", "sock_close"] and sock.links == []
        attached = our_attachments()
        per_tracepoint = Counter(tp for _, tp in attached.elements())
        assert per_tracepoint and max(per_tracepoint.values()) == 1, per_tracepoint
        assert {prog for prog, _ in attached} == {"effects_sys_exit", "effects_sys_enter"}
        # the payload syscalls' entries carry nothing: an untracked write pays one tracepoint, not two
        assert not {f"sys_enter_{name}" for name in EXIT_SYSCALLS} & set(per_tracepoint)
        exit_id = prog_id(sock.obj.program_fd("sock_exit"))
    finally:
        sock.close()
    try:
        # closing the plain-HTTP sensor empties the effects sensor's slots: its programs go
        assert not prog_exists(exit_id)
        assert {prog for prog, _ in our_attachments()} == {"effects_sys_exit", "effects_sys_enter"}
    finally:
        effects.close()


def test_without_effects_the_plain_http_sensor_attaches_its_own(lineage: LineageSensor) -> None:
    sock = SockDataSensor(lineage.shared_maps)
    try:
        assert sock.chained == []
        assert our_attachments() == Counter(
            {**{("sock_exit", f"sys_exit_{name}"): 1 for name in EXIT_SYSCALLS},
             **{("sock_close", f"sys_enter_{name}"): 1 for name in CLOSE_SYSCALLS}})
    finally:
        sock.close()


def test_effects_built_without_the_chain_leave_the_plain_http_sensor_attached(lineage: LineageSensor) -> None:
    """A chain the effects programs were not built to call would drop the payload silently."""
    effects = EffectsSensor(lineage.shared_maps, tracefs=tracefs_root())
    sock = SockDataSensor(lineage.shared_maps, effects=effects)
    try:
        assert sock.chained == [] and len(sock.links) == len(EXIT_SYSCALLS) + len(CLOSE_SYSCALLS)
    finally:
        sock.close()
        effects.close()


def test_plain_http_is_captured_with_effects_off() -> None:
    """The plain-HTTP sensor on its own tracepoints (no effects sensor to call it) still reads a
    request and its response: the exit program finds the call's arguments in the saved registers."""
    body = json.dumps({"model": "llama3.2", "prompt": "hi", "stream": False})
    with FakeLLMServer(tls=False) as srv:
        result = vigil_trace(["--no-effects", "--", "curl", "-sS", "-o", "/dev/null", f"{srv.url}/api/generate",
                              "-d", body], env=client_env(srv), timeout=300)
        exchanges = srv.exchanges.wait_finished(1)
        assert srv.errors == []
    assert result.returncode == 0, result.stderr
    calls = result.of_type("llm_call")
    assert [(c["endpoint"], c["source"], c["comm"]) for c in calls] == [("/api/generate", "http", "curl")]
    assert_matches(calls[0], exchanges[0])  # request and response decoded whole, field by field
