"""End to end: vigild tracks an agent matched by its config, a real Prometheus scrapes it, and
every expression of every dashboard panel returns data from that Prometheus, except the panels
named in EXPECTED_EMPTY with their reason."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.require import need
from fakellm import CLIENTS_DIR, FakeLLMServer, client_env
from support.prometheus import Prometheus
from support.vigild_proc import Vigild, metric_value

pytestmark = pytest.mark.usefixtures("root")

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"
# Every panel gets data from the workload below; a panel that legitimately stays empty would be
# listed here with the reason.
EXPECTED_EMPTY: dict[tuple[str, str], str] = {}
ALLOC = Path(__file__).resolve().parent / "data" / "control" / "alloc.py"
RATE_WINDOW = "30s"
# A TLS client that speaks no HTTP: the decoder must count a parse failure for it.
GARBAGE_CLIENT = """
import os, socket, ssl, urllib.parse
url = urllib.parse.urlparse(os.environ["FAKELLM_URL"])
ctx = ssl.create_default_context(cafile=os.environ["FAKELLM_CA"])
with ctx.wrap_socket(socket.create_connection((url.hostname, url.port)), server_hostname=url.hostname) as s:
    s.sendall(b"\\x00\\x01 this is not HTTP \\r\\n\\r\\n")
"""


def substitute(expr: str) -> str:
    """What Grafana does to a panel expression before sending it."""
    for var, value in (("$__rate_interval", RATE_WINDOW), ("$__interval", "1s"), ("$__range", "5m"),
                       ("${agent}", ".*"), ("$agent", ".*"), ("${host}", ".*"), ("$host", ".*")):
        expr = expr.replace(var, value)
    assert "$" not in expr, expr
    return expr


def panel_targets() -> Iterator[tuple[str, str, str, str]]:
    """(dashboard uid, panel title, refId, expression) of every query in every dashboard."""
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield board["uid"], panel["title"], target["refId"], target["expr"]


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


def test_dashboards_show_real_data(tmp_path: Path, server: FakeLLMServer) -> None:
    need(shutil.which("prometheus") is not None, "the prometheus package is not installed")
    agent = tmp_path / "fakeagent"  # its comm at exec: the config's agent
    agent.write_text(f"""#!/bin/sh
set -e
"{sys.executable}" "{CLIENTS_DIR / 'anthropic_client.py'}" >/dev/null
"{sys.executable}" "{CLIENTS_DIR / 'openai_client.py'}" >/dev/null
"{sys.executable}" -c '{GARBAGE_CLIENT}'
curl -sS --http1.1 "$FAKELLM_URL/simple/requests/" >/dev/null
ls / >/dev/null
cat "{tmp_path}/.env" >/dev/null  # a secret read: the detections panel
"{sys.executable}" "{ALLOC}" 200 0.1 oomalloc || true  # OOM-killed at its policy's 64 MiB
"{sys.executable}" "{ALLOC}" 160 0.5 bigalloc  # a memory spike: 160 MiB in one burst
""")
    (tmp_path / ".env").write_text("API_TOKEN=not-a-real-one\n")
    agent.chmod(0o755)
    early = tmp_path / "earlyagent"  # running before vigild starts: adopted from /proc
    early.write_text("#!/bin/sh\nwhile :; do sleep 0.2; done\n")
    early.chmod(0o755)
    early_proc = subprocess.Popen([str(early)])
    vigild = Vigild(tmp_path, """
[discovery]
default_agents = false

[[agents]]
name = "fake"
comm = "fakeagent"

[[agents]]
name = "early"
comm = "earlyagent"

[[agents]]
name = "shargs"
exe = "*/sh"
args = "*shargs-marker*"

[tools]
enabled = true
memory_max = "256M"
pids_max = 256

[[policies]]
match = "*oomalloc*"
memory_max = "64M"
""")
    prometheus = None
    try:
        vigild.start()
        status = vigild.status()
        assert [s["agent"] for s in status["sessions"]] == ["early"]
        assert status["sessions"][0]["pid"] == early_proc.pid
        prometheus = Prometheus(tmp_path / "prometheus", {
            "global": {"scrape_interval": "500ms", "evaluation_interval": "500ms"},
            "scrape_configs": [{"job_name": "vigild", "static_configs": [{"targets": [f"127.0.0.1:{vigild.port}"]}]}],
        })

        subprocess.run([str(agent)], env=client_env(server), check=True, timeout=60)
        subprocess.run(["sh", "-c", ": shargs-marker; ls / >/dev/null"], check=True)
        subprocess.run(["sh", "-c", "ls / >/dev/null"], check=True)  # a plain sh: not an agent
        assert len(server.exchanges.wait_finished(7)) == 7  # anthropic: 2 calls, openai: 4, curl: 1
        early_proc.terminate()
        early_proc.wait()

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # the pipeline drains the ring buffer asynchronously
            metrics = vigild.metrics()
            if (metric_value(metrics, "vigil_llm_calls_total") >= 6
                    and metric_value(metrics, "vigil_agent_sessions_started_total") >= 3):
                break
            time.sleep(0.2)
        assert metric_value(metrics, "vigil_llm_calls_total", agent="fake", outcome="ok") == 6
        assert metric_value(metrics, "vigil_agent_sessions_started_total", agent="shargs") == 1
        assert metric_value(metrics, "vigil_agent_sessions_started_total") == 3
        assert metric_value(metrics, "vigil_parse_failures_total") >= 1
        assert metric_value(metrics, "vigil_oom_kills_total", agent="fake") >= 1
        assert metric_value(metrics, "vigil_tool_calls_total", agent="fake", outcome="oom_killed") == 1
        # Rates need two samples of every series after its first appearance.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            counts = prometheus.query("min(count_over_time(vigil_llm_tokens_total[1m]))")
            if counts and float(counts[0]["value"][1]) >= 3:
                break
            time.sleep(0.3)

        empty, unexpected_data = [], []
        for uid, title, ref, expr in panel_targets():
            result = prometheus.query(substitute(expr))
            if (uid, title) in EXPECTED_EMPTY:
                if result:
                    unexpected_data.append((uid, title, ref))
            elif not result:
                empty.append((uid, title, ref, expr))
        assert empty == [], "panels without data:\n" + "\n".join(map(str, empty))
        # A panel listed as empty that shows data means the feature landed: drop it from the list.
        assert unexpected_data == []
    finally:
        if early_proc.poll() is None:
            early_proc.kill()
        if prometheus is not None:
            prometheus.close()
        assert vigild.stop() == 0, vigild.log
    assert not [line for line in vigild.log if re.match(r"(ERROR|CRITICAL)", line)], vigild.log
    assert os.path.getsize(vigild.db) > 0
