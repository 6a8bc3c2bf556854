"""The record of an event: the dict every sink prints, stores, counts or exports, built once per
event by the pipeline (each sink used to build its own, so an llm_call was redacted and its
timestamp formatted up to four times).

A record is shared by all sinks of one event: sinks read it and never change it."""

from __future__ import annotations

import json
from typing import Any

import orjson

from vigild.bpf.clock import rfc3339
from vigild.bpf.events import ProcessEvent, field_names
from vigild.daemon.events import Event

# orjson encodes a file-open record in ~1.2 µs where the standard library takes ~7 µs, a fifth of
# the whole per-event budget of a burst. Non-string keys (a few counters keyed by number) are
# written as strings, as json.dumps does.
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def json_text(value: Any) -> str:
    """`value` as JSON text. What orjson refuses (an integer beyond 64 bits, a string with a lone
    surrogate) goes through the standard library instead, so nothing is lost to the faster path;
    anything else neither knows is written as its str(), as before."""
    try:
        return orjson.dumps(value, default=str, option=_ORJSON_OPTIONS).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, default=str)


class Record(dict[str, Any]):
    """The event's fields; `json()` its JSON text, encoded once for the JSON sink and the store."""

    __slots__ = ("_json",)

    def json(self) -> str:
        # record_of sets the slot to None: reading an unset slot raises, and getattr with a
        # default builds that AttributeError all the same (~1 µs an event). A Record made
        # elsewhere (a test) still works, through the except.
        try:
            text = self._json
        except AttributeError:
            text = None
        if text is None:
            text = self._json = json_text(self)
        return text


def record_of(event: Event) -> Record:
    """`type` and RFC 3339 `ts` first, then the event's own fields (its `ts_ns` among them).
    Kernel events hand over their fields without a dict in between (most of a burst): a
    dataclass's instance dict holds exactly its fields, in order, as its __init__ set them; one
    that holds anything else (an attribute set later) is read field by field instead."""
    if isinstance(event, ProcessEvent):
        out = Record(type=event.type, ts=rfc3339(event.ts_ns))
        own = event.__dict__
        out.update(own if len(own) == len(field_names(type(event))) else event.items())
    else:
        d = event.to_dict()
        out = Record(type=d.pop("type", event.type), ts=rfc3339(event.ts_ns))
        out.update(d)
    out._json = None
    return out
