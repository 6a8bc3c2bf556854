"""Skip-or-fail for privileged prerequisites.

Tests that need root, BPF or real cgroups skip on a developer's unprivileged machine, but under
``VIGIL_REQUIRE_BPF=1`` (set by ``.ci/run``) a missing capability is a failure, never a skip.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_BPF = os.environ.get("VIGIL_REQUIRE_BPF") == "1"


def need(condition: bool, reason: str) -> None:
    """Skip (or fail under VIGIL_REQUIRE_BPF=1) when a privileged prerequisite is missing."""
    if condition:
        return
    if REQUIRE_BPF:
        pytest.fail(f"VIGIL_REQUIRE_BPF=1 but {reason}", pytrace=False)
    pytest.skip(reason)
