"""What vigil costs processes it does not track, and what it costs when idle (issue 14, goals 3 and 5).

Side by side in one run, each round going through every mode (no vigil, then each given vigil
install, e.g. the branch before and after a change):

- ns per syscall of an untracked process: a C loop of 1M calls each of getpid() (hooked nowhere),
  1-byte write() to /dev/null and read() from /dev/zero, close(-1), openat+close of /dev/null,
  connect() and sendto() of a UDP socket on loopback (the fastest of 20 chunks: preemption on a
  shared machine is not the syscall's cost), while `vigil trace -- sleep` runs (everything loaded
  and attached); which program sits on which tracepoint is listed (bpftool perf);
- with --bpf-stats, each vigil program's own time per run (kernel.bpf_stats_enabled, in a second
  pass so that the timing itself is not in the figures above): what vigil adds to a syscall,
  split into its programs and the rest (the tracepoint machinery and the traced syscall path);
- µs per HTTPS request (one SSL write, its reads) of a keep-alive client against a local TLS
  server (both the system Python, on the system libssl): untracked while vigil runs, and tracked
  (the client run under `vigil trace`);
- vigild with nothing to trace: CPU % of one core over 30 s (its own threads, from /proc) and RSS.

    /opt/vigild-perf/bin/python bench/untracked_cost.py --vigil before=/opt/vigild-perf-before/bin/python \\
        --vigil after=/opt/vigild-perf/bin/python [--rounds 5] [--idle-s 30] [--syscalls-only] [--bpf-stats]

Must run as root; servers listen on loopback only.
"""

from __future__ import annotations

import argparse
import json
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
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
/* One syscall (or an openat and its close) n times in 20 chunks, timed in this thread's CPU time
 * (BPF programs and uprobe traps run in it; other processes' turns on the CPU do not); the
 * fastest chunk is reported, in ns per call. */
