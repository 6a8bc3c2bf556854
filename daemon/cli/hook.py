"""`vigil hook pre-tool-use` / `vigil hook post-tool-use`: Claude Code hooks (see
`daemon/claude-code-hooks.json`) that declare a Bash call's needs and tell the agent how it ended.

Input is the hook JSON Claude Code writes on stdin: `session_id`, `transcript_path`, `cwd`,
`permission_mode`, `hook_event_name`, `tool_name`, `tool_input` (`{"command", "description",
"timeout"}` for Bash), `tool_use_id`; PostToolUse adds `tool_response`, PostToolUseFailure `error`
and `is_interrupt`. Output, when there is something to say, is
`{"hookSpecificOutput": {"hookEventName": ..., "additionalContext": "..."}}`, which Claude Code
adds to what the model sees next to the tool's result.

Neither hook ever blocks or fails the tool: whatever goes wrong (no vigil, a malformed hint), the
hook says so on stderr and exits 0 with no decision.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from vigild.daemon.service.control import CommandError, request
from vigild.daemon.tools.declare import DeclareError, parse_hint, parse_needs

SHELL_TOOLS = frozenset({"Bash"})
END_WAIT_S = 3.0             # the tool's exit reaches vigil a few ms after the agent sees it
MATCH_STOP = re.compile(r"['\"\\$`\n]")


def match_text(command: str) -> str | None:
    """The part of a command that is sure to appear verbatim in the argv that runs it (agents
    wrap it in `bash -c` / `eval '...'`, which quote everything after the first quote or `$`)."""
    head = MATCH_STOP.split(command.strip(), maxsplit=1)[0].strip()
    return head if len(head) >= 2 else None


def pre_tool_use(payload: dict[str, Any], socket: Path) -> dict[str, Any] | None:
    """Declare the needs of the shell call about to run (a `# vigil: ...` hint in it; the config's
    per-tool policies apply by themselves), tagged with its tool_use_id so the post hook finds it."""
    if payload.get("tool_name") not in SHELL_TOOLS:
        return None
    command = str((payload.get("tool_input") or {}).get("command") or "")
    try:
        needs = parse_needs(parse_hint(command) or {})
    except DeclareError as exc:
        print(f"vigil hook: ignoring the vigil hint: {exc}", file=sys.stderr)
        needs = parse_needs({})
    reply = request(socket, "declare", next=True, match=match_text(command), tag=payload.get("tool_use_id"),
                    **needs.to_dict())
    for clamp in reply.get("clamped", []):
        print(f"vigil hook: {clamp['need']} {clamp['declared']} clamped to the host bound {clamp['bound']}",
              file=sys.stderr)
    return None


def post_tool_use(payload: dict[str, Any], socket: Path) -> dict[str, Any] | None:
    """When the call was OOM-killed, killed at a limit, timed out or throttled, the message the
    agent sees: which limit, its value, the peak memory, and how to ask for more."""
    if payload.get("tool_name") not in SHELL_TOOLS:
        return None
    reply = request(socket, "last_tool_end", tag=payload.get("tool_use_id"), wait=END_WAIT_S, timeout=END_WAIT_S + 5)
    end = reply.get("tool_end") if reply else None
    message = describe_end(end, reply.get("bounds", {})) if end else None
    if message is None:
        return None
    return {"hookSpecificOutput": {"hookEventName": payload.get("hook_event_name", "PostToolUse"),
                                   "additionalContext": message}}


def _size(value: float | None) -> str:
    if value is None:
        return "unknown"
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if value >= 1 << shift:
            return f"{value / (1 << shift):.1f} {unit}"
    return f"{int(value)} B"


def _hint_size(value: int) -> str:
    return f"{max(1, value >> 30)}G" if value >= 4 << 30 else f"{max(1, value >> 20)}M"


def describe_end(end: dict[str, Any], bounds: dict[str, Any]) -> str | None:
    """One paragraph for the model, or None when the call ended without meeting a limit."""
    limits = end.get("limits") or {}
    hit = end.get("limits_hit") or []
    peak = end.get("peak_memory_bytes")
    outcome = end.get("outcome")
    if outcome not in ("oom_killed", "timeout") and not hit:
        return None
    peak_text = f"its peak memory was {_size(peak)}"
    if outcome == "oom_killed":
        what = (f"was OOM-killed: it reached its memory limit (memory.max = {_size(limits.get('memory_max'))}); "
                f"{peak_text}")
    elif outcome == "timeout":
        what = f"was killed at its timeout of {limits.get('timeout_s')} s (after {end.get('duration_ms', 0) / 1000:.1f} s); {peak_text}"
    elif "pids.max" in hit:
        what = f"hit its process limit (pids.max = {limits.get('pids_max')}): some forks failed; {peak_text}"
    elif "memory.max" in hit:
        what = f"reached its memory limit (memory.max = {_size(limits.get('memory_max'))}) and was slowed by reclaim; {peak_text}"
    else:
        what = f"was throttled at memory.high = {_size(limits.get('memory_high'))}; {peak_text}"
    advice = ""
    if outcome == "oom_killed" or "memory.max" in hit:
        current = limits.get("memory_max") or peak or 0
        want = current * 2
        cap = bounds.get("memory_max")
        if cap:
            want = min(want, cap)
        if want > current:
            advice = (f" To give it more, end the command with `# vigil: mem-max={_hint_size(want)}`"
                      f"{f' (this host allows up to {_size(cap)})' if cap else ''}, or make it use less memory"
                      " (fewer parallel jobs, smaller inputs).")
        else:
            advice = " This is the most this host allows: make it use less memory (fewer parallel jobs, smaller inputs)."
    elif outcome == "timeout":
        advice = " End the command with `# vigil: timeout=SECONDS` to allow longer, or split the work."
    elif "pids.max" in hit:
        advice = " End the command with `# vigil: pids-max=N` to allow more processes, or run fewer in parallel."
    return f"vigil: this command {what}.{advice}"


def run_hook(event: str, stdin: TextIO, stdout: TextIO, socket: Path) -> int:
    """Always 0: a hook that fails must not block or fail the agent's tool."""
    try:
        payload = json.loads(stdin.read() or "{}")
        if not isinstance(payload, dict):
            raise ValueError("the hook input is not a JSON object")
        handler = pre_tool_use if event == "pre-tool-use" else post_tool_use
        out = handler(payload, socket)
    except (OSError, ValueError, CommandError) as exc:
        print(f"vigil hook {event}: {exc}", file=sys.stderr)
        return 0
    if out is not None:
        stdout.write(json.dumps(out) + "\n")
    return 0
