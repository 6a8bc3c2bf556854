"""What vigil costs processes it does not track, and what it costs when idle (issue 14, goals 3 and 5).

Side by side in one run, each round going through every mode (no vigil, then each given vigil
install, e.g. the branch before and after a change):

- ns per syscall of an untracked process: a C loop of 1M getpid() and one of 1M 1-byte write()s
  to /dev/null (the fastest of 20 chunks: preemption on a shared machine is not the syscall's
  cost), while `vigil trace -- sleep` runs (everything loaded and attached);
- µs per HTTPS request (one SSL write, its reads) of a keep-alive client against a local TLS
  server (both the system Python, on the system libssl): untracked while vigil runs, and tracked
  (the client run under `vigil trace`);
- vigild with nothing to trace: CPU % of one core over 30 s (its own threads, from /proc) and RSS.

    /opt/vigild-perf/bin/python bench/untracked_cost.py --vigil before=/opt/vigild-perf-before/bin/python \\
        --vigil after=/opt/vigild-perf/bin/python [--rounds 5] [--idle-s 30]

Must run as root; servers listen on loopback only.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOOP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
    /* n calls in 20 chunks, timed in this thread's CPU time (BPF programs and uprobe traps run
     * in it; other processes' turns on the CPU do not); the fastest chunk is reported */
    long n = atol(argv[2]), chunk = n / 20;
    int fd = open("/dev/null", O_WRONLY), getpid_loop = !strcmp(argv[1], "getpid");
    double best = 1e18;
    for (int c = 0; c < 20; c++) {
        struct timespec a, b;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
        for (long i = 0; i < chunk; i++) {
            if (getpid_loop) syscall(SYS_getpid);
            else if (write(fd, "x", 1) != 1) return 1;
        }
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
        double ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / chunk;
        if (ns < best) best = ns;
    }
    printf("%.2f\n", best);
    return 0;
}
"""

SERVER = r"""
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    def do_GET(self):
        body = b"x" * 512
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""

CLIENT = r"""
import http.client, ssl, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
for _ in range(50):  # warm-up: handshake, first allocations
    conn.request("GET", "/"); conn.getresponse().read()
start, cpu = time.perf_counter(), time.process_time()
for _ in range(n):
    conn.request("GET", "/"); conn.getresponse().read()
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
with open(sys.argv[3], "w") as out:
    out.write(f"{wall / n * 1e6:.2f} {cpu / n * 1e6:.2f}")
