"""The placement warmer (daemon/tools/placement_warm.py, cgroups/warm.py): no-op cgroup moves that
keep the kernel's move path out of the RCU grace period while a tool call is about to be placed.

Its mechanics on the host's real cgroups (the hierarchy `vigil run` places in; v1 on a hybrid host,
v2 in the guest): it writes only while wanted, stops when the window ends, never moves anything,
and a write the kernel refuses turns it off cleanly. Then `vigil run`: placements (the tail) and a
model's tool-call intent over plain HTTP (before any spawn) trigger it; `placement_warm = "off"`
and a run without tool calls write nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakellm import FakeLLMServer, Reply, Scenario, ToolCallSpec, client_env
from support.helpers import VIGIL, events_and_output, run_own_group
from support.run_cgroups import leftovers

from vigild.cgroups import CgroupError, CgroupUnavailable, Hierarchy, detect, open_backend
from vigild.cgroups.warm import NoopMove, noop_move_for
from vigild.daemon.tools.control_loop import CONTROLLERS
from vigild.daemon.tools.placement_warm import PlacementWarmer, open_warmer

pytestmark = pytest.mark.usefixtures("root")

DATA = Path(__file__).parent / "data" / "placement"
SUMMARY = re.compile(r"placement warmer: (\d+) no-op cgroup moves in (\d+) windows \(([\d.]+) s warm\)")


def own_cgroups() -> str:
    return Path("/proc/self/cgroup").read_text()


def placement_version() -> int:
    """The cgroup version `vigil run` places in here (v1 on a hybrid host): the backend's own
    choice (opening a backend makes no group)."""
    return open_backend("vigil-warm-test", CONTROLLERS).version


@pytest.fixture
def warmer() -> Iterator[PlacementWarmer]:
    warmer = open_warmer(placement_version(), frozenset(CONTROLLERS))
    assert warmer.refused is None, warmer.refused
    yield warmer
    warmer.stop()


def wait_for(check: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_the_move_targets_this_process_own_group() -> None:
    move = noop_move_for(placement_version(), frozenset(CONTROLLERS))
    target = move.target()
    assert target.name == "cgroup.procs" and target.exists()
    assert str(os.getpid()) in target.read_text().split()  # the group this process is in: writing it moves nothing
    before = own_cgroups()
    fd = move.open()
    try:
        move.write(fd)
    finally:
        os.close(fd)
    assert own_cgroups() == before


def test_it_writes_only_while_wanted_and_stops_after_the_window(warmer: PlacementWarmer) -> None:
    before = own_cgroups()
    time.sleep(0.3)
    assert warmer.writes == 0 and warmer.windows == 0  # nothing wanted: no writes at all

    warmer.want(0.4)
    assert wait_for(lambda: warmer.writes >= 3, 5), warmer.health()
    assert warmer.warm
    assert wait_for(lambda: not warmer.warm, 5)
    time.sleep(0.1)  # the write in flight when the window ended
    settled = warmer.writes
    time.sleep(0.3)
    assert warmer.writes == settled and warmer.windows == 1  # the window's end stops it
    # about one write per period inside the window (the first one waits a grace period); on a busy
    # machine fewer, never a spin
    assert 3 <= settled <= 0.4 / 0.005 + 5, settled

    warmer.want(0.2)  # a later placement opens a new window
    assert wait_for(lambda: warmer.windows == 2 and warmer.writes > settled, 5), warmer.health()
    assert own_cgroups() == before  # never moved anything
    assert warmer.refused is None


def test_wanting_it_again_inside_a_window_extends_that_window(warmer: PlacementWarmer) -> None:
    warmer.want(0.6)
    for _ in range(4):
        time.sleep(0.1)  # well inside the window, even on a slow emulated guest
        warmer.want(0.6)
    assert warmer.warm and warmer.windows == 1  # one window, 1 s long in all
    assert wait_for(lambda: warmer.warm_s > 0, 5)  # counted when the window ends
    assert warmer.windows == 1 and warmer.warm_s >= 0.95, warmer.health()


def test_a_refused_write_turns_it_off_cleanly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A group this process is not in (as a cgroup namespace's view may say): the kernel refuses
    the write (here: no such group), and the warmer says so once and stops, moving nothing."""
    host = detect()
    real = host.v2 if placement_version() == 2 else next(h for h in host.v1 if h.controllers & set(CONTROLLERS))
    (tmp_path / "self").mkdir()
    line = "0::" if real.version == 2 else f"9:{','.join(sorted(real.controllers))}:"
    (tmp_path / "self" / "cgroup").write_text(f"{line}/vigil-warm-no-such-group\n")
    hierarchy = Hierarchy(real.version, real.mount, real.controllers, "/vigil-warm-no-such-group")
    move = NoopMove(hierarchy, proc=tmp_path)
    with pytest.raises(CgroupError, match="own group"):
        move.open()
    assert not (real.mount / "vigil-warm-no-such-group").exists()

    warmer = PlacementWarmer(move)
    warmer.start()
    try:
        with caplog.at_level("WARNING", logger="vigild.tools"):
            warmer.want(1.0)
            assert wait_for(lambda: warmer.refused is not None, 5)
            warmer.want(1.0)  # wanted again: nothing more is tried, nothing more is said
            time.sleep(0.1)
    finally:
        warmer.stop()
    assert warmer.writes == 0 and "own group" in (warmer.refused or "")
    said = [r.getMessage() for r in caplog.records if "placement warmer off" in r.getMessage()]
    assert len(said) == 1 and "own group" in said[0], said


