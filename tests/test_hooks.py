"""Claude Code hooks: recorded hook JSON (the documented PreToolUse / PostToolUse /
PostToolUseFailure input) fed to `vigil hook` by a fake Claude Code under a real `vigil run`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.helpers import TraceResult, VIGIL, events_and_output
from vigild.daemon.cli.hook import describe_end, match_text

DATA = Path(__file__).parent / "data" / "control"
PY = sys.executable
ALLOC = str(DATA / "alloc.py")
HOOK_AGENT = str(DATA / "hook_agent.py")
HOOKS = Path(__file__).parent.parent / "daemon" / "claude-code-hooks.json"
MIB = 1 << 20


def run_claude(args: list[str], commands: list[str]) -> tuple[TraceResult, dict[str, tuple[int, dict]]]:
    proc = subprocess.run([*VIGIL, "run", "-o", "json", "--no-tls", "--no-effects", *args, "--", PY, HOOK_AGENT,
                           json.dumps(commands)], check=False, capture_output=True, text=True, timeout=120)
    events, other = events_and_output(proc.stdout, proc.stderr)
    answers = {}
    for line in other:
        if line.startswith("HOOK "):
            _, tool_use_id, status, answer = line.split(" ", 3)
            answers[tool_use_id] = (int(status), json.loads(answer))
    return TraceResult(proc.returncode, events, proc.stderr, other), answers


def test_the_shipped_hook_config_is_a_settings_fragment() -> None:
    hooks = json.loads(HOOKS.read_text())["hooks"]
    assert set(hooks) == {"PreToolUse", "PostToolUse", "PostToolUseFailure"}
    for entries in hooks.values():
        assert entries[0]["matcher"] == "Bash"
        assert entries[0]["hooks"][0]["type"] == "command"
        assert entries[0]["hooks"][0]["command"].startswith("vigil hook ")


def test_message_for_an_oom_killed_call() -> None:
    end = {"outcome": "oom_killed", "limits": {"memory_max": 64 * MIB}, "limits_hit": ["memory.max"],
           "peak_memory_bytes": 64 * MIB}
    text = describe_end(end, {"memory_max": 8 << 30})
    assert "OOM-killed" in text and "memory.max = 64.0 MiB" in text and "peak memory was 64.0 MiB" in text
    assert "# vigil: mem-max=128M" in text and "8.0 GiB" in text
    assert describe_end({"outcome": "exit", "limits": {}, "limits_hit": []}, {}) is None
    assert "timeout" in describe_end({"outcome": "timeout", "limits": {"timeout_s": 5}, "limits_hit": ["timeout"],
                                      "duration_ms": 5100, "peak_memory_bytes": None}, {})


def test_match_text_stops_where_shells_quote() -> None:
    assert match_text("python alloc.py 200 # vigil: mem-max=64M") == "python alloc.py 200 # vigil: mem-max=64M"
    assert match_text("grep 'a b' file") == "grep"
    assert match_text("$HOME/x") is None


@pytest.mark.usefixtures("root")
def test_hooks_declare_the_hint_and_report_the_oom() -> None:
    commands = [f"{PY} {ALLOC} 200 # vigil: mem-max=64M", "echo fine", f"{PY} {ALLOC} 20"]
    result, answers = run_claude(["--tool-mem-max", "1G"], commands)
    assert result.returncode == 0, result.stderr
    ends = {tuple(e["argv"][-1:]): e for e in result.of_type("tool_end") if e["argv"][0] == "bash"}
    oom = ends[(commands[0],)]
    assert oom["outcome"] == "oom_killed" and oom["limits"]["memory_max"] == 64 * MIB
    assert ends[("echo fine",)]["limits"]["memory_max"] == 1 << 30  # no hint: the run's default
    assert ends[(commands[2],)]["limits"]["memory_max"] == 1 << 30
    # The hook's declaration, for the next call of the session, with the hook as who.
    declared = [c for c in result.of_type("limit_change") if c["new"].get("memory_max") == 64 * MIB]
    assert len(declared) == 1 and declared[0]["tool_call"] is None and declared[0]["session_id"] == oom["session_id"]

    status, answer = answers["toolu_01TEST0000"]
    assert status in (137, -9)  # bash -c execs a single command itself: SIGKILL is its own
    out = answer["hookSpecificOutput"]
    assert out["hookEventName"] == "PostToolUseFailure"
    assert "OOM-killed" in out["additionalContext"] and "memory.max = 64.0 MiB" in out["additionalContext"]
    assert "peak memory was 64.0 MiB" in out["additionalContext"]
    assert answers["toolu_01TEST0001"] == (0, {}) and answers["toolu_01TEST0002"] == (0, {})


def test_hooks_never_fail_without_vigil(tmp_path: Path) -> None:
    payload = {"session_id": "s", "transcript_path": "/tmp/t.jsonl", "cwd": "/tmp", "permission_mode": "default",
               "hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "ls"},
               "tool_use_id": "toolu_x"}
    for event in ("pre-tool-use", "post-tool-use"):
        done = subprocess.run([*VIGIL, "hook", event, "--socket", str(tmp_path / "none.sock")],
                              input=json.dumps(payload), capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0 and done.stdout == "" and "vigil hook" in done.stderr
