"""Ingest live: a tracked process opens a file at a set rate for a set time while the whole
pipeline runs as `vigil trace --db` runs it (lineage + effects loaded, store, JSON lines and
detections on, the pipeline pinned to one core, the workload on another); then it says how many
file_open records the kernel emitted (repeated read-only opens are folded into counted records
unless `--no-fold`), how many it shed or lost, how many opens the records in the store account
for, and how long after the workload's end the last one was recorded.

Used by bench/ingest.py (`--sustained`, `--burst`); runnable alone (as root):

    /opt/vigild/bin/python bench/ingest_live.py --rate 20000 --seconds 60 [--no-fold] [--backlog-mib N]

It also says what the burst cost in memory: the pipeline process's RSS just before the workload
starts and its peak (VmHWM) after, and the most the ring reader held (`vigil_ring_backlog_peak_bytes`)
against its bound (`[effects] backlog`, `--backlog-mib`).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vigild.bpf.effects import EffectsSensor
from vigild.bpf.lineage import LineageSensor
from vigild.correlate.detections import Detector
from vigild.daemon.pipeline import Pipeline
from vigild.daemon.sinks import JsonLinesSink, StoreSink
from vigild.daemon.store import Store

from runner import run_tracked

# Paced opens: every millisecond's share at once, then a sleep until the schedule catches up, so
# the rate holds over the run whatever one open costs (as long as the core can go that fast).
WORKLOAD = """
import os, sys, time
target, rate, seconds, core, done = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if core >= 0:
    os.sched_setaffinity(0, {core})
