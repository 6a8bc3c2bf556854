"""The history: an embedded SQLite database (WAL mode) of sessions, processes and events.

Events are stored whole as JSON (what `vigil trace -o json` prints), with the columns queries
filter on pulled out beside them; processes get a row of their own so a session's tree is one
query. The schema version lives in PRAGMA user_version and is migrated forward on open.

With a key file, prompt content is sealed before it is written and opened when read back
(`vigild.daemon.crypto`). `prune()` enforces retention by age and by file size.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigild.bpf.record import Record
from vigild.correlate.process_tree import ProcessInfo
from vigild.correlate.sessions import Session
from vigild.daemon.crypto import ContentCipher, CryptoError, load_key, strip_sealed
from vigild.daemon.store_checkpoint import BACKSTOP_PAGES, WalCheckpointer

SCHEMA_VERSION = 4

EVENTS_TABLE = """CREATE TABLE IF NOT EXISTS {name} (
    id          INTEGER PRIMARY KEY,   -- the rowid: insertion order (see _rebuild_events)
    session_id  INTEGER,
    ts_ns       INTEGER NOT NULL,
    type        TEXT NOT NULL,
    pid         INTEGER,
    data        TEXT NOT NULL          -- the event as JSON
)"""
EVENTS_INDEX = "CREATE INDEX IF NOT EXISTS events_by_session ON events(session_id, ts_ns)"

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
    signal      INTEGER,
    end_reason  TEXT,                  -- set when the session was closed for it, not by its exit
    recorder    TEXT,                  -- "pid:start" of the vigil process recording it
    container   TEXT                   -- JSON object (vigild.correlate.containers), NULL outside one
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
""" + EVENTS_TABLE.format(name="events") + ";\n" + EVENTS_INDEX + ";\n" + """CREATE INDEX IF NOT EXISTS sessions_by_start ON sessions(started_ns);
"""


# An event's row: session_id, ts_ns, type, pid, the event as JSON.
EventRow = tuple[int | None, int, str, int | None, str]

SIZE_PRUNE_BATCH = 64  # oldest ended sessions fetched at a time when enforcing a size bound

log = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """The database cannot be opened, is from a newer vigild, or its content cannot be decrypted."""


@dataclass(frozen=True)
class PruneResult:
    """What one `Store.prune()` removed, and the database size (bytes) before and after."""

    sessions: int
    processes: int
    events: int
    bytes_before: int
    bytes_after: int

    def __bool__(self) -> bool:
        return bool(self.sessions or self.processes or self.events)


