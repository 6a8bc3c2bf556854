"""A pipeline with the real lineage and effects programs and a sink that keeps every event, for
tests that run a small program tracked from its first instruction and look at the effect events
of its own session only (root only)."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from typing import Any

from vigild.bpf.effects import EffectsSensor
from vigild.bpf.effects_events import DnsQuery, FileEffect, NetEffect
from vigild.bpf.lineage import LineageSensor
from vigild.daemon.launch import spawn_gated
from vigild.daemon.pipeline import Pipeline


class ListSink:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def handle(self, event: Any, record: dict[str, Any]) -> None:
        self.events.append(event)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class EffectsTracer:
    """options: EffectsSensor's (aggregate, fold_opens, ...)."""

    def __init__(self, **options: Any) -> None:
        self.lineage = LineageSensor()
        self.effects = EffectsSensor(self.lineage.shared_maps, **options)
        self.sink = ListSink()
        self.pipeline = Pipeline(self.lineage, [self.sink], sensors=[self.effects])
        self.pipeline.start()

    def run(self, argv: list[str]) -> list[Any]:
        """Run argv tracked; the effect events of its session once it has exited."""
        child = spawn_gated(argv)
        session = self.pipeline.add_pending_root(child.pid, argv, os.getcwd(), 0)
        child.release()
        _, status = os.waitpid(child.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert self.pipeline.wait_exit(child.pid, timeout=10)
        time.sleep(0.1)  # sums and counts written at exit come after the exit record
        self.pipeline.run_once(0)
        return [e for e in list(self.sink.events)
                if isinstance(e, (FileEffect, NetEffect, DnsQuery)) and e.session_id == session.id]

    def python(self, code: str, *args: str) -> list[Any]:
        return self.run([sys.executable, "-S", "-c", textwrap.dedent(code), *args])

    def close(self) -> None:
        self.pipeline.stop()
        self.effects.close()
        self.lineage.close()
