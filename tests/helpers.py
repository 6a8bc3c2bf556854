"""Running the real `vigil` CLI from tests and reading what it printed."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

VIGIL = [sys.executable, "-m", "vigild.daemon.cli"]


@dataclass
class TraceResult:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    stdout_other: list[str]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def by_argv(self, argv: list[str]) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "exec" and e["argv"] == argv]


def parse_json_lines(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Events, and any stdout lines that are not JSON (the traced command's own output)."""
    events, other = [], []
    for line in text.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
        elif line.strip():
            other.append(line)
    return events, other


def vigil_trace(args: list[str], timeout: float = 60, **kwargs: Any) -> TraceResult:
    proc = subprocess.run([*VIGIL, "trace", "-o", "json", *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)
    events, other = parse_json_lines(proc.stdout)
    return TraceResult(proc.returncode, events, proc.stderr, other)


def vigil(args: list[str], timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIGIL, *args], capture_output=True, text=True, timeout=timeout, **kwargs)
