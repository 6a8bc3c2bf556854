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
    stdout: str = ""

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def by_argv(self, argv: list[str]) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "exec" and e["argv"] == argv]


def parse_json_lines(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Events, and the other stdout lines (the traced command shares vigil's stdout)."""
    events, other = [], []
    for line in text.splitlines():
        try:
            obj = json.loads(line) if line.startswith("{") else None
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and "type" in obj and "ts" in obj:
            events.append(obj)
        elif line.strip():
            other.append(line)
    return events, other


def vigil_trace(args: list[str], timeout: float = 60, verbose: bool = False, **kwargs: Any) -> TraceResult:
    flags = ["-v"] if verbose else []
    proc = subprocess.run([*VIGIL, *flags, "trace", "-o", "json", *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)
    events, other = parse_json_lines(proc.stdout)
    return TraceResult(proc.returncode, events, proc.stderr, other, proc.stdout)


def vigil(args: list[str], timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIGIL, *args], capture_output=True, text=True, timeout=timeout, **kwargs)
