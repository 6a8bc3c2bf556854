"""The store and its CLI views: `vigil trace --db`, `vigil sessions`, `vigil show`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from support.helpers import vigil, vigil_trace
from vigild.bpf.events import ExecEvent, ExitEvent, ForkEvent
from vigild.correlate.process_tree import ProcessTable
from vigild.daemon.store import SCHEMA_VERSION, Store, StoreError

COMMON = dict(session_id=7, cgroup_id=1, tid=0, uid=0)


def fork(ts: int, pid: int, ppid: int) -> ForkEvent:
    return ForkEvent(ts_ns=ts, pid=pid, ppid=ppid, comm="sh", **{**COMMON, "tid": pid})


def test_process_table_follows_a_tree() -> None:
    table = ProcessTable()
    table.apply(ExecEvent(ts_ns=1, pid=10, ppid=1, comm="bash", argv=["bash"], **COMMON))
    table.apply(fork(2, 11, 10))
    table.apply(ExecEvent(ts_ns=3, pid=11, ppid=10, comm="ls", argv=["ls", "-l"], **COMMON))
    table.apply(fork(4, 12, 11))
    table.apply(ExitEvent(ts_ns=9, pid=11, ppid=10, comm="ls", exit_code=2, **COMMON))
    assert table.get(10).children == [11]
    assert table.get(11).argv == ["ls", "-l"] and table.get(11).depth == 1
    assert table.get(12).depth == 2 and table.get(12).argv == ["ls", "-l"]  # a fork inherits the image
    assert table.get(11).exit_code == 2 and table.get(11).duration_ms == (9 - 2) / 1e6
    assert table.get(12).alive


def test_process_table_forgets_oldest_exited_only() -> None:
    table = ProcessTable(keep_exited=2)
    for pid in (20, 21, 22):
        table.apply(fork(pid, pid, 1))
        table.apply(ExitEvent(ts_ns=pid + 100, pid=pid, ppid=1, comm="x", exit_code=0, **COMMON))
    table.apply(fork(30, 30, 1))
    assert table.get(20) is None and table.get(21) and table.get(22) and table.get(30)


def test_store_refuses_a_newer_schema(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    Store(db).close()
    sqlite3.connect(db).execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}").connection.commit()
    with pytest.raises(StoreError, match="newer than this vigild"):
        Store(db)


def test_store_is_wal(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    Store(db).close()
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    proc = vigil(["sessions", "--db", str(tmp_path / "none.db")])
    assert proc.returncode == 1
    assert proc.stderr.startswith("vigil: error: no store at") and "Traceback" not in proc.stderr


@pytest.mark.usefixtures("root")
def test_trace_records_and_show_prints_the_tree(tmp_path: Path) -> None:
    db = tmp_path / "vigil.db"
    result = vigil_trace(["--db", str(db), "--", "bash", "-c", "sh -c '/bin/true; exit 3'; /bin/echo done; exit 0"])
    assert result.returncode == 0, result.stderr
    session_id = result.events[0]["session_id"]

    listing = vigil(["sessions", "--db", str(db), "-o", "json"])
    assert listing.returncode == 0, listing.stderr
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert [r["id"] for r in rows] == [session_id]
    assert rows[0]["exit_code"] == 0 and rows[0]["processes"] == 4 and rows[0]["ended_ns"] > rows[0]["started_ns"]

    shown = vigil(["show", str(session_id), "--db", str(db), "-o", "json"])
    tree = json.loads(shown.stdout)
    (root,) = tree["processes"]
    assert root["argv"][:2] == ["bash", "-c"]
    children = {tuple(c["argv"]): c for c in root["children"]}
    sh = children[("sh", "-c", "/bin/true; exit 3")]
    assert sh["exit_code"] == 3
    assert [g["argv"] for g in sh["children"]] == [["/bin/true"]]
    assert children[("/bin/echo", "done")]["exit_code"] == 0
    assert [e["type"] for e in sh["events"] if e["type"] in ("fork", "exec", "exit")] == ["fork", "exec", "exit"]

    text = vigil(["show", "--db", str(db)])  # the latest session, as a tree
    assert text.returncode == 0
    assert "/bin/true" in text.stdout and "exit 3" in text.stdout
    assert vigil(["show", "12345", "--db", str(db)]).returncode == 1
