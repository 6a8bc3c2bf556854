"""Events the pipeline itself produces (beside the kernel's and the decoders'), and the common
shape every event has for sinks: a `type`, a wall-clock `ts_ns` and a `to_dict()`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from vigild.correlate.sessions import Session


class Event(Protocol):
    type: ClassVar[str]
    ts_ns: int

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class LostEvent:
    """The kernel could not hand over `count` events of `kind`: effects shed while the consumer is
    behind (so lifecycle events keep their room), or the ring buffer full. Never silent."""

    type: ClassVar[str] = "lost"
    ts_ns: int
    kind: str
    count: int
    total: int

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "ts_ns": self.ts_ns, "kind": self.kind, "count": self.count,
                "total": self.total}


@dataclass
class SessionStart:
    type: ClassVar[str] = "session_start"
    ts_ns: int
    session: Session

    def to_dict(self) -> dict[str, Any]:
        d = self.session.to_dict()
        return {"type": self.type, "ts_ns": self.ts_ns, "session_id": self.session.id, "pid": self.session.root_pid,
                **{k: v for k, v in d.items() if k != "session"}}


@dataclass
class SessionEnd(SessionStart):
    type: ClassVar[str] = "session_end"


@dataclass
class Attributed:
    """An event from the decoders (LLM calls, HTTPS requests, parse failures) with the session of
    the process that made it, which only the pipeline knows."""

    inner: Any
    session_id: int | None

    @property
    def type(self) -> str:  # type: ignore[override]
        return str(self.inner.type)

    @property
    def ts_ns(self) -> int:
        return int(self.inner.ts_ns)

    def to_dict(self) -> dict[str, Any]:
        d = self.inner.to_dict()
        d["session_id"] = self.session_id
        return d


@dataclass
class CaptureEvent:
    """What vigil can read of an executable's TLS, said once per executable: `capture_hooked`
    (how: symbols or locator) or `capture_blind` (why: a stack not located, Go's crypto/tls,
    rustls, or traffic seen with no plaintext captured)."""

    type: ClassVar[str] = "capture_hooked"
    ts_ns: int
    pid: int
    comm: str
    session_id: int | None
    binary: str
    stack: str
    how: str | None = None
    reason: str | None = None
    locate_ms: float | None = None
    cached: bool = False
    hold_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "ts_ns": self.ts_ns, "pid": self.pid, "comm": self.comm,
                "session_id": self.session_id, "binary": self.binary, "stack": self.stack, "how": self.how,
                "reason": self.reason, "locate_ms": self.locate_ms, "cached": self.cached, "hold_ms": self.hold_ms}


@dataclass
class CaptureBlind(CaptureEvent):
    type: ClassVar[str] = "capture_blind"
