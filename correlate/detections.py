"""Deterministic detections over a session's events: secret reads, secret-then-egress,
unrequested processes, tool-call loops, writes outside the working tree.

Pure logic over the event dicts the pipeline prints (`event_json` form), so a detection can be
replayed from the store and tested without a kernel. Each detection carries the evidence chain
that led to it, summarised event by event, so an alert can be understood without the database.
"""

from __future__ import annotations

import json
import os
from errno import EINPROGRESS
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vigild.correlate.globset import GlobSet
from vigild.correlate.numbers import ascii_decimal

DEFAULT_SECRET_GLOBS = (
    "**/.ssh/**",
    "**/.aws/credentials",
    "**/.aws/config",
    "**/.env",
    "**/.env.*",
    "/etc/shadow",
    "/etc/gshadow",
    "**/.netrc",
    "**/.gnupg/**",
    "**/.docker/config.json",
    "**/.kube/config",
    "**/.config/gcloud/**",
    "**/.local/share/keyrings/**",
    "**/Library/Keychains/**",
    "**/.git-credentials",
)
DEFAULT_WRITE_ALLOW_GLOBS = ("/tmp/**", "/var/tmp/**", "/dev/**", "/proc/**", "/sys/**", "/run/**")
WRITE_TYPES = ("file_write", "file_unlink", "file_rename", "file_mkdir", "file_chmod")
# The only event types observe() looks at; the pipeline skips building dicts for the rest.
WATCHED_TYPES = frozenset({"session_start", "session_end", "llm_call", "tool_start", "tool_end", "tool_linked",
                           "capture_blind", "file_open", "net_connect", *WRITE_TYPES})
MAX_REMEMBERED_TOOL_IDS = 1024  # per session: the LLM calls an evidence chain can still name
ALL_DETECTIONS = frozenset({"secret_read", "secret_egress", "unrequested", "tool_loop", "write_outside_tree"})
MAX_REMEMBERED_ALERTS = 1024  # per session: unrequested alerts a late link can still retract


@dataclass
class DetectionConfig:
    """What to look for; every field has a safe default and is settable from config."""

    enabled: frozenset[str] = ALL_DETECTIONS
    secret_globs: tuple[str, ...] = DEFAULT_SECRET_GLOBS
    write_allow_globs: tuple[str, ...] = DEFAULT_WRITE_ALLOW_GLOBS
    egress_window_s: float = 300.0  # a secret read this long ago still taints egress
    loop_threshold: int = 3  # the same tool call this many times in a row
    # A session whose capture is blind (capture_blind) learns what its model asked from the
    # agent's telemetry, which comes in batches after the tool ran: its `unrequested` alerts wait
    # this long past the tool's end for a late link (the telemetry merger alone holds a call
    # 2 s quiet + 5 s for a TLS twin, after the agent's own export delay).
    unrequested_grace_s: float = 15.0


@dataclass(frozen=True)
class Detection:
    type: ClassVar[str] = "detection"
    ts_ns: int
    session_id: int | None
    pid: int | None
    tool_call: int | None
    name: str
    reason: str
    evidence: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "ts_ns": self.ts_ns, "session_id": self.session_id, "pid": self.pid,
                "tool_call": self.tool_call, "name": self.name, "reason": self.reason,
                "evidence": list(self.evidence)}


@dataclass(frozen=True)
class AlertRetracted:
    """An alert already out is withdrawn: a late link showed that the model did ask for the
    tool call it was raised on (`unrequested` only). Counters cannot go down: this is what says
    the alert no longer stands, to every reader of the stream and the history."""

    type: ClassVar[str] = "alert_retracted"
    ts_ns: int
    session_id: int | None
    pid: int | None
    tool_call: int | None
    name: str
    alert_ts_ns: int  # the retracted detection's ts_ns (with session, tool_call and name: which one)
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "ts_ns": self.ts_ns, "session_id": self.session_id, "pid": self.pid,
                "tool_call": self.tool_call, "name": self.name, "alert_ts_ns": self.alert_ts_ns,
                "reason": self.reason}


def summarize(event: dict[str, Any]) -> dict[str, Any]:
    """One link of an evidence chain: the event's identity and what matters about it."""
    keep = ("type", "ts", "ts_ns", "pid", "comm", "tool_call", "tool_call_id", "tool_name", "response_id",
            "provider", "model", "path", "new_path", "remote_addr", "remote_port", "unix_path", "argv", "name")
    return {k: event[k] for k in keep if k in event and event[k] not in (None, "", [])}


