-- A schema-3 store made by vigild's Store at 1ddb108 (tests/test_store_migration.py), as SQL.
PRAGMA user_version=3;
BEGIN TRANSACTION;
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  INTEGER,
    ts_ns       INTEGER NOT NULL,
    type        TEXT NOT NULL,
    pid         INTEGER,
    data        TEXT NOT NULL          -- the event as JSON
);
INSERT INTO "events" VALUES(1,7001,1800000000000000001,'exec',7002,'{"type": "exec", "ts_ns": 1800000000000000001, "session_id": 7001, "pid": 7002, "argv": ["bash", "-c", "ls"]}');
INSERT INTO "events" VALUES(2,7001,1800000000000000002,'file_open',7002,'{"type": "file_open", "ts_ns": 1800000000000000002, "session_id": 7001, "pid": 7002, "path": "/srv/repo/f0.py", "read": true}');
INSERT INTO "events" VALUES(3,7001,1800000000000000002,'file_open',7002,'{"type": "file_open", "ts_ns": 1800000000000000002, "session_id": 7001, "pid": 7002, "path": "/srv/repo/f1.py", "read": true}');
INSERT INTO "events" VALUES(4,7001,1800000000000000002,'file_open',7002,'{"type": "file_open", "ts_ns": 1800000000000000002, "session_id": 7001, "pid": 7002, "path": "/srv/repo/f2.py", "read": true}');
INSERT INTO "events" VALUES(5,7001,1800000000000000003,'tool_start',7002,'{"type": "tool_start", "ts_ns": 1800000000000000003, "session_id": 7001, "pid": 7002, "tool_call": 5}');
INSERT INTO "events" VALUES(6,7002,1800000000000000001,'exec',7003,'{"type": "exec", "ts_ns": 1800000000000000001, "session_id": 7002, "pid": 7003, "argv": ["bash", "-c", "ls"]}');
INSERT INTO "events" VALUES(7,7002,1800000000000000002,'file_open',7003,'{"type": "file_open", "ts_ns": 1800000000000000002, "session_id": 7002, "pid": 7003, "path": "/srv/repo/f0.py", "read": true}');
INSERT INTO "events" VALUES(8,7002,1800000000000000002,'file_open',7003,'{"type": "file_open", "ts_ns": 1800000000000000002, "session_id": 7002, "pid": 7003, "path": "/srv/repo/f1.py", "read": true}');
INSERT INTO "events" VALUES(9,7002,1800000000000000002,'file_open',7003,'{"type": "file_open", "ts_ns": 1800000000000000002, "session_id": 7002, "pid": 7003, "path": "/srv/repo/f2.py", "read": true}');
INSERT INTO "events" VALUES(10,7002,1800000000000000003,'tool_start',7003,'{"type": "tool_start", "ts_ns": 1800000000000000003, "session_id": 7002, "pid": 7003, "tool_call": 5}');
INSERT INTO "events" VALUES(12,NULL,1800000000000000005,'lost',NULL,'{"type": "lost", "ts_ns": 1800000000000000005, "kind": "file_open", "count": 1, "total": 3}');
CREATE TABLE processes (
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
INSERT INTO "processes" VALUES(7001,7001,1800000000000000000,1,0,'claude','','["claude"]',1800000060000000000,NULL,NULL);
INSERT INTO "processes" VALUES(7001,7002,1800000000000000001,7001,1,'bash','','["bash", "-c", "ls"]',1800000060000000000,NULL,NULL);
INSERT INTO "processes" VALUES(7002,7002,1800000000000000000,1,0,'claude','','["claude"]',NULL,NULL,NULL);
INSERT INTO "processes" VALUES(7002,7003,1800000000000000001,7002,1,'bash','','["bash", "-c", "ls"]',NULL,NULL,NULL);
CREATE TABLE sessions (
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
INSERT INTO "sessions" VALUES(7001,7001,'claude','["claude", "-p", "hi"]',NULL,NULL,'vm',1800000000000000000,1800000060000000000,NULL,NULL,NULL,'3209:4815279',NULL);
INSERT INTO "sessions" VALUES(7002,7002,'claude','["claude", "-p", "hi"]',NULL,NULL,'vm',1800000000000000000,NULL,NULL,NULL,NULL,'3209:4815279',NULL);
CREATE INDEX events_by_session ON events(session_id, ts_ns);
CREATE INDEX events_by_type ON events(type, ts_ns);
CREATE INDEX sessions_by_start ON sessions(started_ns);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('events',12);
COMMIT;
