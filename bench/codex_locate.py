"""How long vigil takes to find the OpenSSL inside a Codex binary (~290 MB, static, stripped):
the first time for a build (the error-site scan), and from the cache (by build key), side by side
for each installed release; plus the cost of attaching the four uprobes.

    /opt/vigild/bin/python bench/codex_locate.py [--agents-dir /var/cache/vigil-agents] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from vigild.bpf.lineage import LineageSensor
from vigild.bpf.static_openssl import SiteCache
from vigild.bpf.tls import TlsSensor
from vigild.bpf.tls_locate import Locator, TlsFunctions

PLATFORM_BINARY = "node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents-dir", type=Path, default=Path("/var/cache/vigil-agents"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    binaries = sorted(args.agents_dir.glob(f"codex-*/{PLATFORM_BINARY}"))
    if not binaries:
        raise SystemExit(f"no Codex under {args.agents_dir} (npm install @openai/codex@VERSION there)")
    print(f"{'release':<10} {'size MB':>8} {'first ms':>10} {'cached ms':>10} {'attach ms':>10}")
    lineage = LineageSensor()
    try:
        for exe in binaries:
            release = exe.parts[len(args.agents_dir.parts)].removeprefix("codex-")
            first, cached = [], []
            for _ in range(args.rounds):
                with tempfile.TemporaryDirectory() as tmp:
                    cache_file = f"{tmp}/cache.json"
                    first.append(timed(lambda: SiteCache(cache_file).lookup(str(exe))))
                    cached.append(timed(lambda: SiteCache(cache_file).lookup(str(exe))))
            tls = TlsSensor(lineage.shared_maps, locator=Locator(cache_dir=None), site_cache=None)
            try:
                found = tls._locate(str(exe))
                assert isinstance(found, TlsFunctions), found
                inode = (exe.stat().st_dev, exe.stat().st_ino)
                attach = timed(lambda: tls.attach_offsets(inode, found))
            finally:
                tls.close()
            print(f"{release:<10} {exe.stat().st_size / 1e6:>8.0f} {statistics.median(first):>10.0f} "
                  f"{statistics.median(cached):>10.1f} {attach:>10.1f}")
    finally:
        lineage.close()
    print(f"(median of {args.rounds}; page cache warm after the first round)")


if __name__ == "__main__":
    main()
