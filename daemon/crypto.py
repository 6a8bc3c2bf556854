"""Prompt content encrypted at rest: what the agent said to the model, and back, never reaches the
SQLite file in clear when a key is configured.

Only the content fields are sealed (messages, response text, tool call arguments, HTTP headers):
the rest of an event (who, when, which model, how many tokens) stays queryable in SQL. Each sealed
value is a Fernet token (AES-128-CBC + HMAC-SHA256) wrapped with the id of the key that made it,
so reading with another key fails with a clear error instead of returning garbage, and a copied
database file without the key reveals no prompt.

The key lives in a file only its owner can read: `vigil keygen PATH` writes one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

# cryptography is imported where a key is made or used, not with this module: the store imports
# it, and a daemon that seals nothing should not carry its ~8 MiB (issue 14: idle RSS).

# Top-level event fields that carry prompt or response content (llm_call, https_request).
CONTENT_FIELDS = ("request_messages", "text", "request_headers", "response_headers", "arguments", "arguments_raw")
# Content inside each item of an llm_call's `tool_calls`.
TOOL_CALL_CONTENT_FIELDS = ("arguments", "arguments_raw")
MARKER = "vigil_sealed"
# Set on events read without a key: their content fields were sealed and are left out.
ENCRYPTED_FLAG = "content_encrypted"


class CryptoError(RuntimeError):
    """Content cannot be sealed or opened; the store reports it as a StoreError."""


class KeyFileError(CryptoError):
    """The key file is missing, malformed, or readable by someone other than its owner."""


class WrongKeyError(CryptoError):
    """Content was sealed with another key, or its ciphertext was altered."""


def key_id(key: bytes) -> str:
    """A short fingerprint naming a key in error messages and beside each sealed value."""
    return hashlib.sha256(key).hexdigest()[:12]


def generate_key_file(path: str | Path) -> str:
    """Write a new key to `path`, mode 0600, refusing to overwrite one (that would orphan every
    value sealed with it). Returns the key's id."""
    from cryptography.fernet import Fernet

    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return key_id(key)


def load_key(path: str | Path) -> ContentCipher:
    """The cipher for the key in `path`. The file must belong to the running user (root for the
    daemon) and be unreadable by group and others: a key anyone can read protects nothing."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"the key file {path} is not a regular file")
        if st.st_uid != os.geteuid():
            raise KeyFileError(f"the key file {path} belongs to uid {st.st_uid}, not to the running user "
                               f"(uid {os.geteuid()}); chown it")
        if st.st_mode & 0o077:
            raise KeyFileError(f"the key file {path} is accessible by group or others "
                               f"(mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`")
        key = f.read().strip()
    try:
        if len(base64.urlsafe_b64decode(key)) != 32:
            raise ValueError
        return ContentCipher(key)
    except (ValueError, binascii.Error):
        raise KeyFileError(f"the key file {path} does not hold a vigil key (make one with `vigil keygen`)") from None


class ContentCipher:
    """Seals the content fields of event dicts before they are stored and opens them when read."""

    def __init__(self, key: bytes) -> None:
        from cryptography.fernet import Fernet

        self.fernet: Fernet = Fernet(key)
        self.key_id = key_id(key)

    def seal_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """A copy of `event` with every present content field sealed; `event` is left untouched."""
        out = dict(event)
        for name in CONTENT_FIELDS:
            if out.get(name) is not None:
                out[name] = self._seal(out[name])
        calls = out.get("tool_calls")
        if isinstance(calls, list):
            out["tool_calls"] = [self._seal_fields(c) if isinstance(c, dict) else c for c in calls]
        return out

    def open_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """`event` (as read from the store) with its sealed fields decrypted, in place."""
        for name in CONTENT_FIELDS:
            if _is_sealed(event.get(name)):
                event[name] = self._open(event[name])
        for call in event.get("tool_calls") or ():
            if isinstance(call, dict):
                for name in TOOL_CALL_CONTENT_FIELDS:
                    if _is_sealed(call.get(name)):
                        call[name] = self._open(call[name])
        return event

    def _seal_fields(self, item: dict[str, Any]) -> dict[str, Any]:
        out = dict(item)
        for name in TOOL_CALL_CONTENT_FIELDS:
            if out.get(name) is not None:
                out[name] = self._seal(out[name])
        return out

    def _seal(self, value: Any) -> dict[str, str]:
        token = self.fernet.encrypt(json.dumps(value, default=str).encode())
        return {MARKER: token.decode(), "key": self.key_id}

    def _open(self, sealed: dict[str, str]) -> Any:
        if sealed.get("key") != self.key_id:
            raise WrongKeyError(f"stored content was encrypted with key {sealed.get('key')}, "
                                f"but the key given is {self.key_id}")
        from cryptography.fernet import InvalidToken

        try:
            return json.loads(self.fernet.decrypt(sealed[MARKER].encode()))
        except InvalidToken:
            raise WrongKeyError(f"stored content sealed with key {self.key_id} does not decrypt: "
                                "the database was altered") from None


def strip_sealed(event: dict[str, Any]) -> dict[str, Any]:
    """Without a key: drop the sealed fields (ciphertext means nothing to a reader) and flag the
    event, so the rest of the history stays readable."""
    found = False
    for name in CONTENT_FIELDS:
        if _is_sealed(event.get(name)):
            del event[name]
            found = True
    for call in event.get("tool_calls") or ():
        if isinstance(call, dict):
            for name in TOOL_CALL_CONTENT_FIELDS:
                if _is_sealed(call.get(name)):
                    del call[name]
                    found = True
    if found:
        event[ENCRYPTED_FLAG] = True
    return event


def _is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and MARKER in value
