"""Tool-call placement cost: time `vigil run` adds per tool call, and how long the kernel held
each call's first process (`hold_ms`), side by side with `vigil trace` and no tracing (as root).

An agent (a Python loop) starts N tool calls one after another (`/bin/true`, `bash -c true`)
and times its own loop, so vigil's start and stop are not counted. With `--flood`, a first tool
call floods file effects in the same tree the whole time (a busy pipeline). Several installs are
compared in one run (e.g. the branch's start and its head), each by its own interpreter:

    python bench/placement.py --impl before=/opt/vigild-placement-base/bin/python \
        --impl after=/opt/vigild-placement/bin/python [--calls 500] [--rounds 5] [--gap-ms 50] [--model]

With `--model`, the agent asks a local fake model (tests/fakellm, plain HTTP, OpenAI chat) for a
tool call before each one, as an agent does (not timed): vigil decodes the model's intent before
the spawn, which is what the placement warmer (daemon/tools/placement_warm.py) starts on; vigil
then runs with TLS and plain-HTTP capture on (`--no-tls` otherwise).

Added per call = mode's loop time per call minus the untraced one, same round and workload.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

AGENT = r"""
import json, os, sys, time
calls, argv, flood, out, gap = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3] == "1", sys.argv[4], float(sys.argv[5])
model, think = sys.argv[6], float(sys.argv[7])
flooder = None
if model:
    import http.client, urllib.parse
    url = urllib.parse.urlsplit(model)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    ask = json.dumps({"model": "qwen2.5-coder", "messages": [{"role": "user", "content": "run it"}],
                      "tools": [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]})
if flood:  # a tool call of its own: file opens in the same tree until the loop is done
    code = "import os,sys\np=sys.argv[1]\nwhile True:\n os.close(os.open(p, os.O_RDONLY|os.O_CREAT, 0o600))"
    flooder = os.posix_spawn(sys.executable, [sys.executable, "-c", code, out + ".flood"], os.environ)
    time.sleep(1.0)
elapsed = 0.0
for _ in range(calls):
    time.sleep(gap)  # the model thinking between two calls (not timed)
    if model:  # the model's reply names the tool call the agent then runs (not timed)
        conn.request("POST", "/v1/chat/completions", ask, {"Content-Type": "application/json"})
        json.loads(conn.getresponse().read())
        time.sleep(think)  # the agent between the reply and the spawn: checks, permission, UI (not timed)
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, os.environ)
    os.waitpid(pid, 0)
    elapsed += time.perf_counter() - start
if flooder is not None:
    os.kill(flooder, 9)
    os.waitpid(flooder, 0)
with open(out, "w") as f:
    f.write(str(elapsed / calls))
"""

WORKLOADS = {"true": ["/bin/true"], "bash": ["/bin/bash", "-c", "true"]}


def run_once(tmp: Path, python: str, mode: str | None, calls: int, argv: list[str], flood: bool,
             gap_s: float, model: str = "", think_s: float = 0.0, config: str | None = None) -> tuple[float, list[float]]:
    """Seconds per call in the agent's loop, and the hold_ms of every tool_start vigil printed."""
    agent, out = tmp / "agent.py", tmp / "per_call"
    agent.write_text(AGENT)
    out.unlink(missing_ok=True)
    command = [sys.executable, str(agent), str(calls), json.dumps(argv), "1" if flood else "0", str(out), str(gap_s),
               model, str(think_s)]
    if mode is not None:
        capture = [] if model else ["--no-tls"]
        if config is not None and mode == "run":  # `vigil trace` places nothing and takes no config
            capture += ["--config", config]
        command = [python, "-m", "vigild.daemon.cli", mode, "-o", "json", *capture, "--only", "tool", "--", *command]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"{command[:4]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    holds = []
    for line in proc.stdout.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("type") == "tool_start" and event.get("hold_ms") is not None:
            holds.append(float(event["hold_ms"]))
    return float(out.read_text()), holds