class Store:
    """One SQLite file. Writes come from the pipeline thread and are committed per batch;
    readers (the CLI) open their own Store.

    `key_file` (see `vigild.daemon.crypto.load_key`) seals content fields on write and opens them
    on read; without it, sealed fields are left out of what `events()` returns."""

    def __init__(self, path: str | Path, key_file: str | Path | None = None) -> None:
        self.path = Path(path)
        try:
            self.cipher: ContentCipher | None = load_key(key_file) if key_file is not None else None
        except CryptoError as exc:
            raise StoreError(str(exc)) from None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            # Only takes effect on a new file (before any table): lets prune() give pages back
            # to the file system without rewriting the whole database.
            self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            # Commits leave checkpoints to the checkpointer's thread; this is the backstop.
            self.db.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the store {self.path}: {exc}") from None
        self.checkpointer = WalCheckpointer(self.path)
        self._lock = threading.Lock()
        self._in_tx = False
        self._uncommitted = 0   # rows written in the open transaction
        self.rows_lost = 0      # rows a failed transaction took with it

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema {version}, newer than this vigild ({SCHEMA_VERSION})")
        self.db.executescript(SCHEMA)
        # v2: sessions know who records them and why one ended without an exit; v3: their container.
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(sessions)")}
        for column in ("end_reason", "recorder", "container"):
            if column not in columns:
                self.db.execute(f"ALTER TABLE sessions ADD COLUMN {column} TEXT")
        # v4: events without AUTOINCREMENT and without the (type, ts_ns) index no query used.
        self.db.execute("DROP INDEX IF EXISTS events_by_type")
        self._rebuild_events()
        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _rebuild_events(self) -> None:
        """Copy an `events` table made with AUTOINCREMENT (schema 3 and before) into one without.

        AUTOINCREMENT reads and writes `sqlite_sequence` for every row (~1 µs of a burst's event);
        all it adds to a rowid is that an id is never used twice even once the newest rows were
        deleted. Nothing here needs that: ids order a session's events of the same nanosecond
        (a new row still gets a higher id than every row present) and are never shown or kept
        elsewhere. Rows keep their ids; the copy is one transaction, so a crash leaves the old
        table whole. Checked inside the transaction: two vigils opening one old file copy once."""
        sql = "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'"
        if "AUTOINCREMENT" not in (self.db.execute(sql).fetchone()[0] or "").upper():
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if "AUTOINCREMENT" in (self.db.execute(sql).fetchone()[0] or "").upper():
                rows = self.db.execute("SELECT count(*) FROM events").fetchone()[0]
                log.warning("store %s: moving %d events to schema %d (once)", self.path, rows, SCHEMA_VERSION)
                self.db.execute(EVENTS_TABLE.format(name="events_v4"))
                self.db.execute("INSERT INTO events_v4 (id, session_id, ts_ns, type, pid, data) "
                                "SELECT id, session_id, ts_ns, type, pid, data FROM events")
                self.db.execute("DROP TABLE events")  # and its index
                self.db.execute("ALTER TABLE events_v4 RENAME TO events")
                self.db.execute(EVENTS_INDEX)
                self.db.execute("DELETE FROM sqlite_sequence WHERE name = 'events'")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # ---- writing ----
    def _begin(self) -> None:
        if not self._in_tx:
            self.db.execute("BEGIN")
            self._in_tx = True

    def commit(self) -> None:
        with self._lock:
            if self._in_tx:
                try:
                    self.db.execute("COMMIT")
                except sqlite3.Error:
                    self._abandon()
                    raise
                self._in_tx = False
                if self._uncommitted:
                    self.checkpointer.committed(self._uncommitted)
                self._uncommitted = 0

    def _abandon(self) -> None:
        """A write failed (disk full, I/O error): roll the open transaction back so the next
        write starts a fresh one instead of failing on a half-done one ("cannot commit")."""
        self._in_tx = False
        self.rows_lost += self._uncommitted
        self._uncommitted = 0
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite already rolled back on its own (it does for SQLITE_FULL)

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._lock:
            self._begin()
            try:
                self.db.execute(sql, params)
            except sqlite3.Error:
                self._abandon()
                raise
            self._uncommitted += 1

    def upsert_session(self, s: Session) -> None:
        self._write(
            """INSERT INTO sessions (id, root_pid, agent, argv, cwd, uid, host, started_ns, ended_ns, exit_code, signal,
                                    recorder, container)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)
               ON CONFLICT(id) DO UPDATE SET agent=excluded.agent, argv=excluded.argv, cwd=excluded.cwd,
                 ended_ns=excluded.ended_ns, exit_code=excluded.exit_code, signal=excluded.signal,
                 recorder=excluded.recorder, container=excluded.container""",
            (s.id, s.root_pid, s.agent, json.dumps(s.argv), s.cwd, s.uid, s.host, s.started_ns,
             s.ended_ns, s.exit_code, s.signal, RECORDER, json.dumps(s.container) if s.container else None),
        )

    def upsert_process(self, p: ProcessInfo) -> None:
        self._write(
            """INSERT INTO processes (session_id, pid, start_ns, ppid, depth, comm, filename, argv, exit_ns, exit_code, signal)
               VALUES (?,?,?,?,?,?,?,?,?,?,?)
               ON CONFLICT(session_id, pid, start_ns) DO UPDATE SET comm=excluded.comm,
                 filename=excluded.filename, argv=excluded.argv, exit_ns=excluded.exit_ns,
                 exit_code=excluded.exit_code, signal=excluded.signal""",
            (p.session_id, p.pid, p.start_ns, p.ppid, p.depth, p.comm, p.filename, json.dumps(p.argv),
             p.exit_ns, p.exit_code, p.signal),
        )

    def end_recorded(self, ended_ns: int, reason: str) -> list[int]:
        """End the sessions this process records that are still open (their processes outlive
        the recording: vigild stopped, `vigil trace -p` timed out), with the reason."""
        with self._lock:
            self._begin()
            rows = self.db.execute("SELECT id FROM sessions WHERE ended_ns IS NULL AND recorder = ?",
                                   (RECORDER,)).fetchall()
            for row in rows:
                self.db.execute("UPDATE sessions SET ended_ns=?, end_reason=? WHERE id=?", (ended_ns, reason, row[0]))
            return [row[0] for row in rows]

    def close_abandoned(self) -> list[int]:
        """End the sessions whose recorder is gone (a crash, a SIGKILL, a power cut) while they
        were open, at the time of their last recorded event, with the reason; returns their ids.

        A session another live vigil process is recording (same file, other process) stays open.
        """
        with self._lock:
            rows = self.db.execute("SELECT id, recorder, started_ns FROM sessions WHERE ended_ns IS NULL").fetchall()
            closed = []
            for row in rows:
                if row["recorder"] == RECORDER or _recorder_alive(row["recorder"]):
                    continue
                last = self.db.execute("SELECT max(ts_ns) FROM events WHERE session_id=?", (row["id"],)).fetchone()[0]
                who = f"pid {row['recorder'].split(':')[0]}" if row["recorder"] else "an older vigil"
                self.db.execute("UPDATE sessions SET ended_ns=?, end_reason=? WHERE id=?",
                                (last or row["started_ns"], f"abandoned: its recorder ({who}) stopped without "
                                 "ending it; ended at its last recorded event", row["id"]))
                closed.append(row["id"])
            return closed

    def add_event(self, event: dict[str, Any]) -> None:
        """Store one event dict (as the sinks print it: `type`, `ts_ns`, `session_id`, `pid`...)."""
        self.add_events([event])

    def add_events(self, events: list[dict[str, Any]]) -> None:
        """Store event dicts with one statement (a burst's thousands of rows per poll: one
        executemany costs a fraction of as many executes)."""
        self.add_rows([self.row(event) for event in events])

    def row(self, event: dict[str, Any]) -> EventRow:
        """An event dict as the row `add_rows` writes (content sealed when there is a key). A
        sink can keep rows instead of events until its batch ends: a tuple of numbers and text
        leaves the garbage collector's books at its first pass, a record (a dict) stays on them
        and makes each collection of a 30k-event batch longer."""
        if self.cipher is not None:
            event = self.cipher.seal_event(event)
        # A sink's record (most rows) has its JSON encoded once for every sink; a sealed event is a
        # new dict, encoded here.
        text = event.json() if type(event) is Record else json.dumps(event, default=str)
        return (event.get("session_id"), event["ts_ns"], event["type"], event.get("pid"), text)

    def add_rows(self, rows: list[EventRow]) -> None:
        """Write rows made by `row()`, with one statement."""
        with self._lock:
            self._begin()
            try:
                self.db.executemany("INSERT INTO events (session_id, ts_ns, type, pid, data) VALUES (?,?,?,?,?)", rows)
            except sqlite3.Error:
                self._abandon()
                raise
            self._uncommitted += len(rows)

    def prune(self, before_ns: int | None = None, *, max_bytes: int | None = None) -> PruneResult:
        """Retention.

        By age: sessions that ended before `before_ns` go whole (processes and events); of
        running sessions, and outside any session, only the events older than it go (an agent
        that runs for months must not grow the file without bound); sessions that never ended
        (vigild stopped under them) go once no event of theirs is left.

        By size: the oldest ended sessions go whole until the database fits in `max_bytes`.
        Running sessions never go, so a store of running sessions only can stay above the bound
        (`bytes_after` says so). Freed pages are handed back to the file system and the WAL
        truncated whenever anything was removed."""
        removed = [0, 0, 0]  # sessions, processes, events
        with self._lock:
            if self._in_tx:
                self.db.execute("COMMIT")
                self._in_tx = False
            bytes_before = self.size_bytes()
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if before_ns is not None:
                    self._prune_age(before_ns, removed)
                while max_bytes is not None and self._used_bytes() > max_bytes:
                    oldest = [r[0] for r in self.db.execute(
                        "SELECT id FROM sessions WHERE ended_ns IS NOT NULL ORDER BY started_ns LIMIT ?",
                        (SIZE_PRUNE_BATCH,))]
                    if not oldest:
                        break
                    # One at a time, measured after each: how many bytes a session's rows really
                    # take depends on how they share pages, which no estimate gets right.
                    for session_id in oldest:
                        self._delete_sessions([session_id], removed)
                        if self._used_bytes() <= max_bytes:
                            break
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            if any(removed):
                self._shrink()
            return PruneResult(removed[0], removed[1], removed[2], bytes_before, self.size_bytes())

    def _prune_age(self, before_ns: int, removed: list[int]) -> None:
        ended = self.db.execute("SELECT id FROM sessions WHERE ended_ns IS NOT NULL AND ended_ns < ?", (before_ns,))
        self._delete_sessions([r[0] for r in ended], removed)
        removed[2] += self.db.execute(
            """DELETE FROM events WHERE ts_ns < ? AND (session_id IS NULL OR session_id NOT IN
               (SELECT id FROM sessions WHERE ended_ns IS NOT NULL))""", (before_ns,)).rowcount
        abandoned = self.db.execute(
            """SELECT id FROM sessions WHERE ended_ns IS NULL AND started_ns < ?
               AND NOT EXISTS (SELECT 1 FROM events e WHERE e.session_id = sessions.id)""", (before_ns,))
        self._delete_sessions([r[0] for r in abandoned], removed)

    def size_bytes(self) -> int:
        """The database's size: its pages, whether they sit in the main file or still in the WAL."""
        return int(self.db.execute("PRAGMA page_count").fetchone()[0]) * self._page_size()

    def _page_size(self) -> int:
        return int(self.db.execute("PRAGMA page_size").fetchone()[0])

    def _used_bytes(self) -> int:
        free = int(self.db.execute("PRAGMA freelist_count").fetchone()[0])
        return self.size_bytes() - free * self._page_size()

    def _delete_sessions(self, ids: list[int], removed: list[int]) -> None:
        """Delete sessions with their processes and events, counting them into `removed`."""
        for session_id in ids:
            removed[1] += self.db.execute("DELETE FROM processes WHERE session_id = ?", (session_id,)).rowcount
            removed[2] += self.db.execute("DELETE FROM events WHERE session_id = ?", (session_id,)).rowcount
            removed[0] += self.db.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount

    def _shrink(self) -> None:
        """Give freed pages back: incrementally when the file was created with that mode, by a
        full VACUUM (which also switches it to incremental) for files from before it. Failing
        (a reader holds the file) loses nothing: the pages stay free for SQLite to reuse."""
        try:
            if self.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:  # INCREMENTAL
                # executescript steps the pragma to completion; execute() would free one page.
                self.db.executescript("PRAGMA incremental_vacuum;")
            else:
                self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")
                self.db.execute("VACUUM")
            with self.checkpointer.running:  # not beside the thread's own checkpoint, which would make it busy
                busy = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if busy:
                log.warning("retention: %s's WAL could not be truncated now (a reader holds it); it is next time",
                            self.path)
        except sqlite3.OperationalError as exc:
            log.warning("retention: could not shrink %s now: %s", self.path, exc)

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self.checkpointer.close()
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

    def resolve_session(self, text: str) -> int:
        """The session `text` names: its whole id, or a prefix of it that only one session has
        (ids are long; a prefix is what people type). StoreError says what matched instead."""
        text = text.strip()
        if not (text.isascii() and text.isdigit()):
            raise StoreError(f"{text!r} is not a session id (digits, or the first digits of one)")
        if self.db.execute("SELECT 1 FROM sessions WHERE id = ?", (int(text),)).fetchone():
            return int(text)
        rows = self.db.execute("SELECT id FROM sessions WHERE CAST(id AS TEXT) LIKE ? ORDER BY id LIMIT 4",
                               (text + "%",)).fetchall()
        if len(rows) == 1:
            return int(rows[0][0])
        if not rows:
            raise StoreError(f"no session {text} in {self.path}")
        shown = ", ".join(str(r[0]) for r in rows[:3]) + (", ..." if len(rows) > 3 else "")
        raise StoreError(f"{text} is the start of several sessions ({shown}): give more digits")

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
        events = [json.loads(r[0]) for r in self.db.execute(query, params)]
        if self.cipher is None:
            return [strip_sealed(e) for e in events]
        try:
            return [self.cipher.open_event(e) for e in events]
        except CryptoError as exc:
            raise StoreError(f"{self.path}: {exc}") from None


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat): with
    the pid, an identity a later process reusing the pid cannot have."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _recorder_alive(recorder: str | None) -> bool:
    if not recorder or ":" not in recorder:
        return False
    pid, start = recorder.split(":", 1)
    return pid.isascii() and pid.isdigit() and _process_start(int(pid)) == start


# This process, as it marks the sessions it records.
RECORDER = f"{os.getpid()}:{_process_start(os.getpid())}"


def _session_row(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["argv"] = json.loads(d["argv"])
    d["container"] = json.loads(d["container"]) if d.get("container") else None
    return d
