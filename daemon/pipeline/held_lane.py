"""The held-exec lane: process births are handled before the effects that share their batch.

A tool call's first process stays stopped at its exec until the pipeline has placed it, and one
ring buffer carries everything, so under a flood the held exec waited for every effect record in
front of it to be decoded. `held_first` reads only the fixed record headers and, when a batch
holds a held exec, lets forks and execs pass the file and network effects in front of them.

Nothing else is passed, so every order that means something is kept: births keep their order
among themselves and with exits (pid reuse stays right), and with intent (TLS and socket payload:
the LLM call that asked for a tool is seen before the exec it is linked to). A birth passing an
effect only makes a process known sooner; an exit stays behind its effects, so a call still ends
after its last effects were seen.
"""

from __future__ import annotations

from vigild.bpf.events import EXEC_HELD, EventHeader, Kind
from vigild.bpf.lineage import LineageSensor

_KIND = slice(EventHeader.kind.offset, EventHeader.kind.offset + 4)
_FLAGS = slice(EventHeader.flags.offset, EventHeader.flags.offset + 4)
_PID = slice(EventHeader.pid.offset, EventHeader.pid.offset + 4)
_HEADER_LEN = EventHeader.pid.offset + 4
_BIRTHS = (Kind.FORK, Kind.EXEC)
_EFFECTS = frozenset(range(Kind.FILE_OPEN, Kind.EFFECTS_BUSY + 1))


def any_held(lineage: LineageSensor) -> bool:
    """Whether the kernel holds a process for placement now: one map syscall, so batches with
    nothing held (all of them under `vigil trace`) are never scanned."""
    return next(lineage.held.keys(), None) is not None


def held_first(batch: list[bytes]) -> list[bytes]:
    """``batch`` with forks and execs moved ahead of the effects before them, when it holds a
    held exec; otherwise as it came."""
    out: list[bytes] = []
    effects: list[bytes] = []
    held = False
    for raw in batch:
        kind = int.from_bytes(raw[_KIND], "little") if len(raw) >= _HEADER_LEN else -1
        if kind in _BIRTHS:
            held = held or (kind == Kind.EXEC and bool(int.from_bytes(raw[_FLAGS], "little") & EXEC_HELD))
            out.append(raw)
        elif kind in _EFFECTS:
            effects.append(raw)
        else:  # a barrier: intent, exits, control events, what the decoder will refuse
            out += effects
            effects.clear()
            out.append(raw)
    return out + effects if held else batch