@contextmanager
def fake_model(wanted: bool) -> Iterator[str]:
    """The URL of a local fake model replying with one bash tool call, or "" when not wanted."""
    if not wanted:
        yield ""
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from fakellm import FakeLLMServer, Reply, Scenario, ToolCallSpec

    with FakeLLMServer(tls=False) as server:
        server.scenarios["bench"] = Scenario("bench", default_reply=Reply(
            text="Running it.", tool_calls=(ToolCallSpec("bash", {"command": "true"}),)))
        server.default_scenario = "bench"
        yield server.url


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", action="append", required=True, help="name=python of an install with vigild")
    parser.add_argument("--impl-config", action="append", default=[],
                        help="name=path: the config file that install's vigil runs with (e.g. favordynmods = true)")
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS))
    parser.add_argument("--no-flood", action="store_true", help="only without the effects flood")
    parser.add_argument("--run-only", action="store_true",
                        help="only `vigil run` (holds are its alone; skips `vigil trace`, halving the time)")
    parser.add_argument("--gap-ms", type=float, default=0.0,
                        help="pause between calls, not timed: real agents' calls come seconds apart, and a "
                             "lone cgroup move pays for what back-to-back ones share (bench/cgroup_move.py)")
    parser.add_argument("--model", action="store_true",
                        help="ask a local fake model for each tool call first (plain HTTP; intent is decoded)")
    parser.add_argument("--think-ms", type=float, default=0.0,
                        help="with --model: pause between the model's reply and the spawn (not timed)")
    args = parser.parse_args()
    think_s = args.think_ms / 1e3
    impls = dict(item.split("=", 1) for item in args.impl)
    configs = dict(item.split("=", 1) for item in args.impl_config)
    floods = [False] if args.no_flood else [False, True]
    gap_s = args.gap_ms / 1e3
    added: dict[tuple[str, bool, str], list[float]] = {}
    holds: dict[tuple[str, bool, str], list[float]] = {}
    later: dict[tuple[str, bool, str], list[float]] = {}  # without each run's first call (nothing warmed it)
    with tempfile.TemporaryDirectory(prefix="vigil-placement-") as name, fake_model(args.model) as model:
        tmp = Path(name)
        for round_no in range(args.rounds):
            for workload in args.workload or sorted(WORKLOADS):
                for flood in floods:
                    base, _ = run_once(tmp, sys.executable, None, args.calls, WORKLOADS[workload], flood, gap_s,
                                       model, think_s)
                    for impl, python in impls.items():
                        for mode in ("run",) if args.run_only else ("trace", "run"):
                            per_call, held = run_once(tmp, python, mode, args.calls, WORKLOADS[workload], flood,
                                                      gap_s, model, think_s, configs.get(impl))
                            key = (workload, flood, f"{impl} {mode}")
                            added.setdefault(key, []).append((per_call - base) * 1e3)
                            holds.setdefault(key, []).extend(held)
                            later.setdefault(key, []).extend(held[1:])
                    print(f"round {round_no + 1}/{args.rounds} {workload} flood={flood}: untraced "
                          f"{base * 1e3:.3f} ms/call", file=sys.stderr, flush=True)
    print(f"{'workload':8} {'flood':5} {'mode':16} {'added ms/call (median of rounds, min-max)':44} "
          f"{'hold_ms p50':>11} {'p99':>7} {'max':>7} {'n':>6} {'p99, first calls out':>20}")
    for (workload, flood, mode), values in sorted(added.items()):
        held = holds[(workload, flood, mode)]
        spread = f"{statistics.median(values):7.3f} ({min(values):.3f}..{max(values):.3f})"
        print(f"{workload:8} {str(flood):5} {mode:16} {spread:44} {pct(held, 0.5):11.3f} {pct(held, 0.99):7.3f} "
              f"{max(held, default=float('nan')):7.3f} {len(held):6d} {pct(later[(workload, flood, mode)], 0.99):20.3f}")


if __name__ == "__main__":
    main()
