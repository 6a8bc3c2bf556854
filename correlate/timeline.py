"""A session as one story: each LLM call followed by the tool calls it asked for, under each tool
call its processes and their file and network effects; set apart, the tool calls no model asked
for and what the agent's own process did.

Pure function over the store's rows (event dicts as printed, process rows), so `vigil show`,
`-o json` and tests share one structure.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import PurePosixPath
from typing import Any

from vigild.correlate.tool_links import apply_links

EFFECT_PREFIXES = ("file_", "net_", "dns_")
KERNEL_NOTES = ("mem_spike", "oom_kill")


def is_effect(event: dict[str, Any]) -> bool:
    return str(event.get("type", "")).startswith(EFFECT_PREFIXES)


# Read-only opens below these are what every program does at start (libraries, locale, name
# service); views fold them into a count.
SYSTEM_PREFIXES = ("/usr/", "/lib", "/etc/ld.so", "/proc/", "/sys/", "/dev/", "/etc/locale", "/etc/nsswitch",
                   "/etc/localtime", "/etc/host.conf", "/etc/gai.conf", "/etc/ssl/")


# Read-only opens inside these are an interpreter or runtime loading itself (a Python agent's
# imports are thousands of opens a second): folded like system files.
RUNTIME_TREES = ("/site-packages/", "/dist-packages/", "/lib/python3", "/__pycache__/", "/node_modules/",
                 "/.pyenv/", "/.nvm/", "/.rustup/", "/.cargo/registry/", "/go/pkg/mod/")


def is_plumbing(e: dict[str, Any]) -> bool:
    """Failed lookups, reads of the system's own files and of language runtimes' trees, /dev: what
    every program does at start. Writes, creates and truncations never are."""
    if e["type"] != "file_open":
        return False
    path = e.get("path") or ""
    if (e.get("ret") or 0) < 0 or path.startswith("/dev/"):
        return True
    if e.get("write") or e.get("create") or e.get("truncate"):
        return False
    return path.startswith(SYSTEM_PREFIXES) or any(tree in path for tree in RUNTIME_TREES)


def summary(events: list[dict[str, Any]]) -> dict[str, int]:
    """The counts `vigil sessions` shows for a session (late links applied: tool_links)."""
    events = apply_links(events)
    llm = [e for e in events if e["type"] == "llm_call"]
    return {
        "llm_calls": len(llm),
        "input_tokens": sum(e.get("input_tokens") or 0 for e in llm),
        "output_tokens": sum(e.get("output_tokens") or 0 for e in llm),
        "tool_calls": sum(1 for e in events if e["type"] == "tool_start"),
        "unrequested": sum(1 for e in events if e["type"] == "tool_start" and e.get("unrequested")),
        "detections": sum(1 for e in events if e["type"] == "detection"),
        "effects": sum(1 for e in events if is_effect(e)),
    }


def _tool_node(start: dict[str, Any] | None, call_id: int) -> dict[str, Any]:
    return {"tool_call": call_id, "start": start, "end": None, "processes": [], "effects": [],
            "notes": [], "detections": []}


def build_timeline(session: dict[str, Any], processes: list[dict[str, Any]],
                   events: list[dict[str, Any]]) -> dict[str, Any]:
    events = apply_links(events)
    tools: dict[int, dict[str, Any]] = {}
    pid_call: dict[int, int] = {}
    for e in events:
        call = e.get("tool_call")
        if call is None:
            continue
        if e["type"] == "tool_start":
            tools[call] = _tool_node(e, call)
        node = tools.setdefault(call, _tool_node(None, call))
        if e.get("pid") is not None and e["type"] in ("fork", "exec"):
            pid_call[e["pid"]] = call
        if e["type"] == "tool_end":
            node["end"] = e
        elif is_effect(e):
            node["effects"].append(e)
        elif e["type"] in KERNEL_NOTES:
            node["notes"].append(e)
        elif e["type"] == "detection":
            node["detections"].append(e)

    agent: dict[str, Any] = {"processes": [], "effects": [], "detections": []}
    for p in processes:
        owner = tools.get(pid_call.get(p["pid"], -1))
        (owner["processes"] if owner is not None else agent["processes"]).append(p)
    for e in events:
        if e.get("tool_call") is None:
            if is_effect(e):
                agent["effects"].append(e)
            elif e["type"] == "detection":
                agent["detections"].append(e)

    # A tool call belongs to the LLM call that carried its id (the model's own tool-call id).
    # Never by response_id alone: OpenAI-compatible servers reuse one for every response, which
    # would put every tool call under the first LLM call.
    story = [{"llm_call": e, "tool_calls": [], "mcp_calls": []} for e in events if e["type"] == "llm_call"]
    asked_in: dict[str, dict[str, Any]] = {}
    for entry in story:
        for call in entry["llm_call"].get("tool_calls") or ():
            if call.get("id"):
                asked_in[call["id"]] = entry
    unrequested = []
    for node in sorted(tools.values(), key=lambda n: (n["start"] or {}).get("ts_ns", 0)):
        start = node["start"] or {}
        entry = asked_in.get(start.get("tool_call_id") or "") if not start.get("unrequested") else None
        if entry is not None:
            entry["tool_calls"].append(node)
        else:  # nobody asked, or asked by an LLM call the capture did not see whole
            unrequested.append(node)
    # MCP tool calls (correlate/mcp.py) under the LLM call whose tool call they carried out.
    mcp_unlinked = []
    for e in events:
        if e["type"] == "mcp_call" and e.get("method") == "tools/call":
            entry = asked_in.get(e.get("llm_tool_call_id") or "")
            (entry["mcp_calls"] if entry is not None else mcp_unlinked).append(e)
    agent["mcp_calls"] = mcp_unlinked
    return {**session, "summary": summary(events), "timeline": story, "unrequested": unrequested,
            "agent": agent, "lost": sum(e.get("count", 0) for e in events if e["type"] == "lost")}


def merge_folded(effects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The kernel's counts of repeated read-only opens (folded file_open events) added to the open
    of the same file by the same process they repeat, so a file is one line "opened N times". A
    count whose first open is not in the list stays a line of its own. The inputs are not changed."""
    firsts: dict[tuple[Any, Any], dict[str, Any]] = {}
    merged: list[dict[str, Any]] = []
    for e in effects:
        if e["type"] == "file_open":
            key = (e.get("pid"), e.get("path"))
            first = firsts.get(key) if e.get("folded") else None
            if first is not None:
                first["opens"] = (first.get("opens") or 1) + (e.get("opens") or 0)
                continue
            if not e.get("folded") and (e.get("ret") or 0) >= 0:
                e = firsts[key] = dict(e)
        merged.append(e)
    return merged


