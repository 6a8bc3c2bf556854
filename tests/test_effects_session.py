"""Effects and correlation end to end: a scripted agent asks the (local, TLS) model what to do and
runs it under `vigil run`; the timeline puts each effect under the tool call that caused it and
the exfiltration detection fires with its whole chain."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.helpers import vigil
from support.scripted_agent import run_scripted_agent

pytestmark = pytest.mark.usefixtures("root")

def run_agent(tmp_path: Path, port: int, commands: list[str], *extra: str) -> tuple[list[dict[str, Any]], Path]:
    return run_scripted_agent(tmp_path, "run", commands, *extra)


def test_secret_read_then_egress_is_one_story(tmp_path: Path, sink: int) -> None:
    read_cmd = "cat ~/.ssh/id_rsa > /dev/null"
    send_cmd = f"curl -s -o /dev/null http://127.0.0.1:{sink}/upload"
    events, db = run_agent(tmp_path, sink, [read_cmd, send_cmd])
    starts = {e["argv"][-1]: e for e in events if e["type"] == "tool_start"}
    reader, sender = starts[read_cmd], starts[send_cmd]
    home = tmp_path / "home"

    # effects carry their tool call, from the kernel
    reads = [e for e in events if e["type"] == "file_open" and e.get("path") == f"{home}/.ssh/id_rsa"]
    assert reads and {e["tool_call"] for e in reads} == {reader["tool_call"]}
    connects = [e for e in events if e["type"] == "net_connect" and e.get("remote_port") == sink]
    assert connects and {e["tool_call"] for e in connects} == {sender["tool_call"]}

    (egress,) = [e for e in events if e["type"] == "detection" and e["name"] == "secret_egress"]
    chain = [(link["type"], link.get("tool_call")) for link in egress["evidence"]]
    assert chain == [("llm_call", None), ("tool_start", reader["tool_call"]), ("file_open", reader["tool_call"]),
                     ("tool_start", sender["tool_call"]), ("net_connect", sender["tool_call"])]
    assert egress["evidence"][0]["response_id"] == reader["response_id"]
    assert f"127.0.0.1:{sink}" in egress["reason"]

    # the stored timeline nests the same story
    shown = vigil(["show", "--db", str(db), "-o", "json"])
    tree = json.loads(shown.stdout)
    (step,) = tree["timeline"]
    tools = {t["start"]["argv"][-1]: t for t in step["tool_calls"]}
    assert set(tools) == {read_cmd, send_cmd}
    assert any(e.get("path") == f"{home}/.ssh/id_rsa" for e in tools[read_cmd]["effects"])
    assert not any(e.get("path") == f"{home}/.ssh/id_rsa" for e in tools[send_cmd]["effects"])
    assert any(e.get("remote_port") == sink for e in tools[send_cmd]["effects"] if e["type"] == "net_connect")
    assert [d["name"] for d in tools[send_cmd]["detections"]] == ["secret_egress"]
    assert [d["name"] for d in tools[read_cmd]["detections"]] == ["secret_read"]
    (stray,) = tree["unrequested"]
    assert stray["start"]["argv"] == ["/bin/true", "unrequested"] and stray["start"]["unrequested"] is True
    assert tree["summary"]["tool_calls"] == 3 and tree["summary"]["detections"] >= 3

    text = vigil(["show", "--db", str(db)], env={**os.environ, "COLUMNS": "200"})
    assert "ALERT secret_egress" in text.stdout and "no tool call asked for these" in text.stdout


def test_no_exfiltration_alarm_without_a_secret(tmp_path: Path, sink: int) -> None:
    events, _ = run_agent(tmp_path, sink, ["cat /etc/hostname > /dev/null",
                                           f"curl -s -o /dev/null http://127.0.0.1:{sink}/"])
    names = [e["name"] for e in events if e["type"] == "detection"]
    assert "secret_egress" not in names and "secret_read" not in names
    assert names == ["unrequested"]  # only the stray /bin/true


def test_many_small_writes_in_one_tool_call_are_one_effect(tmp_path: Path, sink: int) -> None:
    script = "import os\nwith open('out.bin', 'wb', buffering=0) as f:\n    for _ in range(10000):\n        f.write(b'x' * 7)\n"
    (tmp_path / "writer.py").write_text(script)
    events, _ = run_agent(tmp_path, sink, [f"{sys.executable} {tmp_path / 'writer.py'}"])
    (start,) = [e for e in events if e["type"] == "tool_start" and not e["unrequested"]]
    writes = [e for e in events if e["type"] == "file_write" and e.get("path", "").endswith("/work/out.bin")]
    assert len(writes) == 1
    assert writes[0]["bytes"] == 70000 and writes[0]["writes"] == 10000
    assert writes[0]["tool_call"] == start["tool_call"]


def test_the_same_tool_call_three_times_is_a_loop(tmp_path: Path, sink: int) -> None:
    events, _ = run_agent(tmp_path, sink, ["ls -la", "ls -la", "ls -la"])
    (loop,) = [e for e in events if e["type"] == "detection" and e["name"] == "tool_loop"]
    assert [link["type"] for link in loop["evidence"]] == ["tool_start"] * 3
    assert "3 times" in loop["reason"]


def test_changing_tool_calls_are_not_a_loop(tmp_path: Path, sink: int) -> None:
    events, _ = run_agent(tmp_path, sink, ["ls -la", "echo fix > notes.txt", "ls -la", "ls -la"])
    assert not [e for e in events if e["type"] == "detection" and e["name"] == "tool_loop"]


def test_writes_outside_the_working_tree(tmp_path: Path, sink: int) -> None:
    outside = Path("/srv") / f"vigil-test-{os.getpid()}"
    outside.mkdir(parents=True)
    try:
        events, _ = run_agent(tmp_path, sink, [f"echo x > {outside}/planted", "echo y > inside.txt"])
    finally:
        for f in outside.iterdir():
            f.unlink()
        outside.rmdir()
    found = [e for e in events if e["type"] == "detection" and e["name"] == "write_outside_tree"]
    assert found and all(f"{outside}/planted" in e["reason"] for e in found)
    assert not [e for e in found if "inside.txt" in e["reason"]]


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium as root in a test machine: no sandbox (it refuses to start as root with it)."""
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    assert browser is not None, "a Chromium is needed to check the HTML report (setup.sh --dev installs it)"
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", *args], capture_output=True, text=True, timeout=120, check=False)


