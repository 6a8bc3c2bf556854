"""What the plain-HTTP sensor (bpf/sockdata.bpf.c) adds to a write+read pair, as root.

Its programs sit on the write/read/send/recv syscall tracepoints of every process, so the figure
that matters most is the cost for processes vigil does not track (one hash lookup per call).
Modes: no BPF loaded; sensor loaded, process untracked; process tracked. Workloads
(bench/sockdata_workload.py): 64-byte writes and reads on a loopback TCP connection that speaks
HTTP (captured when tracked: one record per write), on one that does not (ignored after its
first write), and on /dev/null and /dev/zero (not sockets). Reported: median CPU ns of the
workload process per pair (the programs run in its syscalls; CPU time keeps other load out) and
the difference to no BPF.

    /opt/vigild/bin/python bench/sockdata_overhead.py [--calls 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from vigild.bpf.lineage import LineageSensor
from vigild.bpf.sockdata import SockDataSensor
from vigild.correlate.tls_stream import TlsStreamDecoder
from vigild.daemon.pipeline import Pipeline

from runner import run_plain, run_tracked

WORKLOAD = str(Path(__file__).with_name("sockdata_workload.py"))
KINDS = ("http", "other", "file")
MODES = ("no BPF", "loaded, untracked", "tracked")


class NullSink:
    def handle(self, event: object, record: dict[str, object]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def one(kind: str, calls: int, tmp: Path, pipeline: Pipeline | None) -> float:
    result = tmp / "result"
    argv = [sys.executable, WORKLOAD, kind, str(calls), str(result)]
    if pipeline is None:
        run_plain(argv)
    else:
        run_tracked(argv, pipeline)
    return float(result.read_text())


def measure(mode: str, calls: int, tmp: Path, ns: dict[tuple[str, str], list[float]]) -> int:
    """One round of every workload in `mode`; returns the records lost."""
    if mode == "no BPF":
        for kind in KINDS:
            ns.setdefault((mode, kind), []).append(one(kind, calls, tmp, None))
        return 0
    lineage = LineageSensor()
    sensor = SockDataSensor(lineage.shared_maps)
    pipeline = Pipeline(lineage, [NullSink()], intent=TlsStreamDecoder(), sensors=[sensor])
    pipeline.start()
    try:
        for kind in KINDS:
            ns.setdefault((mode, kind), []).append(one(kind, calls, tmp, pipeline if mode == "tracked" else None))
    finally:
        pipeline.stop()
        sensor.close()
        lineage.close()
    return pipeline.total_dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ns: dict[tuple[str, str], list[float]] = {}
    dropped = 0
    with tempfile.TemporaryDirectory() as tmp_name:
        for _ in range(args.rounds):
            for mode in MODES:
                dropped += measure(mode, args.calls, Path(tmp_name), ns)
    base = {k: statistics.median(ns[("no BPF", k)]) for k in KINDS}
    print(f"CPU ns per 64-byte write+read pair, median of {args.rounds} rounds of {args.calls:,} pairs")
    print(f"{'mode':<20}" + "".join(f"{k:>12}{'added':>8}" for k in KINDS))
    for mode in MODES:
        cells = "".join(f"{statistics.median(ns[(mode, k)]):>12,.0f}{statistics.median(ns[(mode, k)]) - base[k]:>+8,.0f}"
                        for k in KINDS)
        print(f"{mode:<20}{cells}")
    print(f"records lost: {dropped}")


if __name__ == "__main__":
    main()
