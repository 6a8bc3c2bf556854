"""Which of vigild's sensors this kernel runs, and why not when one does not.

A kernel (or a configuration) that cannot run an optional sensor costs that sensor only: vigil
and vigild say so once, in one line (stderr for `vigil`, the journal for `vigild`), `vigil status`
lists every feature as available or not with the reason, and the exporter serves
`vigil_feature_available{feature}` (1 or 0). Process lineage is not optional: without it nothing
runs, and the start fails with its reason instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

# feature -> what it gives, as `vigil status` shows it
FEATURES: dict[str, str] = {
    "lineage": "process trees: fork, exec (argv), exit",
    "tls": "LLM intent: TLS plaintext at the library boundary (uprobes)",
    "effects": "file and network effects (syscall tracepoints)",
    "syscall_tracepoints": "effects through the tracepoints of the syscalls they need only "
                           "(without: raw sys_enter/sys_exit, a BPF program on every syscall of every process)",
    "plain_http": "LLM intent over plain HTTP: TCP payload of HTTP connections (syscall tracepoints)",
    "memory_spikes": "memory spikes of tool calls (kmem:rss_stat)",
    "oom_kills": "OOM-killer victims among tool calls (oom:mark_victim)",
}


@dataclass(frozen=True)
class FeatureState:
    available: bool
    reason: str | None = None  # why not, when not available


class Features:
    """The state of every feature of one vigil or vigild process.

    `say` receives the one line told when a feature the user asked for is unavailable; a feature
    the user turned off is recorded with its reason but not told (they know)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        self._lock = threading.Lock()
        self._states: dict[str, FeatureState] = {}

    def available(self, name: str) -> None:
        self._set(name, FeatureState(True))

    def turned_off(self, name: str, why: str) -> None:
        self._set(name, FeatureState(False, why))

    def unavailable(self, name: str, reason: str) -> None:
        """The kernel (or host) cannot run this feature: record it and say it, once."""
        reason = reason.splitlines()[0] if reason else "unknown reason"
        with self._lock:
            told = self._states.get(name) == FeatureState(False, reason)
        self._set(name, FeatureState(False, reason))
        if not told:
            self._say(f"{name} unavailable: {reason}; lost: {FEATURES[name]}")

    def state(self, name: str) -> FeatureState | None:
        with self._lock:
            return self._states.get(name)

    def as_dict(self) -> dict[str, dict[str, object]]:
        """Every known feature, in FEATURES order: {"available", "reason", "gives"}; a feature
        nothing decided about yet (its sensor never started) is unavailable, "not started"."""
        with self._lock:
            states = dict(self._states)
        return {name: {"available": states.get(name, NOT_STARTED).available,
                       "reason": states.get(name, NOT_STARTED).reason, "gives": gives}
                for name, gives in FEATURES.items()}

    def _set(self, name: str, state: FeatureState) -> None:
        if name not in FEATURES:
            raise KeyError(f"unknown feature {name!r}")
        with self._lock:
            self._states[name] = state


NOT_STARTED = FeatureState(False, "not started")