enum { GETPID, WRITE, READ, CLOSE, OPENAT_CLOSE, CONNECT, SENDTO, NMODES };
static const char *names[NMODES] = { "getpid", "write", "read", "close", "openat+close", "connect", "sendto" };
static int one(int mode, int null_w, int null_r, int udp, const struct sockaddr_in *to)
{
    char c = 'x';
    int fd;
    switch (mode) {
    case GETPID: return syscall(SYS_getpid) > 0 ? 0 : -1;
    case WRITE: return write(null_w, &c, 1) == 1 ? 0 : -1;
    case READ: return read(null_r, &c, 1) == 1 ? 0 : -1;
    case CLOSE: return close(-1) == -1 ? 0 : -1; /* EBADF: the hooks' cost, no work */
    case OPENAT_CLOSE:
        fd = openat(AT_FDCWD, "/dev/null", O_RDONLY);
        return fd >= 0 && close(fd) == 0 ? 0 : -1;
    case CONNECT: return connect(udp, (const struct sockaddr *)to, sizeof(*to));
    case SENDTO: return sendto(udp, &c, 1, MSG_DONTWAIT, (const struct sockaddr *)to, sizeof(*to)) == 1 ? 0 : -1;
    }
    return -1;
}
int main(int argc, char **argv) {
    long n = atol(argv[2]), chunk = n / 20;
    int null_w = open("/dev/null", O_WRONLY), null_r = open("/dev/zero", O_RDONLY);
    int udp = socket(AF_INET, SOCK_DGRAM, 0), sink = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(to);
    /* datagrams go to a socket of our own that never reads: once its buffer is full they are
     * dropped, which sendto does not report */
    if (bind(sink, (const struct sockaddr *)&to, sizeof(to)) || getsockname(sink, (struct sockaddr *)&to, &len))
        return 2;
    int mode = 0;
    while (mode < NMODES && strcmp(argv[1], names[mode]))
        mode++;
    for (long i = 0; i < chunk; i++)  /* warm-up: caches, the route, the socket */
        if (one(mode, null_w, null_r, udp, &to)) return 1;
    double best = 1e18;
    for (int c = 0; c < 20; c++) {
        struct timespec a, b;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
        for (long i = 0; i < chunk; i++)
            if (one(mode, null_w, null_r, udp, &to)) return 1;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
        double ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / chunk;
        if (ns < best) best = ns;
    }
    printf("%.2f\n", best);
    return 0;
}
"""
# The loops' syscalls: one vigil hooks nowhere (getpid: what the syscall-tracepoint work flag
# alone costs), and ones it hooks (effects, plain-HTTP sensor).
LOOPS = ("getpid", "write", "read", "close", "openat+close", "connect", "sendto")

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

# The kernel's part, measured with vigil's machinery left out: one program that returns at once.
EMPTY_BPF_C = r"""
#define SEC(name) __attribute__((section(name), used))
SEC("tracepoint")
int empty(void *ctx)
{
    return 0;
}
char LICENSE[] SEC("license") = "GPL";
"""
# (tracepoint, what it stands for): where vigil's programs sit for the loops above (one per
# tracepoint after the chaining), and one syscall no loop makes, for the work flag alone
FLOOR_TRACEPOINTS = {
    "flag only": ("sys_enter_getppid",),
    "empty programs": ("sys_exit_write", "sys_exit_read", "sys_enter_close", "sys_exit_openat", "sys_exit_connect",
                       "sys_exit_sendto"),
}

SYSTEM_PYTHON = "/usr/bin/python3"  # dynamically linked to the system libssl, which vigil hooks
SYSCALLS = 1_000_000
REQUESTS = 2000


def compile_loop(tmp: Path) -> Path:
    src, exe = tmp / "loop.c", tmp / "loop"
    src.write_text(LOOP_C)
    subprocess.run(["cc", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def compile_empty_program(tmp: Path) -> Path:
    from vigild.bpf.build import find_clang  # the bench's python must be a vigil install's

    src, obj = tmp / "empty.bpf.c", tmp / "empty.bpf.o"
    src.write_text(EMPTY_BPF_C)
    subprocess.run([find_clang(), "-target", "bpf", "-O2", "-c", str(src), "-o", str(obj)], check=True)
    return obj


@contextmanager
def empty_programs(obj: Path, tracepoints: tuple[str, ...]) -> Iterator[None]:
    """The empty program on each of the syscall tracepoints while the block runs: with "flag
    only" (a syscall no loop makes) what every syscall pays once any syscall tracepoint is on; on
    the loops' own tracepoints, that plus the tracepoint's machinery and running one program."""
    from vigild.bpf.loader import BpfObject  # the bench's python must be a vigil install's

    with BpfObject(obj) as prog:
        prog.load()
        for name in tracepoints:
            prog.attach_tracepoint("empty", "syscalls", name)
        yield


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
def vigil_running(python: str | None) -> Iterator[int | None]:
    """`vigil trace -- sleep` running (all programs loaded and attached) while the block runs,
    its pid given to the block; nothing (None) when python is None."""
    if python is None:
        yield None
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
        yield proc.pid
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


def loop_calls() -> int:
    """Calls one loop run makes: its warm-up chunk and 20 timed ones."""
    return SYSCALLS // 20 * 21


def own_prog_ids(pid: int) -> set[int]:
    """The BPF programs a process holds open (its vigil's: every program it loaded)."""
    ids = set()
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            for line in info.read_text().splitlines():
                if line.startswith("prog_id:"):
                    ids.add(int(line.split()[1]))
        except OSError:
            continue
    return ids


def prog_stats(ids: set[int]) -> dict[str, tuple[int, int]]:
    """name (id) -> (run_time_ns, run_cnt) of the given programs, from bpftool."""
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                                      check=True).stdout)
    return {f"{p.get('name', '?')}({p['id']})": (p.get("run_time_ns", 0), p.get("run_cnt", 0))
            for p in progs if p["id"] in ids}


def attachments(pid: int) -> list[str]:
    """'program on tracepoint' for each perf-event attachment the process holds (bpftool perf)."""
    names = {p["id"]: p.get("name", "?") for p in
             json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                                       check=True).stdout)}
    perf = json.loads(subprocess.run(["bpftool", "-j", "perf", "list"], capture_output=True, text=True,
                                     check=True).stdout)
    return sorted(f"{names.get(a['prog_id'], a['prog_id'])} on {a.get('tracepoint') or a.get('func') or a.get('filename')}"
                  for a in perf if a.get("pid") == pid)


