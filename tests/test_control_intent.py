"""`vigil run` links each tool call to the LLM tool call that asked for it (real TLS uprobes, the
fakellm server, the official anthropic SDK); a process nobody asked for is marked unrequested."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fakellm import FakeLLMServer, Reply, Scenario, ToolCallSpec, client_env
from support.helpers import VIGIL, events_and_output

pytestmark = pytest.mark.usefixtures("root")

AGENT = Path(__file__).parent / "data" / "control" / "llm_agent.py"
COMMAND = "echo linked-tool-call && uname -s"


def test_tool_start_carries_the_llm_tool_call() -> None:
    scenario = Scenario("one_bash", default_reply=Reply(text="Running it.",
                                                        tool_calls=(ToolCallSpec("bash", {"command": COMMAND}),)))
    with FakeLLMServer(scenarios={"one_bash": scenario}, default_scenario="one_bash") as server:
        proc = subprocess.run([*VIGIL, "run", "-o", "json", "--tool-mem-max", "256M", "--", sys.executable, str(AGENT)],
                              env=client_env(server), capture_output=True, text=True, timeout=120, check=False)
        assert server.errors == []
        exchanges = server.exchanges.wait_finished(1)
    assert proc.returncode == 0, proc.stderr
    events, other = events_and_output(proc.stdout, proc.stderr)
    assert "linked-tool-call" in other
    llm = [e for e in events if e["type"] == "llm_call"]
    assert len(llm) == 1 and llm[0]["tool_calls"][0]["arguments"] == {"command": COMMAND}
    starts = {tuple(e["argv"]): e for e in events if e["type"] == "tool_start"}
    ends = {tuple(e["argv"]): e for e in events if e["type"] == "tool_end"}
    requested = starts[("bash", "-c", COMMAND)]
    assert requested["tool_call_id"] == llm[0]["tool_calls"][0]["id"] == exchanges[0].response.tool_calls[0].id
    assert requested["tool_name"] == "bash" and requested["match"] == "command"
    assert requested["response_id"] == llm[0]["response_id"]
    assert requested["unrequested"] is False
    assert ends[("bash", "-c", COMMAND)]["tool_call_id"] == requested["tool_call_id"]
    stray = starts[("/bin/true", "unrequested")]
    assert stray["unrequested"] is True and stray["tool_call_id"] is None
