"""Cost of process-lineage tracing, measured side by side in one run (as root).

Workload: 2,000 fork+exec of /bin/true from a shell loop, and 1M getpid() syscalls in a C loop.
Modes: untraced (no BPF loaded), loaded but the workload not tracked (what every other process on
the host pays), and tracked (the workload is a traced root; events flow to a counting sink).

    /opt/vigild/bin/python bench/lineage_overhead.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from vigild.bpf.lineage import LineageSensor
from vigild.daemon.pipeline import Pipeline

from runner import run_plain, run_tracked

GETPID_C = r"""
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(int argc, char **argv) { long n = atol(argv[1]); for (long i = 0; i < n; i++) syscall(SYS_getpid); return 0; }
"""
EXECS = 2000
GETPIDS = 1_000_000


class CountingSink:
    def __init__(self) -> None:
        self.events = 0

    def handle(self, event: object, record: dict[str, object]) -> None:
        self.events += 1

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def build_getpid(tmp: Path) -> Path:
    src = tmp / "getpid_loop.c"
    src.write_text(GETPID_C)
    exe = tmp / "getpid_loop"
    subprocess.run([shutil.which("cc") or "gcc", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def workloads(getpid_exe: Path) -> dict[str, list[str]]:
    return {
        "exec": ["sh", "-c", f"i=0; while [ $i -lt {EXECS} ]; do /bin/true; i=$((i+1)); done"],
        "getpid": [str(getpid_exe), str(GETPIDS)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        loads = workloads(build_getpid(Path(tmp)))
        times: dict[tuple[str, str], list[float]] = {}
        events: dict[str, int] = {}
        for _ in range(args.rounds):
            for name, argv in loads.items():
                times.setdefault(("untraced", name), []).append(run_plain(argv))
            sensor = LineageSensor()
            sink = CountingSink()
            pipeline = Pipeline(sensor, [sink])
            pipeline.start()
            try:
                for name, argv in loads.items():
                    times.setdefault(("loaded, not tracked", name), []).append(run_plain(argv))
                for name, argv in loads.items():
                    before = sink.events
                    times.setdefault(("tracked", name), []).append(run_tracked(argv, pipeline))
                    events[name] = sink.events - before
            finally:
                pipeline.stop()
                sensor.close()
            dropped = pipeline.total_dropped
    base = {name: statistics.median(times[("untraced", name)]) for name in loads}
    print(f"{'mode':<22}{'2000 execs':>12}{'ratio':>8}{'getpid ns':>12}{'ratio':>8}")
    for mode in ("untraced", "loaded, not tracked", "tracked"):
        ex = statistics.median(times[(mode, "exec")])
        gp = statistics.median(times[(mode, "getpid")])
        print(f"{mode:<22}{ex:>11.3f}s{ex / base['exec']:>8.2f}{gp / GETPIDS * 1e9:>12.0f}{gp / base['getpid']:>8.2f}")
    ex_tracked = statistics.median(times[("tracked", "exec")])
    print(f"\nevents from the tracked exec loop: {events['exec']} "
          f"({events['exec'] / ex_tracked:,.0f} events/s), dropped: {dropped}")
    print(f"events from the tracked getpid loop: {events['getpid']} (lineage traces no syscalls)")


if __name__ == "__main__":
    main()