def test_a_process_outside_the_mount_is_said_at_once(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "cgroup").write_text("1:name=systemd:/\n")
    hierarchy = Hierarchy(2, Path("/sys/fs/cgroup"), frozenset(), "/")
    with pytest.raises(CgroupUnavailable, match="names no group"):
        NoopMove(hierarchy, proc=tmp_path)


# ---- vigil run ------------------------------------------------------------------------------------

def run(args: list[str], agent: list[str], env: dict[str, str] | None = None) -> tuple[list[dict], str, int]:
    ran = run_own_group([*VIGIL, "-v", "run", "-o", "json", *args, "--", *agent], timeout=300, env=env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert not leftovers(ran.pid), leftovers(ran.pid)
    events, _ = events_and_output(ran.stdout, "")
    return events, ran.stderr, ran.pid


def summary(stderr: str) -> tuple[int, int, float] | None:
    found = SUMMARY.search(stderr)
    return (int(found[1]), int(found[2]), float(found[3])) if found else None


def test_vigil_run_keeps_placement_warm_after_each_call() -> None:
    events, stderr, _ = run(["--no-tls"], [sys.executable, str(DATA / "call_loop.py"), "4", "0.2"])
    starts = [e for e in events if e["type"] == "tool_start"]
    assert len(starts) == 4 and all(s["cgroup"] and s["placement_error"] is None for s in starts), starts
    said = summary(stderr)
    assert said is not None, stderr[-3000:]
    writes, windows, warm_s = said
    # from the first placement to vigil's end: each next placement extends the window (on a slow
    # emulated guest a call may come after the tail ended, and opens a new one)
    assert writes >= 10 and 1 <= windows <= 4 and warm_s >= 0.5, said


def test_vigil_run_with_placement_warm_off_writes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "vigild.toml"
    config.write_text('[control]\nplacement_warm = "off"\n')
    events, stderr, _ = run(["--no-tls", "--config", str(config)],
                            [sys.executable, str(DATA / "call_loop.py"), "2", "0.1"])
    assert len([e for e in events if e["type"] == "tool_start" and e["cgroup"]]) == 2
    assert summary(stderr) is None and "placement warmer" not in stderr


def test_vigil_run_without_tool_calls_writes_nothing() -> None:
    _, stderr, _ = run(["--no-tls"], [sys.executable, "-c", "import time; time.sleep(0.5)"])
    assert summary(stderr) is None and "placement warmer" not in stderr


@pytest.fixture
def plain() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(tls=False) as srv:
        srv.scenarios["one_bash"] = Scenario("one_bash", default_reply=Reply(
            text="Listing.", tool_calls=(ToolCallSpec("bash", {"command": "ls"}),)))
        srv.default_scenario = "one_bash"
        yield srv
        assert srv.errors == []


def test_vigil_run_warms_on_the_model_asking_for_a_tool_call(plain: FakeLLMServer) -> None:
    """The model's reply names a tool call; the agent spawns nothing: the warm window comes from
    the intent alone, before any placement."""
    events, stderr, _ = run([], [sys.executable, str(DATA / "ask_model.py"), "1.0"], env=client_env(plain))
    assert '{"tool_calls": 1}' in stderr
    calls = [e for e in events if e["type"] == "llm_call"]
    assert len(calls) == 1 and len(calls[0]["tool_calls"]) == 1, [e["type"] for e in events]
    assert not [e for e in events if e["type"] == "tool_start"]
    said = summary(stderr)
    assert said is not None, stderr[-3000:]
    writes, windows, _ = said
    assert writes >= 5 and windows == 1, said


def test_the_config_knob_is_checked(tmp_path: Path) -> None:
    config = tmp_path / "vigild.toml"
    config.write_text('[control]\nplacement_warm = "always"\n')
    ran = subprocess.run([*VIGIL, "run", "--config", str(config), "--", "true"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert ran.returncode != 0 and "placement_warm" in ran.stderr and "auto, off" in ran.stderr, ran.stderr
