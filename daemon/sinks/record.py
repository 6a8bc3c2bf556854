"""The record of an event: the dict every sink prints, stores, counts or exports, built once per
event by the pipeline (each sink used to build its own, so an llm_call was redacted and its
timestamp formatted up to four times).

A record is shared by all sinks of one event: sinks read it and never change it."""

from __future__ import annotations

from vigild.bpf.clock import rfc3339
from vigild.bpf.events import ProcessEvent, field_names
from vigild.bpf.record import Record, json_text
from vigild.daemon.events import Event

__all__ = ["Record", "json_text", "record_of"]


def record_of(event: Event) -> Record:
    """`type` and RFC 3339 `ts` first, then the event's own fields (its `ts_ns` among them).
    Kernel events hand over their fields without a dict in between (most of a burst): a
    dataclass's instance dict holds exactly its fields, in order, as its __init__ set them; one
    that holds anything else (an attribute set later) is read field by field instead.

    A decoded file open's instance dict already is its record (`type`, `ts`, then its fields:
    bpf/effects_events.py builds it so), kept current by the attributes set on the event since
    (the scrubbed path, the tool call the control relabelled): it is handed over as it is, its
    JSON encoded afresh."""
    if isinstance(event, ProcessEvent):
        own = event.__dict__
        fields = len(field_names(type(event)))
        if type(own) is Record and len(own) == fields + 2:
            own._json = None
            return own
        out = Record(type=event.type, ts=rfc3339(event.ts_ns))
        out.update(own if len(own) == fields else event.items())
    else:
        d = event.to_dict()
        out = Record(type=d.pop("type", event.type), ts=rfc3339(event.ts_ns))
        out.update(d)
    out._json = None
    return out
