"""Per-tool policies by command pattern, and the adaptive memory.high controller: its rule and
tick with a fake host, then with the real /proc files and a real v1 cgroup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from support.helpers import VIGIL, parse_json_lines
from vigild.cgroups import Limits, open_backend
from vigild.correlate.tool_calls import ToolCall
from vigild.daemon.tools.adaptive import (
    AdaptiveController,
    AdaptiveSettings,
    HostState,
    ProcHostReader,
    decide,
)
from vigild.daemon.config import ToolPolicy
from vigild.daemon.tools.control_loop import CallPolicy
from vigild.daemon.tools.policy import command_spellings, policy_for_config

DATA = Path(__file__).parent / "data" / "control"
PY = sys.executable
ALLOC = str(DATA / "alloc.py")
AGENT = str(DATA / "fake_agent.py")
MIB = 1 << 20
GIB = 1 << 30


def call(argv: list[str], call_id: int = 1) -> ToolCall:
    return ToolCall(id=call_id, session_id=1, pid=call_id, ppid=1, argv=argv, filename=argv[0], start_ns=0, held=True)


# ---- policies ----

POLICIES = (ToolPolicy("pytest*", memory_max=2 * GIB, timeout_s=600),
            ToolPolicy("npm install*", memory_max=3 * GIB, pids_max=512),
            ToolPolicy("cargo build*", memory_high=4 * GIB, cpu_weight=50))
DEFAULT = CallPolicy(Limits(memory_max=GIB, pids_max=100), 120)


@pytest.mark.parametrize(("argv", "expected"), [
    (["/usr/bin/pytest", "-x", "tests"], CallPolicy(Limits(memory_max=2 * GIB, pids_max=100), 600)),
    (["bash", "-c", "pytest -q tests/unit"], CallPolicy(Limits(memory_max=2 * GIB, pids_max=100), 600)),
    (["bash", "-lc", "cd web && npm install --no-audit"], CallPolicy(Limits(memory_max=3 * GIB, pids_max=512), 120)),
    (["sh", "-c", "cargo build --release 2>&1 | tail"],
     CallPolicy(Limits(memory_high=4 * GIB, memory_max=GIB, pids_max=100, cpu_weight=50), 120)),
    (["ls", "-la"], DEFAULT),
    (["python", "-c", "print('pytest')"], DEFAULT),
])
def test_policy_by_command_pattern(argv: list[str], expected: CallPolicy) -> None:
    assert policy_for_config(POLICIES, DEFAULT)(call(argv)) == expected


def test_spellings_of_a_shell_command() -> None:
    assert command_spellings(["bash", "-c", "cd x && make -j4; echo done"]) == [
        "bash -c cd x && make -j4; echo done", "bash -c cd x && make -j4; echo done",
        "cd x && make -j4; echo done", "cd x", "make -j4", "echo done"]


@pytest.mark.usefixtures("root")
def test_config_policy_limits_a_real_call(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[[policies]]\nmatch = "*alloc.py 200*"\nmemory_max = "80M"\n')
    proc = subprocess.run([*VIGIL, "run", "-o", "json", "--no-tls", "--no-effects", "--tool-mem-max", "1G",
                           "--config", str(config), "--", PY, AGENT, json.dumps([[PY, ALLOC, "200"], [PY, ALLOC, "100"]])],
                          capture_output=True, text=True, timeout=120, check=False)
    events, _ = parse_json_lines(proc.stdout)
    ends = [e for e in events if e["type"] == "tool_end"]
    assert proc.returncode == 0 and len(ends) == 2, proc.stderr
    assert ends[0]["limits"]["memory_max"] == 80 * MIB and ends[0]["outcome"] == "oom_killed"
    assert ends[1]["limits"]["memory_max"] == GIB and ends[1]["outcome"] == "ok"


# ---- adaptive: the rule ----

SETTINGS = AdaptiveSettings(pressure=10.0, headroom=0.2, floor=64 * MIB, step_up=0.1, step_down=0.1, interval_s=0)


def test_decide_raises_with_headroom_lowers_under_pressure_and_clamps() -> None:
    roomy = HostState(mem_total=16 * GIB, mem_available=12 * GIB, some_avg10=0.0, full_avg10=0.0)
    new, why = decide(SETTINGS, roomy, 512 * MIB, 2 * GIB)
    assert new == (512 * MIB + int(512 * MIB * 0.1)) // 4096 * 4096 and "headroom" in why
    assert decide(SETTINGS, roomy, 2 * GIB, 2 * GIB) == (2 * GIB, None)  # at its memory.max: stays
    pressed = HostState(16 * GIB, 12 * GIB, some_avg10=25.0, full_avg10=3.0)
    new, why = decide(SETTINGS, pressed, 512 * MIB, 2 * GIB)
    assert new == (512 * MIB - int(512 * MIB * 0.1)) // 4096 * 4096 and "pressure" in why
    assert decide(SETTINGS, pressed, 64 * MIB, 2 * GIB) == (64 * MIB, None)  # at the floor: stays
    tight = HostState(16 * GIB, 2 * GIB, some_avg10=None, full_avg10=None)  # no PSI: MemAvailable alone
    assert decide(SETTINGS, tight, 512 * MIB, 2 * GIB)[0] < 512 * MIB
    assert decide(SETTINGS, roomy, 100 * MIB + 123, 2 * GIB)[0] % 4096 == 0


class FakeReader:
    def __init__(self, *states: HostState) -> None:
        self.states = list(states)

    def read(self) -> HostState:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


class FakeBackend:
    """Limits kept in memory, as a v1/v2 backend would read them back."""

    def __init__(self) -> None:
        self.limits: dict[str, Limits] = {}

    def read_limits(self, group: str) -> Limits:
        return self.limits[group]

    def set_limits(self, group: str, limits: Limits) -> None:
        current = self.limits[group]
        self.limits[group] = Limits(**{k: v if v is not None else getattr(current, k)
                                       for k, v in limits.__dict__.items()})


def fake_control(backend: object, high: int, maximum: int) -> SimpleNamespace:
    the_call = call(["make"], 7)
    backend.limits["tools/call-7"] = Limits(memory_high=high, memory_max=maximum)  # type: ignore[attr-defined]
    return SimpleNamespace(open_calls=[the_call], groups={7: "tools/call-7"}, backend_of=lambda _call_id: backend,
                           applied={7: CallPolicy(Limits(memory_high=high, memory_max=maximum))})


def test_tick_with_a_fake_host_moves_adopts_and_records() -> None:
    roomy = HostState(16 * GIB, 12 * GIB, 0.0, 0.0)
    pressed = HostState(16 * GIB, 12 * GIB, 40.0, 5.0)
    backend = FakeBackend()
    control = fake_control(backend, 256 * MIB, GIB)
    controller = AdaptiveController(SETTINGS, FakeReader(roomy, roomy, pressed, roomy))
    first = controller(control)
    assert [e.why.split(":")[0] for e in first] == ["headroom"]
    raised = backend.limits["tools/call-7"].memory_high
    assert raised > 256 * MIB and first[0].old == {"memory_high": 256 * MIB} and first[0].new == {"memory_high": raised}
    assert control.applied[7].limits.memory_high == raised and first[0].to_dict()["type"] == "limit_change"
    # Someone else (a declaration) sets it: adopted, not fought, and recorded.
    backend.limits["tools/call-7"] = Limits(memory_high=300 * MIB, memory_max=GIB)
    noticed = controller(control)
    assert len(noticed) == 1 and "someone else" in noticed[0].why and noticed[0].new == {"memory_high": 300 * MIB}
    assert backend.limits["tools/call-7"].memory_high == 300 * MIB
    lowered = controller(control)
    assert "pressure" in lowered[0].why and backend.limits["tools/call-7"].memory_high < 300 * MIB
    control.open_calls = []
    assert controller(control) == [] and controller.written == {}


def test_calls_without_memory_high_are_left_alone() -> None:
    backend = FakeBackend()
    control = fake_control(backend, 256 * MIB, GIB)
    control.applied[7] = CallPolicy(Limits(memory_max=GIB))
    assert AdaptiveController(SETTINGS, FakeReader(HostState(16 * GIB, 12 * GIB, 0.0, 0.0)))(control) == []


# ---- adaptive: the real files ----

def test_proc_reader_reads_this_host() -> None:
    state = ProcHostReader().read()
    assert 0 < state.mem_available <= state.mem_total
    if Path("/proc/pressure/memory").exists():
        assert state.some_avg10 is not None and 0 <= state.some_avg10 <= 100


@pytest.mark.usefixtures("root")
def test_tick_on_a_real_cgroup_with_the_real_host() -> None:
    backend = open_backend(f"vigil-test-adaptive-{os.getpid()}", ("memory",))
    backend.ensure_layout()
    try:
        group = backend.create_call("7", Limits(memory_high=128 * MIB, memory_max=512 * MIB))
        control = SimpleNamespace(open_calls=[call(["make"], 7)], groups={7: group},
                                  backend_of=lambda _call_id: backend, applied={7: CallPolicy(Limits(memory_high=128 * MIB, memory_max=512 * MIB))})
        reader = ProcHostReader()
        state = reader.read()
        expected, why = decide(SETTINGS, state, 128 * MIB, 512 * MIB)
        events = AdaptiveController(SETTINGS, reader)(control)
        now = backend.read_limits(group).memory_high
        if why is None:
            assert events == [] and now == 128 * MIB
        else:  # the host could move between the two reads: the direction is what must hold
            assert len(events) == 1 and events[0].new == {"memory_high": now}
            assert (now > 128 * MIB) == (expected > 128 * MIB) and now % 4096 == 0
    finally:
        backend.remove_layout(kill=True)
