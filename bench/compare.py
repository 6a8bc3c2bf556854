"""vigil beside the anchors: bcc's libbpf-tools `execsnoop` and `opensnoop`, in one run (as root).

The anchors are CO-RE C tools that print one line per exec/open of every process on the host: the
cost a well-built tracer pays per event. vigil does more per event (argv, lineage, effects with
paths, decoding), so the ratios say what that costs. Workloads time themselves (the timer starts
inside the workload, so tracer start-up is not counted):

- `exec`: 2,000 posix_spawn + wait of /bin/true;
- `opens`: 100,000 open+close of one file;
- `untar`: `tar -x` of 2,000 small files in 100 directories.

Modes, interleaved in every round (so load drift hits them all alike):
- `untraced`: nothing loaded;
- `execsnoop`, `opensnoop`: the anchor running host-wide, its output to /dev/null;
- `vigil, untracked`: `vigil trace` running for another process; the workload is what every
  other process on the host pays;
- `vigil, tracked`: the workload started under `vigil trace -o json` (events to /dev/null).

The anchors are built from a bcc source tree (`--bcc-src`, e.g. a `git clone` of
github.com/iovisor/bcc): their BPF side with clang, their skeletons with bpftool, linked against
the system libbpf. Syscall tracepoints need tracefs; it is mounted at /sys/kernel/tracing when absent.

    /opt/vigild/bin/python bench/compare.py --bcc-src ~/bcc [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

WORKLOADS = ("exec", "opens", "untar")
MODES = ("untraced", "execsnoop", "opensnoop", "vigil, untracked", "vigil, tracked")
ANCHORS = ("execsnoop", "opensnoop")
# The libbpf-tools sources each anchor needs besides its own three files.
ANCHOR_HELPERS = ("trace_helpers", "errno_helpers", "uprobe_helpers", "btf_helpers", "compat",
                  "map_helpers", "path_helpers")

WORKLOAD_PY = r"""
import os, subprocess, sys, time
kind, out, arg = sys.argv[1], sys.argv[2], sys.argv[3]
start = time.perf_counter()
if kind == "exec":
    for _ in range(2000):
        pid = os.posix_spawn("/bin/true", ["/bin/true"], {})
        os.waitpid(pid, 0)
elif kind == "opens":
    for _ in range(100_000):
        os.close(os.open(arg, os.O_RDONLY))
else:
    dest = arg + ".out"
    os.makedirs(dest, exist_ok=True)
    subprocess.run(["tar", "-xf", arg, "-C", dest], check=True)
    subprocess.run(["rm", "-rf", dest], check=True)
with open(out, "w") as f:
    f.write(repr(time.perf_counter() - start))
"""


def ensure_tracefs() -> None:
    """The anchors attach to syscall tracepoints, which libbpf finds through tracefs."""
    if not Path("/sys/kernel/tracing/events").is_dir():
        subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"], check=True)


def build_anchors(bcc_src: Path, work: Path) -> dict[str, Path]:
    """Build execsnoop and opensnoop from libbpf-tools against the running kernel's BTF.

    Built by hand rather than with libbpf-tools' Makefile: that Makefile builds its own libbpf
    and bpftool from git submodules, which a source archive without submodules lacks."""
    src = bcc_src / "libbpf-tools"
    build = work / "anchors"
    build.mkdir()
    for item in src.iterdir():
        if item.suffix in (".c", ".h"):
            shutil.copy(item, build / item.name)
    with open(build / "vmlinux.h", "w") as header:
        subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"],
                       stdout=header, check=True)
    clang = shutil.which("clang-19") or "clang"
    helpers = [f"{h}.c" for h in ANCHOR_HELPERS if (build / f"{h}.c").exists()]
    tools: dict[str, Path] = {}
    for tool in ANCHORS:
        subprocess.run([clang, "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86", "-I.", "-c",
                        f"{tool}.bpf.c", "-o", f"{tool}.bpf.o"], cwd=build, check=True)
        with open(build / f"{tool}.skel.h", "w") as skel:
            subprocess.run(["bpftool", "gen", "skeleton", f"{tool}.bpf.o"], cwd=build, stdout=skel, check=True)
        subprocess.run(["cc", "-O2", "-I.", "-o", tool, f"{tool}.c", *helpers, "-lbpf", "-lelf", "-lz"],
                       cwd=build, check=True)
        tools[tool] = build / tool
    return tools


def make_inputs(work: Path) -> dict[str, str]:
    """The file the open loop opens and the tarball untar unpacks, per workload."""
    tree = work / "tree"
    for d in range(100):
        (tree / f"d{d}").mkdir(parents=True)
        for f in range(20):
            (tree / f"d{d}" / f"f{f}.txt").write_bytes(b"x" * 512)
    tarball = work / "tree.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(tree, arcname="tree")
    (work / "opened").write_bytes(b"x")
    return {"exec": "-", "opens": str(work / "opened"), "untar": str(tarball)}


class Background:
    """A tracer running beside the workload, ready once it has printed its first line."""

    def __init__(self, argv: list[str], ready_line: bool) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE if ready_line else subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if ready_line:
            assert self.proc.stdout is not None
            self.proc.stdout.readline()
            # keep draining so a full pipe never stalls the tracer
            self._sink = subprocess.Popen(["cat"], stdin=self.proc.stdout, stdout=subprocess.DEVNULL)
        else:
            time.sleep(1.5)  # the anchors print a header before attaching: give them their start-up

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def run_workload(kind: str, arg: str, work: Path, vigil: str | None) -> float:
    out = work / "elapsed"
    argv = [sys.executable, "-c", WORKLOAD_PY, kind, str(out), arg]
    if vigil:
        argv = [vigil, "trace", "-o", "json", "--", *argv]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return float(out.read_text())


def one_round(inputs: dict[str, str], work: Path, anchors: dict[str, Path], vigil: str) -> dict[tuple[str, str], float]:
    times: dict[tuple[str, str], float] = {}
    for mode in MODES:
        background: Background | None = None
        if mode in anchors:
            background = Background([str(anchors[mode])], ready_line=False)
        elif mode == "vigil, untracked":
            background = Background([vigil, "trace", "-o", "json", "--", "sleep", "3600"], ready_line=True)
        try:
            for kind in WORKLOADS:
                tracer = vigil if mode == "vigil, tracked" else None
                times[(mode, kind)] = run_workload(kind, inputs[kind], work, tracer)
        finally:
            if background:
                background.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bcc-src", type=Path, required=True, help="a bcc source tree (with libbpf-tools/)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--vigil", default=shutil.which("vigil") or "/opt/vigild/bin/vigil")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("compare.py loads BPF: run it as root")
    ensure_tracefs()
    with tempfile.TemporaryDirectory(prefix="vigil-compare-") as tmp:
        work = Path(tmp)
        anchors = build_anchors(args.bcc_src, work)
        inputs = make_inputs(work)
        rounds = [one_round(inputs, work, anchors, args.vigil) for _ in range(args.rounds)]
    print(f"{args.rounds} rounds, medians; ratio = mode / untraced in the same round")
    print(f"{'mode':<18}" + "".join(f"{k:>22}" for k in WORKLOADS))
    for mode in MODES:
        cells = []
        for kind in WORKLOADS:
            secs = statistics.median(r[(mode, kind)] for r in rounds)
            ratio = statistics.median(r[(mode, kind)] / r[("untraced", kind)] for r in rounds)
            cells.append(f"{secs * 1000:9.1f} ms ×{ratio:5.2f}")
        print(f"{mode:<18}" + "".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
