"""The kernel's floor under tool-call placement: what one `cgroup.procs` write costs, per hierarchy.

Placing a held process is one `cgroup.procs` write in each hierarchy holding a controller vigil
limits (memory, pids, cpu on v1: three migrations; one on pure v2). This times those writes alone:
a stopped child is moved back and forth between two sibling groups made below this process's own
cgroup in every mounted hierarchy (on v2 with the controllers its parent offers enabled, so the
migration carries them as vigil's does), and the rename of a group (v1's spares), as root:

    python bench/cgroup_move.py [--moves 300] [--gap-ms 20] [--warm]

Prints p50/p90/p99 µs per write per hierarchy, and the sum per placement. The groups are removed.
`--warm` (vigild installed in this interpreter) times the same moves a second time with vigild's
placement warmer writing its no-op moves the whole time (daemon/tools/placement_warm.py), and what
that costs everyone else: µs per fork+exit+wait of a process, cold and warm, rounds interleaved.
`--window` times a move made a given delay after one no-op move (the stopped child written into
the group it is in), for delays from 0.5 to 40 ms: how long one warm write keeps the path warm,
which the warmer's period must stay under.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import time
from pathlib import Path

NAME = f"vigil-bench-move-{os.getpid()}"


def hierarchies() -> dict[str, Path]:
    """Hierarchy name (v1 controllers, or "cgroup2") -> this process's cgroup directory in it."""
    mounts: dict[str, Path] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _, options = right.split()[:3]
            if fstype not in ("cgroup", "cgroup2"):
                continue
            point = left.split()[4]
            if fstype == "cgroup2":
                mounts.setdefault("cgroup2", Path(point))
            else:
                names = [o for o in options.split(",") if o in ("memory", "pids", "cpu", "freezer")]
                if names:
                    mounts.setdefault(",".join(sorted(names)), Path(point))
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            own["cgroup2" if not controllers else ",".join(sorted(c for c in controllers.split(",")))] = path
    return {name: point / own.get(name, "/").lstrip("/") for name, point in mounts.items()
            if name in own or name == "cgroup2"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_moves(base: Path, pid: int, moves: int, gap_s: float) -> list[float]:
    """µs per cgroup.procs write, alternating between base/a and base/b, `gap_s` apart."""
    targets = [os.open(base / side / "cgroup.procs", os.O_WRONLY) for side in ("a", "b")]
    payload = str(pid).encode()
    out = []
    try:
        for i in range(moves):
            start = time.perf_counter_ns()
            os.write(targets[i % 2], payload)
            out.append((time.perf_counter_ns() - start) / 1e3)
            time.sleep(gap_s)
    finally:
        for fd in targets:
            os.close(fd)
    return out


WINDOW_DELAYS_MS = (0.5, 2.0, 5.0, 8.0, 12.0, 16.0, 20.0, 30.0, 40.0)


def time_window(base: Path, pid: int, moves: int) -> dict[float, list[float]]:
    """Delay (ms) -> µs per move made that long after a no-op move, each pair 100 ms after the
    last (cold before it)."""
    targets = [os.open(base / side / "cgroup.procs", os.O_WRONLY) for side in ("a", "b")]
    payload = str(pid).encode()
    out: dict[float, list[float]] = {}
    at = 0
    try:
        os.write(targets[at], payload)
        for delay in WINDOW_DELAYS_MS:
            for _ in range(moves):
                time.sleep(0.1)
                os.write(targets[at], payload)  # no-op: it is there already
                time.sleep(delay / 1e3)
                at = 1 - at
                start = time.perf_counter_ns()
                os.write(targets[at], payload)
                out.setdefault(delay, []).append((time.perf_counter_ns() - start) / 1e3)
    finally:
        for fd in targets:
            os.close(fd)
    return out


def time_forks(count: int) -> list[float]:
    """µs per fork + _exit + waitpid: what every process on the host pays while the warmer runs
    (the cgroup threadgroup lock's readers take their slow path)."""
    out = []
    for _ in range(count):
        start = time.perf_counter_ns()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        out.append((time.perf_counter_ns() - start) / 1e3)
    return out


class Warm:
    """vigild's warmer, wanted for as long as the block runs."""

    def __init__(self) -> None:
        from vigild.cgroups import detect
        from vigild.daemon.tools.placement_warm import open_warmer

        host = detect()
        self.warmer = open_warmer(1 if host.v1 else 2, frozenset({"memory", "pids", "cpu"}))
        if self.warmer.refused:
            raise SystemExit(f"the warmer cannot run here: {self.warmer.refused}")

    def __enter__(self) -> Warm:
        self.warmer.want(3600)
        time.sleep(0.05)  # its first write waits the grace period
        return self

    def __exit__(self, *exc: object) -> None:
        self.warmer.cool()
        time.sleep(0.05)  # the rcu_sync goes idle one grace period after the last write


def time_renames(base: Path, moves: int) -> list[float]:
    """µs per rename of an empty group (v1 only: cgroup2 refuses renames)."""
    out = []
    names = [base / "r1", base / "r2"]
    names[0].mkdir()
    try:
        for i in range(moves):
            start = time.perf_counter_ns()
            os.rename(names[i % 2], names[(i + 1) % 2])
            out.append((time.perf_counter_ns() - start) / 1e3)
    finally:
        for name in names:
            if name.exists():
                name.rmdir()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--moves", type=int, default=300)
    parser.add_argument("--window", action="store_true", help="how long one no-op move keeps moves fast")
    parser.add_argument("--warm", action="store_true", help="also with vigild's placement warmer running")
    parser.add_argument("--forks", type=int, default=2000, help="forks per round for --warm's cost (5 rounds)")
    parser.add_argument("--gap-ms", type=float, default=0.0,
                        help="pause between writes: a placement comes alone, after the kernel's "
                             "cgroup lock has gone back to its fast mode (an RCU grace period)")
    args = parser.parse_args()
    child = os.fork()
    if child == 0:
        os.kill(os.getpid(), signal.SIGSTOP)
        os._exit(0)
    warm = Warm() if args.warm else None
    made: list[Path] = []
    results: dict[str, list[float]] = {}
    windows: dict[str, dict[float, list[float]]] = {}
    renames: dict[str, list[float]] = {}
    try:
        for name, own in hierarchies().items():
            base = own / NAME
            base.mkdir()
            made.append(base)
            if name == "cgroup2":
                offered = (own / "cgroup.controllers").read_text().split()
                wanted = [c for c in ("memory", "pids", "cpu") if c in offered]
                if wanted:
                    try:
                        (base / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
                        name = f"cgroup2 (+{','.join(wanted)})"
                    except OSError as exc:
                        name = f"cgroup2 (controllers not enabled: {exc.strerror})"
            for side in ("a", "b"):
                (base / side).mkdir()
            results[name] = time_moves(base, child, args.moves, args.gap_ms / 1e3)
            if args.window and name.startswith(("cgroup2", "pids")):
                windows[name] = time_window(base, child, max(5, args.moves // 10))
            if warm is not None:
                with warm:
                    results[f"{name} warm"] = time_moves(base, child, args.moves, args.gap_ms / 1e3)
            with open(own / "cgroup.procs", "w") as f:
                f.write(str(child))
            if not name.startswith("cgroup2"):
                renames[name] = time_renames(base, args.moves)
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        for base in made:
            for side in ("a", "b"):
                if (base / side).exists():
                    (base / side).rmdir()
            base.rmdir()
    print(f"kernel {os.uname().release}, {args.moves} moves per hierarchy {args.gap_ms} ms apart, µs per write")
    print(f"{'hierarchy':40} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}")
    for name, values in results.items():
        print(f"{name:40} {pct(values, .5):8.1f} {pct(values, .9):8.1f} {pct(values, .99):8.1f} {max(values):8.1f}")
    for name, values in renames.items():
        print(f"{'rename in ' + name:40} {pct(values, .5):8.1f} {pct(values, .9):8.1f} {pct(values, .99):8.1f} "
              f"{max(values):8.1f}")
    for name, by_delay in windows.items():
        print(f"move after one no-op move in {name}: " + ", ".join(
            f"{delay:g} ms {statistics.median(values):.0f}" for delay, values in by_delay.items()) + " (µs, medians)")
    if warm is not None:
        forks: dict[str, list[float]] = {"cold": [], "warm": []}
        for _ in range(5):
            forks["cold"].append(statistics.median(time_forks(args.forks)))
            with warm:
                forks["warm"].append(statistics.median(time_forks(args.forks)))
        warm.warmer.stop()
        cold, hot = statistics.median(forks["cold"]), statistics.median(forks["warm"])
        print(f"fork+exit+wait µs (median of 5 rounds' medians): cold {cold:.1f}, warm {hot:.1f} "
              f"({hot / cold:.2f}x); warmer: {warm.warmer.writes} no-op moves")
    placed = [name for name in results if not name.endswith(" warm") and (
        name.split(" ")[0] in ("memory", "pids", "cpu", "cpu,cpuacct") or name.startswith("cgroup2 (+"))]
    if placed:
        total = sum(statistics.median(results[name]) for name in placed)
        print(f"one placement's writes ({', '.join(placed)}): {total:.1f} µs at the medians")
        if warm is not None:
            total = sum(statistics.median(results[f"{name} warm"]) for name in placed)
            print(f"the same, warm: {total:.1f} µs at the medians")


if __name__ == "__main__":
    main()
