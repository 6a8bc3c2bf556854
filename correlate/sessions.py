"""Sessions: one per traced root process (an agent run, or a command started by `vigil trace`)."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any


def host_name() -> str:
    """The host a session ran on: ``VIGIL_HOST`` when set (a DaemonSet passes the node's name; the
    pod's own hostname would be the pod's), else the machine's hostname."""
    return os.environ.get("VIGIL_HOST") or socket.gethostname()


@dataclass
class Session:
    id: int
    root_pid: int
    started_ns: int
    argv: list[str] = field(default_factory=list)
    agent: str | None = None
    cwd: str | None = None
    uid: int | None = None
    host: str = field(default_factory=host_name)
    ended_ns: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    container: dict[str, str] | None = None  # vigild.correlate.containers.Container.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {
            "session": self.id,
            "root_pid": self.root_pid,
            "agent": self.agent,
            "argv": self.argv,
            "cwd": self.cwd,
            "uid": self.uid,
            "host": self.host,
            "started_ns": self.started_ns,
            "ended_ns": self.ended_ns,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "container": self.container,
        }


class SessionIds:
    """Session ids for roots user space adds: the time in microseconds, strictly increasing, so
    ids from separate runs never collide (kernel-minted ids carry bit 62 and cannot either)."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, time.time_ns() // 1000)
        return self._last
