"""`vigil show`'s grouping (pure): tool calls go under the LLM call that carried their id, also
when the provider reuses one response_id for every response (OpenAI-compatible servers do)."""

from __future__ import annotations

from vigild.correlate.effect_words import effect_words
from vigild.correlate.timeline import build_timeline, fold_effects, merge_folded


def _llm(ts: int, tool_id: str) -> dict:
    return {"type": "llm_call", "ts_ns": ts, "pid": 10, "response_id": "chatcmpl-same",
            "tool_calls": [{"id": tool_id, "name": "bash", "arguments": {"command": f"step {tool_id}"}}]}


def _tool(ts: int, call: int, tool_id: str | None, unrequested: bool = False) -> dict:
    return {"type": "tool_start", "ts_ns": ts, "pid": call, "tool_call": call, "tool_call_id": tool_id,
            "response_id": "chatcmpl-same", "unrequested": unrequested}


def test_reused_response_id_still_groups_by_tool_call_id() -> None:
    events = [_llm(1, "call_a"), _tool(2, 101, "call_a"), _llm(3, "call_b"), _tool(4, 102, "call_b"),
              _llm(5, "call_c"), _tool(6, 103, "call_c"), _tool(7, 104, None, unrequested=True)]
    tree = build_timeline({"id": 1}, [], events)
    grouped = [[node["tool_call"] for node in entry["tool_calls"]] for entry in tree["timeline"]]
    assert grouped == [[101], [102], [103]]
    assert [node["tool_call"] for node in tree["unrequested"]] == [104]


def test_a_tool_call_whose_llm_call_was_not_seen_is_set_apart() -> None:
    tree = build_timeline({"id": 1}, [], [_tool(2, 101, "call_unseen")])
    assert tree["timeline"] == [] and [n["tool_call"] for n in tree["unrequested"]] == [101]


def test_folded_opens_join_their_first_open_as_one_line() -> None:
    """The kernel's counts of repeated opens add to the process's first open of the file; another
    process's opens and a count whose first is missing stay their own lines."""
    def opened(ts: int, pid: int, path: str, opens: int = 1, folded: bool = False) -> dict:
        return {"type": "file_open", "ts_ns": ts, "pid": pid, "path": path, "read": True, "opens": opens,
                "folded": folded}

    events = [opened(1, 7, "/w/a"), opened(2, 8, "/w/a"), opened(3, 7, "/w/a", 40, True),
              opened(4, 7, "/w/a", 9, True), opened(5, 7, "/w/b", 3, True)]
    merged = merge_folded(events)
    assert [(e["pid"], e["path"], e["opens"]) for e in merged] == [(7, "/w/a", 50), (8, "/w/a", 1), (7, "/w/b", 3)]
    assert events[0]["opens"] == 1  # the stored events are not changed
    assert effect_words(merged[0]).detail == " (opened 50 times)"
    assert effect_words(merged[1]).detail == ""
    assert [title for title, _ in fold_effects(events)] == ["file_open"] * 3
