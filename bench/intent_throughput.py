"""Intent capture, measured side by side in one run (as root).

1. LLM calls decoded per second and capture-to-event latency (p50/p99): one process issues
   streaming Anthropic calls back to back over one keep-alive TLS connection to the local fake
   server; latency is from the kernel timestamp of the response's last byte to the moment the
   decoded llm_call reaches a sink, and from the kernel timestamp of each SSL call's plaintext
   record (taken at the call's return) to the moment the pipeline handles it.
2. CPU cost of the TLS uprobes per SSL call: a loop of 4 KiB SSL_write_ex/SSL_read_ex round trips
   over loopback, untraced, with the uprobes attached but the process not tracked, and tracked.

Each round runs both placements of the TLS uprobes side by side: `global` (on the library for
every process) and `per-process` (uprobe_multi links for tracked processes only, kernel >= 6.6).

    /opt/vigild/bin/python bench/intent_throughput.py [--calls 300] [--round-trips 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakellm import FakeLLMServer  # noqa: E402

from vigild.bpf.events import TlsData  # noqa: E402
from vigild.bpf.lineage import LineageSensor  # noqa: E402
from vigild.bpf.tls import TlsSensor  # noqa: E402
from vigild.correlate.tls_stream import TlsStreamDecoder  # noqa: E402
from vigild.daemon.launch import spawn_gated  # noqa: E402
from vigild.daemon.pipeline import Pipeline  # noqa: E402

CALLS_CLIENT = textwrap.dedent("""
    import http.client, json, ssl, sys
    url, ca, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ctx = ssl.create_default_context(cafile=ca)
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPSConnection(host, int(port), context=ctx)
    body = json.dumps({"model": "claude-sonnet-4-6", "max_tokens": 64, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]})
    for _ in range(n):
        conn.request("POST", "/v1/messages", body, {"content-type": "application/json",
                     "x-api-key": "sk-ant-api03-bench", "x-fake-delay-ms": "0"})
        conn.getresponse().read()
""")

ROUND_TRIP_CLIENT = textwrap.dedent("""
    import socket, ssl, sys, threading, time, resource
    cert, key, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    listener = socket.create_server(("127.0.0.1", 0))
    def serve():
        s, _ = listener.accept()
        with server_ctx.wrap_socket(s, server_side=True) as t:
            for _ in range(n):
                t.sendall(t.recv(4096))
    threading.Thread(target=serve, daemon=True).start()
    c = client_ctx.wrap_socket(socket.create_connection(listener.getsockname()))
    payload = b"x" * 4096
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    for _ in range(n):
        c.sendall(payload)
        got = 0
        while got < len(payload):
            got += len(c.recv(4096))
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(elapsed, cpu)
""")


class Collect:
    def __init__(self) -> None:
        self.calls: list[tuple[int, object]] = []

    def handle(self, event: object, record: dict[str, object]) -> None:
        if getattr(event, "type", "") == "llm_call":
            self.calls.append((time.time_ns(), event))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def timed(argv: list[str], pipeline: Pipeline | None, out: Path) -> str:
    shell = ["sh", "-c", f'"$@" > {out}', "sh", *argv]
    if pipeline is None:
        subprocess.run(shell, check=True)
    else:
        child = spawn_gated(shell)
        pipeline.add_pending_root(child.pid, shell, os.getcwd(), 0)
        child.release()
        os.waitpid(child.pid, 0)
        pipeline.wait_exit(child.pid, timeout=5)
    return out.read_text()


def one_mode(per_process: bool, server: FakeLLMServer, rt_argv: list[str], calls_argv: list[str], calls: int,
             tmp: Path) -> dict[str, object]:
    """Round trips untracked and tracked, and the LLM calls' latencies, with one placement."""
    lineage = LineageSensor()
    tls = TlsSensor(lineage.shared_maps, per_process=per_process)
    tls.attach_system_libraries()
    sink = Collect()
    pipeline = Pipeline(lineage, [sink], tls=tls, intent=TlsStreamDecoder())
    records: list[float] = []
    pipeline.owned.register((TlsData,), lambda ev: records.append((time.time_ns() - ev.ts_ns) / 1e6))
    pipeline.start()
    try:
        attached = timed(rt_argv, None, tmp / "rt1").split()
        tracked = timed(rt_argv, pipeline, tmp / "rt2").split()
        records.clear()
        start = time.perf_counter()
        timed(calls_argv, pipeline, tmp / "c")
        elapsed = time.perf_counter() - start
        deadline = time.monotonic() + 10
        while len(sink.calls) < calls and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pipeline.stop()
        mode = tls.uprobe_mode
        tls.close()
        lineage.close()
    latencies = sorted((seen - (ev.ts_ns + ev.inner.duration_ms * 1e6)) / 1e6 for seen, ev in sink.calls)  # type: ignore[attr-defined]
    return {"mode": mode, "attached": attached, "tracked": tracked, "decoded": len(sink.calls), "elapsed": elapsed,
            "call_latency": latencies, "record_latency": sorted(records)}


