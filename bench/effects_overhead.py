"""Cost of file and network effect tracing, measured side by side in one run (as root).

Workloads: unpacking a source tarball (2,000 files in 100 directories), `git clone` of a local
repository of the same tree, 200,000 writes of 16 bytes (dd) and 100,000 read-only opens of one
file (Python). Modes: untraced (no BPF loaded), loaded but not tracked, tracked with in-kernel
aggregation (one record per file written, a thread's repeated read-only opens of a file folded
into counts), tracked with writes aggregated but every open a record, and tracked without either
(one record per write call and per open). Events are those reaching the pipeline's sinks.

    /opt/vigild/bin/python bench/effects_overhead.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from vigild.bpf.effects import EffectsSensor
from vigild.bpf.effects_events import EFFECT_KIND_NAMES
from vigild.bpf.lineage import LineageSensor
from vigild.daemon.pipeline import Pipeline

from runner import run_plain, run_tracked

FILES, DIRS, WRITES, REOPENS = 2000, 100, 200_000, 100_000
EFFECT_TYPES = set(EFFECT_KIND_NAMES.values())
MODES = ("untraced", "loaded, not tracked", "tracked, aggregated", "tracked, opens each", "tracked, per call")
REOPEN = "import os, sys\nfor _ in range(int(sys.argv[2])):\n    os.close(os.open(sys.argv[1], os.O_RDONLY))\n"


class CountingSink:
    def __init__(self) -> None:
        self.effects = 0

    def handle(self, event: object, record: dict[str, object]) -> None:
        if getattr(event, "type", "") in EFFECT_TYPES:
            self.effects += 1

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def make_sources(tmp: Path) -> tuple[Path, Path]:
    """A source tree as a tarball and as a git repository."""
    tree = tmp / "src"
    for i in range(FILES):
        path = tree / f"dir{i % DIRS:03d}" / f"file{i:05d}.c"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"/* file {i} */\nint f{i}(void) {{ return {i}; }}\n" * 20)
    tarball = tmp / "src.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(tree, arcname="src")
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "init", "-q", str(tree)], check=True)
    subprocess.run([*git, "-C", str(tree), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(tree), "commit", "-qm", "tree"], check=True)
    return tarball, tree


def workloads(tmp: Path, tarball: Path, repo: Path) -> dict[str, tuple[list[str], Path]]:
    """name -> (argv, output to remove after each run)"""
    out = tmp / "out"
    return {
        "untar": (["tar", "-xf", str(tarball), "-C", str(out)], out),
        "git clone": (["git", "clone", "-q", "--no-hardlinks", str(repo), str(out / "clone")], out),
        "16B writes": (["dd", "if=/dev/zero", f"of={out / 'small.bin'}", "bs=16", f"count={WRITES}", "status=none"],
                       out),
        "reopens": ([sys.executable, "-S", "-c", REOPEN, str(tarball), str(REOPENS)], out),
    }


def measure(loads: dict[str, tuple[list[str], Path]], mode: str, times: dict, events: dict, drops: dict) -> None:
    if mode == "untraced":
        for name, (argv, out) in loads.items():
            out.mkdir()
            times.setdefault((mode, name), []).append(run_plain(argv))
            shutil.rmtree(out)
        return
    lineage = LineageSensor()
    effects = EffectsSensor(lineage.shared_maps, aggregate=mode != "tracked, per call",
                            fold_opens=mode in ("tracked, aggregated", "loaded, not tracked"))
    sink = CountingSink()
    pipeline = Pipeline(lineage, [sink], sensors=[effects])
    pipeline.start()
    try:
        for name, (argv, out) in loads.items():
            out.mkdir()
            before = sink.effects
            if mode == "loaded, not tracked":
                times.setdefault((mode, name), []).append(run_plain(argv))
            else:
                times.setdefault((mode, name), []).append(run_tracked(argv, pipeline))
                time.sleep(0.05)  # sums written at exit follow the exit record
            pipeline.run_once(0)
            events[(mode, name)] = sink.effects - before
            shutil.rmtree(out)
    finally:
        pipeline.stop()
        drops[mode] = drops.get(mode, 0) + pipeline.total_dropped
        effects.close()
        lineage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[tuple[str, str], list[float]] = {}
    events: dict[tuple[str, str], int] = {}
    drops: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tarball, repo = make_sources(tmp)
        loads = workloads(tmp, tarball, repo)
        for _ in range(args.rounds):
            for mode in MODES:
                measure(loads, mode, times, events, drops)
    names = list(loads)
    base = {n: statistics.median(times[("untraced", n)]) for n in names}
    print(f"{'mode':<22}" + "".join(f"{n:>14}{'ratio':>7}" for n in names))
    for mode in MODES:
        cells = "".join(f"{statistics.median(times[(mode, n)]):>13.3f}s"
                        f"{statistics.median(times[(mode, n)]) / base[n]:>7.2f}" for n in names)
        print(f"{mode:<22}{cells}")
    print("\neffect events reaching user space (last round), and per second of workload:")
    for mode in ("tracked, aggregated", "tracked, opens each", "tracked, per call"):
        counts = []
        for n in names:
            t = statistics.median(times[(mode, n)])
            counts.append(f"{n}: {events[(mode, n)]:,} ({events[(mode, n)] / t:,.0f}/s)")
        print(f"  {mode:<20} " + "; ".join(counts) + f"; dropped: {drops.get(mode, 0)}")
    agg = {n: max(events[("tracked, aggregated", n)], 1) for n in names}
    print("  per call / aggregated: " + "; ".join(
        f"{n}: {events[('tracked, per call', n)] / agg[n]:,.1f}x" for n in names))


if __name__ == "__main__":
    main()
