"""Ingest: events per second the pipeline decodes, routes, checks for detections and records
(SQLite store and JSON Lines both on), on one core (as root).

A real burst of file opens runs tracked (lineage and effects loaded) while the pipeline keeps
the raw ring-buffer records it drains; the same records are then replayed through a second
pipeline with the store, the JSON sink and the detector, timed without the kernel's side: wall
time, and the thread's CPU time, which other work on a shared machine inflates far less (its
events/s is what one core of its own would do). An in-process cProfile of one replay names the
hot spots (`--profile`).

The kernel folds a thread's repeated read-only opens of a file into counted records
(effects_folds.bpf.h): each measurement runs folded and with folding off (one record per open),
and says both figures, records/s the pipeline handles and opens/s those records stand for (the
opens absorbed). A burst of `--files` distinct files opened round robin (default 1; the kernel
tracks 64 files per thread, 4 per hash set: well past them nothing folds) shows where folding
stops helping.

`--sustained` and `--burst` then run paced opens live through the whole pipeline
(bench/ingest_live.py): 20,000 opens/s for 60 s, and 100,000 opens/s for 5 s (rate:seconds to
change them), each saying what the kernel emitted and lost, what reached the store and when.

    /opt/vigild/bin/python bench/ingest.py [--opens 30000] [--rounds 3] [--profile] [--baseline REV]
                                           [--files N | --distinct] [--sustained [RATE:S]] [--burst [RATE:S]]

`--distinct`: each open names another file (what kernel-side folding of repeated opens leaves),
and the per-path caches are emptied before each replay.

`--baseline REV` first runs the same measurement on the code of git revision REV (its Python
from `git archive`, this build's BPF objects, so REV must have the same BPF headers), then on
this code: before and after in one run, on the same machine state.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vigild.bpf.effects import EffectsSensor
from vigild.bpf.lineage import LineageSensor
from vigild.correlate.detections import Detector
from vigild.daemon.pipeline import Pipeline
from vigild.daemon.sinks import JsonLinesSink, StoreSink
from vigild.daemon.store import Store

from ingest_live import run_live
from runner import run_tracked

BURST = ("import os, sys\nfiles = sys.argv[2:]\nfor i in range(int(sys.argv[1])):\n"
         "    os.close(os.open(files[i % len(files)], os.O_RDONLY))\n")
# --distinct: every open names another file (a clone's, an install's), as what the kernel does not
# fold away looks
DISTINCT = ("import os, sys\nfor name in sorted(os.listdir(sys.argv[1]))[:int(sys.argv[2])]:\n"
            "    os.close(os.open(os.path.join(sys.argv[1], name), os.O_RDONLY))\n")
# Caches that remember answers per path or directory (path joins, redaction; join_path is the
# name before 2026-12-02 05:30, for `--baseline`): a distinct-file replay clears them before each
# round, or every round after the first would replay from them.
PATH_CACHES = (("vigild.bpf.effects_events", "join_path"), ("vigild.bpf.effects_events", "_directory"),
               ("vigild.correlate.redact", "_redact_short"))


class NullSink:
    def handle(self, event: object, record: object = None) -> None:
        """record: absent in revisions before the pipeline built one record per event
        (`--baseline`)."""

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def capture(tmp: Path, opens: int, files: int, fold: bool, distinct: bool = False) -> tuple[list[bytes], Pipeline]:
    """The raw records of one tracked burst, as the pipeline drained them; its pipeline (stopped)
    for the process table and sessions the replay starts from. distinct: each open is of another
    file."""
    script = tmp / "burst.py"
    if distinct:
        folder = tmp / "modules"
        folder.mkdir()
        for i in range(opens):
            (folder / f"module_{i:06d}.py").write_text("x")
        script.write_text(DISTINCT)
        argv = [sys.executable, str(script), str(folder), str(opens)]
    else:
        targets = [tmp / f"opened{i}.txt" for i in range(files)]
        for target in targets:
            target.write_text("x")
        script.write_text(BURST)
        argv = [sys.executable, str(script), str(opens), *map(str, targets)]
    lineage = LineageSensor()
    effects = EffectsSensor(lineage.shared_maps, fold_opens=fold)
    pipeline = Pipeline(lineage, [NullSink()], sensors=[effects])
    raws: list[bytes] = []
    handle_raw = pipeline._handle_raw

    def keep(raw: bytes) -> None:
        raws.append(raw)
        handle_raw(raw)

    pipeline._handle_raw = keep  # type: ignore[method-assign]
    pipeline.start()
    try:
        run_tracked(argv, pipeline)
    finally:
        pipeline.stop()
        print(f"captured {len(raws):,} records of a {opens:,}-open burst of {opens if distinct else files} file(s) "
              f"({'folded' if fold else 'one record per open'}); lost in the kernel: {pipeline.total_dropped}",
              file=sys.stderr)
        effects.close()
        lineage.close()
    return raws, pipeline


def replay(raws: list[bytes], captured: Pipeline, tmp: Path, round_no: int,
           cold: bool = False) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, events recorded) for the records through a pipeline with
    store + JSON + detector. cold: the per-path caches start empty."""
    if cold:
        for module_name, name in PATH_CACHES:
            cached = getattr(sys.modules.get(module_name), name, None)
            if cached is not None and hasattr(cached, "cache_clear"):
                cached.cache_clear()
    lineage = LineageSensor()
    effects = EffectsSensor(lineage.shared_maps)
    store = Store(tmp / f"replay{round_no}.db")
    with open(tmp / f"replay{round_no}.jsonl", "w") as out:
        pipeline = Pipeline(lineage, [], sensors=[effects], detector=Detector())
        pipeline.sinks = [StoreSink(store, pipeline.processes), JsonLinesSink(out)]
        try:
            with pipeline.lock:
                for info in captured.processes.processes.values():
                    pipeline.processes.seed(info)
                for session in captured.sessions.values():
                    pipeline._open_session(session)  # its session_start: the store's row for its events
                start, start_cpu = time.perf_counter(), time.thread_time()
                for raw in raws:
                    pipeline._handle_raw(raw)
                for sink in pipeline.sinks:
                    sink.flush()
                elapsed, cpu = time.perf_counter() - start, time.thread_time() - start_cpu
        finally:
            for sink in pipeline.sinks:
                sink.close()
            effects.close()
            lineage.close()
    return elapsed, cpu, sum(pipeline.counts.values())


