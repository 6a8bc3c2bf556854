"""Schema 4 of the store (events without AUTOINCREMENT or the unused type index) and the move of
an existing schema-3 file to it; WAL checkpoints on the checkpointer's thread, not the writer's.

tests/data/store_v3.sql is a database the previous Store (1ddb108) wrote, dumped as SQL: two
sessions, their processes, events of one nanosecond ordered by id, a lost event outside any
session, and its newest row deleted (the one case where AUTOINCREMENT and a rowid differ)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from vigild.daemon.store import SCHEMA_VERSION, Store
from vigild.daemon.store_checkpoint import BACKSTOP_PAGES, ROWS_PER_CHECKPOINT

V3_DUMP = Path(__file__).parent / "data" / "store_v3.sql"
S = 1_000_000_000
T0 = 1_800_000_000 * S


def old_file(tmp_path: Path) -> Path:
    db = tmp_path / "v3.db"
    raw = sqlite3.connect(db)
    raw.executescript(V3_DUMP.read_text())
    raw.close()
    return db


def snapshot(db: Path) -> dict[str, list[tuple[object, ...]]]:
    raw = sqlite3.connect(db)
    try:
        return {table: raw.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
                for table in ("sessions", "processes", "events")}
    finally:
        raw.close()


def events_sql(store: Store) -> str:
    return store.db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone()[0]


def indexes(store: Store) -> set[str]:
    return {r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'")}


def test_a_schema_3_file_keeps_every_row_and_id(tmp_path: Path) -> None:
    db = old_file(tmp_path)
    before = snapshot(db)
    raw = sqlite3.connect(db)
    old_sql = raw.execute("SELECT sql FROM sqlite_master WHERE name = 'events'").fetchone()[0]
    raw.close()
    assert "AUTOINCREMENT" in old_sql and len(before["events"]) == 11  # the dump is what it says
    store = Store(db)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    assert "AUTOINCREMENT" not in events_sql(store).upper()
    assert indexes(store) == {"events_by_session"}
    assert snapshot(db) == before  # sessions, processes and events, ids included
    assert [e["path"] for e in store.events(7001, ("file_open",))] == ["/srv/repo/f0.py", "/srv/repo/f1.py",
                                                                      "/srv/repo/f2.py"]
    assert {s["id"]: s["events"] for s in store.sessions()} == {7001: 5, 7002: 5}
    assert [p["comm"] for p in store.processes(7002)] == ["claude", "bash"]
    assert store.db.execute("SELECT count(*) FROM sqlite_sequence WHERE name = 'events'").fetchone()[0] == 0
    store.add_event({"type": "exec", "ts_ns": T0 + 2, "session_id": 7001, "pid": 7002})
    store.commit()
    ids = [r[0] for r in store.db.execute("SELECT id FROM events ORDER BY id")]
    assert ids[-1] == max(ids[:-1]) + 1  # a new row after every kept one
    assert [e["type"] for e in store.events(7001)][:5] == ["exec", "file_open", "file_open", "file_open", "exec"]
    store.close()


def test_moving_twice_is_a_no_op(tmp_path: Path) -> None:
    db = old_file(tmp_path)
    Store(db).close()
    moved = snapshot(db)
    store = Store(db)
    assert snapshot(db) == moved and indexes(store) == {"events_by_session"}
    store.close()


def test_a_new_file_has_schema_4(tmp_path: Path) -> None:
    store = Store(tmp_path / "new.db")
    assert "AUTOINCREMENT" not in events_sql(store).upper()
    assert indexes(store) == {"events_by_session"}
    assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BACKSTOP_PAGES
    store.close()


def test_checkpoints_run_on_their_own_thread(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    store = Store(db)
    reader = Store(db)  # opened to read: it writes nothing and starts no thread
    writer_thread = threading.get_ident()
    seen: list[int] = []
    run = store.checkpointer._checkpoint

    def on_thread(conn: sqlite3.Connection) -> None:
        seen.append(threading.get_ident())
        run(conn)

    store.checkpointer._checkpoint = on_thread  # type: ignore[method-assign]
    rows = 3 * ROWS_PER_CHECKPOINT
    for batch in range(3):
        store.add_events([{"type": "file_open", "ts_ns": T0 + batch * rows + i, "session_id": 1, "pid": 2,
                           "path": f"/srv/repo/module_{i:06d}.py"} for i in range(rows)])
        store.commit()
    pause = threading.Event()
    for _ in range(200):  # the thread runs when the machine lets it
        if store.checkpointer.checkpoints >= 1:
            break
        pause.wait(0.05)
    assert store.checkpointer.checkpoints >= 1 and store.checkpointer.errors == 0
    assert seen and writer_thread not in seen
    assert reader.checkpointer._thread is None
    # the checkpoint copied the WAL's pages into the database file: another connection reads them
    # from there once the WAL is gone
    assert len(reader.events(1)) == 3 * rows
    reader.close()
    store.close()
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    raw = sqlite3.connect(db)
    assert raw.execute("SELECT count(*) FROM events").fetchone()[0] == 3 * rows
    raw.close()
