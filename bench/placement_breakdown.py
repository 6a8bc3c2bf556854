"""Where a held tool call's placement time goes, step by step, side by side for several installs.

Runs `vigil run` (as root, `--no-tls`) over the agent loop of bench/placement.py with timestamps
taken at each step of the held lane's placement, from the kernel's exec to the SIGCONT:

    exec (the event's kernel timestamp) -> lane woken (its epoll returned) -> record decoded ->
    place_held entered -> still held (map lookup) -> role decided -> each rename (v1 spare) /
    mkdir and limit write (v2) -> each cgroup.procs write (move) -> held mark released ->
    SIGCONT -> place_held returned

The stamps are `time.time_ns()` appended to a list by wrappers this script installs round the
daemon's functions in the child process (module attributes and instance attributes: nothing in
the daemon's code knows about them), about 0.3 µs per stamp. Steps an install does not have are
simply absent from its rows. The first records (before the warmer and spares are up) are kept:
p50 is what counts.

    python bench/placement_breakdown.py --impl before=/opt/vigild-integ/bin/python \
        --impl after=/opt/vigild-place/bin/python --calls 100 --rounds 3 --gap-ms 50

Output per install: for each step (from the previous stamp), p50 / p90 / p99 µs and how often it
was seen, then exec -> SIGCONT. Placements made by the pipeline thread between two records (the
lane's `gate`) have no "woken" stamp and are counted apart.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from placement import AGENT, WORKLOADS, pct  # noqa: E402  (bench/ is not a package)
from placement_ktrace import KernelTrace, Trace, explain, summarise  # noqa: E402

# Runs inside the child interpreter (the install under test): wraps, then runs the CLI.
HOOKS = r"""
import atexit, json, os, sys, threading, time
out = sys.argv[1]
stamps = []
records = []
tids = []  # the thread that placed each record
threads = {}  # native id -> name of vigil's threads (at the first placement and at exit)
ops = []  # (label, start, end, tid) of the other threads' cgroup work: the warmer's writes, teardown
now = time.time_ns
clock_offset = time.time_ns() - time.monotonic_ns()  # the kernel trace's mono clock -> time_ns
trace_dir = os.environ.get("VIGIL_BENCH_TRACE")
if trace_dir:  # this process (and, by the instance's event-fork, its threads) is what the trace shows
    with open(trace_dir + "/set_event_pid", "w") as f:
        f.write(str(os.getpid()))
    with open(trace_dir + "/tracing_on", "w") as f:
        f.write("1")

def stamp(label):
    stamps.append((label, now()))

def after(obj, name, label):
    orig = getattr(obj, name, None)
    if orig is None:
        return
    def wrapped(*a, **k):
        result = orig(*a, **k)
        stamp(label)
        return result
    setattr(obj, name, wrapped)

from vigild.cgroups import gil_held
from vigild.daemon.pipeline import held_lane
from vigild.daemon.tools import control_loop
from vigild.bpf import lineage as lineage_mod

for name, label in (("rename", "rename"), ("mkdir", "mkdir"), ("mkdirat", "mkdir"),
                    ("write_file", "write"), ("write_fd", "write"), ("kill", "sigcont")):
    after(gil_held, name, label)
after(lineage_mod.LineageSensor, "release_held", "released")
after(lineage_mod.LineageSensor, "is_held", "is_held")

after(control_loop.ToolCallControl, "_early_role", "role")

def span(obj, name, label):
    orig = getattr(obj, name)
    def wrapped(*a, **k):
        start = now()
        try:
            return orig(*a, **k)
        finally:
            ops.append((label, start, now(), threading.get_native_id()))
    setattr(obj, name, wrapped)

from vigild.cgroups import base as cg_base, v1 as cg_v1, v2 as cg_v2, warm as cg_warm
span(cg_warm.NoopMove, "write", "warm")
span(cg_base.CgroupBackend, "fill_spares", "spares")
span(cg_v1.V1Backend, "remove", "remove")
span(cg_v2.V2Backend, "remove", "remove")

lane_init = held_lane.HeldLane.__init__
def init(self, lineage, clock, place):
    def place_timed(event):
        stamp("place_held")
        placed = place(event)
        stamp("returned")
        if not threads:
            threads.update({str(t.native_id): t.name for t in threading.enumerate()})
        if placed:
            records.append([("exec", event.ts_ns)] + list(stamps))
            tids.append(threading.get_native_id())
        stamps.clear()
        return placed
    lane_init(self, lineage, clock, place_timed)
    # The lane's wait: its own `_wait` where it has one (the GIL booster's, which never calls
    # the ring's), else the ring's. Either returns once the lane holds the GIL again.
    owner, name = (self, "_wait") if hasattr(self, "_wait") else (self._ring, "wait")
    wait = getattr(owner, name)
    def wait_timed(timeout_ms):
        got = wait(timeout_ms)
        stamps.clear()
        stamp("woken")
        return got
    setattr(owner, name, wait_timed)
    after(self._decoder, "decode", "decoded")
held_lane.HeldLane.__init__ = init

def dump():
    threads.update({str(t.native_id): t.name for t in threading.enumerate()})
    with open(out, "w") as f:
        json.dump({"records": records, "tids": tids, "ops": ops, "clock_offset": clock_offset, "threads": threads}, f)
atexit.register(dump)

from vigild.daemon.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