def fold_effects(effects: list[dict[str, Any]], limit: int = 3,
                 depth: int = 5) -> list[tuple[str, list[dict[str, Any]]]]:
    """Group repetitive effects for display: more than `limit` reads below one directory (its
    first `depth` components: a package or a tool's tree, not every __pycache__ in it) become one
    line ("read 80 files under /usr/lib/python3.11"); everything else stays one line each. A
    file's repeated opens are one line first (merge_folded)."""
    reads: dict[str, list[dict[str, Any]]] = defaultdict(list)
    others: list[tuple[str, list[dict[str, Any]]]] = []
    for e in merge_folded(effects):
        if e["type"] == "file_open" and not (e.get("write") or e.get("create") or e.get("truncate")):
            parent = PurePosixPath(e.get("path") or "/").parent
            reads[str(PurePosixPath(*parent.parts[:depth + 1]))].append(e)
        else:
            others.append((e["type"], [e]))
    folded: list[tuple[str, list[dict[str, Any]]]] = []
    for directory, group in reads.items():
        if len(group) > limit:
            folded.append((f"read {len(group)} files under {directory}", group))
        else:
            folded.extend(("file_open", [e]) for e in group)
    folded.extend(others)
    return sorted(folded, key=lambda item: item[1][0].get("ts_ns", 0))
