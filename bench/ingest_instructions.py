"""Ingest in instructions: what a distinct-file event costs the pipeline, stage by stage, counted
by valgrind (cachegrind), which the load of a shared machine does not change (CPU time moves
±30% with it).

A real burst of distinct-file opens is captured once (as root, lineage and effects loaded, like
bench/ingest.py --distinct). Then, per stage, a process of its own replays `--records` of its
file opens under valgrind: decoded; then also scrubbed; also made a record; also JSON; also
written as JSON Lines; also a store row; also checked for detections; also flushed to SQLite;
and the whole `Pipeline._handle_raw` (routing and the process table too). A replay of none is
subtracted; each stage's cost is the difference from the one before. The replay's pipeline has
no BPF of its own (its ring buffer is never added): valgrind does not run BPF, and the replay
does not need it.

    /opt/vigild/bin/python bench/ingest_instructions.py [--records 5000] [--baseline REV]

`--baseline REV` counts git revision REV's Python on the same records first (as
bench/ingest.py --baseline, so REV must have this build's BPF headers).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

STAGES = ("decode", "scrub", "record", "json", "jsonl", "store", "detect", "sqlite", "pipeline")
WARM = 200  # records replayed before the counted ones (first calls, caches of the constant parts)
FILE_OPEN = 16  # Kind.FILE_OPEN, read from a record's first byte


def capture(out: Path, opens: int) -> None:
    """A distinct-file burst's raw records, with the process table and sessions they need."""
    from ingest import capture as capture_burst
    tmp = Path(tempfile.mkdtemp(dir=out.parent))
    raws, pipeline = capture_burst(tmp, opens, 1, False, True)
    with out.open("wb") as f:
        pickle.dump((raws, list(pipeline.processes.processes.values()), list(pipeline.sessions.values())), f)
    shutil.rmtree(tmp)


def replay(source: Path, records: int, stage: str) -> None:
    """Replay `records` file opens up to `stage` (in the process valgrind counts)."""
    with source.open("rb") as f:
        raws, processes, sessions = pickle.load(f)
    from vigild.bpf import loader
    # `add` too: a --baseline revision's own add does not go through add_raw.
    loader.RingBuffer.add = lambda self, ring, handler: None  # type: ignore[method-assign]
    loader.RingBuffer.add_raw = lambda self, ring, handler: None  # type: ignore[attr-defined]
    loader.RingPositions = lambda ring: None  # type: ignore[assignment,misc]  # the reader's, of no ring here
    from vigild.bpf.effects_events import register_effects
    from vigild.correlate.detections import Detector
    from vigild.daemon.pipeline import Pipeline
    from vigild.daemon.pipeline.scrub import scrub
    from vigild.daemon.sinks import JsonLinesSink, StoreSink
    from vigild.daemon.sinks.record import record_of
    from vigild.daemon.store import Store
    lineage = types.SimpleNamespace(events=None, stats=dict, untrack=lambda pid: None)
    tmp = Path(tempfile.mkdtemp())
    with (tmp / "replay.jsonl").open("w") as out:
        pipeline = Pipeline(lineage, [], sensors=[types.SimpleNamespace(register=register_effects)],  # type: ignore[arg-type]
                            detector=Detector())
        store_sink, jsonl = StoreSink(Store(tmp / "replay.db"), pipeline.processes), JsonLinesSink(out)
        pipeline.sinks = [store_sink, jsonl]
        opens = [raw for raw in raws if raw[0] == FILE_OPEN]
        with pipeline.lock:
            for info in processes:
                pipeline.processes.seed(info)
            for session in sessions:
                pipeline._open_session(session)
            for raw in opens[-WARM:]:
                pipeline._handle_raw(raw)
            pipeline._flush_sinks()
            counted = opens[:records]
            if stage == "pipeline":
                for raw in counted:
                    pipeline._handle_raw(raw)
                pipeline._flush_sinks()
            else:
                _stages(pipeline, counted, STAGES.index(stage), scrub, record_of, store_sink, jsonl)
    os._exit(0)  # the counted work only: no teardown in the count


def _stages(pipeline: Any, raws: list[bytes], upto: int, scrub: Any, record_of: Any, store_sink: Any,
            jsonl: Any) -> None:
    decode = pipeline.decoder.decode
    detections = pipeline.detections
    for raw in raws:
        event = decode(raw)
        if upto >= 1:
            scrub(event)
        if upto >= 2:
            record = record_of(event)
        if upto >= 3:
            record.json()
        if upto >= 4:
            jsonl.handle(event, record)
        if upto >= 5:
            store_sink.handle(event, record)
        if upto >= 6:
            detections.observe(event, record)
    if upto >= 7:
        store_sink.flush()


def count(source: Path, records: int, stage: str, env: dict[str, str]) -> int:
    """Instructions of one replay under valgrind."""
    done = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                           sys.executable, __file__, "--replay", str(source), str(records), stage],
                          capture_output=True, text=True, env=env, cwd=Path(__file__).parent, check=True)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise SystemExit(f"valgrind gave no count:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def table(source: Path, records: int, env: dict[str, str]) -> list[tuple[str, float]]:
    """(stage, instructions per event beyond the stage before) for every stage."""
    before = count(source, 0, "pipeline", env)
    rows = []
    for stage in STAGES:
        total = count(source, records, stage, env)
        rows.append((stage, (total - before) / records))
        before = total
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--opens", type=int, default=12_000, help="the captured burst (records + warm-up)")
    parser.add_argument("--baseline", metavar="REV", help="count git revision REV's Python first")
    parser.add_argument("--replay", nargs=3, metavar=("PICKLE", "RECORDS", "STAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay:
        replay(Path(args.replay[0]), int(args.replay[1]), args.replay[2])
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed")
    if args.records + WARM > args.opens:
        sys.exit("--opens must exceed --records by the warm-up's 200")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "records.pickle"
        capture(source, args.opens)
        codes = [("this code", dict(os.environ))]
        if args.baseline:
            from ingest import baseline_package
            env = {**os.environ, "PYTHONPATH": str(baseline_package(args.baseline, tmp))}
            codes.insert(0, (args.baseline, env))
        results = [(name, table(source, args.records, env)) for name, env in codes]
    print("| stage | " + " | ".join(name for name, _ in results) + " |")
    print("|---|" + "---|" * len(results))
    for i, stage in enumerate(STAGES):
        label = "routing and the rest" if stage == "pipeline" else stage
        print(f"| {label} | " + " | ".join(f"{rows[i][1] / 1000:.1f}k" for _, rows in results) + " |")
    print("| whole pipeline | " + " | ".join(
        f"{sum(per for _, per in rows) / 1000:.1f}k" for _, rows in results) + " |")


if __name__ == "__main__":
    main()