"""

SYSTEM_PYTHON = "/usr/bin/python3"  # dynamically linked to the system libssl, which vigil hooks
SYSCALLS = 1_000_000
REQUESTS = 2000


def compile_loop(tmp: Path) -> Path:
    src, exe = tmp / "loop.c", tmp / "loop"
    src.write_text(LOOP_C)
    subprocess.run(["cc", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def make_cert(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@contextmanager
def tls_server(tmp: Path) -> Iterator[int]:
    cert, key = make_cert(tmp)
    (tmp / "server.py").write_text(SERVER)
    proc = subprocess.Popen([SYSTEM_PYTHON, str(tmp / "server.py"), str(cert), str(key)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@contextmanager
def vigil_running(python: str | None) -> Iterator[None]:
    """`vigil trace -- sleep` running (all programs loaded and attached) while the block runs;
    nothing when python is None."""
    if python is None:
        yield
        return
    proc = subprocess.Popen([python, "-m", "vigild.daemon.cli", "trace", "-o", "json", "--", "sleep", "3600"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not any(_comm(child) == "sleep" for child in _children(proc.pid)):  # released: loaded
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"vigil trace with {python} did not start")
            time.sleep(0.1)
        time.sleep(1)
        yield
    finally:
        os.killpg(proc.pid, 15)
        proc.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def idle_vigild(python: str, tmp: Path, seconds: float) -> tuple[float, float]:
    """(CPU % of one core, RSS MiB) of a vigild tracing nothing, over `seconds`."""
    work = Path(tempfile.mkdtemp(dir=tmp))
    (work / "config.toml").write_text("[discovery]\ndefault_agents = false\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sock = work / "vigild.sock"
    proc = subprocess.Popen([python, "-m", "vigild.daemon.service", "--config", str(work / "config.toml"),
                             "--db", str(work / "vigil.db"), "--metrics-address", f"127.0.0.1:{port}",
                             "--socket", str(sock)], stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"vigild with {python} did not start")
            time.sleep(0.1)
        time.sleep(3)
        before, start = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        share = (cpu_seconds(proc.pid) - before) / (time.monotonic() - start)
        return share * 100, rss_mib(proc.pid)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait()


def measure_loop(loop: Path, what: str) -> float:
    return float(subprocess.run([str(loop), what, str(SYSCALLS)], capture_output=True, text=True,
                                check=True).stdout)


def measure_client(client: Path, port: int, tracked_by: str | None) -> tuple[float, float]:
    """µs per request, wall and the client's own CPU (its uprobe traps run in it; a loaded
    machine's waits do not); the client writes them to a file (under `vigil trace` its stdout is
    vigil's)."""
    result = client.with_suffix(".result")
    argv = [SYSTEM_PYTHON, str(client), str(port), str(REQUESTS), str(result)]
    if tracked_by is not None:
        argv = [tracked_by, "-m", "vigild.daemon.cli", "trace", "-o", "json", "--", *argv]
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall, cpu = result.read_text().split()
    return float(wall), float(cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vigil", action="append", default=[], metavar="LABEL=PYTHON",
                        help="a vigil install to measure (its venv's python); repeatable")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle-s", type=float, default=30.0)
    args = parser.parse_args()
    installs = dict(item.split("=", 1) for item in args.vigil)
    if not installs:
        installs = {"this": sys.executable}
    results: dict[tuple[str, str], list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        loop = compile_loop(tmp)
        client = tmp / "client.py"
        client.write_text(CLIENT)
        with tls_server(tmp) as port:
            for rnd in range(args.rounds):
                for label, python in [("no vigil", None), *installs.items()]:
                    with vigil_running(python):
                        results[(label, "getpid ns")].append(measure_loop(loop, "getpid"))
                        results[(label, "write ns")].append(measure_loop(loop, "write"))
                        wall, cpu = measure_client(client, port, None)
                        results[(label, "https untracked us")].append(wall)
                        results[(label, "https untracked cpu us")].append(cpu)
                    if python is not None:
                        wall, cpu = measure_client(client, port, python)
                        results[(label, "https tracked us")].append(wall)
                        results[(label, "https tracked cpu us")].append(cpu)
                        cpu, rss = idle_vigild(python, tmp, args.idle_s)
                        results[(label, "idle cpu %")].append(cpu)
                        results[(label, "idle rss MiB")].append(rss)
                print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    report(results, ["no vigil", *installs])
    return 0


def report(results: dict[tuple[str, str], list[float]], labels: list[str]) -> None:
    metrics = ["getpid ns", "write ns", "https untracked us", "https untracked cpu us", "https tracked us",
               "https tracked cpu us", "idle cpu %", "idle rss MiB"]
    print(f"{'metric':<22}" + "".join(f"{label:>22}" for label in labels))
    for metric in metrics:
        row = f"{metric:<22}"
        for label in labels:
            values = results.get((label, metric))
            row += f"{statistics.median(values):>14.3f} ±{statistics.pstdev(values):<6.2f}" if values else f"{'-':>22}"
        print(row)
    base = {m: statistics.median(results[("no vigil", m)])
            for m in ("getpid ns", "write ns", "https untracked us", "https untracked cpu us")}
    print("\nadded to an untracked process (median, vs no vigil; ratio):")
    for label in labels[1:]:
        parts = []
        for metric, value in base.items():
            median = statistics.median(results[(label, metric)])
            parts.append(f"{metric.removesuffix(' us').removesuffix(' ns')} {median - value:+.1f} {metric.split()[-1]} "
                         f"(x{median / value:.2f})")
        print(f"  {label}: " + "; ".join(parts))
    print("\ntracked HTTPS request vs untracked without vigil:")
    for label in labels[1:]:
        parts = []
        for kind in ("", " cpu"):
            median, value = statistics.median(results[(label, f"https tracked{kind} us")]), base[f"https untracked{kind} us"]
            parts.append(f"{kind.strip() or 'wall'} {median - value:+.1f} us (x{median / value:.2f})")
        print(f"  {label}: " + "; ".join(parts))


if __name__ == "__main__":
    sys.exit(main())
