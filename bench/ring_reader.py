"""Ring reader: what the pipeline's reader of the shared ring (daemon/pipeline/reader.py) costs
per record, copy-out and hand-over, without the decoding that follows (bench/ingest.py times
that). As root.

A tracked process opens a file `--opens` times (one record per open, nobody reading: the ring
holds them all), then the reader polls and hands every record over, draining the ring every 256
records as core.py's run_once does; the thread's CPU time over the records is the figure. Rounds
alternate with nothing else changed; run it under two trees' Pythons to compare them (it uses
only what both readers have: poll, iteration, drain).

    /opt/vigild/bin/python bench/ring_reader.py [--opens 30000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from vigild.bpf.effects import EffectsSensor
from vigild.bpf.lineage import LineageSensor
from vigild.daemon.launch import spawn_gated
from vigild.daemon.pipeline.reader import RingReader

OPENER = """
import os, sys
for _ in range(int(sys.argv[2])):
    os.close(os.open(sys.argv[1], os.O_RDONLY))
"""
DRAIN_EVERY = 256  # core.py's FLUSH_CHECK_EVERY


def burst(lineage: LineageSensor, target: Path, opens: int) -> None:
    """Run the opener tracked from its first instruction and wait for it (nobody reads meanwhile)."""
    child = spawn_gated([sys.executable, "-S", "-c", OPENER, str(target), str(opens)])
    lineage.track(child.pid, 1)
    child.release()
    os.waitpid(child.pid, 0)


def read_all(reader: RingReader) -> tuple[int, int]:
    """Records handed over and the thread's CPU ns for them: every poll, every record touched
    (its length read), a drain every DRAIN_EVERY records."""
    records = 0
    started = time.thread_time_ns()
    while True:
        batch = reader.poll(0)
        if not batch:
            return records, time.thread_time_ns() - started
        for i, raw in enumerate(batch):
            records += len(raw) > 0
            if i % DRAIN_EVERY == DRAIN_EVERY - 1:
                reader.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opens", type=int, default=30_000, help="records a round (the ring's effects share holds ~38k)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    lineage = LineageSensor()
    effects = EffectsSensor(lineage.shared_maps, fold_opens=False)
    reader = RingReader(lineage.events)
    per_record: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "opened.txt"
            target.write_text("x")
            read_all(reader)
            for _ in range(args.rounds):
                burst(lineage, target, args.opens)
                records, ns = read_all(reader)
                per_record.append(ns / max(records, 1))
    finally:
        reader.free()
        effects.close()
        lineage.close()
    print(f"ring reader: {statistics.median(per_record):.0f} ns CPU per record, median of {args.rounds} rounds of "
          f"~{args.opens:,} records (min {min(per_record):.0f}, max {max(per_record):.0f})")


if __name__ == "__main__":
    main()
