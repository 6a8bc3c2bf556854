"""What credential redaction costs per event, by the shape of the string it scrubs.

Every exec's argv, every path of a file effect, every metric label an agent chooses and every
LLM call's text pass through `redact_text` on the pipeline thread. Measured: CPU time per call
for each kind of string, uncached (first sight) and cached (the same string again: paths and
argv repeat across an agent's processes), and for a whole llm_call event's to_dict().

    /opt/vigild/bin/python bench/redaction_cost.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from vigild.correlate.intent import LlmCall
from vigild.correlate.redact import _redact, redact_text

SAMPLES = {
    "path (91 B)": "/usr/lib/python3/dist-packages/numpy/core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so",
    "argv word (76 B)": "bash -c 'cd /work/repo && python -m pytest -q tests/test_foo.py --maxfail=1'",
    "model label (26 B)": "claude-sonnet-4-5-20250929",
    "prose (4 KiB)": "The build failed because the linker could not find libfoo; rerun with -v to see why. " * 48,
    "JSON with keys (4 KiB)": '{"role":"user","content":"Fix tests/test_api.py","max_tokens":1024,"api_key_env":"X"}' * 48,
    "secret-bearing argv (120 B)": "curl -H 'Authorization: Bearer ghp_" + "a1B2" * 9 + "' https://api.github.com/user",
}


def per_call_us(fn: Callable[[], object], n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{'string':30} {'uncached µs':>12} {'cached µs':>10}   (median of {args.rounds} rounds)")
    for name, text in SAMPLES.items():
        n = 200 if len(text) > 1000 else 5000
        uncached = statistics.median(per_call_us(lambda: _redact(text), n) for _ in range(args.rounds))
        cached = statistics.median(per_call_us(lambda: redact_text(text), n) for _ in range(args.rounds))
        print(f"{name:30} {uncached:12.1f} {cached:10.2f}")
    call = LlmCall(ts_ns=1, pid=1, tid=1, comm="agent", conn_id=1, provider="anthropic", endpoint="/v1/messages",
                   host="api.anthropic.com", model="claude-sonnet-4-5", stream=True, status=200, http_version="1.1",
                   text=SAMPLES["prose (4 KiB)"][:1200],
                   tool_calls=[{"id": "toolu_1", "name": "Bash", "arguments": {"command": SAMPLES["argv word (76 B)"]}}])
    to_dict = statistics.median(per_call_us(call.to_dict, 500) for _ in range(args.rounds))
    print(f"{'llm_call.to_dict() (1.2 KiB text)':30} {to_dict:12.1f}")


if __name__ == "__main__":
    main()
