"""The kernel's view of slow placements, for bench/placement_breakdown.py `--kernel`.

A tracefs instance of its own (so nothing another tracer set up is touched; removed after the
run) records, for the `vigil run` process and its threads only (`set_event_pid` + `event-fork`,
written by the child itself before it starts): every context switch, with the kernel stack when
a thread blocks uninterruptibly (`stacktrace if prev_state & 2`), the cgroup events
(mkdir, rmdir, rename, attach) and lock contention. Timestamps are the `mono` trace clock,
shifted to `time.time_ns` by the offset the child measured.

For each placement slower than a threshold, `explain` says where the placing thread was off the
CPU between the exec and the SIGCONT (blocked, and in what: a grace period in `rcu_sync_enter`,
`cgroup_mutex`, ...; or runnable and waiting for a CPU) and what the warmer and the teardown
thread did around it. `summarise` counts the causes.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")
EVENTS = ("sched/sched_switch", "cgroup/cgroup_attach_task", "cgroup/cgroup_mkdir", "cgroup/cgroup_rmdir",
          "cgroup/cgroup_rename", "lock/contention_begin", "lock/contention_end")
LINE = re.compile(r"^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+(\d+\.\d+): (\w*):? ?(.*)$")
# Frames that name why a thread blocked, most telling first.
CAUSES = (("rcu_sync_enter", "grace period (rcu_sync_enter)"), ("synchronize_rcu", "grace period (synchronize_rcu)"),
          ("percpu_down_write", "threadgroup rwsem (writer)"), ("percpu_rwsem_wait", "threadgroup rwsem (wait)"),
          ("cgroup_kn_lock_live", "cgroup_mutex"), ("cgroup_lock", "cgroup_mutex"), ("__mutex_lock", "a mutex"),
          ("rwsem_down", "an rwsem"), ("do_epoll_wait", "epoll (idle)"), ("futex", "futex (GIL or a lock)"))


class KernelTrace:
    """A tracefs instance for one run; `env()` is what the child needs to point it at itself."""

    def __init__(self, name: str) -> None:
        self.dir = TRACEFS / "instances" / f"{name}-{os.getpid()}"

    def __enter__(self) -> KernelTrace:
        self.dir.mkdir()
        self._write("tracing_on", "0")
        self._write("trace_clock", "mono")
        self._write("buffer_size_kb", "16384")
        self._write("options/event-fork", "1")
        for event in EVENTS:
            self._write(f"events/{event}/enable", "1")
        self._write("events/sched/sched_switch/trigger", "stacktrace if prev_state & 2")
        return self

    def __exit__(self, *exc: object) -> None:
        self._write("tracing_on", "0")
        self._write("events/sched/sched_switch/trigger", "!stacktrace")
        self.dir.rmdir()

    def env(self) -> dict[str, str]:
        return {"VIGIL_BENCH_TRACE": str(self.dir)}

    def take(self, offset_ns: int) -> Trace:
        """What was recorded since the last take (the buffer is cleared)."""
        self._write("tracing_on", "0")
        text = (self.dir / "trace").read_text(errors="replace")
        self._write("trace", "")
        self._write("set_event_pid", "")
        return Trace.parse(text, offset_ns)

    def _write(self, name: str, value: str) -> None:
        (self.dir / name).write_text(value)


@dataclass
class Entry:
    ts_ns: int
    pid: int
    event: str
    fields: str
    stack: list[str] = field(default_factory=list)


@dataclass
class Trace:
    entries: list[Entry]

    @classmethod
    def parse(cls, text: str, offset_ns: int) -> Trace:
        """Entries in order; a `<stack trace>` entry's frames go to the sched_switch before it."""
        entries: list[Entry] = []
        frames: list[str] | None = None
        for line in text.splitlines():
            if line.startswith(" => "):
                if frames is not None:
                    frames.append(line[4:].split("+")[0].strip())
                continue
            frames = None
            match = LINE.match(line)
            if match is None:
                continue
            if match.group(6).startswith("<stack trace>") or match.group(5) == "":
                if entries and entries[-1].event == "sched_switch" and entries[-1].pid == int(match.group(2)):
                    frames = entries[-1].stack
                continue
            entries.append(Entry(round(float(match.group(4)) * 1e9) + offset_ns, int(match.group(2)),
                                 match.group(5), match.group(6)))
        return cls(entries)

    def off_cpu(self, tid: int, start: int, end: int) -> list[tuple[int, int, str, list[str]]]:
        """(left, back, state, stack) of each time `tid` left the CPU within [start, end]."""
        out = []
        left: tuple[int, str, list[str]] | None = None
        for entry in self.entries:
            if entry.event != "sched_switch" or entry.ts_ns > end:
                continue
            prev = re.search(r"prev_pid=(\d+) .*prev_state=(\S+) ==> .*next_pid=(\d+)", entry.fields)
            if prev is None:
                continue
            if int(prev.group(1)) == tid:
                left = (entry.ts_ns, prev.group(2), entry.stack)
            elif int(prev.group(3)) == tid and left is not None:
                if entry.ts_ns >= start:
                    out.append((max(left[0], start), entry.ts_ns, left[1], left[2]))
                left = None
        return out

    def others(self, tid: int, start: int, end: int) -> list[Entry]:
        """The cgroup and lock events of threads other than `tid` within [start, end]."""
        return [e for e in self.entries if start <= e.ts_ns <= end and e.pid != tid
                and (e.event.startswith("cgroup_") or e.event.startswith("contention"))]


