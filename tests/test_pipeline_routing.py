"""The pipeline's pure parts: routing by event class, the record built once per event, and the
store sink's batched rows (a real SQLite store in a temporary directory)."""

from __future__ import annotations

import json
from pathlib import Path

from vigild.bpf.effects_events import FileEffect, FileOpen, NetBytes, NetClose
from vigild.bpf.events import ExitEvent, ProcessEvent
from vigild.correlate.process_tree import ProcessInfo, ProcessTable
from vigild.correlate.sessions import Session
from vigild.daemon.events import SessionStart
from vigild.daemon.pipeline.router import Router
from vigild.daemon.sinks.record import record_of
from vigild.daemon.sinks.store import StoreSink
from vigild.daemon.store import Store

COMMON = {"session_id": 7, "cgroup_id": 1, "pid": 100, "tid": 100, "ppid": 1, "uid": 0, "comm": "agent"}


def _open(i: int, path: str = "/work/a.txt") -> FileOpen:
    return FileOpen(ts_ns=1_800_000_000_000_000_000 + i, **COMMON, path=path, fd=3, read=True)


def test_handlers_get_their_classes_and_subclasses_in_registration_order() -> None:
    router, seen = Router(), []
    router.register((NetClose,), lambda e: seen.append(("close", type(e).__name__)))
    router.register((ProcessEvent,), lambda e: seen.append(("any", type(e).__name__)))
    router.register((FileEffect,), lambda e: seen.append(("file", type(e).__name__)))
    router.route(_open(1))
    router.route(NetBytes(ts_ns=1, **COMMON))
    assert seen == [("any", "FileOpen"), ("file", "FileOpen"), ("close", "NetBytes"), ("any", "NetBytes")]
    assert router.handlers(ExitEvent) == (router.handlers(ExitEvent)[0],)  # only the ProcessEvent one
    assert router.handlers(int) == ()


def test_a_handler_registered_later_reaches_classes_already_routed() -> None:
    router, seen = Router(), []
    router.route(_open(1))
    router.register((FileOpen,), seen.append)
    event = _open(2)
    router.route(event)
    assert seen == [event]


def test_who_caches_the_handlers_hears_of_each_registration() -> None:
    """The pipeline keeps each class's handlers of its three routers in one plan: a handler
    registered later (bench/intent_throughput.py adds one) must empty that cache."""
    router, plans = Router(), {FileOpen: "stale"}
    router.on_change(plans.clear)
    router.register((FileOpen,), lambda e: None)
    assert plans == {}


def test_the_record_has_type_and_ts_first_and_encodes_once() -> None:
    event = _open(123_456_789)
    record = record_of(event)
    assert list(record)[:2] == ["type", "ts"] and record["type"] == "file_open"
    assert record["ts"] == "2027-01-15T08:00:00.123456Z" and record["ts_ns"] == event.ts_ns
    assert record["path"] == "/work/a.txt" and record["pid"] == 100
    text = record.json()
    assert json.loads(text) == record
    assert record.json() is text


def test_store_rows_go_in_at_flush_and_a_process_row_once_until_it_changes(tmp_path: Path) -> None:
    store = Store(tmp_path / "vigil.db")
    processes = ProcessTable()
    processes.seed(ProcessInfo(pid=100, ppid=1, session_id=7, comm="agent", start_ns=5))
    sink = StoreSink(store, processes)
    start = SessionStart(ts_ns=1, session=Session(id=7, root_pid=100, started_ns=5))
    sink.handle(start, record_of(start))
    writes = []
    store.db.set_trace_callback(writes.append)
    for i in range(50):
        event = _open(i)
        sink.handle(event, record_of(event))
    assert sum("INSERT INTO processes" in sql for sql in writes) == 1  # first seen; effects change nothing
    assert store.db.execute("SELECT count(*) FROM events").fetchone()[0] == 0  # rows wait for the flush
    sink.flush()
    rows = store.db.execute("SELECT type, pid, data FROM events ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["session_start"] + ["file_open"] * 50
    assert json.loads(rows[-1][2])["ts_ns"] == _open(49).ts_ns
    processes.processes[100].exit_code = 3
    exit_event = ExitEvent(ts_ns=2, **COMMON, exit_code=3)
    sink.handle(exit_event, record_of(exit_event))
    sink.flush()
    assert store.db.execute("SELECT exit_code FROM processes WHERE pid = 100").fetchone()[0] == 3
    sink.close()
