"""Prompt content encrypted at rest: sealed before SQLite sees it, opened through the Store API
with the key, absent (not garbage) without it, a clear error with the wrong one."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from fakellm import CLIENTS_DIR, FakeLLMServer, client_env
from support.helpers import vigil, vigil_trace
from vigild.daemon.crypto import generate_key_file
from vigild.daemon.store import Store, StoreError

SECRET = "PURPLE-ELEPHANT-42 is the launch code"
CLIENT_PROMPT = "List the files and show me the hostname."


def raw_bytes(db: Path) -> bytes:
    return b"".join(Path(f"{db}{suffix}").read_bytes() for suffix in ("", "-wal") if Path(f"{db}{suffix}").exists())


def llm_event() -> dict[str, Any]:
    return {
        "type": "llm_call", "ts_ns": 1, "session_id": 9, "pid": 5, "provider": "anthropic", "model": "claude-x",
        "input_tokens": 12, "output_tokens": 3, "text": f"answer: {SECRET}",
        "request_messages": [{"role": "user", "content": SECRET}],
        "tool_calls": [{"id": "t1", "name": "bash", "arguments": {"command": f"echo {SECRET}"}},
                       {"id": "t2", "name": "bash", "arguments_raw": f"{{{SECRET}", "error": "invalid_json"}],
        "request_headers": [["x-note", SECRET]], "response_headers": [["x-echo", SECRET]],
    }


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "vigil.key"
    generate_key_file(path)
    return path


def test_content_is_sealed_at_rest_and_opened_with_the_key(tmp_path: Path, key: Path) -> None:
    db = tmp_path / "v.db"
    store = Store(db, key_file=key)
    event = llm_event()
    store.add_event(event)
    store.add_event({"type": "exec", "ts_ns": 2, "session_id": 9, "pid": 5, "argv": ["ls"]})
    store.commit()
    assert event == llm_event()  # the caller's dict is left alone
    assert SECRET.encode() not in raw_bytes(db)
    assert store.events(9) == [llm_event(), {"type": "exec", "ts_ns": 2, "session_id": 9, "pid": 5, "argv": ["ls"]}]
    store.close()
    assert SECRET.encode() not in raw_bytes(db)

    (row,) = sqlite3.connect(db).execute("SELECT data FROM events WHERE type = 'llm_call'").fetchall()
    stored = json.loads(row[0])
    assert stored["model"] == "claude-x" and stored["input_tokens"] == 12  # metadata stays queryable


def test_without_the_key_content_is_left_out(tmp_path: Path, key: Path) -> None:
    db = tmp_path / "v.db"
    with_key = Store(db, key_file=key)
    with_key.add_event(llm_event())
    with_key.close()
    (event,) = Store(db).events(9)
    assert event["content_encrypted"] is True
    assert not {"text", "request_messages", "request_headers", "response_headers"} & set(event)
    assert event["tool_calls"] == [{"id": "t1", "name": "bash"}, {"id": "t2", "name": "bash", "error": "invalid_json"}]
    assert event["model"] == "claude-x" and event["output_tokens"] == 3


def test_wrong_key_or_altered_ciphertext_is_a_clear_error(tmp_path: Path, key: Path) -> None:
    db = tmp_path / "v.db"
    store = Store(db, key_file=key)
    store.add_event(llm_event())
    store.close()
    other = tmp_path / "other.key"
    generate_key_file(other)
    with pytest.raises(StoreError, match=r"encrypted with key [0-9a-f]{12}, but the key given is [0-9a-f]{12}"):
        Store(db, key_file=other).events(9)

    conn = sqlite3.connect(db)
    data = json.loads(conn.execute("SELECT data FROM events").fetchone()[0])
    token = data["text"]["vigil_sealed"]
    data["text"]["vigil_sealed"] = token[:-8] + ("A" if token[-8] != "A" else "B") + token[-7:]
    conn.execute("UPDATE events SET data = ?", (json.dumps(data),))
    conn.commit()
    with pytest.raises(StoreError, match="does not decrypt: the database was altered"):
        Store(db, key_file=key).events(9)


def test_key_file_must_be_private_and_valid(tmp_path: Path, key: Path) -> None:
    assert os.stat(key).st_mode & 0o777 == 0o600
    os.chmod(key, 0o640)
    with pytest.raises(StoreError, match=r"accessible by group or others \(mode 0640\); run `chmod 600"):
        Store(tmp_path / "v.db", key_file=key)
    junk = tmp_path / "junk.key"
    junk.write_text("not a key\n")
    os.chmod(junk, 0o600)
    with pytest.raises(StoreError, match="does not hold a vigil key"):
        Store(tmp_path / "v.db", key_file=junk)
    with pytest.raises(StoreError, match="cannot read the key file"):
        Store(tmp_path / "v.db", key_file=tmp_path / "missing.key")


def test_keygen_cli(tmp_path: Path) -> None:
    path = tmp_path / "k"
    made = vigil(["keygen", str(path)])
    assert made.returncode == 0, made.stderr
    assert f"to {path}" in made.stdout and os.stat(path).st_mode & 0o777 == 0o600
    again = vigil(["keygen", str(path)])
    assert again.returncode == 1 and again.stderr.startswith("vigil: error: cannot write a key") and "exists" in again.stderr
    loose = tmp_path / "loose"
    loose.write_bytes(path.read_bytes())
    os.chmod(loose, 0o644)
    Store(tmp_path / "v.db").close()
    shown = vigil(["show", "--db", str(tmp_path / "v.db"), "--key-file", str(loose)])
    assert shown.returncode == 1 and "accessible by group or others" in shown.stderr and "Traceback" not in shown.stderr


@pytest.mark.usefixtures("root")
def test_traced_prompts_are_encrypted_in_the_database(tmp_path: Path, key: Path) -> None:
    db = tmp_path / "vigil.db"
    with FakeLLMServer() as srv:
        result = vigil_trace(["--db", str(db), "--key-file", str(key), "--capture-content", "--",
                              sys.executable, str(CLIENTS_DIR / "anthropic_client.py")], env=client_env(srv), timeout=120)
        assert result.returncode == 0, result.stderr
    calls = result.of_type("llm_call")
    assert calls and all(CLIENT_PROMPT in json.dumps(c["request_messages"]) for c in calls)  # captured live
    raw = raw_bytes(db)
    assert CLIENT_PROMPT.encode() not in raw and calls[0]["text"].encode() not in raw
    assert b"ls -la" not in raw  # the tool call's arguments

    shown = vigil(["show", "--db", str(db), "--key-file", str(key), "-o", "json"])
    assert shown.returncode == 0, shown.stderr
    tree = json.loads(shown.stdout)
    stored = [e for e in tree["processes"][0]["events"] if e["type"] == "llm_call"]
    assert [e["request_messages"] for e in stored] == [c["request_messages"] for c in calls]
    assert [e["tool_calls"] for e in stored] == [c["tool_calls"] for c in calls]

    blind = vigil(["show", "--db", str(db), "-o", "json"])
    assert blind.returncode == 0, blind.stderr
    assert CLIENT_PROMPT not in blind.stdout and '"content_encrypted": true' in blind.stdout
