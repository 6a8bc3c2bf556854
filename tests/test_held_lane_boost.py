"""Priority inheritance by hand (daemon/pipeline/gil_boost.py): while a held exec waits for the
held lane, the thread it is told to raise (the pipeline's, the GIL's usual holder) runs SCHED_FIFO
just below the lane, and is put back to its own policy before the lane places. Real BPF, real
cgroups, real threads and the real scheduler (tests/data/placement/lane_boost.py), in a process
group of its own. Where the kernel refuses real time here (a Delegate=yes service without a
real-time budget), the lane must place as before and say why, which is what is checked then."""

from __future__ import annotations

import json
import os
import select
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from support.helpers import run_own_group
from support.run_cgroups import leftovers

from vigild.daemon.pipeline.gil_boost import LIBRARY, GilBooster

pytestmark = pytest.mark.usefixtures("root")

SCRIPT = Path(__file__).parent / "data" / "placement" / "lane_boost.py"


def realtime_refusal() -> str | None:
    """Why a thread of this process cannot go SCHED_FIFO here (None: it can), probed on a thread
    of its own that is put back at once."""
    got: list[str | None] = []

    def probe() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except OSError as exc:
            got.append(exc.strerror)
            return
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        got.append(None)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return got[0]


def run(mode: str) -> dict[str, Any]:
    ran = run_own_group([sys.executable, str(SCRIPT), mode], timeout=180)
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert result["agent_exec_seen"], ran.stderr
    assert not leftovers(ran.pid), leftovers(ran.pid)
    return result


def test_the_helper_was_built_with_the_package() -> None:
    assert LIBRARY.exists(), f"{LIBRARY} missing: setup.py's build step did not run"


class Sleeper:
    """A thread to raise, asleep until told to stop (one raised to real time must not spin)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.stop.wait)
        self.thread.start()
        self.tid = self.thread.native_id or 0

    def join(self) -> None:
        self.stop.set()
        self.thread.join()


def test_the_helper_raises_only_for_records_and_puts_back_exactly() -> None:
    """Its wait on a real epoll set (a pipe stands for the ring), with real threads: a wake alone
    raises nothing; a readable pipe raises a normal thread to SCHED_FIFO (reset on fork) and
    leaves one already above alone; restore puts each back as it was, nice value included. Where
    real time is refused here, the refusal comes back and nothing is raised."""
    refused = realtime_refusal()
    epoll, wake = select.epoll(), os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    ring_r, ring_w = os.pipe()
    epoll.register(wake, select.EPOLLIN)
    epoll.register(ring_r, select.EPOLLIN)
    normal, above = Sleeper(), Sleeper()
    try:
        os.setpriority(os.PRIO_PROCESS, normal.tid, 5)
        booster = GilBooster(epoll.fileno(), wake, 1)
        if refused is not None:
            os.write(ring_w, b"r")
            raised = booster.wait(1000, (normal.tid,))
            assert raised is not None and raised.count == 0 and raised.refused == refused
            assert os.sched_getscheduler(normal.tid) == os.SCHED_OTHER
            return
        os.sched_setscheduler(above.tid, os.SCHED_FIFO, os.sched_param(3))
        threads = (normal.tid, above.tid)
        os.eventfd_write(wake, 1)
        assert booster.wait(1000, threads) is None  # woken, no record: nothing raised
        assert os.sched_getscheduler(normal.tid) == os.SCHED_OTHER
        assert booster.wait(0, threads) is None  # the wake was read: it does not stay ready
        os.write(ring_w, b"r")
        raised = booster.wait(1000, threads)
        assert raised is not None and raised.count == 1 and raised.refused is None
        assert os.sched_getscheduler(normal.tid) == os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
        assert os.sched_getparam(normal.tid).sched_priority == 1
        assert os.sched_getparam(above.tid).sched_priority == 3  # already above: left alone
        assert raised.restore() is None and not raised.pending
        assert os.sched_getscheduler(normal.tid) == os.SCHED_OTHER
        assert os.getpriority(os.PRIO_PROCESS, normal.tid) == 5
        assert os.sched_getscheduler(above.tid) == os.SCHED_FIFO
        assert os.sched_getparam(above.tid).sched_priority == 3
    finally:
        normal.join()
        above.join()
        epoll.close()
        os.close(wake)
        os.close(ring_r)
        os.close(ring_w)


def test_the_holder_runs_real_time_only_while_a_held_exec_waits() -> None:
    result = run("boost")
    health = result["health"]
    assert result["released_by_lane"]
    assert health["held_lane_placed"] == 1 and health["held_lane_errors"] == 0
    assert result["holder_before"] == [os.SCHED_OTHER]  # nothing raised before the exec
    assert result["at_placement"] == [os.SCHED_OTHER]  # put back before the lane placed
    assert result["holder_after"] == os.SCHED_OTHER
    refused = realtime_refusal()
    if refused is None:
        assert health["held_lane_priority"] == "SCHED_FIFO 2"
        assert health["held_lane_boost"] == "SCHED_FIFO 1 while a held exec waits"
        assert health["held_lane_boosts"] == 1 and health["held_lane_boost_refused"] == 0
        assert result["while_raised"] == [os.SCHED_FIFO]  # read from the kernel as the lane's wait returned
    else:  # real time refused here: the lane places at normal priority, raises nothing, says so
        assert health["held_lane_priority"] == "normal"
        assert health["held_lane_boost"] == "off: the lane runs at normal priority"
        assert health["held_lane_boosts"] == 0 and result["holder_seen"] == [os.SCHED_OTHER]
    assert health["held_lane_restore_failures"] == 0


def test_the_holder_is_put_back_when_the_placement_raises() -> None:
    result = run("raise")
    health = result["health"]
    assert not result["released_by_lane"]  # the lane failed: the call stayed held...
    assert result["placed_by_pipeline"]  # ...for the pipeline's ordered placement
    assert health["held_lane_errors"] == 1 and health["held_lane_placed"] == 0
    assert result["at_placement"] == [os.SCHED_OTHER]
    assert result["holder_after"] == os.SCHED_OTHER
    if realtime_refusal() is None:
        assert health["held_lane_boosts"] == 1 and result["while_raised"] == [os.SCHED_FIFO]


def test_a_refused_raise_falls_back_and_is_said_once() -> None:
    result = run("refuse")
    health = result["health"]
    assert result["released_by_lane"]
    assert health["held_lane_placed"] == 1
    assert result["holder_seen"] == [os.SCHED_OTHER] and set(result["while_raised"]) <= {os.SCHED_OTHER}
    if realtime_refusal() is None:
        assert health["held_lane_boost_refused"] == 1 and health["held_lane_boosts"] == 0
        assert health["held_lane_boost"] == "off: Operation not permitted"
        assert len(result["said"]) == 1 and "Operation not permitted" in result["said"][0], result["said"]
    else:
        assert health["held_lane_boost"] == "off: the lane runs at normal priority"
        assert health["held_lane_boost_refused"] == 0


def test_configured_off_the_lane_raises_nothing_and_says_why() -> None:
    """`[control] raise_gil_holder` false (the default): the lane places as before, the holder stays normal."""
    result = run("off")
    health = result["health"]
    assert result["released_by_lane"] and health["held_lane_placed"] == 1
    assert health["held_lane_boost"] == "off: [control] raise_gil_holder is false"
    assert health["held_lane_boosts"] == 0 and result["while_raised"] == []  # the booster never waited
    assert result["holder_seen"] == [os.SCHED_OTHER] and result["holder_after"] == os.SCHED_OTHER
