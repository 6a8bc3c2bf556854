"""The held lane places a tool call's first process by itself: with the shared ring buffer not
polled at all (as when the pipeline is seconds behind a flood of effects), the call still runs,
in its own group, and the pipeline later records it once, as placed, when it reaches the exec.
Real BPF, real cgroups (v1 on a hybrid host, v2 in the guest), in a process group of its own."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from support.helpers import run_own_group
from support.run_cgroups import leftovers

pytestmark = pytest.mark.usefixtures("root")

SCRIPT = Path(__file__).parent / "data" / "placement" / "lane_only.py"


def test_the_lane_places_and_releases_a_call_nobody_polls_for(tmp_path: Path) -> None:
    out = tmp_path / "tool-cgroup"
    ran = run_own_group([sys.executable, str(SCRIPT), str(out)], timeout=180)
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert result["agent_exec_seen"], ran.stderr
    assert result["released_by_lane"], ran.stderr  # the tool ran while the ring buffer was not polled
    assert result["lane_placed"] == 1 and result["placed_early"] == 1

    tool_pid = result["tool_pid"]
    group = f"tools/call-{tool_pid}"
    # Where the tool's first instruction ran: its call's group, in every hierarchy vigil limits.
    lines = out.read_text().splitlines()
    placed = [line for line in lines if line.endswith("/" + group)]
    assert placed, lines
    assert any(line.startswith("0::") or ":memory:" in line for line in placed), lines

    assert result["tool_end_seen"], ran.stderr
    (start,) = result["tool_start"]  # recorded once, by the pipeline, with the lane's placement
    assert start == {"pid": tool_pid, "cgroup": group, "held": True, "hold_ms": start["hold_ms"],
                     "placement_error": None}
    assert isinstance(start["hold_ms"], float) and start["hold_ms"] > 0
    assert result["tool_end"] == [{"pid": tool_pid, "outcome": "ok"}]
    assert not leftovers(ran.pid), leftovers(ran.pid)
