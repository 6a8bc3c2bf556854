"""The history: an embedded SQLite database (WAL mode) of sessions, processes and events.

Events are stored whole as JSON (what `vigil trace -o json` prints), with the columns queries
filter on pulled out beside them; processes get a row of their own so a session's tree is one
query. The schema version lives in PRAGMA user_version and is migrated forward on open.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from vigild.correlate.process_tree import ProcessInfo
from vigild.correlate.sessions import Session

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id          INTEGER PRIMARY KEY,   -- the session id events carry (unique across runs)
    root_pid    INTEGER NOT NULL,
    agent       TEXT,
    argv        TEXT NOT NULL,         -- JSON list
    cwd         TEXT,
    uid         INTEGER,
    host        TEXT,
    started_ns  INTEGER NOT NULL,
    ended_ns    INTEGER,
    exit_code   INTEGER,
    signal      INTEGER
);
CREATE TABLE IF NOT EXISTS processes (
    session_id  INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    pid         INTEGER NOT NULL,
    start_ns    INTEGER NOT NULL,
    ppid        INTEGER NOT NULL,
    depth       INTEGER NOT NULL,
    comm        TEXT NOT NULL,
    filename    TEXT,
    argv        TEXT NOT NULL,         -- JSON list
    exit_ns     INTEGER,
    exit_code   INTEGER,
    signal      INTEGER,
    PRIMARY KEY (session_id, pid, start_ns)
);
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  INTEGER,
    ts_ns       INTEGER NOT NULL,
    type        TEXT NOT NULL,
    pid         INTEGER,
    data        TEXT NOT NULL          -- the event as JSON
);
CREATE INDEX IF NOT EXISTS events_by_session ON events(session_id, ts_ns);
CREATE INDEX IF NOT EXISTS events_by_type ON events(type, ts_ns);
CREATE INDEX IF NOT EXISTS sessions_by_start ON sessions(started_ns);
"""


class StoreError(RuntimeError):
    """The database cannot be opened or is from a newer vigild."""


class Store:
    """One SQLite file. Writes come from the pipeline thread and are committed per batch;
    readers (the CLI) open their own Store."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the store {self.path}: {exc}") from None
        self._lock = threading.Lock()
        self._in_tx = False

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema {version}, newer than this vigild ({SCHEMA_VERSION})")
        self.db.executescript(SCHEMA)
        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # ---- writing ----
    def _begin(self) -> None:
        if not self._in_tx:
            self.db.execute("BEGIN")
            self._in_tx = True

    def commit(self) -> None:
        with self._lock:
            if self._in_tx:
                self.db.execute("COMMIT")
                self._in_tx = False

    def upsert_session(self, s: Session) -> None:
        with self._lock:
            self._begin()
            self.db.execute(
                """INSERT INTO sessions (id, root_pid, agent, argv, cwd, uid, host, started_ns, ended_ns, exit_code, signal)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(id) DO UPDATE SET agent=excluded.agent, argv=excluded.argv, cwd=excluded.cwd,
                     ended_ns=excluded.ended_ns, exit_code=excluded.exit_code, signal=excluded.signal""",
                (s.id, s.root_pid, s.agent, json.dumps(s.argv), s.cwd, s.uid, s.host, s.started_ns,
                 s.ended_ns, s.exit_code, s.signal),
            )

    def upsert_process(self, p: ProcessInfo) -> None:
        with self._lock:
            self._begin()
            self.db.execute(
                """INSERT INTO processes (session_id, pid, start_ns, ppid, depth, comm, filename, argv, exit_ns, exit_code, signal)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(session_id, pid, start_ns) DO UPDATE SET comm=excluded.comm,
                     filename=excluded.filename, argv=excluded.argv, exit_ns=excluded.exit_ns,
                     exit_code=excluded.exit_code, signal=excluded.signal""",
                (p.session_id, p.pid, p.start_ns, p.ppid, p.depth, p.comm, p.filename, json.dumps(p.argv),
                 p.exit_ns, p.exit_code, p.signal),
            )

    def add_event(self, event: dict[str, Any]) -> None:
        """Store one event dict (as the sinks print it: `type`, `ts_ns`, `session_id`, `pid`...)."""
        with self._lock:
            self._begin()
            self.db.execute(
                "INSERT INTO events (session_id, ts_ns, type, pid, data) VALUES (?,?,?,?,?)",
                (event.get("session_id"), event["ts_ns"], event["type"], event.get("pid"),
                 json.dumps(event, default=str)),
            )

    def close(self) -> None:
        self.commit()
        self.db.close()

    # ---- reading ----
    def sessions(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self.db.execute(
            """SELECT s.*,
                      (SELECT COUNT(*) FROM processes p WHERE p.session_id = s.id) AS processes,
                      (SELECT COUNT(*) FROM events e WHERE e.session_id = s.id) AS events
               FROM sessions s ORDER BY s.started_ns DESC LIMIT ?""",
            (limit,),
        ).fetchall()
        return [_session_row(r) for r in rows]

    def session(self, session_id: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT *, 0 AS processes, 0 AS events FROM sessions WHERE id = ?",
                              (session_id,)).fetchone()
        return _session_row(row) if row else None

    def latest_session_id(self) -> int | None:
        row = self.db.execute("SELECT id FROM sessions ORDER BY started_ns DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def processes(self, session_id: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM processes WHERE session_id = ? ORDER BY start_ns", (session_id,)
        ).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["argv"] = json.loads(d["argv"])
            out.append(d)
        return out

    def events(self, session_id: int, types: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        query = "SELECT data FROM events WHERE session_id = ?"
        params: list[Any] = [session_id]
        if types:
            query += f" AND type IN ({','.join('?' * len(types))})"
            params.extend(types)
        query += " ORDER BY ts_ns, id"
        return [json.loads(r[0]) for r in self.db.execute(query, params)]


def _session_row(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["argv"] = json.loads(d["argv"])
    return d
