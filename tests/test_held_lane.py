"""The held-exec lane's ordering (pure logic over record headers; the kernel side is covered by
tests/test_control_run.py and bench/placement.py)."""

from __future__ import annotations

import ctypes

from vigild.bpf.events import EXEC_HELD, EventHeader, Kind
from vigild.daemon.pipeline.held_lane import held_first


def record(kind: Kind, pid: int, flags: int = 0, payload: bytes = b"") -> bytes:
    hdr = EventHeader(kind=kind, flags=flags, pid=pid)
    return bytes(ctypes.string_at(ctypes.addressof(hdr), ctypes.sizeof(hdr))) + payload


def test_births_pass_the_effects_before_them_when_an_exec_is_held() -> None:
    effects = [record(Kind.FILE_OPEN, 7, payload=bytes([i])) for i in range(3)] + [record(Kind.NET_CONNECT, 7)]
    fork, held = record(Kind.FORK, 10), record(Kind.EXEC, 10, EXEC_HELD)
    batch = [effects[0], fork, effects[1], held, effects[2], effects[3]]
    assert held_first(batch) == [fork, held, *effects]


def test_births_never_pass_intent_or_exits() -> None:
    """The LLM call naming a tool must be seen before its exec; an exit before a fork of the
    same pid (reuse) must stay before it."""
    effect, tls, exit_ = record(Kind.FILE_OPEN, 7), record(Kind.TLS_DATA, 5), record(Kind.EXIT, 10)
    fork, held = record(Kind.FORK, 10), record(Kind.EXEC, 10, EXEC_HELD)
    sock = record(Kind.SOCK_DATA, 5)
    batch = [effect, tls, exit_, effect, fork, sock, effect, held]
    assert held_first(batch) == [effect, tls, exit_, fork, effect, sock, held, effect]


def test_a_batch_without_a_held_exec_keeps_its_order() -> None:
    batch = [record(Kind.FILE_OPEN, 7), record(Kind.FORK, 10), record(Kind.EXEC, 10)]
    assert held_first(batch) == batch


def test_a_short_record_is_a_barrier_left_for_the_decoder_to_refuse() -> None:
    short = b"\x02\x00"
    effect, held = record(Kind.FILE_OPEN, 7), record(Kind.EXEC, 10, EXEC_HELD)
    assert held_first([effect, short, effect, held]) == [effect, short, held, effect]
