"""The central marker lists stay true: every module they name exists, and every module that runs
vigil or vigild is marked `kernel`, so `pytest -m "not kernel"` never starts one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import conftest

TESTS = Path(__file__).parent
RUNS_VIGIL = re.compile(r"\b(vigil_trace|vigil|Vigild|run_agent|run_own_group)\(|\bVIGIL\b|BpfObject\(")


def test_every_listed_module_exists() -> None:
    for module in conftest.KERNEL_MODULES | conftest.NETWORK_MODULES:
        assert (TESTS / f"{module}.py").is_file(), module


def test_every_module_that_runs_vigil_is_a_kernel_module() -> None:
    running = {p.stem for p in TESTS.glob("test_*.py") if RUNS_VIGIL.search(p.read_text())}
    assert running, "the pattern finds the modules that start vigil"
    assert running - conftest.KERNEL_MODULES == set()


@pytest.mark.parametrize("marker", ["kernel", "root", "network"])
def test_markers_are_registered(pytestconfig: pytest.Config, marker: str) -> None:
    assert any(line.startswith(f"{marker}:") for line in pytestconfig.getini("markers"))

