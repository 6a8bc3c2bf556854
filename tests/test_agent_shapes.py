"""Agent profiles and command linking against the process trees of the real, pinned agents
(tests/data/agents/process_trees.json: every first exec of a child of an agent process, recorded
by `vigil run`/`vigil trace` from Gemini CLI, qwen-code, Claude Code, Codex and opencode driven
by the fake model, with the role each child really had)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vigild.correlate.agent_profiles import (
    HOUSEKEEPING,
    RELAUNCH,
    TOOL,
    AgentProfile,
    Proc,
    Profiles,
    script_of,
)
from vigild.correlate.shell_commands import inner_commands, shell_script
from vigild.correlate.tool_calls import ToolCallBook, command_is

TREES: dict[str, Any] = json.loads((Path(__file__).parent / "data" / "agents" / "process_trees.json").read_text())
CHILDREN = [(agent, child) for agent, tree in TREES.items() for child in tree["children"]]


def _ids(item: tuple[str, dict[str, Any]]) -> str:
    agent, child = item
    return f"{agent}:{child['role']}:{' '.join(child['argv'])[:40]}"


def _identity(path: str) -> str:
    """Paths as recorded: the agents' installs need not exist where the tests run; the .bin
    links the recordings went through resolve as npm lays them out."""
    links = {"/node_modules/.bin/qwen": "/node_modules/@qwen-code/qwen-code/cli-entry.js",
             "/node_modules/.bin/gemini": "/node_modules/@google/gemini-cli/bundle/gemini.js"}
    for link, target in links.items():
        if path.endswith(link):
            return path.removesuffix(link) + target
    return path


PROFILES = Profiles(resolve=_identity)


@pytest.mark.parametrize("item", CHILDREN, ids=[_ids(i) for i in CHILDREN])
def test_every_recorded_child_gets_its_real_role(item: tuple[str, dict[str, Any]]) -> None:
    _agent, child = item
    role = PROFILES.classify(Proc(child["filename"], child["argv"]),
                             Proc(child["agent"]["filename"], child["agent"]["argv"]))
    assert role == child["role"]


def test_the_recordings_cover_every_agent_and_role() -> None:
    roles = {(agent.split("@")[0], child["role"]) for agent, child in CHILDREN}
    assert {("gemini", RELAUNCH), ("qwen", RELAUNCH)} <= roles
    for agent in ("gemini", "qwen", "claude", "codex"):
        assert (agent, HOUSEKEEPING) in roles and (agent, TOOL) in roles
    assert ("opencode", TOOL) in roles


@pytest.mark.parametrize("item", [i for i in CHILDREN if i[1]["role"] == TOOL],
                         ids=[_ids(i) for i in CHILDREN if i[1]["role"] == TOOL])
def test_each_real_tool_command_line_is_exactly_the_models_command(item: tuple[str, dict[str, Any]]) -> None:
    agent, child = item
    commands = TREES[agent]["commands"]
    assert sum(command_is(c, child["argv"]) for c in commands) == 1


def test_unwrapping_claude_codes_snapshot_and_eval_keeps_quotes() -> None:
    argv = ["/bin/bash", "-c", "source /h/.claude/shell-snapshots/snapshot-bash-1.sh 2>/dev/null || true && "
            "eval 'printf '\"'\"'%s\\n'\"'\"' \"it'\"'\"'s ok\" > out.txt' < /dev/null && pwd -P >| /tmp/claude-1-cwd"]
    assert inner_commands(argv)[-1] == "printf '%s\\n' \"it's ok\" > out.txt"


def test_shell_script_takes_options_after_dash_c_and_login_shells() -> None:
    assert shell_script(["/bin/bash", "-c", "-l", "echo hi"]) == "echo hi"
    assert shell_script(["/bin/bash", "-lc", "echo hi"]) == "echo hi"
    assert shell_script(["/proc/self/exe", "--setup", "/bin/bash", "/bin/bash", "-lc", "echo hi"]) == "echo hi"
    assert shell_script(["python3", "-c", "print(1)"]) is None
    assert shell_script(["bash", "script.sh", "-c", "x"]) is None
    assert inner_commands(["bash", "-c", "eval 'unbalanced"]) == ["eval 'unbalanced"]


def test_a_command_inside_a_longer_one_is_not_exact() -> None:
    assert not command_is("ls", ["bash", "-c", "ls -la"])
    assert command_is("ls -la", ["ls", "-la"])


def test_relaunch_needs_the_same_interpreter_and_script() -> None:
    agent = Proc("/usr/bin/node", ["node", "/opt/a/agent.js", "-p", "x"])
    assert PROFILES.classify(Proc("/usr/bin/node", ["node", "--expose-gc", "/opt/a/agent.js", "-p", "x"]), agent) == RELAUNCH
    assert PROFILES.classify(Proc("/usr/bin/node", ["node", "/opt/a/other.js"]), agent) == TOOL
    assert PROFILES.classify(Proc("/usr/local/bin/node", ["node", "/opt/a/agent.js"]), agent) == TOOL
    assert PROFILES.classify(Proc("/usr/bin/node", ["node", "-e", "/opt/a/agent.js"]), agent) == TOOL
    native = Proc("/opt/codex", ["/opt/codex", "exec", "x"])
    assert PROFILES.classify(Proc("/opt/codex", ["/opt/codex", "exec", "x"]), native) == TOOL


def test_script_of_skips_flags_and_refuses_inline_code() -> None:
    assert script_of(Proc("/usr/bin/node", ["node", "--max-old-space-size=1", "a.js"])) == "a.js"
    assert script_of(Proc("/usr/bin/python3.12", ["python3", "-u", "agent.py"])) == "agent.py"
    assert script_of(Proc("/usr/bin/python3", ["python3", "-m", "agent"])) is None
    assert script_of(Proc("/bin/bash", ["bash", "x.sh"])) is None


def test_runtime_helpers_are_housekeeping_under_any_agent() -> None:
    agent = Proc("/usr/bin/python3", ["python3", "my_agent.py"])
    assert PROFILES.classify(Proc("/sbin/ldconfig", ["/sbin/ldconfig", "-p"]), agent) == HOUSEKEEPING
    gcc = ["/usr/bin/gcc", "-Wl,-t", "-o", "/tmp/tmpab12cd", "-lssl"]
    assert PROFILES.classify(Proc("/usr/bin/gcc", gcc), agent) == HOUSEKEEPING
    assert PROFILES.classify(Proc("/usr/bin/gcc", ["/usr/bin/gcc", "-o", "x", "x.c"]), agent) == TOOL
    assert PROFILES.classify(Proc("/usr/bin/git", ["git", "rev-parse", "--show-toplevel"]), agent) == TOOL


def test_config_extends_a_profile_and_adds_new_ones() -> None:
    profiles = PROFILES.with_extensions({"claude": ((), ("make -n",)), "mine": (("*/mine/*.js",), ("probe *",))})
    claude = profiles.profile_named("claude")
    assert claude is not None and "make -n" in claude.housekeeping and "/bin/bash -c env" in claude.housekeeping
    mine = profiles.profile_named("mine")
    assert mine == AgentProfile("mine", relaunch=("*/mine/*.js",), housekeeping=("probe *",))
    agent = Proc("/usr/bin/node", ["node", "/x/mine/a.js"])
    assert profiles.classify(Proc("/usr/bin/node", ["node", "/x/mine/b.js"]), agent, mine) == RELAUNCH
    assert profiles.classify(Proc("/usr/bin/probe", ["probe", "--all"]), agent, mine) == HOUSEKEEPING
    assert PROFILES.classify(Proc("/usr/bin/probe", ["probe", "--all"]), agent) == TOOL


def _llm(book: ToolCallBook, session: int, ts: int, *calls: tuple[str, str]) -> None:
    book.llm_call(session, ts, [{"id": i, "name": "bash", "arguments": {"command": c}} for i, c in calls], "resp")


def test_linking_prefers_the_exact_command_over_order_and_containment() -> None:
    from vigild.bpf.events import ExecEvent

    book = ToolCallBook()
    _llm(book, 1, 10, ("t1", "ls"), ("t2", "ls -la"))

    def start(pid: int, argv: list[str]) -> Any:
        return book.start(ExecEvent(ts_ns=20, session_id=1, cgroup_id=0, pid=pid, tid=pid, ppid=1, uid=0,
                                    comm="bash", filename="/bin/bash", argv=argv, call_start=True))

    # `ls -la` contains `ls`, but it is t2's command exactly
    assert start(5, ["bash", "-c", "ls -la"]).intent.tool_call_id == "t2"
    assert start(6, ["bash", "-c", "ls"]).intent.tool_call_id == "t1"


def test_a_housekeeping_shaped_command_the_model_asked_for_is_requested() -> None:
    book = ToolCallBook()
    _llm(book, 1, 10, ("t1", "getconf LONG_BIT"))
    assert book.requested(1, ["getconf", "LONG_BIT"], 20)
    assert not book.requested(1, ["lsb_release", "-a"], 20)
    assert not book.requested(2, ["getconf", "LONG_BIT"], 20)
