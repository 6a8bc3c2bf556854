"""A cgroup knob reaches every layer from its one entry in `Limits`: the config's tables and
policies, declarations (socket and hints), the CLI flags of `vigil run` and `vigil declare`, and
a tool call's policy. Shown with memory.swap.max, the knob added last."""

from __future__ import annotations

from pathlib import Path

import pytest
from vigild.cgroups import KNOB, Limits
from vigild.daemon.cli import build_parser
from vigild.daemon.config import ConfigError, load
from vigild.daemon.tools.control_loop import CallPolicy
from vigild.daemon.tools.declare import Bounds, DeclareError, Needs, parse_hint, parse_needs
from vigild.daemon.tools.policy import policy_for_config

MIB = 1 << 20


def test_swap_in_config_tools_limits_and_policies(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[tools]\nmemory_swap_max = "0"\n[limits]\nmemory_swap_max = "256M"\n'
                    '[[policies]]\nmatch = "cargo*"\nmemory_swap_max = "1G"\n')
    config = load(path)
    assert config.tool_limits.memory_swap_max == 0 and config.bounds.memory_swap_max == 256 * MIB
    default = CallPolicy.of(config.tool_limits)
    policy_for = policy_for_config(config.policies, default)
    assert policy_for(type("Call", (), {"argv": ["cargo", "build"]})()).limits.memory_swap_max == 1 << 30
    assert policy_for(type("Call", (), {"argv": ["make"]})()).describe()["memory_swap_max"] == 0
    path.write_text('[tools]\nmemory_swap_max = "lots"\n')
    with pytest.raises(ConfigError, match="memory_swap_max"):
        load(path)


def test_swap_declared_by_request_hint_and_clamped() -> None:
    assert parse_needs({"swap_max": "64M"}) == Needs(memory_swap_max=64 * MIB)
    assert parse_needs(parse_hint("make -j8  # vigil: swap-max=0") or {}) == Needs(memory_swap_max=0)
    needs, clamps = Bounds(memory_swap_max=32 * MIB).clamp(Needs(memory_swap_max=64 * MIB + 5))
    assert needs.memory_swap_max == 32 * MIB and [c.need for c in clamps] == ["memory_swap_max"]
    with pytest.raises(DeclareError):
        parse_needs({"memory_swap_max": "-1"})


def test_swap_flags_of_run_and_declare() -> None:
    parser = build_parser()
    run = parser.parse_args(["run", "--tool-swap-max", "128M", "--", "true"])
    declare = parser.parse_args(["declare", "--swap-max", "0", "--", "true"])
    assert run.tool_memory_swap_max == 128 * MIB and declare.memory_swap_max == 0
    assert Limits(memory_swap_max=0).set() == {"memory_swap_max": 0}
    assert KNOB["memory_swap_max"].v1 is None  # the v1 backend refuses it (tests/test_cgroups_contract.py)
