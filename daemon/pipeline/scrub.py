"""Credentials out of what a process event carries, before anything reads it: command lines
(`curl -H 'x-api-key: ...'`, URLs with `?key=`) and paths (`~/.cache/tokens/ghp_...`, a file
named after the key it holds). The pipeline and the held lane both scrub, so a call's policy
matches the same command line on either path."""

from __future__ import annotations

import functools
from typing import Any

from vigild.bpf.events import ExecEvent, field_names
from vigild.correlate.redact import redact_text

# Event fields holding a path (exec filename, file and Unix-socket effects): scrubbed like argv.
PATH_FIELDS = ("filename", "path", "new_path", "unix_path")


def scrub(event: Any) -> None:
    """Redact the event's argv (an exec's) and path fields in place."""
    if isinstance(event, ExecEvent):
        event.argv = [redact_text(arg) for arg in event.argv]
    for name in _path_fields(type(event)):
        value = getattr(event, name)
        if value:
            redacted = redact_text(value)
            if redacted is not value:  # most paths hold nothing to redact: the same object back
                setattr(event, name, redacted)


@functools.cache
def _path_fields(cls: type) -> tuple[str, ...]:
    """The path fields events of this class have (most have one, or none): looked up once per class."""
    names = field_names(cls)
    return tuple(name for name in PATH_FIELDS if name in names)
