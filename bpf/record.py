"""The record of an event: the dict every sink prints, stores, counts or exports, with its JSON
text encoded once. It lives here, below the pipeline, because the file-open decoder builds its
records itself: a decoded file open's instance dict is its record (bpf/effects_events.py), so
the most frequent event is one dict, not an instance dict and a record copied from it."""

from __future__ import annotations

import json
from typing import Any

import orjson

# orjson encodes a file-open record in ~1.2 µs where the standard library takes ~7 µs, a fifth of
# the whole per-event budget of a burst. Non-string keys (a few counters keyed by number) are
# written as strings, as json.dumps does.
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def json_text(value: Any) -> str:
    """`value` as JSON text. What orjson refuses (an integer beyond 64 bits, a string with a lone
    surrogate) goes through the standard library instead, so nothing is lost to the faster path;
    anything else neither knows is written as its str(), as before.

    orjson is asked plainly first: OPT_NON_STR_KEYS takes its slower path for every dict (~0.3 µs
    of a file open's ~0.7), and a record with a key that is not a string, or a value orjson does
    not know without `default`, makes the plain call raise TypeError, so it goes the longer way
    and comes out the same."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        pass
    try:
        return orjson.dumps(value, default=str, option=_ORJSON_OPTIONS).decode()
    except TypeError:
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
