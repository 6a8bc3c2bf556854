"""`Limits`: the one list of per-tool-call cgroup knobs, and what each layer needs to know about one.

Every layer reads this list instead of naming knobs: the config's `[tools]`, `[limits]` and
`[[policies]]` keys, declared needs (socket, hints, `vigil declare` flags), `vigil run`'s `--tool-*`
flags, both backends' plain writes and reads, and the `limits_hit` of a tool_end. Adding a knob is
one field here (plus backend code only when its file is not a plain integer).
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from typing import Any, Literal

# Larger pids.max values mean nothing on any kernel (PID_MAX_LIMIT is 4M).
PIDS_LIMIT = 1 << 22


@dataclass(frozen=True)
class Knob:
    """What a layer needs to know about one knob.

    unit: "size" values take K/M/G/T (binary units), "count" values are integers in low..high.
    flag: the word of the CLI flags (`vigil run --tool-<flag>`, `vigil declare --<flag>`) and an
    accepted alias of the name in declarations. v2/v1: the file a backend writes the value to as a
    plain integer; None on v1: the knob does not exist there, and a backend refuses it. v2_events:
    (file, key) of the counter that says the knob was hit, for knobs the stats types do not cover.
    """

    name: str
    controller: str
    unit: Literal["size", "count"]
    help: str
    flag: str
    v2: str | None
    v1: str | None
    low: int = 0
    high: int | None = None
    v2_events: tuple[str, str] | None = None

    def check(self, value: int) -> None:
        """Refuse a value out of the knob's range (ValueError naming the knob)."""
        if value < self.low or (self.high is not None and value > self.high):
            span = f"in {self.low}..{self.high}" if self.high is not None else f">= {self.low}"
            raise ValueError(f"{self.name} must be {span}, got {value}")


def _knob(**spec: Any) -> Any:
    """A Limits field carrying its Knob (the name is filled in from the field)."""
    return field(default=None, metadata={"knob": spec})


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Per-group resource limits; ``None`` leaves the current value untouched.

    memory_high: v2 throttles and reclaims above it; v1 has no throttling equivalent, so it
    becomes ``memory.soft_limit_in_bytes`` (only a reclaim priority under global pressure).
    cpu_weight uses v2 units (1..10000, default 100); v1 maps it to ``cpu.shares``.
    Keyword-only, so types that add fields to it (declared needs, policies) may add positional ones.
    """

    memory_high: int | None = _knob(controller="memory", unit="size", flag="mem-high", help="memory.high (v1: soft limit)",
                                    v2="memory.high", v1="memory.soft_limit_in_bytes")
    memory_max: int | None = _knob(controller="memory", unit="size", flag="mem-max", help="memory.max",
                                   v2="memory.max", v1="memory.limit_in_bytes")
    memory_swap_max: int | None = _knob(controller="memory", unit="size", flag="swap-max",
                                        help="memory.swap.max (v2 only: v1's memsw counts memory and swap together)",
                                        v2="memory.swap.max", v1=None, v2_events=("memory.swap.events", "max"))
    pids_max: int | None = _knob(controller="pids", unit="count", flag="pids-max", help="pids.max",
                                 v2="pids.max", v1="pids.max", low=1, high=PIDS_LIMIT)
    cpu_weight: int | None = _knob(controller="cpu", unit="count", flag="cpu-weight",
                                   help="cpu.weight (1..10000; v1: cpu.shares)", v2="cpu.weight", v1=None,
                                   low=1, high=10000)
    cpu_quota_us: int | None = _knob(controller="cpu", unit="count", flag="cpu-quota-us",
                                     help="cpu.max quota: CPU time in µs per period (v1: cpu.cfs_quota_us)",
                                     v2=None, v1="cpu.cfs_quota_us", low=1000)
    cpu_period_us: int | None = _knob(controller="cpu", unit="count", flag="cpu-period-us",
                                      help="cpu.max period in µs (v1: cpu.cfs_period_us)",
                                      v2=None, v1="cpu.cfs_period_us", low=1000, high=1_000_000)

    def __post_init__(self) -> None:
        for knob in KNOBS:
            value = getattr(self, knob.name)
            if value is not None:
                knob.check(value)

    def set(self) -> dict[str, int]:
        """The knobs this value sets (not None)."""
        return {knob.name: getattr(self, knob.name) for knob in KNOBS if getattr(self, knob.name) is not None}

    @classmethod
    def of(cls, source: object) -> Limits:
        """The knobs of anything that has them as attributes (a declaration, a policy, bounds)."""
        return cls(**{knob.name: getattr(source, knob.name) for knob in KNOBS})


def _knobs(limit_fields: tuple[Field[Any], ...]) -> tuple[Knob, ...]:
    return tuple(Knob(name=f.name, **f.metadata["knob"]) for f in limit_fields)


KNOBS: tuple[Knob, ...] = _knobs(fields(Limits))
KNOB = {knob.name: knob for knob in KNOBS}


@dataclass(frozen=True, kw_only=True)
class CallLimits(Limits):
    """A call's limits and its wall-clock timeout: the shape of a declaration, a policy and a bound.
    The timeout is vigil's, not a cgroup's, so it is not a knob."""

    timeout_s: float | None = None
