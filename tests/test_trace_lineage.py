"""`vigil trace` against real processes with the real lineage BPF program (root only)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.helpers import VIGIL, parse_json_lines, vigil_trace, wait_tracing

pytestmark = pytest.mark.usefixtures("root")

TREE_SCRIPT = (
    'sh -c \'/bin/true; /bin/false; /bin/sh -c "kill -TERM \\$\\$"; /bin/echo hello world; exit 0\'; exit 7'
)


def test_three_level_tree_exact_events() -> None:
    result = vigil_trace(["--", "bash", "-c", TREE_SCRIPT])
    assert result.returncode == 7, result.stderr
    execs = result.of_type("exec")
    exits = result.of_type("exit")
    argvs = [e["argv"] for e in execs]
    assert argvs == [
        ["bash", "-c", TREE_SCRIPT],
        ["sh", "-c", '/bin/true; /bin/false; /bin/sh -c "kill -TERM \\$\\$"; /bin/echo hello world; exit 0'],
        ["/bin/true"],
        ["/bin/false"],
        ["/bin/sh", "-c", "kill -TERM $$"],
        ["/bin/echo", "hello", "world"],
    ]
    bash, sh, true, false, killer, echo = execs
    # ppid links: bash -> sh -> each program
    assert sh["ppid"] == bash["pid"]
    for child in (true, false, killer, echo):
        assert child["ppid"] == sh["pid"]
    outcome = {e["pid"]: (e["exit_code"], e["signal"]) for e in exits}
    assert len(exits) == 6
    assert outcome[bash["pid"]] == (7, None)
    assert outcome[sh["pid"]] == (0, None)
    assert outcome[true["pid"]] == (0, None)
    assert outcome[false["pid"]] == (1, None)
    assert outcome[killer["pid"]] == (None, signal.SIGTERM)
    assert outcome[echo["pid"]] == (0, None)
    assert len(result.of_type("fork")) == 5
    assert {e["session_id"] for e in result.events} == {bash["session_id"]}
    assert execs[2]["filename"] == "/bin/true"
    assert "hello world" in result.stdout_other


def test_unrelated_processes_produce_no_events() -> None:
    tracer = subprocess.Popen([*VIGIL, "trace", "-o", "json", "--", "sleep", "2"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    time.sleep(0.8)  # the tracer is attached and the command sleeping
    noise = [subprocess.Popen(["/bin/true", f"noise-{i}"]) for i in range(200)]
    for p in noise:
        p.wait()
    out, err = tracer.communicate(timeout=30)
    assert tracer.returncode == 0, err
    events, _ = parse_json_lines(out)
    noise_pids = {p.pid for p in noise}
    assert not [e for e in events if e.get("pid") in noise_pids]
    assert [e["argv"] for e in events if e["type"] == "exec"] == [["sleep", "2"]]
    assert not [e for e in events if "noise" in str(e)]


def test_long_argv_reported_in_full_and_cut_past_the_limit() -> None:
    many = [f"arg{i}" for i in range(100)]
    big = ["x" * 1024 + str(i) for i in range(20)]  # > 20 KiB in total
    huge = ["y" * 4096 for _ in range(20)]  # 80 KiB: past the 64 KiB limit
    script = "; ".join([
        "/bin/true " + " ".join(many),
        "/bin/true " + " ".join(big),
        "/bin/true " + " ".join(huge),
    ])
    result = vigil_trace(["--", "bash", "-c", script])
    assert result.returncode == 0, result.stderr
    assert len(result.by_argv(["/bin/true", *many])) == 1
    full = result.by_argv(["/bin/true", *big])
    assert len(full) == 1 and not full[0]["argv_truncated"]
    assert sum(len(a) + 1 for a in full[0]["argv"]) > 20 * 1024
    cut = [e for e in result.of_type("exec") if e["argv"][1:2] == ["y" * 4096]]
    assert len(cut) == 1
    assert cut[0]["argv_truncated"] is True
    assert cut[0]["argv_bytes"] == len("/bin/true") + 1 + 20 * 4097
    assert sum(len(a) + 1 for a in cut[0]["argv"]) >= 64 * 1024  # everything up to the limit is kept


def test_thousand_execs_in_a_loop_all_seen_or_counted(tmp_path: Path) -> None:
    loop = tmp_path / "loop.sh"
    loop.write_text('[ "$1" -gt 0 ] && exec /bin/sh "$0" $(($1 - 1))\nexit 0\n')
    result = vigil_trace(["--", "bash", "-c", f"/bin/sh {loop} 999; echo done"], timeout=120)
    assert result.returncode == 0, result.stderr
    looped = [e for e in result.of_type("exec") if e["argv"][:2] == ["/bin/sh", str(loop)]]
    lost = sum(e["count"] for e in result.of_type("lost"))
    assert len(looped) + lost >= 1000
    assert len({e["pid"] for e in looped}) == 1  # one process, re-executed
    counters = [int(e["argv"][2]) for e in looped]
    if not lost:
        assert counters == list(range(999, -1, -1))


def test_attach_to_running_tree_tracks_existing_children() -> None:
    tree = subprocess.Popen(["bash", "-c", "sleep 30 & sleep 30 & wait; /bin/echo after"],
                            stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        children: list[int] = []
        while time.monotonic() < deadline and len(children) < 2:
            children = [int(p) for p in Path(f"/proc/{tree.pid}/task/{tree.pid}/children").read_text().split()]
            time.sleep(0.05)
        assert len(children) == 2
        tracer = subprocess.Popen([*VIGIL, "trace", "-o", "json", "-p", str(tree.pid), "--timeout", "20"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert tracer.stdout is not None
        first = tracer.stdout.readline()  # session_start: the tree is tracked from here on
        assert '"session_start"' in first
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        out, err = tracer.communicate(timeout=30)
        assert tracer.returncode == 0, err
        events, _ = parse_json_lines(first + out)
        exits = {e["pid"]: e for e in events if e["type"] == "exit"}
        for pid in children:
            assert exits[pid]["signal"] == signal.SIGKILL
        assert [e["argv"] for e in events if e["type"] == "exec"] == [["/bin/echo", "after"]]
        assert exits[tree.pid]["exit_code"] == 0
        assert events[0]["argv"][:2] == ["bash", "-c"]
    finally:
        tree.kill()
        tree.wait()


def test_comm_match_makes_new_roots(tmp_path: Path) -> None:
    agent = tmp_path / "fakeagent-x"
    agent.write_text("#!/bin/sh\n/bin/echo from-agent\n")
    agent.chmod(0o755)
    tracer = subprocess.Popen([*VIGIL, "trace", "-o", "json", "-c", "fakeagent-x", "--timeout", "3"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_tracing(tracer)
    subprocess.run(["bash", "-c", f"{agent}; /bin/true not-traced"], check=True, stdout=subprocess.DEVNULL)
    out, err = tracer.communicate(timeout=30)
    assert tracer.returncode == 0, err
    events, _ = parse_json_lines(out)
    starts = [e for e in events if e["type"] == "session_start"]
    assert len(starts) == 1
    assert starts[0]["session_id"] < 2**53  # kernel-minted, and still exact as a JSON double (jq)
    execs = [e["argv"] for e in events if e["type"] == "exec"]
    assert execs[0][0] == "/bin/sh" and execs[0][1] == str(agent)  # the script, run by its interpreter
    assert ["/bin/echo", "from-agent"] in execs
    assert ["/bin/true", "not-traced"] not in execs


def test_interrupt_detaches_cleanly() -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        tracer = subprocess.Popen([*VIGIL, "trace", "-o", "json", "-p", str(sleeper.pid)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert tracer.stdout is not None
        assert '"session_start"' in tracer.stdout.readline()
        tracer.send_signal(signal.SIGINT)
        _out, err = tracer.communicate(timeout=15)
        assert tracer.returncode == 130, err
        assert "Traceback" not in err
        assert sleeper.poll() is None  # the traced process is untouched
    finally:
        sleeper.kill()
        sleeper.wait()
    # bpftool names the processes holding each program: none may be the tracer any more.
    listing = subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True, check=True).stdout
    assert f"({tracer.pid})" not in listing


def test_exit_status_of_command_is_returned() -> None:
    result = vigil_trace(["--", "sh", "-c", "kill -KILL $$"])
    assert result.returncode == 128 + signal.SIGKILL
    assert result.of_type("exit")[0]["signal"] == signal.SIGKILL


def test_missing_command_is_a_clear_error(tmp_path: Path) -> None:
    """As a shell says it: 127 for a command not found, 126 for one that cannot be executed."""
    result = vigil_trace(["--", "/nonexistent/agent"])
    assert result.returncode == 127
    assert result.stderr.strip().startswith("vigil: error: cannot run '/nonexistent/agent'")
    assert "Traceback" not in result.stderr
    not_executable = tmp_path / "agent.txt"
    not_executable.write_text("echo hi\n")
    result = vigil_trace(["--", str(not_executable)])
    assert result.returncode == 126
    assert "Permission denied" in result.stderr and "Traceback" not in result.stderr


def test_without_bpf_privileges_one_line() -> None:
    # root with an empty capability bounding set: what a restricted container gets
    proc = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--", *VIGIL, "trace", "--", "true"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("vigil: error: loading BPF programs needs root with CAP_BPF")


def test_json_lines_are_written_as_they_happen() -> None:
    tracer = subprocess.Popen([*VIGIL, "trace", "-o", "json", "--", "bash", "-c", "/bin/true; sleep 60"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert tracer.stdout is not None
    seen = []
    while not any('"/bin/true"' in line for line in seen):
        line = tracer.stdout.readline()
        assert line, "vigil ended without printing the exec of /bin/true"
        seen.append(line)
    # The command sleeps for a minute after /bin/true: its exec was printed while it ran, not at the end.
    assert tracer.poll() is None
    tracer.send_signal(signal.SIGINT)
    tracer.communicate(timeout=30)
    assert tracer.returncode == 130


def test_cli_rejects_nothing_to_trace() -> None:
    proc = subprocess.run([*VIGIL, "trace"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "needs something to trace" in proc.stderr


def test_credentials_on_command_lines_are_redacted() -> None:
    key = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" * 2
    result = vigil_trace(["--", "/bin/sh", "-c", f"/bin/true -H 'Authorization: Bearer {key}' --api-key={key}"])
    assert result.returncode == 0, result.stderr
    execs = result.of_type("exec")
    assert len(execs) == 2
    printed = str(result.events)
    assert key not in printed and key[8:24] not in printed
    assert execs[1]["argv"][0] == "/bin/true" and "[REDACTED]" in " ".join(execs[1]["argv"])


def test_json_stdout_holds_events_only_and_w_file_the_same(tmp_path: Path) -> None:
    """`vigil trace -o json -- CMD | jq` works when CMD prints JSON-looking lines; `-w FILE` holds
    the same events; `--only` filters both; every id survives a JSON parser that reads doubles."""
    written = tmp_path / "events.jsonl"
    script = 'echo \'{"type": "exec", "ts": "x", "pid": 1}\'; echo plain; /bin/true marker'
    result = vigil_trace(["-w", str(written), "--", "bash", "-c", script])
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line]
    assert lines and all(json.loads(line)["ts"] != "x" for line in lines)  # no line of the command's
    assert {"plain", '{"type": "exec", "ts": "x", "pid": 1}'} <= set(result.stdout_other)
    assert [json.loads(line) for line in written.read_text().splitlines()] == [json.loads(line) for line in lines]
    for event in result.events:
        for key in ("session_id", "tool_call", "cgroup_id"):
            if isinstance(event.get(key), int):
                assert float(event[key]) == event[key], (key, event[key])  # exact as a double: jq keeps it

    only = vigil_trace(["--only", "exec", "--", "bash", "-c", script])
    assert {e["type"] for e in only.events} == {"session_start", "exec", "session_end"}
    bad = vigil_trace(["--only", "nonsense", "--", "true"])
    assert bad.returncode == 2 and "known: llm, tool" in bad.stderr


def test_live_view_folds_runtime_noise_and_ends_with_a_summary(tmp_path: Path) -> None:
    """A Python program's imports are thousands of opens: the text view counts them instead of
    printing them (--all prints them), keeps what the program really did, and closes with a summary."""
    script = tmp_path / "agent.py"
    script.write_text("import json, email, http.client, xml.dom.minidom, decimal, asyncio\n"
                      f"open({str(tmp_path / 'result.txt')!r}, 'w').write('done')\n")
    folded = subprocess.run([*VIGIL, "trace", "--", sys.executable, str(script)], capture_output=True, text=True,
                            timeout=120)
    everything = subprocess.run([*VIGIL, "trace", "--all", "--", sys.executable, str(script)], capture_output=True,
                                text=True, timeout=120)
    assert folded.returncode == 0 and everything.returncode == 0, folded.stderr + everything.stderr
    lines, all_lines = folded.stdout.splitlines(), everything.stdout.splitlines()
    assert f"create {tmp_path / 'result.txt'}" in folded.stdout
    assert len(lines) * 2 < len(all_lines), (len(lines), len(all_lines))
    summary = " ".join(lines[-2:])
    assert "summary: 0 LLM calls" in summary and "folded (--all shows them)" in summary
    assert "events" not in folded.stderr  # no status line fused with the command's terminal