@contextmanager
def bpf_stats() -> Iterator[None]:
    """kernel.bpf_stats_enabled=1 while the block runs (each program run is timed), restored after."""
    knob = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = knob.read_text().strip()
    knob.write_text("1")
    try:
        yield
    finally:
        knob.write_text(old)


STATS_LOOP = "loop timed with bpf_stats on"  # a program_time() entry that is not a program


def program_time(loop: Path, what: str, ids: set[int]) -> dict[str, tuple[float, float]]:
    """name -> (ns per run, runs per loop call) of the programs that ran during one loop. Other
    processes' syscalls run them too: runs per call above 1 say how many of the runs were not the
    loop's (their ns per run is an average over all)."""
    before = prog_stats(ids)
    out = {STATS_LOOP: (measure_loop(loop, what), 0.0)}
    after = prog_stats(ids)
    for name, (ns, cnt) in after.items():
        d_ns, d_cnt = ns - before.get(name, (0, 0))[0], cnt - before.get(name, (0, 0))[1]
        if d_cnt:
            out[name] = (d_ns / d_cnt, d_cnt / loop_calls())
    return out


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
    parser.add_argument("--syscalls-only", action="store_true", help="the syscall loops only (no HTTPS, no idle)")
    parser.add_argument("--floors", action="store_true",
                        help="also measure the kernel's part: an empty program on a syscall no loop makes (the "
                             "syscall-tracepoint work flag alone), and on each tracepoint vigil's programs use")
    parser.add_argument("--bpf-stats", action="store_true",
                        help="also time each program (kernel.bpf_stats_enabled, restored after) in a second pass "
                             "of the loops, to split what vigil adds into its programs' own time and the rest")
    args = parser.parse_args()
    installs = dict(item.split("=", 1) for item in args.vigil)
    if not installs:
        installs = {"this": sys.executable}
    results: dict[tuple[str, str], list[float]] = defaultdict(list)
    progs: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    attached: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        loop = compile_loop(tmp)
        empty = compile_empty_program(tmp) if args.floors else None
        client = tmp / "client.py"
        client.write_text(CLIENT)
        with tls_server(tmp) as port:
            for rnd in range(args.rounds):
                for label, python in [("no vigil", None), *installs.items()]:
                    with vigil_running(python) as pid:
                        for what in LOOPS:
                            results[(label, f"{what} ns")].append(measure_loop(loop, what))
                        if not args.syscalls_only:
                            wall, cpu = measure_client(client, port, None)
                            results[(label, "https untracked us")].append(wall)
                            results[(label, "https untracked cpu us")].append(cpu)
                        if pid is not None:
                            attached[label] = attachments(pid)
                        if pid is not None and args.bpf_stats:
                            ids = own_prog_ids(pid)
                            with bpf_stats():
                                for what in LOOPS:
                                    for name, value in program_time(loop, what, ids).items():
                                        progs[(label, what, name.split("(")[0])].append(value)
                    if python is not None and not args.syscalls_only:
                        wall, cpu = measure_client(client, port, python)
                        results[(label, "https tracked us")].append(wall)
                        results[(label, "https tracked cpu us")].append(cpu)
                        cpu, rss = idle_vigild(python, tmp, args.idle_s)
                        results[(label, "idle cpu %")].append(cpu)
                        results[(label, "idle rss MiB")].append(rss)
                if empty is not None:
                    for label, tracepoints in FLOOR_TRACEPOINTS.items():
                        with empty_programs(empty, tracepoints):
                            for what in LOOPS:
                                results[(label, f"{what} ns")].append(measure_loop(loop, what))
                print(f"round {rnd + 1}/{args.rounds} done (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    labels = ["no vigil", *(FLOOR_TRACEPOINTS if args.floors else ()), *installs]
    report(results, labels)
    report_attachments(attached)
    if progs:
        report_programs(results, progs, ["no vigil", *installs])
    return 0


def report(results: dict[tuple[str, str], list[float]], labels: list[str]) -> None:
    metrics = [f"{what} ns" for what in LOOPS] + ["https untracked us", "https untracked cpu us", "https tracked us",
                                                  "https tracked cpu us", "idle cpu %", "idle rss MiB"]
    print(f"{'metric':<22}" + "".join(f"{label:>22}" for label in labels))
    for metric in metrics:
        if not any(results.get((label, metric)) for label in labels):
            continue
        row = f"{metric:<22}"
        for label in labels:
            values = results.get((label, metric))
            row += f"{statistics.median(values):>14.3f} ±{statistics.pstdev(values):<6.2f}" if values else f"{'-':>22}"
        print(row)
    base = {m: statistics.median(results[("no vigil", m)])
            for m in [f"{what} ns" for what in LOOPS] + ["https untracked us", "https untracked cpu us"]
            if results.get(("no vigil", m))}
    print("\nadded to an untracked process (median, vs no vigil; ratio):")
    for label in labels[1:]:
        parts = []
        for metric, value in base.items():
            if not results.get((label, metric)):
                continue
            median = statistics.median(results[(label, metric)])
            parts.append(f"{metric.removesuffix(' us').removesuffix(' ns')} {median - value:+.1f} {metric.split()[-1]} "
                         f"(x{median / value:.2f})")
        print(f"  {label}: " + "; ".join(parts))
    if not results.get((labels[-1], "https tracked us")):
        return
    print("\ntracked HTTPS request vs untracked without vigil:")
    for label in labels[1:]:
        if not results.get((label, "https tracked us")):
            continue
        parts = []
        for kind in ("", " cpu"):
            median, value = statistics.median(results[(label, f"https tracked{kind} us")]), base[f"https untracked{kind} us"]
            parts.append(f"{kind.strip() or 'wall'} {median - value:+.1f} us (x{median / value:.2f})")
        print(f"  {label}: " + "; ".join(parts))


def report_attachments(attached: dict[str, list[str]]) -> None:
    for label, lines in attached.items():
        print(f"\n{label}: {len(lines)} tracepoint attachments")
        for line in lines:
            print(f"  {line}")


def report_programs(results: dict[tuple[str, str], list[float]],
                    progs: dict[tuple[str, str, str], list[tuple[float, float]]], labels: list[str]) -> None:
    """Per loop: each program that ran (median ns per run, runs per loop call), their sum for the
    programs that ran once per call (the loop's own), and what vigil added minus that sum: the
    tracepoint's machinery (perf_syscall_enter/exit building the record, the prog array run) and
    the syscall-tracepoint work flag's traced entry and exit. bpf_stats itself costs each run two
    clock reads, one of them inside the timed span: what the loop pays more with it on is shown,
    so that the programs' figures can be read net of it."""
    print("\nprograms' own time (bpf_stats; median over rounds):")
    for label in labels[1:]:
        for what in LOOPS:
            added = statistics.median(results[(label, f"{what} ns")]) - statistics.median(results[("no vigil", f"{what} ns")])
            rows = {name: values for (lab, loop, name), values in progs.items() if lab == label and loop == what}
            own = 0.0
            parts = []
            timed = statistics.median(v[0] for v in rows.pop(STATS_LOOP))
            for name, values in sorted(rows.items()):
                ns = statistics.median(v[0] for v in values)
                per_call = statistics.median(v[1] for v in values)
                if per_call >= 0.5:
                    own += ns * round(per_call)
                    parts.append(f"{name} {ns:.1f} ns x{per_call:.2f}")
            stats_cost = timed - statistics.median(results[(label, f"{what} ns")])
            print(f"  {label} {what}: added {added:+.1f} ns = programs {own:.1f} + rest {added - own:.1f}"
                  f" [{'; '.join(parts) or 'no program ran'}]; the loop with bpf_stats on: {stats_cost:+.1f} ns")


if __name__ == "__main__":
    sys.exit(main())
