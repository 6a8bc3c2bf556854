"""Per-tool-call cgroups: one interface over cgroup v1 and v2 (see ``base.CgroupBackend``).

Typical use::

    backend = open_backend("vigil")          # v1 or v2, chosen once from the host
    backend.ensure_layout()
    group = backend.create_call("42", Limits(memory_max=512 << 20, pids_max=256))
"""

from vigild.cgroups.base import (
    AGENT,
    CALL_PREFIX,
    LEAF,
    TOOLS,
    CgroupBackend,
    CgroupError,
    CgroupUnavailable,
    MemoryStats,
    MoveError,
    OomNotifier,
    OutsideParentError,
    PidsStats,
)
from vigild.cgroups.detect import Hierarchy, HostCgroups, delegated, detect, open_backend
from vigild.cgroups.fs import OsFs, RawFs
from vigild.cgroups.limits import KNOB, KNOBS, CallLimits, Knob, Limits
from vigild.cgroups.v1 import V1Backend
from vigild.cgroups.v2 import V2Backend

__all__ = [
    "AGENT", "CALL_PREFIX", "KNOB", "KNOBS", "LEAF", "TOOLS", "CallLimits", "CgroupBackend", "CgroupError", "CgroupUnavailable",
    "Hierarchy", "HostCgroups", "Knob", "Limits", "MemoryStats", "MoveError", "OomNotifier", "OsFs",
    "OutsideParentError", "PidsStats", "RawFs", "V1Backend", "V2Backend", "delegated", "detect", "open_backend",
]