@dataclass
class _Session:
    cwd: str | None = None
    provider_ports: set[int] = field(default_factory=set)
    provider_hosts: set[str] = field(default_factory=set)
    llm_pids: set[int] = field(default_factory=set)
    provider_addrs: set[tuple[str, int]] = field(default_factory=set)
    secret_reads: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=64))
    # the LLM call that carried each tool-call id (never matched by response_id: providers reuse it)
    llm_of_tool_id: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    tool_starts: dict[int, dict[str, Any]] = field(default_factory=dict)
    loop_key: str | None = None
    loop_run: list[dict[str, Any]] = field(default_factory=list)
    blind: bool = False  # the capture said it cannot read some of the session's traffic
    ended: bool = False  # session_end seen; kept while alerts are held
    # unrequested tool starts waiting for a late link: tool_call -> [tool_start, release at (ns) or None]
    held: dict[int, list[Any]] = field(default_factory=dict)
    raised: OrderedDict[int, Detection] = field(default_factory=OrderedDict)  # unrequested alerts out


class Detector:
    """Feed it every event of every session, in order; it returns the detections each raises."""

    def __init__(self, config: DetectionConfig | None = None) -> None:
        self.config = config or DetectionConfig()
        self._secrets = GlobSet(self.config.secret_globs)
        self._write_allowed = GlobSet(self.config.write_allow_globs)
        self._sessions: dict[int | None, _Session] = {}
        self._holding: set[int | None] = set()  # sessions with held alerts: expire() looks at these only

    def observe(self, event: dict[str, Any]) -> list[Detection | AlertRetracted]:
        kind = event.get("type", "")
        sid = event.get("session_id")
        if kind == "file_open":  # most of a burst: answered before any per-session state is touched
            return self._file_open(sid, event)
        if kind == "session_end":
            s = self._sessions.get(sid)
            if s is not None and s.held:
                s.ended = True  # its held alerts still wait for their links
            else:
                self._sessions.pop(sid, None)
            return []
        s = self._session(sid)
        if kind == "session_start":
            s.cwd = event.get("cwd")
            return []
        if kind == "capture_blind":
            s.blind = True
            return []
        if kind == "tool_end":
            held = s.held.get(event.get("tool_call"))  # type: ignore[arg-type]
            if held is not None:
                held[1] = event.get("ts_ns", 0) + int(self.config.unrequested_grace_s * 1e9)
            return []
        if kind == "tool_linked":
            return self._linked(s, event)
        if kind == "llm_call":
            self._note_provider(s, event)
            for tool_call in event.get("tool_calls") or ():
                if tool_call.get("id"):
                    s.llm_of_tool_id[tool_call["id"]] = event
            while len(s.llm_of_tool_id) > MAX_REMEMBERED_TOOL_IDS:
                s.llm_of_tool_id.popitem(last=False)
            return []
        found: list[Detection | AlertRetracted] = []
        if kind == "tool_start":
            if event.get("tool_call") is not None:
                s.tool_starts[event["tool_call"]] = event
            if event.get("unrequested") and s.blind and "unrequested" in self.config.enabled \
                    and event.get("tool_call") is not None:
                s.held[event["tool_call"]] = [event, None]  # until its end and a grace: see expire()
                self._holding.add(sid)
            elif s.provider_hosts:
                # A process nobody asked for is an alert only once the session has talked to a
                # model: before that (a plain `vigil trace -- make`) no model could have asked.
                found += self._raise_unrequested(s, event)
            found += self._loop(s, event)
        elif kind in WRITE_TYPES:
            s.loop_key, s.loop_run = None, []  # something changed: a repeat is not a loop any more
            found += self._outside_tree(s, event)
        elif kind == "net_connect":
            self._note_provider_connection(s, event)
            found += self._egress(s, event)
        return [d for d in found if d.name in self.config.enabled]

    def _session(self, sid: int | None) -> _Session:
        s = self._sessions.get(sid)
        if s is None:  # not setdefault: that would build a _Session (seven containers) per event
            s = self._sessions[sid] = _Session()
        return s

    def _file_open(self, sid: int | None, event: dict[str, Any]) -> list[Detection | AlertRetracted]:
        """An open can only be a secret read (a successful read of a secret path) or a write
        outside the tree (one that writes, creates or truncates): most opens are neither, and
        cost two lookups and a remembered glob answer."""
        if (event.get("ret") or 0) < 0:
            return []
        secret = bool(event.get("read")) and self._secrets.match(event.get("path") or "")
        if not secret and not (event.get("write") or event.get("create") or event.get("truncate")):
            return []
        s = self._session(sid)
        found = self._secret_read(s, event) + self._outside_tree(s, event)
        return [d for d in found if d.name in self.config.enabled]

    def expire(self, now_ns: int) -> list[Detection]:
        """Release the held `unrequested` alerts whose tool ended a grace ago with no link."""
        found: list[Detection] = []
        for sid in list(self._holding):
            s = self._sessions.get(sid)
            if s is None:  # its links came, then its end: nothing held any more
                self._holding.discard(sid)
                continue
            for call, (start, due) in list(s.held.items()):
                if due is not None and now_ns >= due:
                    del s.held[call]
                    found += self._released(s, start)
            if not s.held:
                self._holding.discard(sid)
                if s.ended:
                    del self._sessions[sid]
        return found

    def flush(self) -> list[Detection]:
        """At the end (every late intent has been merged): what is still held is unrequested."""
        found: list[Detection] = []
        for sid in self._holding:
            s = self._sessions.get(sid)
            if s is None:
                continue
            for start, _ in s.held.values():
                found += self._released(s, start)
            s.held.clear()
            if s.ended:
                del self._sessions[sid]
        self._holding.clear()
        return found

    def _released(self, s: _Session, start: dict[str, Any]) -> list[Detection]:
        # the same rule as an alert raised at once: only in a session that talked to a model
        return self._raise_unrequested(s, start) if s.provider_hosts else []

    def _raise_unrequested(self, s: _Session, ev: dict[str, Any]) -> list[Detection]:
        found = self._unrequested(ev)
        if found and ev.get("tool_call") is not None and "unrequested" in self.config.enabled:
            s.raised[ev["tool_call"]] = found[0]
            while len(s.raised) > MAX_REMEMBERED_ALERTS:
                s.raised.popitem(last=False)
        return found

    def _linked(self, s: _Session, ev: dict[str, Any]) -> list[AlertRetracted]:
        """A call that started unrequested is the model's: its held alert is dropped; one already
        out is retracted. Its start now names the model's tool call (for evidence chains)."""
        call = ev.get("tool_call")
        if call is None:
            return []
        start = s.tool_starts.get(call)
        if start is not None:
            s.tool_starts[call] = {**start, **{k: ev.get(k) for k in ("tool_call_id", "tool_name", "response_id",
                                                                         "match", "unrequested")}}
        s.held.pop(call, None)
        alert = s.raised.pop(call, None)
        if alert is None:
            return []
        return [AlertRetracted(ts_ns=ev.get("ts_ns", 0), session_id=alert.session_id, pid=alert.pid,
                               tool_call=call, name=alert.name, alert_ts_ns=alert.ts_ns,
                               reason=f"the model asked for it: tool call {ev.get('tool_call_id')} "
                                      f"({ev.get('tool_name')}), learnt from {ev.get('source')} after it ran")]

    # ---- bookkeeping ----
    @staticmethod
    def _note_provider(s: _Session, llm: dict[str, Any]) -> None:
        host = str(llm.get("host") or "")
        name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
        s.provider_hosts.add(name or host)
        s.provider_ports.add(ascii_decimal(port) or 443)
        if llm.get("pid") is not None:
            s.llm_pids.add(llm["pid"])

    @staticmethod
    def _note_provider_connection(s: _Session, ev: dict[str, Any]) -> None:
        # The LLM client's own connections to the provider's port are the provider.
        if ev.get("pid") in s.llm_pids and ev.get("remote_port") in s.provider_ports:
            s.provider_addrs.add((ev.get("remote_addr"), ev.get("remote_port")))

    def _detection(self, ev: dict[str, Any], name: str, reason: str, chain: list[dict[str, Any]]) -> Detection:
        unique = list({id(e): e for e in chain}.values())  # two tool calls may share their LLM call
        return Detection(ts_ns=ev.get("ts_ns", 0), session_id=ev.get("session_id"), pid=ev.get("pid"),
                         tool_call=ev.get("tool_call"), name=name, reason=reason,
                         evidence=tuple(summarize(e) for e in unique))

    def _chain_to(self, s: _Session, ev: dict[str, Any]) -> list[dict[str, Any]]:
        """The LLM call and tool call an effect descends from, when known."""
        chain: list[dict[str, Any]] = []
        start = s.tool_starts.get(ev.get("tool_call"))  # type: ignore[arg-type]
        if start is not None:
            llm = s.llm_of_tool_id.get(start.get("tool_call_id") or "")
            if llm is not None:
                chain.append(llm)
            chain.append(start)
        return chain

    # ---- detections ----
    def _secret_read(self, s: _Session, ev: dict[str, Any]) -> list[Detection]:
        path = ev.get("path") or ""
        # a folded open counts repeats of a read already seen (and detected) at its first open
        if not ev.get("read") or ev.get("folded") or (ev.get("ret") or 0) < 0 or not self._secrets.match(path):
            return []
        s.secret_reads.append(ev)
        return [self._detection(ev, "secret_read", f"{ev.get('comm')} read the secret {path}",
                                [*self._chain_to(s, ev), ev])]

    def _egress(self, s: _Session, ev: dict[str, Any]) -> list[Detection]:
        ret = ev.get("ret") or 0
        if ev.get("family") not in ("inet", "inet6") or (ret < 0 and ret != -EINPROGRESS):
            return []  # a refused connect sent nothing; a non-blocking one under way may
        target = (ev.get("remote_addr"), ev.get("remote_port"))
        if target in s.provider_addrs or not s.secret_reads:
            return []
        window_ns = int(self.config.egress_window_s * 1e9)
        recent = [r for r in s.secret_reads
                  if ev.get("ts_ns", 0) - r.get("ts_ns", 0) <= window_ns
                  or (r.get("tool_call") is not None and r.get("tool_call") == ev.get("tool_call"))]
        if not recent:
            return []
        secret = recent[-1]
        chain = [*self._chain_to(s, secret), secret]
        if ev.get("tool_call") != secret.get("tool_call"):
            chain += self._chain_to(s, ev)
        chain.append(ev)
        return [self._detection(ev, "secret_egress",
                                f"{secret.get('path')} was read, then {ev.get('comm')} connected to "
                                f"{target[0]}:{target[1]}, which is not the LLM provider", chain)]

    def _unrequested(self, ev: dict[str, Any]) -> list[Detection]:
        if not ev.get("unrequested"):
            return []
        argv = " ".join(ev.get("argv") or [])
        return [self._detection(ev, "unrequested", f"the agent ran `{argv}` with no tool call from the model "
                                "behind it", [ev])]

    def _loop(self, s: _Session, ev: dict[str, Any]) -> list[Detection]:
        key = json.dumps([ev.get("tool_name"), ev.get("arguments"), ev.get("argv")], sort_keys=True, default=str)
        if key != s.loop_key:
            s.loop_key, s.loop_run = key, [ev]
            return []
        s.loop_run.append(ev)
        if len(s.loop_run) != self.config.loop_threshold:
            return []
        argv = " ".join(ev.get("argv") or [])
        return [self._detection(ev, "tool_loop", f"the same tool call (`{argv}`) ran {len(s.loop_run)} times "
                                "in a row with nothing written in between", list(s.loop_run))]

    def _outside_tree(self, s: _Session, ev: dict[str, Any]) -> list[Detection]:
        writes = ev.get("type") != "file_open" or ev.get("write") or ev.get("create") or ev.get("truncate")
        if not writes or not s.cwd or (ev.get("ret") or 0) < 0:
            return []
        found = []
        for path in (ev.get("path"), ev.get("new_path")):
            if not path or self._inside(path, s.cwd) or self._write_allowed.match(path):
                continue
            found.append(self._detection(ev, "write_outside_tree",
                                         f"{ev.get('comm')} changed {path}, outside the session's working "
                                         f"tree {s.cwd}", [*self._chain_to(s, ev), ev]))
        return found

    @staticmethod
    def _inside(path: str, tree: str) -> bool:
        tree = tree.rstrip("/") or "/"
        return os.path.normpath(path) == tree or os.path.normpath(path).startswith(tree + "/")