def test_html_report_opens_in_a_browser_and_tells_the_story(tmp_path: Path, sink: int) -> None:
    read_cmd = "cat ~/.ssh/id_rsa > /dev/null"
    send_cmd = f"curl -s -o /dev/null http://127.0.0.1:{sink}/upload"
    events, db = run_agent(tmp_path, sink, [read_cmd, send_cmd])
    session_id = events[0]["session_id"]
    page = tmp_path / "report.html"
    out = vigil(["report", str(session_id)[:10], "--html", str(page), "--db", str(db)])
    assert out.returncode == 0, out.stderr
    html = page.read_text()
    assert "<script" not in html and "http://" not in html.split("<body>")[0]  # self-contained, nothing fetched

    dom = _chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    llm_calls = [e for e in events if e["type"] == "llm_call"]
    tool_ids = [c["id"] for e in llm_calls for c in e["tool_calls"]]
    assert f'<b id="llm-count">{len(llm_calls)}</b>' in dom.stdout
    assert f'<b id="tool-count">{sum(1 for e in events if e["type"] == "tool_start")}</b>' in dom.stdout
    for tool_id in tool_ids:
        assert tool_id in dom.stdout
    assert "cat ~/.ssh/id_rsa" in dom.stdout.replace("&gt;", ">") and "/upload" in dom.stdout
    assert "ALERT secret_egress" in dom.stdout

    shot = tmp_path / "report.png"
    assert _chromium("--window-size=1200,900", f"--screenshot={shot}", page.as_uri()).returncode == 0
    assert shot.stat().st_size > 10_000