total, chunk, n = int(rate * seconds), max(1, rate // 1000), 0
start = time.perf_counter()
while n < total:
    for _ in range(min(chunk, total - n)):
        os.close(os.open(target, os.O_RDONLY))
    n += min(chunk, total - n)
    ahead = n / rate - (time.perf_counter() - start)
    if ahead > 0:
        time.sleep(ahead)
elapsed = time.perf_counter() - start
times = os.times()
with open("/proc/self/schedstat") as f:
    run_ns, wait_ns = f.read().split()[:2]
with open(done, "w") as f:
    f.write(f"{n} {elapsed!r} {time.time()!r} {times.user!r} {times.system!r} {run_ns} {wait_ns}")
"""


def irq_work_interrupts() -> list[int]:
    """Per-CPU counts of IRQ work interrupts (/proc/interrupts, IWI): a ring buffer's wakeup is
    one irq_work on the producing CPU, so their growth on the workload's core counts the wakeups
    its records forced (plus the few anything else on that core raised)."""
    with open("/proc/interrupts") as f:
        cpus = len(f.readline().split())
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "IWI":
                return [int(v) for v in rest.split()[:cpus]]
    raise RuntimeError("/proc/interrupts has no IWI line")


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmHWM: peak RSS; VmRSS: now)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def reset_peak_rss() -> None:
    """Make VmHWM start again from the RSS of now (Linux >= 4.0), so the peak is the run's own."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


@dataclass
class LiveResult:
    rate: int
    seconds: float
    opens: int  # what the workload made
    achieved_rate: float  # opens per second it reached
    emitted: int  # file_open records the kernel put in the ring
    lost: int  # file_open records the kernel shed or could not deliver
    recorded: int  # opens of the workload the file_open events in the store account for at the end
    records: int  # those events (one per open unfolded; a count of many folded)
    recorded_after_s: float  # from the workload's end to its exit's dispatch (everything before it recorded)
    fold: bool = True
    user_s: float = 0.0  # the workload's own CPU time in user mode
    sys_s: float = 0.0  # ... in the kernel (its opens, the BPF programs they run, the wakeups they raise)
    wait_s: float = 0.0  # its time runnable but not running (schedstat), e.g. behind the pipeline on its core
    irq_work: int = 0  # IRQ work interrupts on the workload's core during the run
    peak_rss_mib: float = 0.0  # the pipeline process's peak RSS (VmHWM): what the burst's backlog cost
    start_rss_mib: float = 0.0  # its RSS just before the workload started
    end_rss_mib: float = 0.0  # ... and once everything was recorded
    backlog_peak_mib: float = 0.0  # the most the ring reader held (vigil_ring_backlog_peak_bytes)
    backlog_limit_mib: float = 0.0  # its bound ([effects] backlog)

    @property
    def whole(self) -> bool:
        return self.lost == 0 and self.recorded == self.opens

    def line(self) -> str:
        verdict = "delivered whole" if self.whole else "NOT whole"
        mode = "folded" if self.fold else "one record per open"
        return (f"{self.rate:,} opens/s for {self.seconds:g} s ({mode}): {self.opens:,} opens "
                f"(achieved {self.achieved_rate:,.0f}/s), kernel emitted {self.emitted:,} records "
                f"({self.emitted / self.seconds:,.0f} records/s), lost {self.lost:,}, recorded {self.records:,} "
                f"events for {self.recorded:,} opens, last recorded {self.recorded_after_s:.2f} s after the end: "
                f"{verdict}; workload user {self.user_s:.2f} s, sys {self.sys_s:.2f} s, waited {self.wait_s:.2f} s, "
                f"{self.irq_work:,} irq_work interrupts on its core ({self.irq_work / max(self.opens, 1):.2f} per open); pipeline RSS {self.start_rss_mib:.0f} MiB before, peak {self.peak_rss_mib:.0f} MiB "
                f"(+{self.peak_rss_mib - self.start_rss_mib:.0f}), {self.end_rss_mib:.0f} MiB after; reader held at most {self.backlog_peak_mib:.1f} MiB "
                f"of its {self.backlog_limit_mib:.0f} MiB bound")


def run_live(rate: int, seconds: float, tmp: Path, fold: bool = True, ring_bytes: int | None = None,
             backlog_bytes: int | None = None) -> LiveResult:
    """ring_bytes: the shared ring's size (None: the default; a tree without the option takes only None).
    backlog_bytes: the ring reader's bound (None: the default)."""
    target, script, done, db = tmp / "opened.txt", tmp / "paced.py", tmp / "done", tmp / "live.db"
    for stale in (done, db):
        stale.unlink(missing_ok=True)
    target.write_text("x")
    script.write_text(WORKLOAD)
    cores = sorted(os.sched_getaffinity(0))
    pipeline_core, workload_core = cores[0], cores[1] if len(cores) > 1 else -1
    os.sched_setaffinity(0, {pipeline_core})  # the pipeline's one core
    lineage = LineageSensor() if ring_bytes is None else LineageSensor(ring_bytes=ring_bytes)
    effects = EffectsSensor(lineage.shared_maps, fold_opens=fold)
    store = Store(db)
    before = lineage.stats().get("file_open", (0, 0))
    irq_before = irq_work_interrupts()
    with open(tmp / "live.jsonl", "w") as out:
        bound = {} if backlog_bytes is None else {"backlog_bytes": backlog_bytes}
        pipeline = Pipeline(lineage, [], sensors=[effects], detector=Detector(), **bound)
        pipeline.sinks = [StoreSink(store, pipeline.processes), JsonLinesSink(out)]
        pipeline.start()
        reset_peak_rss()
        start_rss = status_kib("VmRSS")
        try:
            argv = [sys.executable, str(script), str(target), str(rate), str(seconds), str(workload_core), str(done)]
            run_tracked(argv, pipeline, drain_timeout=600)
            exited = time.time()
            end_rss = status_kib("VmRSS")  # all recorded, the ring still mapped (as before the burst)
            irq_after = irq_work_interrupts()
        finally:
            pipeline.stop()
            health = pipeline.health()
            after = lineage.stats().get("file_open", (0, 0))
            effects.close()
            lineage.close()
    opens_text, elapsed_text, ended_text, user_text, sys_text, _run_ns, wait_ns = done.read_text().split()
    with sqlite3.connect(db) as conn:
        records, recorded = conn.execute("SELECT count(*), coalesce(sum(json_extract(data, '$.opens')), 0) FROM events "
                                         "WHERE type = 'file_open' AND json_extract(data, '$.path') = ?",
                                         (str(target),)).fetchone()
    opens, elapsed, ended = int(opens_text), float(elapsed_text), float(ended_text)
    return LiveResult(rate=rate, seconds=seconds, opens=opens, achieved_rate=opens / elapsed,
                      emitted=after[0] - before[0], lost=after[1] - before[1], recorded=recorded, records=records,
                      recorded_after_s=max(0.0, exited - ended), fold=fold, user_s=float(user_text),
                      sys_s=float(sys_text), wait_s=int(wait_ns) / 1e9,
                      irq_work=irq_after[max(workload_core, 0)] - irq_before[max(workload_core, 0)],
                      peak_rss_mib=status_kib("VmHWM") / 1024, start_rss_mib=start_rss / 1024,
                      end_rss_mib=end_rss / 1024,
                      backlog_peak_mib=health["ring_backlog_peak_bytes"] / (1 << 20),
                      backlog_limit_mib=health["ring_backlog_limit_bytes"] / (1 << 20))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=20_000, help="opens per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--no-fold", action="store_true", help="one record per open (the kernel folds none)")
    parser.add_argument("--ring-mib", type=int, help="the shared ring's size in MiB (default: the tree's own)")
    parser.add_argument("--backlog-mib", type=int, help="the ring reader's bound in MiB ([effects] backlog; default: its own)")
    args = parser.parse_args()
    ring_bytes = args.ring_mib << 20 if args.ring_mib else None
    backlog_bytes = args.backlog_mib << 20 if args.backlog_mib is not None else None
    with tempfile.TemporaryDirectory() as tmp_name:
        print(run_live(args.rate, args.seconds, Path(tmp_name), fold=not args.no_fold, ring_bytes=ring_bytes,
                       backlog_bytes=backlog_bytes).line())


if __name__ == "__main__":
    main()
