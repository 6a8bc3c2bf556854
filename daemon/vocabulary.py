"""The one list of event types: every event a sink can receive, by the public name it carries
as `type` (in JSON Lines, in the store's `events.type` column, as an OTLP event name), the class
that makes it and the family `vigil --only` selects it by.

Every event class spells its name the same way, a `type: ClassVar[str]`, whichever layer makes
it (bpf/ for the kernel's, correlate/ for the decoders' and the correlator's, daemon/ for the
pipeline's and tool control's). This module lives in daemon/ because it is the one layer that
may import all three."""

from __future__ import annotations

from dataclasses import dataclass

from vigild.bpf.control import MemSpike, OomKill
from vigild.bpf.effects_events import (
    DnsQuery,
    FileChmod,
    FileMkdir,
    FileOpen,
    FileRename,
    FileUnlink,
    FileWrite,
    NetAccept,
    NetBind,
    NetBytes,
    NetClose,
    NetConnect,
)
from vigild.bpf.events import ExecEvent, ExitEvent, ForkEvent, TlsClose, TlsData, TlsMapped
from vigild.correlate.detections import AlertRetracted, Detection
from vigild.correlate.intent import HttpsRequest, LlmCall, ParseFailure, TelemetryCheck
from vigild.correlate.mcp import McpCall
from vigild.correlate.tool_calls import ToolEnd, ToolLinked, ToolStart
from vigild.daemon.events import CaptureBlind, CaptureEvent, LostEvent, SessionEnd, SessionStart
from vigild.daemon.tools.declare import LimitChange


@dataclass(frozen=True)
class EventType:
    """One kind of event. `family` is the `--only` word that selects it; None where no word
    does (the session frame and losses, which a filtered view always shows, and kinds `--only`
    has never offered)."""

    cls: type
    family: str | None

    @property
    def name(self) -> str:
        """The public name, read from the class so the two cannot disagree."""
        return str(self.cls.type)  # type: ignore[attr-defined]


EVENT_TYPES: tuple[EventType, ...] = (
    EventType(SessionStart, None),
    EventType(SessionEnd, None),
    EventType(LostEvent, None),
    EventType(CaptureEvent, None),
    EventType(CaptureBlind, None),
    EventType(LlmCall, "llm"),
    EventType(HttpsRequest, "llm"),
    EventType(ParseFailure, "llm"),
    EventType(TelemetryCheck, None),
    EventType(McpCall, None),
    EventType(ToolStart, "tool"),
    EventType(ToolLinked, "tool"),
    EventType(ToolEnd, "tool"),
    EventType(LimitChange, "tool"),
    EventType(OomKill, "tool"),
    EventType(MemSpike, "tool"),
    EventType(ForkEvent, "process"),
    EventType(ExecEvent, "process"),
    EventType(ExitEvent, "process"),
    EventType(FileOpen, "file"),
    EventType(FileWrite, "file"),
    EventType(FileUnlink, "file"),
    EventType(FileRename, "file"),
    EventType(FileMkdir, "file"),
    EventType(FileChmod, "file"),
    EventType(NetConnect, "net"),
    EventType(NetAccept, "net"),
    EventType(NetBind, "net"),
    EventType(NetClose, "net"),
    EventType(NetBytes, "net"),
    EventType(DnsQuery, "net"),
    EventType(Detection, "alert"),
    EventType(AlertRetracted, "alert"),
)
BY_NAME: dict[str, EventType] = {t.name: t for t in EVENT_TYPES}
NAMES: frozenset[str] = frozenset(BY_NAME)

# Events the pipeline consumes itself (captured TLS bytes become LLM calls and HTTPS requests; a
# TLS library mapped by a tracked process gets its per-process uprobes);
# no sink ever receives them.
INTERNAL: tuple[type, ...] = (TlsData, TlsClose, TlsMapped)


def family(word: str) -> tuple[str, ...]:
    """The names of one family, in the table's order."""
    return tuple(t.name for t in EVENT_TYPES if t.family == word)


# `vigil --only` words and the event types each stands for: the families, and two narrower
# words (`exec`: only what ran; `write`: the file changes without the reads).
ONLY_WORDS: dict[str, tuple[str, ...]] = {
    "llm": family("llm"),
    "tool": family("tool"),
    "process": family("process"),
    "exec": (ExecEvent.type,),
    "file": family("file"),
    "write": tuple(name for name in family("file") if name != FileOpen.type),
    "net": family("net"),
    "alert": family("alert"),
}
