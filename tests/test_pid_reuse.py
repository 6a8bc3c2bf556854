"""Identity that cannot mix: a process is its (pid, start time). A pid the kernel hands to a new
process after an old one exited never inherits the old one's session, command line or children;
under vigild, a new agent started on an ended session's pid gets its own LLM calls."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakellm import FakeLLMServer, Reply, Scenario, ToolCallSpec, client_env
from support.vigild_proc import Vigild, agent_config

from vigild.bpf.events import ExecEvent, ExitEvent, ForkEvent
from vigild.correlate.process_tree import ProcessTable
from vigild.daemon.store import Store

DATA = Path(__file__).parent / "data"
AGENT = DATA / "control" / "llm_agent.py"
SPAWN_AT_PID = DATA / "spawn_at_pid.py"


def _exec(ts: int, pid: int, session: int, argv: list[str]) -> ExecEvent:
    return ExecEvent(ts_ns=ts, pid=pid, ppid=1, comm=argv[0], argv=argv, session_id=session, cgroup_id=1, tid=pid,
                     uid=0)


def test_a_reused_pid_is_a_new_process() -> None:
    table = ProcessTable(keep_exited=1)
    table.apply(_exec(1, 500, 7, ["old-agent"]))
    table.apply(ForkEvent(ts_ns=2, pid=501, ppid=500, comm="sh", session_id=7, cgroup_id=1, tid=501, uid=0))
    table.apply(ExitEvent(ts_ns=3, pid=500, ppid=1, comm="old-agent", exit_code=0, session_id=7, cgroup_id=1,
                          tid=500, uid=0))
    new = table.apply(_exec(10, 500, 9, ["new-agent"]))  # pid 500 again: a root found by name
    assert (new.session_id, new.argv, new.children, new.start_ns, new.alive) == (9, ["new-agent"], [], 10, True)
    assert table.get(500) is new
    # the old process's exit leaving the memory of exits must not take the new one with it
    table.apply(ExitEvent(ts_ns=11, pid=501, ppid=500, comm="sh", exit_code=0, session_id=7, cgroup_id=1, tid=501,
                          uid=0))
    table.apply(ExitEvent(ts_ns=12, pid=500, ppid=1, comm="new-agent", exit_code=0, session_id=9, cgroup_id=1,
                          tid=500, uid=0))
    assert table.get(500) is new and not new.alive


def _free_pid() -> int:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    return random.choice([p for p in range(pid_max // 2, pid_max - 1) if not Path(f"/proc/{p}").exists()])


def _run_at(pid: int, argv: list[str], env: dict[str, str], cwd: Path) -> None:
    result = subprocess.run([sys.executable, str(SPAWN_AT_PID), str(pid), *argv], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.usefixtures("root")
def test_new_agent_on_an_ended_sessions_pid_gets_its_own_llm_calls(tmp_path: Path) -> None:
    agent = tmp_path / "reuseagent"
    agent.write_text(f"#!/bin/sh\nexec {sys.executable} {AGENT}\n")
    agent.chmod(0o755)
    scenario = Scenario("one", default_reply=Reply(
        text="Writing.", tool_calls=(ToolCallSpec("bash", {"command": "echo mine > out.txt"}),)))
    daemon = Vigild(tmp_path, agent_config("reuser", agent.name)).start()
    try:
        with FakeLLMServer(scenarios={"one": scenario}, default_scenario="one") as server:
            pid = _free_pid()
            for name in ("first", "second"):  # the second starts on the first's pid, after it ended
                work = tmp_path / name
                work.mkdir()
                _run_at(pid, [str(agent)], client_env(server), work)
                assert (work / "out.txt").read_text() == "mine\n"
            assert server.errors == []
            assert len(server.exchanges.llm()) == 2  # noqa: PLR2004  (one LLM call per agent)
        store = Store(daemon.db)
        deadline = time.monotonic() + 30
        while len([s for s in store.sessions() if s["agent"] == "reuser" and s["ended_ns"]]) < 2:  # noqa: PLR2004
            assert time.monotonic() < deadline, daemon.log[-20:]
            time.sleep(0.2)
        sessions = sorted((s for s in store.sessions() if s["agent"] == "reuser"), key=lambda s: s["started_ns"])
        stories = [store.events(s["id"]) for s in sessions]
        store.close()
    finally:
        assert daemon.stop() == 0, daemon.log[-20:]
    assert len(sessions) == 2 and sessions[0]["id"] != sessions[1]["id"]  # noqa: PLR2004
    assert sessions[0]["root_pid"] == sessions[1]["root_pid"] == pid
    for session, events in zip(sessions, stories, strict=True):
        llm = [e for e in events if e["type"] == "llm_call"]
        assert len(llm) == 1 and llm[0]["session_id"] == session["id"], [e["type"] for e in events][:40]
        starts = [e for e in events if e["type"] == "tool_start"]
        requested = [s for s in starts if not s["unrequested"]]
        assert [s["tool_call_id"] for s in requested] == [llm[0]["tool_calls"][0]["id"]]
        assert [s["argv"] for s in starts if s["unrequested"]] == [["/bin/true", "unrequested"]]