@dataclass
class Run:
    """One or more `vigil run`s of an install: the stamped placements, the thread that placed
    each, the other threads' cgroup work, and (with --kernel) what the kernel saw."""
    records: list[list[tuple[str, int]]] = field(default_factory=list)
    tids: list[int] = field(default_factory=list)
    ops: list[list] = field(default_factory=list)
    threads: dict[int, str] = field(default_factory=dict)  # vigil's threads alive at the end of its run
    traces: list[tuple[int, int, Trace]] = field(default_factory=list)  # (first record, end, trace)


def run_once(tmp: Path, python: str, calls: int, argv: list[str], gap_s: float, flood: bool, into: Run,
             trace: KernelTrace | None) -> None:
    """The stamped placements of one `vigil run` of the agent loop, added to ``into``."""
    agent, per_call, stamps = tmp / "agent.py", tmp / "per_call", tmp / "stamps.json"
    agent.write_text(AGENT)
    stamps.unlink(missing_ok=True)
    command = [python, "-c", HOOKS, str(stamps), "run", "-o", "json", "--no-tls", "--only", "tool", "--",
               sys.executable, str(agent), str(calls), json.dumps(argv), "1" if flood else "0", str(per_call), str(gap_s), "", "0"]
    env = {**os.environ, **(trace.env() if trace is not None else {})}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False, env=env)
    if proc.returncode != 0 or not stamps.exists():
        raise RuntimeError(f"{python} vigil run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    found = json.loads(stamps.read_text())
    first = len(into.records)
    into.records += found["records"]
    into.tids += found["tids"]
    into.ops += found["ops"]
    into.threads.update({int(tid): name for tid, name in found["threads"].items()})
    if trace is not None:
        into.traces.append((first, len(into.records), trace.take(found["clock_offset"])))


def steps(record: list[tuple[str, int]]) -> list[tuple[str, float]]:
    """(step name, µs since the previous stamp); repeated steps are numbered (rename 1, rename 2)."""
    seen: dict[str, int] = {}
    out = []
    for (_, before), (label, at) in zip(record, record[1:]):
        seen[label] = seen.get(label, 0) + 1
        out.append((f"{label} {seen[label]}" if label in ("rename", "write", "mkdir") else label, (at - before) / 1e3))
    return out


def report(name: str, run: Run, slow_ms: float) -> None:
    records = run.records
    lane = [r for r in records if any(label == "woken" for label, _ in r)]
    print(f"\n{name}: {len(records)} placements by the lane ({len(lane)} woken on its thread, "
          f"{len(records) - len(lane)} from the pipeline's gate)")
    print(f"  {'step (from the previous stamp)':34} {'p50 µs':>9} {'p90':>9} {'p99':>9} {'n':>5}")
    by_step: dict[str, list[float]] = {}
    order: list[str] = []
    for record in lane:
        for step, us in steps(record):
            if step not in by_step:
                order.append(step)
            by_step.setdefault(step, []).append(us)
    for step in order:
        values = by_step[step]
        print(f"  {step:34} {pct(values, 0.5):9.1f} {pct(values, 0.9):9.1f} {pct(values, 0.99):9.1f} {len(values):5d}")
    for label, start, end in (("exec -> SIGCONT (hold)", "exec", "sigcont"),
                              ("place_held -> SIGCONT", "place_held", "sigcont"),
                              ("exec -> place_held (lane path)", "exec", "place_held")):
        spans = [(dict(r)[end] - dict(r)[start]) / 1e3 for r in records if end in dict(r) and start in dict(r)]
        print(f"  {label:34} {pct(spans, 0.5):9.1f} {pct(spans, 0.9):9.1f} {pct(spans, 0.99):9.1f} {len(spans):5d}")
    for first, end, trace in run.traces:
        causes = []
        for index in range(first, end):
            stamps = dict(records[index])
            if "sigcont" in stamps and (stamps["sigcont"] - stamps["exec"]) / 1e6 >= slow_ms:
                why, lines = explain(trace, run.tids[index], records[index], run.ops, run.threads, min_ms=0.3)
                causes.append(why)
                print(f"  slow placement {index}: {why}")
                print("\n".join("      " + line for line in lines))
        print(f"  slow (>= {slow_ms} ms) in this run, by the longest off-CPU stretch: {summarise(causes) or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", action="append", required=True, help="name=python of an install with vigild")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gap-ms", type=float, default=50.0)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="true")
    parser.add_argument("--flood", action="store_true", help="a first tool call floods file opens meanwhile")
    parser.add_argument("--kernel", action="store_true",
                        help="trace the kernel (a tracefs instance of its own) and explain each slow placement")
    parser.add_argument("--slow-ms", type=float, default=3.0, help="a placement this slow is explained")
    args = parser.parse_args()
    impls = dict(item.split("=", 1) for item in args.impl)
    found = {name: Run() for name in impls}
    with tempfile.TemporaryDirectory(prefix="vigil-breakdown-") as tmp, \
            (KernelTrace("vigil-placement") if args.kernel else nullcontext()) as trace:
        for round_no in range(args.rounds):
            for name, python in impls.items():  # interleaved: both see the same load
                run_once(Path(tmp), python, args.calls, WORKLOADS[args.workload], args.gap_ms / 1e3, args.flood, found[name],
                         trace)
            print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    for name, run in found.items():
        report(name, run, args.slow_ms)


if __name__ == "__main__":
    main()
