"""Detections as pure logic over event dicts: each one triggered, and its look-alike that must not."""

from __future__ import annotations

from typing import Any

from vigild.correlate.detections import DetectionConfig, Detector

SID = 42


def ev(kind: str, ts: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "ts_ns": ts * 1_000_000_000, "session_id": SID, **fields}


def session(detector: Detector, cwd: str = "/work/repo") -> None:
    detector.observe(ev("session_start", 0, cwd=cwd, pid=100))
    detector.observe(ev("llm_call", 1, pid=100, host="api.anthropic.com", response_id="msg_1",
                        tool_calls=[{"id": "toolu_1", "name": "bash"}, {"id": "toolu_2", "name": "bash"}]))
    detector.observe(ev("net_connect", 1, pid=100, family="inet", remote_addr="1.2.3.4", remote_port=443, ret=0))


def names(found: list) -> list[str]:
    return [d.name for d in found]


def test_secret_read_then_egress_with_the_chain() -> None:
    d = Detector()
    session(d)
    d.observe(ev("tool_start", 2, tool_call=1, tool_name="bash", response_id="msg_1", tool_call_id="toolu_1",
                 argv=["cat", "x"], pid=200))
    read = d.observe(ev("file_open", 2, pid=200, comm="cat", tool_call=1, path="/home/u/.ssh/id_rsa", read=True, ret=3))
    assert names(read) == ["secret_read"]
    d.observe(ev("tool_start", 3, tool_call=2, tool_name="bash", response_id="msg_1", tool_call_id="toolu_2",
                 argv=["curl", "y"], pid=201))
    egress = d.observe(ev("net_connect", 3, pid=201, comm="curl", tool_call=2, family="inet",
                          remote_addr="127.0.0.1", remote_port=9999, ret=0))
    assert names(egress) == ["secret_egress"]
    chain = [link["type"] for link in egress[0].evidence]
    assert chain == ["llm_call", "tool_start", "file_open", "tool_start", "net_connect"]
    assert "127.0.0.1:9999" in egress[0].reason and "/home/u/.ssh/id_rsa" in egress[0].reason


def test_chain_names_the_llm_call_that_carried_the_tool_call_id_not_the_response_id() -> None:
    """A provider that reuses one response id: the chain still names the call that asked."""
    d = Detector()
    session(d)  # its LLM call asked for toolu_1 and toolu_2 under msg_1
    d.observe(ev("llm_call", 2, pid=100, host="api.anthropic.com", response_id="msg_1",
                 tool_calls=[{"id": "toolu_9", "name": "bash"}]))
    d.observe(ev("tool_start", 3, tool_call=1, tool_name="bash", response_id="msg_1", tool_call_id="toolu_1",
                 argv=["cat", "x"], pid=200))
    (read,) = d.observe(ev("file_open", 3, pid=200, comm="cat", tool_call=1, path="/home/u/.ssh/id_rsa",
                           read=True, ret=3))
    assert [link["type"] for link in read.evidence] == ["llm_call", "tool_start", "file_open"]
    assert read.evidence[0]["ts_ns"] == 1_000_000_000  # the first LLM call, though the latest one shares its response id


def test_no_egress_detection_for_the_provider_or_without_a_secret() -> None:
    d = Detector()
    session(d)
    assert d.observe(ev("net_connect", 2, pid=200, family="inet", remote_addr="127.0.0.1", remote_port=9999, ret=0)) == []
    d.observe(ev("file_open", 3, pid=200, path="/home/u/.ssh/id_rsa", read=True, ret=3))
    # the LLM client talking to its provider again is not exfiltration
    assert d.observe(ev("net_connect", 4, pid=100, family="inet", remote_addr="1.2.3.4", remote_port=443, ret=0)) == []
    # a secret read long ago (outside the window, another tool call) does not taint a later connect
    late = d.observe(ev("net_connect", 4 + 301, pid=300, family="inet", remote_addr="9.9.9.9", remote_port=80, ret=0))
    assert late == []


def test_ordinary_reads_are_not_secrets() -> None:
    d = Detector()
    session(d)
    for path in ("/work/repo/src/ssh.py", "/work/repo/.envrc.example", "/etc/passwd", "/home/u/.sshconfig"):
        assert d.observe(ev("file_open", 2, pid=200, path=path, read=True, ret=3)) == [], path
    assert names(d.observe(ev("file_open", 2, pid=200, path="/work/repo/.env", read=True, ret=3))) == ["secret_read"]
    assert d.observe(ev("file_open", 2, pid=200, path="/etc/shadow", read=True, ret=-13)) == []  # refused: nothing read


def test_no_unrequested_alert_before_the_session_talked_to_a_model() -> None:
    d = Detector()
    d.observe(ev("session_start", 1, cwd="/work/repo"))  # a plain command, no LLM call (yet)
    assert d.observe(ev("tool_start", 2, tool_call=1, argv=["ls"], unrequested=True, pid=300)) == []
    d.observe(ev("llm_call", 3, pid=100, host="api.anthropic.com", response_id="msg_1"))
    found = d.observe(ev("tool_start", 4, tool_call=2, argv=["curl", "evil"], unrequested=True, pid=301))
    assert names(found) == ["unrequested"]


def test_unrequested_process() -> None:
    d = Detector()
    session(d)
    found = d.observe(ev("tool_start", 2, tool_call=1, argv=["curl", "evil"], unrequested=True, pid=300))
    assert names(found) == ["unrequested"]
    assert d.observe(ev("tool_start", 3, tool_call=2, argv=["ls"], tool_call_id="toolu_1", unrequested=False)) == []


def test_loop_of_identical_tool_calls_and_a_changing_one() -> None:
    d = Detector(DetectionConfig(loop_threshold=3))
    session(d)
    calls = [d.observe(ev("tool_start", 2 + i, tool_call=i, tool_name="bash", argv=["pytest", "-x"])) for i in range(3)]
    assert names(calls[2]) == ["tool_loop"] and len(calls[2][0].evidence) == 3
    assert calls[0] == calls[1] == []
    d2 = Detector(DetectionConfig(loop_threshold=3))
    session(d2)
    for i in range(3):
        assert d2.observe(ev("tool_start", 2 + i, tool_call=i, tool_name="bash", argv=["pytest", "-x"])) == []
        d2.observe(ev("file_write", 2 + i, path="/work/repo/src/a.py", bytes=10, ret=0))  # the agent fixed something


def test_writes_outside_the_working_tree() -> None:
    d = Detector()
    session(d, cwd="/work/repo")
    outside = d.observe(ev("file_open", 2, pid=200, path="/home/u/.bashrc", write=True, ret=3))
    assert names(outside) == ["write_outside_tree"]
    renamed = d.observe(ev("file_rename", 2, pid=200, path="/work/repo/a", new_path="/etc/cron.d/x", ret=0))
    assert names(renamed) == ["write_outside_tree"] and "/etc/cron.d/x" in renamed[0].reason
    for quiet in (ev("file_open", 3, path="/work/repo/build/out.o", write=True, create=True, ret=3),
                  ev("file_open", 3, path="/tmp/scratch", write=True, ret=3),
                  ev("file_open", 3, path="/usr/lib/libc.so.6", read=True, ret=3),
                  ev("file_unlink", 3, path="/work/repo/../repo/x", ret=0)):
        assert d.observe(quiet) == [], quiet


def test_disabled_detections_stay_quiet() -> None:
    d = Detector(DetectionConfig(enabled=frozenset({"tool_loop"})))
    session(d)
    assert d.observe(ev("file_open", 2, pid=200, path="/home/u/.ssh/id_rsa", read=True, ret=3)) == []
