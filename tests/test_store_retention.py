"""Retention: `Store.prune()` by age and by file size, and the file really shrinking."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from vigild.correlate.process_tree import ProcessInfo
from vigild.correlate.sessions import Session
from vigild.daemon.store import SCHEMA, Store

S = 1_000_000_000
T0 = 1_800_000_000 * S
PAYLOAD = "x" * 2000


def add_session(store: Store, sid: int, start: int, end: int | None, events: int = 3) -> None:
    store.upsert_session(Session(id=sid, root_pid=sid, started_ns=start, argv=["agent", str(sid)], ended_ns=end))
    store.upsert_process(ProcessInfo(sid, 1, sid, "agent", start, argv=["agent"], exit_ns=end))
    store.upsert_process(ProcessInfo(sid + 1, sid, sid, "tool", start + 1, depth=1, argv=["tool"], exit_ns=end))
    for i in range(events):
        store.add_event({"type": "exec", "ts_ns": start + i, "session_id": sid, "pid": sid, "blob": PAYLOAD})
    store.commit()


def ids(store: Store) -> set[int]:
    return {s["id"] for s in store.sessions(1000)}


def file_bytes(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def test_prune_by_age(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.db")
    add_session(store, 10, T0, T0 + 10 * S)                    # ended before the cutoff: goes
    add_session(store, 20, T0 + 50 * S, T0 + 200 * S)          # ended after it: stays whole, old events too
    add_session(store, 30, T0, None)                           # still running, old events only
    store.add_event({"type": "exec", "ts_ns": T0 + 300 * S, "session_id": 30, "pid": 30})
    add_session(store, 40, T0, None, events=0)                 # abandoned (vigild died), nothing left
    store.add_event({"type": "lost", "ts_ns": T0, "kind": "exec", "count": 1, "total": 1})
    store.commit()

    result = store.prune(T0 + 100 * S)
    assert ids(store) == {20, 30}
    assert (result.sessions, result.processes) == (2, 4)
    assert result.events == 3 + 3 + 1  # session 10's, session 30's old ones, the lost event
    assert len(store.events(20)) == 3
    assert [e["ts_ns"] for e in store.events(30)] == [T0 + 300 * S]
    assert len(store.processes(30)) == 2  # a running session keeps its tree
    assert store.events(10) == [] and store.processes(10) == []
    assert not store.prune(T0 + 100 * S)  # nothing more to remove: a falsy result


def test_prune_by_size_keeps_newest_and_running(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    store = Store(db)
    for n in range(40):
        add_session(store, 100 + 10 * n, T0 + n * S, T0 + n * S + S // 2, events=20)
    add_session(store, 5, T0 - 10 * S, None, events=20)  # the oldest, but running
    before = store.size_bytes()
    assert before > 1_500_000

    bound = 500_000
    result = store.prune(max_bytes=bound)
    kept = ids(store)
    assert 5 in kept
    ended = sorted(kept - {5})
    assert ended and ended == list(range(ended[0], 100 + 10 * 40, 10))  # the newest, contiguous
    assert result.sessions == 41 - len(kept) and result.events == 20 * result.sessions
    assert result.bytes_before == before and result.bytes_after <= bound
    assert file_bytes(db) <= bound
    assert len(store.events(ended[-1])) == 20


def test_size_bound_converts_an_old_non_incremental_file(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    raw = sqlite3.connect(db)
    raw.executescript(SCHEMA)  # as vigild created files before auto_vacuum was set
    raw.execute("PRAGMA user_version=1")
    raw.close()
    store = Store(db)
    assert store.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    for n in range(30):
        add_session(store, 100 + 10 * n, T0 + n * S, T0 + n * S + 1, events=20)
    result = store.prune(max_bytes=300_000)
    assert result.sessions > 0 and file_bytes(db) <= 300_000
    assert store.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2


def test_new_store_is_incremental_and_bound_is_a_no_op_when_met(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    store = Store(db)
    assert store.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    add_session(store, 10, T0, T0 + 1)
    result = store.prune(max_bytes=10 * 1024 * 1024)
    assert not result and ids(store) == {10}


def test_running_sessions_alone_can_stay_over_the_bound(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.db")
    add_session(store, 10, T0, None, events=50)
    result = store.prune(max_bytes=4096)
    assert ids(store) == {10} and result.sessions == 0 and result.bytes_after > 4096


def test_prune_commits_pending_writes_first(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    store = Store(db)
    add_session(store, 10, T0, T0 + 1)
    store.add_event({"type": "exec", "ts_ns": T0 + 500 * S, "session_id": None, "pid": 1})  # not committed
    store.prune(T0 + 100 * S)
    other = sqlite3.connect(db)
    assert other.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
    assert os.path.exists(db)
