"""A session's history as its readers should tell it once late links are known.

A tool call's `tool_start` is written when it starts; the intent that names it can arrive after
it ran (the agent's telemetry, a response read late), as a `tool_linked` event. An `unrequested`
alert already out when that happens is withdrawn by an `alert_retracted`. The store keeps every
event as it was emitted (what was said, and when, stays auditable); `vigil show`, `vigil
sessions`, the HTML report and the OTLP export read them through `apply_links`, so a linked call
sits under the LLM call that asked for it and a retracted alert is not counted.
"""

from __future__ import annotations

from typing import Any

LINK_FIELDS = ("tool_call_id", "tool_name", "response_id", "match", "unrequested")
# the event types apply_links reads besides those it rewrites
LINK_TYPES = ("tool_linked", "alert_retracted")


def apply_links(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events with each linked call's tool_start/tool_end carrying its link (and
    `linked_by`: the link's source), and without the detections that were retracted."""
    links = {(e.get("session_id"), e.get("tool_call")): e for e in events if e["type"] == "tool_linked"}
    retracted = {(e.get("session_id"), e.get("tool_call"), e.get("name"), e.get("alert_ts_ns"))
                 for e in events if e["type"] == "alert_retracted"}
    if not links and not retracted:
        return events
    out = []
    for e in events:
        key = (e.get("session_id"), e.get("tool_call"))
        if e["type"] in ("tool_start", "tool_end") and key in links and e.get("unrequested"):
            link = links[key]
            e = {**e, **{k: link.get(k) for k in LINK_FIELDS}, "linked_by": link.get("source")}
        elif e["type"] == "detection" and (*key, e.get("name"), e.get("ts_ns")) in retracted:
            continue
        out.append(e)
    return out
