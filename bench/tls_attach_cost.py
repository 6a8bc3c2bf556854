"""What hooking TLS per tracked process would cost, against hooking the library for everyone.

vigil hooks the system libssl once, for every process (pid -1): each process that maps it gets
the breakpoints, and every TLS call of an untracked process traps (bench/untracked_cost.py
measures that). A uprobe attached with a pid installs its breakpoint in that process only (the
kernel's uprobe filter), so hooking per tracked process costs the untracked nothing, at the price
of one attach per tracked process (held at exec until done) and a detach at its exit. This
measures that price with vigil's own programs and probe set (OpenSSL: 4 functions x entry+return,
and SSL_free): the set attached for all, and for each of N live processes mapping libssl, as
perf-event uprobes with a pid (9 links) and as the uprobe_multi links with a pid filter vigil uses
on kernels >= 6.6 (5 links, one per program; `TlsSensor.link_process`).

    /opt/vigild-perf/bin/python bench/tls_attach_cost.py [--processes 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from vigild.bpf.events import TLS_LIB_OPENSSL
from vigild.bpf.lineage import LineageSensor
from vigild.bpf.loader import Link
from vigild.bpf.tls import OPENSSL_CALLS, TlsSensor, _ldconfig_libraries, cookie

HOLDER = "import ssl, sys; sys.stdout.write('up\\n'); sys.stdout.flush(); sys.stdin.read()"


def attach_set(sensor: TlsSensor, path: str, pid: int) -> list[Link]:
    links = []
    for symbol, enter, leave, direction in OPENSSL_CALLS:
        c = cookie(TLS_LIB_OPENSSL, direction)
        links.append(sensor.obj.attach_uprobe(enter, path, symbol, pid=pid, cookie=c))
        links.append(sensor.obj.attach_uprobe(leave, path, symbol, pid=pid, retprobe=True, cookie=c))
    links.append(sensor.obj.attach_uprobe("tls_free", path, "SSL_free", pid=pid, cookie=cookie(TLS_LIB_OPENSSL, 0)))
    return links


def mapping_processes(path: str) -> int:
    """Processes on the host that map `path` now: those a pid -1 hook puts breakpoints in."""
    real = str(Path(path).resolve())
    count = 0
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            if real in maps.read_text():
                count += 1
        except OSError:
            continue
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    path = next(p for p, lib in _ldconfig_libraries() if lib == TLS_LIB_OPENSSL)
    holders = [subprocess.Popen(["/usr/bin/python3", "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True) for _ in range(args.processes)]
    lineage = LineageSensor()
    sensor = TlsSensor(lineage.shared_maps, site_cache=None)
    try:
        for holder in holders:
            assert holder.stdout is not None and holder.stdout.readline() == "up\n"
        st = Path(path).stat()
        key = (st.st_dev, st.st_ino)
        multi = sensor.uprobe_mode == "per-process" and sensor.add_library(path, TLS_LIB_OPENSSL)
        global_ms, per_ms, detach_ms, multi_ms, multi_detach_ms = [], [], [], [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            links = attach_set(sensor, path, -1)
            global_ms.append((time.perf_counter() - start) * 1000)
            for link in links:
                link.destroy()
            for holder in holders:
                start = time.perf_counter()
                links = attach_set(sensor, path, holder.pid)
                per_ms.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                for link in links:
                    link.destroy()
                detach_ms.append((time.perf_counter() - start) * 1000)
                if multi:
                    start = time.perf_counter()
                    assert sensor.link_process(holder.pid, key)
                    multi_ms.append((time.perf_counter() - start) * 1000)
                    start = time.perf_counter()
                    sensor.unlink_process(holder.pid)
                    sensor.close_exited_links(wait=True)
                    multi_detach_ms.append((time.perf_counter() - start) * 1000)
        mapped = mapping_processes(path)
    finally:
        sensor.close()
        lineage.close()
        for holder in holders:
            holder.kill()
            holder.wait()
    links = len(OPENSSL_CALLS) * 2 + 1
    print(f"{path}: {links} uprobes per set; {mapped} processes on this host map it now (with the {args.processes} "
          f"holders)")
    print(f"attach for every process (pid -1): median {statistics.median(global_ms):.2f} ms per set")
    print(f"attach for one process (pid):      median {statistics.median(per_ms):.2f} ms per set "
          f"(p90 {statistics.quantiles(per_ms, n=10)[-1]:.2f}), detach {statistics.median(detach_ms):.2f} ms")
    if multi_ms:
        print(f"uprobe_multi links for one process: median {statistics.median(multi_ms):.2f} ms per set "
              f"(p90 {statistics.quantiles(multi_ms, n=10)[-1]:.2f}), detach {statistics.median(multi_detach_ms):.2f} ms")
    else:
        print(f"uprobe_multi links: not on this kernel ({sensor.mode_reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
