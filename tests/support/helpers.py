"""Running the real `vigil` CLI from tests and reading what it printed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

VIGIL = [sys.executable, "-m", "vigild.daemon.cli"]


@dataclass
class TraceResult:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    stdout_other: list[str]  # what the traced command printed (stdout and stderr), not vigil's lines
    stdout: str = ""
    pid: int = 0

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


def events_and_output(stdout: str, stderr: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Events (vigil's stdout under -o json), and the lines the traced command printed: under
    -o json its stdout goes to vigil's stderr, beside vigil's own `vigil:` lines."""
    events, other = parse_json_lines(stdout)
    return events, other + [line for line in stderr.splitlines() if line and not line.startswith("vigil:")]


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL the process group ``proc`` leads (vigil, its agent, their tool calls) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@contextmanager
def own_group(argv: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[Any]]:
    """``Popen`` in a new process group that is killed whole when the block ends, however it ends:
    a failed test never leaves its vigil (or the agent and tools it started) running."""
    proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
    try:
        yield proc
    finally:
        kill_group(proc)


class Ran(subprocess.CompletedProcess[str]):
    """A finished run, with the pid it had (its cgroups are named after it)."""

    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str, pid: int) -> None:
        super().__init__(argv, returncode, stdout, stderr)
        self.pid = pid


def run_own_group(argv: list[str], timeout: float, **kwargs: Any) -> Ran:
    """``subprocess.run(capture_output=True, text=True)`` whose whole process group is killed on a
    timeout or error, and once it returned (nothing it started may outlive the test)."""
    with own_group(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(argv, timeout, out, err) from None
        return Ran(argv, proc.returncode, out, err, proc.pid)


def vigil_trace(args: list[str], timeout: float = 60, verbose: bool = False, **kwargs: Any) -> TraceResult:
    flags = ["-v"] if verbose else []
    proc = run_own_group([*VIGIL, *flags, "trace", "-o", "json", *args], timeout, **kwargs)
    events, command_output = events_and_output(proc.stdout, proc.stderr)
    return TraceResult(proc.returncode, events, proc.stderr, command_output, proc.stdout, proc.pid)


def vigil(args: list[str], timeout: float = 60, **kwargs: Any) -> Ran:
    return run_own_group([*VIGIL, *args], timeout, **kwargs)


def wait_tracing(tracer: subprocess.Popen[Any], links: int = 3, timeout: float = 120) -> None:
    """Wait until a `vigil trace -p/-c` started in the background has attached its lineage
    programs (fork, exec, exit: `links` BPF links among its fds). Its root names and pids are in
    the kernel's maps before those links exist, so what runs from then on is seen; a fixed sleep
    is not enough on a loaded machine, where loading the programs can take many seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tracer.poll() is not None:
            raise AssertionError(f"vigil exited with {tracer.returncode} before it was tracing")
        try:
            fds = os.listdir(f"/proc/{tracer.pid}/fd")
            held = sum(1 for fd in fds if os.readlink(f"/proc/{tracer.pid}/fd/{fd}") == "anon_inode:bpf_link")
        except FileNotFoundError:
            held = 0  # an fd closed while it was listed: look again
        if held >= links:
            return
        time.sleep(0.05)
    raise AssertionError(f"vigil was not tracing {timeout:.0f} s after it started")
