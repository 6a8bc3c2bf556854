"""Adaptive memory.high for tool calls, shaped like senpai (Meta's userspace memory controller).

A call's `memory.high` (v1: `memory.soft_limit_in_bytes`) is raised step by step while the host
has headroom (MemAvailable well above a reserve) and lowered while the host is under memory
pressure (PSI `/proc/pressure/memory`, `some` avg10), so a burst gets room when room exists and
gives it back first when it does not. Like senpai, the parts are apart:

* `HostReader` does the I/O (a fake one in tests, `ProcHostReader` for the real files);
* `decide` is the pure rule (one value in, one value out: clamped to [floor, the call's
  memory.max or the host's RAM], page-aligned);
* `AdaptiveController.__call__` is the tick hook of `ToolCallControl`: it reads each call's
  value back first, and when someone else changed it (a declaration, an operator) it takes the new
  value as its base instead of fighting it. Every change it makes or notices is a `limit_change`.

Where PSI is absent (no `/proc/pressure`), only MemAvailable is used: below the reserve the limits
go down, as they would under pressure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from vigild.cgroups import CgroupError, Limits
from vigild.daemon.tools.declare import PAGE, LimitChange

if TYPE_CHECKING:
    from vigild.daemon.config import Config
    from vigild.daemon.tools.control_loop import ToolCallControl

log = logging.getLogger("vigild.adaptive")
WHO = {"controller": "adaptive"}


@dataclass(frozen=True)
class HostState:
    mem_total: int
    mem_available: int
    some_avg10: float | None  # None: the host has no PSI
    full_avg10: float | None


class HostReader(Protocol):
    def read(self) -> HostState: ...


class ProcHostReader:
    """`/proc/meminfo` and `/proc/pressure/memory` (paths replaceable for tests)."""

    def __init__(self, meminfo: Path = Path("/proc/meminfo"), pressure: Path = Path("/proc/pressure/memory")) -> None:
        self.meminfo = meminfo
        self.pressure = pressure

    def read(self) -> HostState:
        mem: dict[str, int] = {}
        for line in self.meminfo.read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                mem[key] = int(rest.split()[0]) * 1024
        some = full = None
        try:
            for line in self.pressure.read_text().splitlines():
                kind, *pairs = line.split()
                avg10 = float(dict(p.split("=", 1) for p in pairs)["avg10"])
                if kind == "some":
                    some = avg10
                elif kind == "full":
                    full = avg10
        except (OSError, KeyError, ValueError):
            some = full = None
        return HostState(mem["MemTotal"], mem["MemAvailable"], some, full)


@dataclass(frozen=True)
class AdaptiveSettings:
    pressure: float = 10.0      # PSI some avg10 (%) at or above which limits go down
    headroom: float = 0.2       # MemAvailable / MemTotal kept as a reserve; above it limits may go up
    floor: int = 64 << 20       # never below
    step_up: float = 0.10       # a raise: at most this fraction of the current value, and of the spare memory
    step_down: float = 0.10     # a cut: this fraction of the current value
    interval_s: float = 1.0     # PSI avg10 moves slowly; deciding more often only adds noise

    @classmethod
    def from_config(cls, config: Config) -> AdaptiveSettings:
        return cls(pressure=config.adaptive_pressure, headroom=config.adaptive_headroom, floor=config.adaptive_floor)


def decide(settings: AdaptiveSettings, state: HostState, high: int, ceiling: int) -> tuple[int, str | None]:
    """The next memory.high for a call now at `high`, and why it moved (None: it did not)."""
    reserve = int(state.mem_total * settings.headroom)
    pressured = state.some_avg10 is not None and state.some_avg10 >= settings.pressure
    if pressured:
        new, why = high - int(high * settings.step_down), f"memory pressure: some avg10 {state.some_avg10:.2f}%"
    elif state.mem_available < reserve:
        new, why = high - int(high * settings.step_down), (f"low headroom: MemAvailable {state.mem_available >> 20} MiB "
                                                           f"below the {reserve >> 20} MiB reserve")
    else:
        spare = state.mem_available - reserve
        new, why = high + int(min(high * settings.step_up, spare * settings.step_up)), (
            f"headroom: MemAvailable {state.mem_available >> 20} MiB, {spare >> 20} MiB above the reserve")
    top = max(ceiling, settings.floor)
    new = min(max(new, settings.floor), top) // PAGE * PAGE
    return (new, why) if new != high else (high, None)


class AdaptiveController:
    """Tick hook for `ToolCallControl.adaptive`: moves each open call's memory.high."""

    def __init__(self, settings: AdaptiveSettings, reader: HostReader,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.reader = reader
        self.clock = clock
        self.written: dict[int, int] = {}  # call id -> the value this controller last wrote or adopted
        self._last = float("-inf")

    def __call__(self, control: ToolCallControl) -> list[Any]:
        now = self.clock()
        if now - self._last < self.settings.interval_s:
            return []
        self._last = now
        open_ids = {call.id: call for call in control.open_calls}
        for gone in set(self.written) - set(open_ids):
            del self.written[gone]
        if not open_ids:
            return []
        state = self.reader.read()
        events: list[Any] = []
        for call_id, call in open_ids.items():
            group = control.groups.get(call_id)
            policy = control.applied.get(call_id)
            if group is None or policy is None or policy.limits.memory_high is None:
                continue  # only calls given a memory.high are steered
            try:
                current = control.backend_of(call_id).read_limits(group)
            except CgroupError as exc:
                log.debug("cannot read the limits of %s: %s", group, exc)
                continue
            high = current.memory_high
            if high is None:
                continue
            known = self.written.get(call_id)
            if known is not None and known != high:
                self.written[call_id] = high  # someone else set it: their value is the new base
                control.applied[call_id] = replace(policy, limits=replace(policy.limits, memory_high=high))
                events.append(self._event(call, "changed by someone else; adopted as the base", known, high))
                continue
            self.written[call_id] = high
            ceiling = current.memory_max if current.memory_max is not None else state.mem_total
            new, why = decide(self.settings, state, high, ceiling)
            if why is None:
                continue
            try:
                control.backend_of(call_id).set_limits(group, Limits(memory_high=new))
            except CgroupError as exc:
                log.warning("cannot move memory.high of %s: %s", group, exc)
                continue
            self.written[call_id] = new
            control.applied[call_id] = replace(policy, limits=replace(policy.limits, memory_high=new))
            events.append(self._event(call, why, high, new))
        return events

    @staticmethod
    def _event(call: Any, why: str, old: int, new: int) -> LimitChange:
        return LimitChange(ts_ns=time.time_ns(), session_id=call.session_id, tool_call=call.id, who=dict(WHO),
                           why=why, old={"memory_high": old}, new={"memory_high": new})