def baseline(rev: str, argv: list[str], tmp: Path) -> None:
    """Run this benchmark against the Python of git revision `rev`."""
    pkg = baseline_package(rev, tmp)
    print(f"baseline {rev}: ", end="", flush=True)
    subprocess.run([sys.executable, __file__, *argv], check=True, cwd=Path(__file__).parent,
                   env={**os.environ, "PYTHONPATH": str(pkg)})
    print("this code: ", end="", flush=True)


def baseline_package(rev: str, tmp: Path) -> Path:
    """A PYTHONPATH entry that imports git revision `rev`'s Python as `vigild`, with this
    build's BPF objects (bench/ingest_instructions.py counts it too)."""
    repo = Path(__file__).resolve().parent.parent
    # Every record layout and config the Python mirrors read is declared in the headers; a .c
    # change (a default, a branch) leaves the old Python able to read this build's objects.
    headers = ["bpf/*.h"]
    if subprocess.run(["git", "-C", str(repo), "diff", "--quiet", rev, "--", *headers]).returncode != 0:
        sys.exit(f"{rev} has other BPF headers than this build: its mirrors would not match these objects")
    src, pkg = tmp / "src", tmp / "pkg" / "vigild"
    src.mkdir()
    pkg.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    import vigild.bpf
    for obj in Path(vigild.bpf.__file__).parent.glob("*.bpf.o"):
        shutil.copy(obj, src / "bpf")
    (pkg / "__init__.py").touch()
    for name in ("daemon", "bpf", "correlate", "cgroups"):  # the layout pyproject.toml maps
        (pkg / name).symlink_to(src / name)
    return pkg.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opens", type=int, default=30_000)
    parser.add_argument("--files", type=int, default=1, help="distinct files the burst opens round robin")
    parser.add_argument("--distinct", action="store_true", help="each open of another file (caches cold)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print the top functions of one more replay")
    parser.add_argument("--baseline", metavar="REV", help="measure git revision REV first")
    parser.add_argument("--sustained", nargs="?", const="20000:60", metavar="RATE:S",
                        help="then paced opens live (default 20000/s for 60 s)")
    parser.add_argument("--burst", nargs="?", const="100000:5", metavar="RATE:S",
                        help="then a paced burst live (default 100000/s for 5 s)")
    args = parser.parse_args()
    passed = ["--opens", str(args.opens), "--files", str(args.files), "--rounds", str(args.rounds)]
    passed += ["--distinct"] if args.distinct else []
    for name in ("sustained", "burst"):
        if getattr(args, name):
            passed += [f"--{name}", getattr(args, name)]
    if args.baseline:
        with tempfile.TemporaryDirectory() as tmp_name:
            baseline(args.baseline, passed, Path(tmp_name))
    all_cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(all_cores)})  # one core
    for fold in (True, False):
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            raws, captured = capture(tmp, args.opens, args.files, fold, args.distinct)
            results = [replay(raws, captured, tmp, i, args.distinct) for i in range(args.rounds)]
            seconds = statistics.median(wall for wall, _, _ in results)
            cpu = statistics.median(cpu for _, cpu, _ in results)
            events = results[0][2]
            print(f"{'folded' if fold else 'one record per open'}: replayed {len(raws):,} records -> {events:,} "
                  f"events recorded (store + JSON + detections): median wall {seconds:.3f} s, "
                  f"{events / seconds:,.0f} events/s; median CPU {cpu:.3f} s, {events / cpu:,.0f} events/s, "
                  f"{cpu / events * 1e6:.1f} µs/event; {args.opens:,} opens absorbed: {args.opens / cpu:,.0f} "
                  f"opens/s of CPU", flush=True)
            if args.profile:
                profile = cProfile.Profile()
                profile.runcall(replay, raws, captured, tmp, args.rounds, args.distinct)
                pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    os.sched_setaffinity(0, all_cores)  # the live runs pin the pipeline and the workload apart
    for spec in (args.sustained, args.burst):
        for fold in (True, False):
            if spec:
                rate, seconds_text = spec.split(":")
                with tempfile.TemporaryDirectory() as tmp_name:
                    print(run_live(int(rate), float(seconds_text), Path(tmp_name), fold).line(), flush=True)


if __name__ == "__main__":
    main()
