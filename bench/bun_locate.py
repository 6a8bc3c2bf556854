"""Bun executables: what finding their TLS costs, and what tracing costs per request (as root).

1. Locating BoringSSL in each pinned release (Claude Code 2.1.113 / 2.1.220 / 2.1.332, opencode):
   the first search, a new vigil finding it in the disk cache, and the in-memory cache. The page
   cache is warm (the file was read before): a cold disk adds reading the file once.
2. Per-request cost: opencode's executable run as plain Bun (BUN_BE_BUN=1) sends N streaming
   Anthropic calls over one keep-alive connection to the local fake server; the mean time per
   request untraced, and traced with its TLS hooked by the locator (and the decoded count).

    /opt/vigild/bin/python bench/bun_locate.py [--requests 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bunagents.install import RELEASES, agent_binary  # noqa: E402
from fakellm import FakeLLMServer  # noqa: E402

from vigild.bpf.lineage import LineageSensor  # noqa: E402
from vigild.bpf.tls import TlsSensor  # noqa: E402
from vigild.bpf.tls_locate import Locator  # noqa: E402
from vigild.correlate.tls_stream import TlsStreamDecoder  # noqa: E402
from vigild.daemon.pipeline import Pipeline  # noqa: E402

CLIENT = textwrap.dedent("""
    const [url, n] = [process.argv[2], Number(process.argv[3])];
    const body = JSON.stringify({model: "claude-sonnet-4-5", max_tokens: 64, stream: true,
                                 messages: [{role: "user", content: "hi"}]});
    const headers = {"content-type": "application/json", "x-api-key": "sk-ant-api03-bench",
                     "anthropic-version": "2023-06-01", "x-fake-scenario": "text_only"};
    const times = [];
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      const r = await fetch(url + "/v1/messages", {method: "POST", headers, body});
      await r.text();
      times.push(performance.now() - t);
    }
    console.log(JSON.stringify(times));
""")


class Count:
    def __init__(self) -> None:
        self.calls = 0

    def handle(self, event: object, record: dict[str, object]) -> None:
        self.calls += getattr(event, "type", "") == "llm_call"

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def locate_times() -> None:
    print("locate (warm page cache)         size    first   disk cache  memory")
    for release in sorted(RELEASES):
        binary = str(agent_binary(release))
        with tempfile.TemporaryDirectory() as cache:
            first = Locator(Path(cache))
            t0 = time.perf_counter()
            found = first.locate(binary)
            t1 = time.perf_counter()
            Locator(Path(cache)).locate(binary)
            t2 = time.perf_counter()
            first.locate(binary)
            t3 = time.perf_counter()
        size = os.path.getsize(binary) / 2**20
        ok = "ok" if found is not None and found.__class__.__name__ == "TlsFunctions" else f"NOT FOUND: {found}"
        print(f"  {release:<28} {size:5.0f} MiB {t1 - t0:6.2f} s {(t2 - t1) * 1e3:8.1f} ms {(t3 - t2) * 1e3:6.2f} ms  {ok}")


def run_client(argv: list[str], env: dict[str, str], pipeline: Pipeline | None) -> list[float]:
    if pipeline is None:
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    else:
        from vigild.daemon.launch import spawn_gated

        with tempfile.TemporaryFile("w+") as sink:
            shell = ["sh", "-c", f'exec "$@" >/proc/{os.getpid()}/fd/{sink.fileno()}', "sh", *argv]
            os.environ.update(env)
            child = spawn_gated(shell)
            pipeline.add_pending_root(child.pid, shell, os.getcwd(), 0)
            child.release()
            os.waitpid(child.pid, 0)
            pipeline.wait_exit(child.pid, timeout=10)
            sink.seek(0)
            out = sink.read()
    import json

    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    locate_times()
    bun = str(agent_binary("opencode-1.18.33"))
    with tempfile.TemporaryDirectory() as tmp, FakeLLMServer(http2=False) as server:
        script = Path(tmp) / "client.mjs"
        script.write_text(CLIENT)
        env = {**os.environ, "BUN_BE_BUN": "1", "NODE_EXTRA_CA_CERTS": server.ca_path}
        argv = [bun, str(script), server.url, str(args.requests)]
        untraced = run_client(argv, env, None)
        lineage = LineageSensor(hold_new_exe=True)
        tls = TlsSensor(lineage.shared_maps, locator=Locator(Path(tmp) / "cache"))
        sink = Count()
        pipeline = Pipeline(lineage, [sink], tls=tls, intent=TlsStreamDecoder())
        pipeline.start()
        try:
            traced = run_client(argv, env, pipeline)
            deadline = time.monotonic() + 10
            while sink.calls < args.requests and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            pipeline.stop()
            tls.close()
            lineage.close()
    # the first request pays the connection's handshake: compare the others
    u, t = statistics.mean(untraced[1:]), statistics.mean(traced[1:])
    print(f"per request ({args.requests} streaming calls, one connection, Bun {bun.rsplit('/', 1)[-1]}):")
    print(f"  untraced {u:.3f} ms   traced {t:.3f} ms   overhead {t - u:+.3f} ms ({(t / u - 1) * 100:+.1f} %)")
    print(f"  decoded llm_calls: {sink.calls} of {args.requests}")


if __name__ == "__main__":
    main()
