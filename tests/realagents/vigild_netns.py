"""Run a real vigild and one real agent in the same loopback-only network namespace, so the agent
can export its telemetry to the vigild's receiver (which attributes it through this namespace's
socket table):

    unshare -n -- python -m realagents.vigild_netns AGENT OUTDIR COMMAND CONFIG

(with tests/ on PYTHONPATH). CONFIG is vigild's config with `{port}` where its telemetry port
goes; the agent gets the matching endpoint in its environment and VIGIL_AGENT_PROMPT as its
prompt. Writes what netns.py writes, plus OUTDIR/vigild.json: the agent's stored sessions with
their events, and vigild's log. Exits with the agent's status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from support.vigild_proc import Vigild, free_port

from realagents import netns
from vigild.daemon.cli.telemetry_setup import telemetry_env
from vigild.daemon.store import Store

SETTLE_S = 20.0  # how long the sessions may take to end once the agent is gone


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    name, out, command, config = argv[0], Path(argv[1]), argv[2], argv[3]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    port = free_port()
    (out / "vigild").mkdir(parents=True, exist_ok=True)
    daemon = Vigild(out / "vigild", config.replace("{port}", str(port))).start()
    try:
        os.environ["VIGIL_AGENT_ENV"] = json.dumps(telemetry_env(f"http://127.0.0.1:{port}"))
        status = netns.main([name, str(out), command])
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline and not _ended(daemon.db, name):
            time.sleep(0.2)
    finally:
        stopped = daemon.stop()
    store = Store(daemon.db)
    try:
        sessions = [{"session": s, "events": store.events(s["id"])} for s in store.sessions() if s["agent"] == name]
    finally:
        store.close()
    (out / "vigild.json").write_text(json.dumps({"sessions": sessions, "stopped": stopped, "log": daemon.log},
                                                default=str))
    return status


def _ended(db: Path, name: str) -> bool:
    store = Store(db)
    try:
        return any(s["agent"] == name and s["ended_ns"] for s in store.sessions())
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
