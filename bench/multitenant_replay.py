"""Multi-tenant memory replay: one static memory limit per agent vs vigild's per-call limits.

Replays the real agent memory traces (`../shared/traces/agent-memory-traces.jsonl.gz` beside the repository: 158
Claude Code runs, container memory sampled ~1 s, tool calls with start/end) as groups of agents
sharing one host, and prints both setups side by side from one run.

The model (no real cgroups; a faithful replay of what the kernel does at each limit):
* An agent's memory at time t is its trace's last sample at or before t. Its *baseline* is the last
  sample outside any tool call; inside a call, anything above the baseline is the call's.
* (a) static: each agent's container has memory.max = L (a typical peak: the median per-run peak).
  When the sample exceeds L, the memcg OOM killer picks the largest task in the container
  (oom_badness ~ RSS): the running tool when its share exceeds the runtime's baseline (the call
  fails, its memory is freed and the agent goes on), else the agent runtime, which ends the
  container: the agent is OOM-killed and its remaining calls never complete.
* (b) vigild: the runtime runs in `agent/` with its baseline protected (memory.min, never a
  victim); each tool call gets memory.max = P. A call above P is OOM-killed alone. The host has the
  same RAM the static setup reserved (N x L); when the agents' total exceeds it, the global OOM
  killer takes the largest running tool call (runtimes are protected), never an agent.
* Reserved: the limits in force summed over agents (static: N x L always; vigild: each agent's
  baseline plus P per running call, capped at the host). Used: the summed samples.

Run: python bench/multitenant_replay.py [--agents 16] [--per-call 1G] [--static median|p75|p90]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path

# shared/ sits beside the repository (the project's material folder).
TRACES = Path(__file__).resolve().parent.parent.parent / "shared" / "traces" / "agent-memory-traces.jsonl.gz"
MB = 1_000_000


@dataclass
class Agent:
    name: str
    samples: list[tuple[float, float]]
    calls: list[tuple[float, float]]
    alive: bool = True
    died_at: float = float("inf")
    killed_calls: set[int] = field(default_factory=set)
    i: int = 0
    baseline: float = 0.0

    @property
    def end(self) -> float:
        return self.samples[-1][0]

    def sample_at(self, t: float) -> float:
        while self.i + 1 < len(self.samples) and self.samples[self.i + 1][0] <= t:
            self.i += 1
        return self.samples[self.i][1]

    def call_at(self, t: float) -> int | None:
        for n, (start, end) in enumerate(self.calls):
            if start <= t <= end:
                return n
        return None


def load() -> list[dict]:
    with gzip.open(TRACES, "rt") as f:
        return [json.loads(line) for line in f]


def make_agents(rows: list[dict]) -> list[Agent]:
    return [Agent(f"{r['task']}/{r['model']}", [(t, m * MB) for t, m in r["samples_s_mb"]],
                  [(c["start"], c["end"]) for c in r["tool_calls"]]) for r in rows]


def replay(rows: list[dict], mode: str, static_limit: float, per_call: float) -> dict[str, float]:
    agents = make_agents(rows)
    host = static_limit * len(agents)
    horizon = max(a.end for a in agents)
    out = {"agents_killed": 0, "calls": sum(len(a.calls) for a in agents), "calls_killed": 0,
           "reserved_s": 0.0, "used_s": 0.0, "peak_used": 0.0, "seconds": 0}
    t = 0.0
    while t <= horizon:
        shares: list[tuple[float, Agent, int]] = []
        total = reserved = 0.0
        for a in agents:
            if not a.alive or t > a.end:
                continue
            value = a.sample_at(t)
            n = a.call_at(t)
            if n is None:
                a.baseline = value
            elif n in a.killed_calls:
                value = a.baseline  # the killed call's memory was freed
            tool = max(0.0, value - a.baseline) if n is not None else 0.0
            if mode == "static":
                if value > static_limit:
                    if n is not None and tool > a.baseline:
                        a.killed_calls.add(n)
                        out["calls_killed"] += 1
                        value = a.baseline
                    else:
                        a.alive, a.died_at = False, t
                        out["agents_killed"] += 1
                        continue
                reserved += static_limit
            else:
                if n is not None and n not in a.killed_calls and tool > per_call:
                    a.killed_calls.add(n)
                    out["calls_killed"] += 1
                    value, tool = a.baseline, 0.0
                reserved += a.baseline + (per_call if n is not None and n not in a.killed_calls else 0.0)
                if n is not None and tool > 0:
                    shares.append((tool, a, n))
            total += value
        if mode == "vigild":
            reserved = min(reserved, host)
            for tool, a, n in sorted(shares, key=lambda s: -s[0]):
                if total <= host:
                    break
                a.killed_calls.add(n)  # global OOM: the largest running tool call
                out["calls_killed"] += 1
                total -= tool
        out["reserved_s"] += reserved
        out["used_s"] += total
        out["peak_used"] = max(out["peak_used"], total)
        out["seconds"] += 1
        t += 1.0
    out["completed"] = sum(1 for a in agents for n, (_start, end) in enumerate(a.calls)
                           if n not in a.killed_calls and end < a.died_at)
    out["host"] = host
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=16, help="agents per host (default 16)")
    parser.add_argument("--per-call", type=float, default=1024, help="vigild per-call memory.max in MB (default 1024)")
    parser.add_argument("--static", choices=("median", "p75", "p90"), default="median",
                        help="static per-agent limit: this percentile of per-run peaks (default median)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rows = load()
    peaks = sorted(max(m for _, m in r["samples_s_mb"]) * MB for r in rows)
    static_limit = {"median": statistics.median(peaks), "p75": peaks[int(len(peaks) * 0.75)],
                    "p90": peaks[int(len(peaks) * 0.9)]}[args.static]
    random.Random(args.seed).shuffle(rows)
    groups = [rows[i:i + args.agents] for i in range(0, len(rows), args.agents)]
    totals = {}
    for mode in ("static", "vigild"):
        acc: dict[str, float] = {}
        for group in groups:
            for key, value in replay(group, mode, static_limit, args.per_call * MB).items():
                acc[key] = acc.get(key, 0) + value if key != "peak_used" else max(acc.get(key, 0), value)
        totals[mode] = acc
    s, v = totals["static"], totals["vigild"]
    print(f"{len(rows)} agent runs from {TRACES.name}, {len(groups)} hosts of up to {args.agents} agents; "
          f"host RAM = agents x static limit; static limit {static_limit / MB:.0f} MB ({args.static} peak); "
          f"vigild per-call memory.max {args.per_call:.0f} MB")
    rows_out = [
        ("agents OOM-killed", f"{s['agents_killed']:.0f} / {len(rows)}", f"{v['agents_killed']:.0f} / {len(rows)}"),
        ("tool calls completed", f"{s['completed']:.0f} / {s['calls']:.0f}", f"{v['completed']:.0f} / {v['calls']:.0f}"),
        ("tool calls OOM-killed", f"{s['calls_killed']:.0f}", f"{v['calls_killed']:.0f}"),
        ("memory reserved (avg, GB/host)", f"{s['reserved_s'] / s['seconds'] / 1e9:.2f}",
         f"{v['reserved_s'] / v['seconds'] / 1e9:.2f}"),
        ("memory used (avg, GB/host)", f"{s['used_s'] / s['seconds'] / 1e9:.2f}", f"{v['used_s'] / v['seconds'] / 1e9:.2f}"),
        ("used / reserved", f"{s['used_s'] / s['reserved_s']:.0%}", f"{v['used_s'] / v['reserved_s']:.0%}"),
    ]
    print(f"{'':32} {'(a) static per agent':>22} {'(b) vigild per call':>22}")
    for name, a, b in rows_out:
        print(f"{name:32} {a:>22} {b:>22}")


if __name__ == "__main__":
    main()
