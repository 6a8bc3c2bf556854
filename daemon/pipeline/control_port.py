"""What the pipeline needs of tool-call control (vigil run, an observing vigild), as a Protocol:
the pipeline routes events to it and asks it for tool events, without importing the concrete
control loop (daemon/tools/control_loop.py), so neither depends on the other's internals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from vigild.bpf.events import EventDecoder, ExecEvent, ProcessEvent
from vigild.correlate.process_tree import ProcessInfo


class ControlSensorPort(Protocol):
    """The control's own BPF programs, writing their event kinds into the shared ring buffer."""

    def register(self, decoder: EventDecoder) -> None: ...


class ToolControlPort(Protocol):
    """Tool-call control as the pipeline sees it."""

    sensor: ControlSensorPort | None
    process_of: Callable[[int], ProcessInfo | None]

    @property
    def root_flags(self) -> int: ...

    @property
    def observe_only(self) -> bool: ...

    @property
    def open_calls(self) -> list[Any]: ...

    def observe(self, event: ProcessEvent) -> list[Any]: ...

    def place_held(self, event: ExecEvent) -> bool: ...

    def observe_intent(self, inner: Any, session_id: int | None) -> list[Any]: ...

    def agent_session(self, session_id: int, agent: str | None) -> None: ...

    def adopt_relaunches(self, root_pid: int, tree: list[ProcessInfo]) -> None: ...

    def tick(self) -> list[Any]: ...

    def kill_open(self, reason: str) -> None: ...

    def close(self) -> list[Any]: ...