def cause(state: str, stack: list[str]) -> str:
    """Why a thread was off the CPU: runnable (preempted), or blocked in what."""
    if state.startswith("R"):
        return "runnable, waiting for a CPU"
    for frame in stack:
        for needle, name in CAUSES:
            if needle in frame:
                return name
    return f"state {state}" + (f" in {stack[2]}" if len(stack) > 2 else "")


def explain(trace: Trace, tid: int, record: list[tuple[str, int]], ops: list[list], threads: dict[int, str],
            min_ms: float) -> tuple[str, list[str]]:
    """The main cause of one slow placement (the placing thread's longest off-CPU stretch) and
    lines that show it: the steps, each thread's off-CPU stretches, the other threads' cgroup work."""
    stamps = dict(record)
    start, end = stamps["exec"], stamps.get("sigcont", stamps["returned"])
    lines = [f"hold {(end - start) / 1e6:.2f} ms, placed by tid {tid}; steps (ms from the exec): "
             + " ".join(f"{label} {(at - start) / 1e6:.2f}" for label, at in record[1:])]
    longest = (0, "on CPU (no off-CPU stretch of the placing thread)")
    others = {**threads, **{op_tid: label for label, _, _, op_tid in ops}}
    for who in [tid, *sorted(set(others) - {tid})]:
        for left, back, state, stack in trace.off_cpu(who, start, end):
            ms = (back - left) / 1e6
            if ms < min_ms:
                continue
            why = cause(state, stack)
            name = "placing thread" if who == tid else f"{others[who]} thread"
            lines.append(f"{name} off CPU {ms:.2f} ms at {(left - start) / 1e6:+.2f}: {why}; "
                         f"{' < '.join(f for f in stack[3:14] if f)}")
            if who == tid and back - left > longest[0]:
                longest = (back - left, why)
    for label, op_start, op_end, op_tid in ops:
        if op_end >= start - 12_000_000 and op_start <= end:
            lines.append(f"{label} (tid {op_tid}) {(op_start - start) / 1e6:+.2f} .. {(op_end - start) / 1e6:+.2f} ms")
    for entry in trace.others(tid, start - 5_000_000, end):
        lines.append(f"other pid {entry.pid} {entry.event} at {(entry.ts_ns - start) / 1e6:+.2f} ms: {entry.fields[:90]}")
    return longest[1], lines


def summarise(causes: list[str]) -> str:
    return ", ".join(f"{why}: {n}" for why, n in Counter(causes).most_common())