def _p(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--round-trips", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"vigil-bench-{os.getpid()}"
    tmp.mkdir()
    calls_py, rt_py = tmp / "calls.py", tmp / "round_trips.py"
    calls_py.write_text(CALLS_CLIENT)
    rt_py.write_text(ROUND_TRIP_CLIENT)
    calls_per_rt = 4  # client write + read, server read + write: all in the traced process
    per_call: dict[str, list[float]] = {}
    ratio: dict[str, list[float]] = {}
    latency: dict[str, list[float]] = {}
    with FakeLLMServer() as server:
        certs = server.certs
        rt_argv = [sys.executable, str(rt_py), str(certs.server_cert), str(certs.server_key), str(args.round_trips)]
        calls_argv = [sys.executable, str(calls_py), server.url, server.ca_path, str(args.calls)]
        for _ in range(args.rounds):
            untraced = float(timed(rt_argv, None, tmp / "rt0").split()[1])
            per_call.setdefault("untraced", []).append(untraced / (args.round_trips * calls_per_rt) * 1e6)
            for per_process in (False, True):
                got = one_mode(per_process, server, rt_argv, calls_argv, args.calls, tmp)
                mode = str(got["mode"])
                for label in ("attached", "tracked"):
                    cpu = float(got[label][1])  # type: ignore[index]
                    key = f"{mode}: {'not tracked' if label == 'attached' else 'tracked'}"
                    per_call.setdefault(key, []).append(cpu / (args.round_trips * calls_per_rt) * 1e6)
                    ratio.setdefault(key, []).append(cpu / untraced)
                latency.setdefault(f"{mode}: llm_call", []).extend(got["call_latency"])  # type: ignore[arg-type]
                latency.setdefault(f"{mode}: TLS record", []).extend(got["record_latency"])  # type: ignore[arg-type]
                print(f"{mode}: {got['decoded']}/{args.calls} LLM calls decoded in {float(got['elapsed']):.2f} s",
                      flush=True)
    print(f"\n{'TLS round trips (4 KiB), medians of ' + str(args.rounds) + ' rounds':<46}{'CPU µs/SSL call':>16}"
          f"{'vs untraced':>13}")
    for key, values in per_call.items():
        shown = f"{statistics.median(ratio[key]):.2f}x" if key in ratio else ""
        print(f"{key:<46}{statistics.median(values):>16.2f}{shown:>13}")
    print(f"\n{'capture-to-event latency':<46}{'p50 ms':>8}{'p99 ms':>8}{'n':>7}")
    for key, values in latency.items():
        values.sort()
        print(f"{key:<46}{statistics.median(values) if values else float('nan'):>8.2f}{_p(values, 0.99):>8.2f}"
              f"{len(values):>7}")


if __name__ == "__main__":
    main()
