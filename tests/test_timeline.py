"""`vigil show`'s grouping (pure): tool calls go under the LLM call that carried their id, also
when the provider reuses one response_id for every response (OpenAI-compatible servers do)."""

from __future__ import annotations

from vigild.correlate.timeline import build_timeline


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
