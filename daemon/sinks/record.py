"""The record of an event: the dict every sink prints, stores, counts or exports, built once per
event by the pipeline (each sink used to build its own, so an llm_call was redacted and its
timestamp formatted up to four times).

A record is shared by all sinks of one event: sinks read it and never change it."""

from __future__ import annotations

import json
from typing import Any

from vigild.bpf.clock import rfc3339
from vigild.daemon.events import Event


class Record(dict[str, Any]):
    """The event's fields; `json()` its JSON text, encoded once for the JSON sink and the store."""

    __slots__ = ("_json",)

    def json(self) -> str:
        try:
            return self._json
        except AttributeError:
            self._json: str = json.dumps(self, default=str)
            return self._json


def record_of(event: Event) -> Record:
    """`type` and RFC 3339 `ts` first, then the event's own fields (its `ts_ns` among them)."""
    d = event.to_dict()
    out = Record(type=d.pop("type", event.type), ts=rfc3339(event.ts_ns))
    out.update(d)
    return out
