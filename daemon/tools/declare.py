"""Declared needs: an agent (or its hook) tells vigil what a tool call needs over the control socket.

Two layers, kept apart so the rules can be tested without a socket:

* pure: `parse_needs` (validation of a request), `Bounds.clamp` (host-wide bounds from the
  config's `[limits]`), `parse_hint` (`# vigil: mem-max=2G timeout=300` inside a command);
* the socket side: `DeclareCommands` (the `declare` and `last_tool_end` commands) and
  `PeerControlServer`, a `ControlServer` that tells the commands which process is asking.

Who asks decides what a declaration applies to: the peer process (SO_PEERCRED pid, never a pid the
client claims) inside a tool call changes that call now; otherwise (or with `next`) it applies to
the next tool call of the peer's session.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vigild.cgroups import KNOB, KNOBS, CallLimits, CgroupError, Knob, Limits
from vigild.daemon.config import knob_value
from vigild.daemon.service.control import CommandError, ControlServer, peer_credentials

if TYPE_CHECKING:
    import socketserver

    from vigild.daemon.config import Config
    from vigild.daemon.tools.control_loop import CallPolicy, ToolCallControl
    from vigild.daemon.pipeline import Pipeline

PAGE = 4096
ANCESTRY_MAX = 64        # how far up /proc a peer's parents are followed to find its session
END_WAIT_MAX_S = 10.0    # longest `last_tool_end` waits for a tagged call to finish
HINT = re.compile(r"#\s*vigil:\s*(?P<body>[^\n#]*)")
# Request keys (and hint keys, with '-' for '_') and what they become: every knob by its name and
# its flag word (`mem_max`), and the timeout.
NEED_KEYS = {**{knob.name: knob.name for knob in KNOBS}, **{knob.flag.replace("-", "_"): knob.name for knob in KNOBS},
             "timeout": "timeout_s", "timeout_s": "timeout_s"}


class DeclareError(ValueError):
    """A declaration that cannot be taken as it is; the message says which value and why."""


# ---- pure: what a declaration is ------------------------------------------------------------------

@dataclass(frozen=True)
class Needs(CallLimits):
    """What one tool call declares it needs; None: not declared (the call's policy decides)."""

    def any(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _knob_value(knob: Knob, value: object) -> int:
    """A declared knob value: what the config accepts, and digits as text (hints are text)."""
    if knob.unit == "count" and isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    try:
        return knob_value(knob)(value)
    except ValueError as exc:
        raise DeclareError(f"{knob.name}: {exc}") from None


def _seconds(value: object) -> float:
    if isinstance(value, str):
        text = value.strip().lower()
        scale = {"s": 1, "m": 60, "h": 3600}.get(text[-1:], None)
        try:
            value = float(text[:-1]) * scale if scale else float(text)
        except ValueError:
            raise DeclareError(f"not a duration: {value!r} (seconds, or a number with s/m/h)") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
        raise DeclareError(f"timeout must be a positive number of seconds, got {value!r}")
    return float(value)


def parse_needs(request: dict[str, Any]) -> Needs:
    """The needs of a `declare` request (or of a parsed hint); unknown keys are refused, so a
    typo never silently declares nothing."""
    values: dict[str, Any] = {}
    for key, raw in request.items():
        target = NEED_KEYS.get(key.replace("-", "_"))
        if target is None:
            raise DeclareError(f"unknown need {key!r} (needs: {', '.join(k.name for k in KNOBS)}, timeout)")
        if raw is None:
            continue
        values[target] = _knob_value(KNOB[target], raw) if target in KNOB else _seconds(raw)
    needs = Needs(**values)
    if needs.memory_high is not None and needs.memory_max is not None and needs.memory_high > needs.memory_max:
        raise DeclareError("memory_high is above memory_max")
    return needs


def parse_hint(command: str) -> dict[str, str] | None:
    """`key=value` pairs of a `# vigil: mem-max=2G timeout=300` comment in a shell command (the
    last one wins), or None when the command has none."""
    found = None
    for m in HINT.finditer(command):
        found = m.group("body")
    if found is None:
        return None
    pairs = {}
    for word in found.split():
        key, sep, value = word.partition("=")
        if not sep or not value:
            raise DeclareError(f"a vigil hint is key=value words, got {word!r}")
        pairs[key] = value
    return pairs


@dataclass(frozen=True)
class Clamp:
    """One declared value that a host-wide bound cut down."""

    need: str
    declared: float
    applied: float
    bound: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Bounds(CallLimits):
    """Host-wide bounds on declarations (the config's `[limits]`). Memory is always bounded by the
    host's RAM: a larger limit means nothing, and would let one call take the whole host."""

    @classmethod
    def from_config(cls, config: Config | None, mem_total: int | None = None) -> Bounds:
        ram = mem_total if mem_total is not None else host_mem_total()
        bounds = config.bounds if config is not None else CallLimits()
        return cls(**{**asdict(bounds), "memory_high": min(filter(None, (bounds.memory_high, bounds.memory_max, ram))),
                      "memory_max": min(filter(None, (bounds.memory_max, ram)))})

    def clamp(self, needs: Needs) -> tuple[Needs, list[Clamp]]:
        """`needs` cut to the bounds, page-aligned, and what was cut."""
        out: dict[str, Any] = {}
        clamps = []
        for f in fields(Needs):
            value, bound = getattr(needs, f.name), getattr(self, f.name)
            if value is None:
                continue
            if bound is not None and value > bound:
                clamps.append(Clamp(f.name, value, bound, bound))
                value = bound
            if f.name in KNOB and KNOB[f.name].unit == "size":
                value = value // PAGE * PAGE
            out[f.name] = value
        return Needs(**out), clamps

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def host_mem_total(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# ---- the event --------------------------------------------------------------------------------

@dataclass
class LimitChange:
    """A tool call's limits changed (or were set for the next call): by whom, why, from what to
    what, and which declared values a host-wide bound clamped."""

    type: ClassVar[str] = "limit_change"
    ts_ns: int
    session_id: int | None
    tool_call: int | None            # None: for the next call of the session
    who: dict[str, Any]              # {"pid", "uid", "comm"} of the peer, or {"controller": "adaptive"}
    why: str
    old: dict[str, Any]
    new: dict[str, Any]
    clamped: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "ts_ns": self.ts_ns, "session_id": self.session_id, "tool_call": self.tool_call,
                "pid": self.who.get("pid"), "who": self.who, "why": self.why, "old": self.old, "new": self.new,
                "clamped": self.clamped}


# ---- the socket side ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


_peer = threading.local()


def current_peer() -> Peer | None:
    """The process at the other end of the connection this thread serves (PeerControlServer)."""
    return getattr(_peer, "value", None)


class PeerControlServer(ControlServer):
    """A ControlServer whose commands can see who asks (`current_peer()`), and which also admits
    the listed uids, or (`member`) any process of the run's own session whatever its uid:
    `vigil run` admits its agent's processes even after they changed user.

    Without `member`, the agent's user gets in twice checked: the socket file is chowned to that
    uid with mode 0600 (connect(2) on a Unix socket needs write permission, so no other non-root
    user can even connect), and SO_PEERCRED at accept must show that uid (or root, or the
    configured group). With `member`, the file is 0666 and SO_PEERCRED's pid decides: a process
    outside the session is refused at accept (and the connection cap bounds what it can cost).
    The file is created 0600 root first (ControlServer's umask), so there is no window in which
    anyone else could connect before the mode is set."""

    def __init__(self, path: Path, group: str | None = None, uids: frozenset[int] = frozenset(),
                 member: Callable[[int], bool] | None = None) -> None:
        super().__init__(path, group)
        self.uids = uids - {0}
        self.member = member

    def allowed(self, pid: int, uid: int, gid: int) -> bool:
        if self.member is not None and self.member(pid):
            return True
        return uid in self.uids or super().allowed(pid, uid, gid)

    def start(self) -> None:
        super().start()
        if self.member is not None and self.gid is None:
            # An agent may drop privileges (setpriv, sudo -u) after vigil started it: whatever uid
            # its processes run as may connect, and SO_PEERCRED's pid must be one of them.
            os.chmod(self.path, 0o666)
        elif len(self.uids) == 1 and self.gid is None:
            os.chown(self.path, next(iter(self.uids)), -1)

    def _serve(self, conn: socketserver.StreamRequestHandler) -> None:
        # One connection per thread: the peer is recorded for this thread, then the base class
        # does the admission and dispatch.
        _peer.value = Peer(*peer_credentials(conn.request))
        try:
            super()._serve(conn)
        finally:
            _peer.value = None


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


class DeclareCommands:
    """The `declare` and `last_tool_end` commands over one pipeline's tool-call control."""

    def __init__(self, pipeline: Pipeline, bounds: Bounds) -> None:
        self.pipeline = pipeline
        self.bounds = bounds
        self.clients: set[int] = set()  # calls that talked to us (hooks): never "the last tool call"

    def register(self, server: ControlServer) -> None:
        server.register("declare", self.declare)
        server.register("last_tool_end", self.last_tool_end)

    # ---- declare ----
    def declare(self, request: dict[str, Any]) -> dict[str, Any]:
        """`{"command": "declare", "memory_max": "2G", "timeout_s": 300, "next": false, "match": null,
        "tag": null}` → what was applied, to which call (or the next one), and what was clamped."""
        control, peer = self._control(), self._peer()
        args = {k: v for k, v in request.items() if k not in ("command", "next", "match", "tag")}
        try:
            declared = parse_needs(args)
        except DeclareError as exc:
            raise CommandError(str(exc)) from None
        for key in ("match", "tag"):
            if request.get(key) is not None and not isinstance(request[key], str):
                raise CommandError(f"{key} must be a string")
        needs, clamps = self.bounds.clamp(declared)
        who = {"pid": peer.pid, "uid": peer.uid, "comm": _comm(peer.pid)}
        with self.pipeline.lock:
            call_id, session_id = self._locate(control, peer.pid)
            if session_id is None:
                raise CommandError(f"pid {peer.pid} is in no session this vigil controls (run the agent under `vigil run`)")
            if call_id is not None:
                self.clients.add(call_id)
            declared_policy = _policy(needs)
            if call_id is not None and not request.get("next"):
                old = control.applied.get(call_id, control.default_policy)
                new = declared_policy.over(old)
                new = replace(new, limits=_consistent(new.limits))
                try:
                    control.update_call(call_id, new)
                except (KeyError, OSError, ValueError, CgroupError) as exc:
                    raise CommandError(f"cannot change tool call {call_id}: {exc}") from None
                applies_to, old_d, new_d, why = "this_call", old.describe(), new.describe(), "declared"
            else:
                control.push_next_policy(declared_policy, session_id=session_id, match=request.get("match"),
                                         tag=request.get("tag"))
                applies_to, old_d, new_d, why = "next_call", {}, declared_policy.describe(), "declared for the next call"
                call_id = None
            if clamps:
                why += f"; clamped to the host bounds ({', '.join(c.need for c in clamps)})"
            self.pipeline.emit(LimitChange(ts_ns=time.time_ns(), session_id=session_id, tool_call=call_id, who=who,
                                           why=why, old=old_d, new=new_d, clamped=[c.to_dict() for c in clamps]))
        return {"applies_to": applies_to, "tool_call": call_id, "session_id": session_id,
                "declared": declared.to_dict(), "applied": new_d, "clamped": [c.to_dict() for c in clamps],
                "bounds": self.bounds.to_dict()}

    # ---- last_tool_end ----
    def last_tool_end(self, request: dict[str, Any]) -> dict[str, Any]:
        """`{"command": "last_tool_end", "tag": "toolu_...", "wait": 2}` → `{"tool_end": ...,
        "bounds": ...}`: the tool_end of the peer's session's call that took the declaration
        tagged so (waiting up to `wait` s for it to end), or without a tag the last call of the
        session that is not a control client (null when there is none), and the host bounds."""
        control, peer = self._control(), self._peer()
        tag = request.get("tag")
        wait = request.get("wait", 0)
        if isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0:
            raise CommandError("wait must be a number of seconds")
        deadline = time.monotonic() + min(float(wait), END_WAIT_MAX_S)
        while True:
            with self.pipeline.lock:
                call_id, session_id = self._locate(control, peer.pid)
                if session_id is None:
                    raise CommandError(f"pid {peer.pid} is in no session this vigil controls")
                if call_id is not None:
                    self.clients.add(call_id)
                found = self._find_end(control, session_id, tag)
                awaited = tag is not None and control.has_tag(tag)
            if found is not None or not awaited or time.monotonic() >= deadline:
                return {"tool_end": found, "bounds": self.bounds.to_dict()}
            time.sleep(0.05)

    def _find_end(self, control: ToolCallControl, session_id: int, tag: str | None) -> dict[str, Any] | None:
        for end, end_tag in reversed(control.ended):
            if end.call.session_id != session_id:
                continue
            if tag is not None and end_tag != tag:
                continue
            if tag is None and end.call.id in self.clients:
                continue
            return {**end.to_dict(), "tag": end_tag}
        return None

    # ---- who asks ----
    def _control(self) -> ToolCallControl:
        control = self.pipeline.control
        if control is None or control.observe_only:
            raise CommandError("this vigil does not put tool calls in cgroups: run the agent under `vigil run` "
                               "(its VIGIL_SOCKET takes declarations)")
        return control

    @staticmethod
    def _peer() -> Peer:
        peer = current_peer()
        if peer is None:
            raise CommandError("this control socket does not report who asks")
        return peer

    def _locate(self, control: ToolCallControl, pid: int) -> tuple[int | None, int | None]:
        """(the open call pid is in, its session), from the call book and process table, walking
        up /proc when the pipeline has not yet seen pid's fork (the client can connect before
        its own fork event is read)."""
        current: int | None = pid
        for _ in range(ANCESTRY_MAX):
            if current is None or current <= 1:
                break
            call = control.book.call_of(current)
            if call is not None:
                return call.id, call.session_id
            info = self.pipeline.processes.get(current)
            if info is not None and info.alive:
                return None, info.session_id
            current = _parent(current)
        return None, None


def _policy(needs: Needs) -> CallPolicy:
    # Imported here: `vigil declare` (the client) imports this module and must not load the BPF side.
    from vigild.daemon.tools.control_loop import CallPolicy

    return CallPolicy.of(needs)


def _consistent(limits: Limits) -> Limits:
    """A declared memory.max below the call's memory.high pulls memory.high down with it."""
    if limits.memory_high is not None and limits.memory_max is not None and limits.memory_high > limits.memory_max:
        return replace(limits, memory_high=limits.memory_max)
    return limits
