"""What the held-lane scripts beside this file share (lane_only.py, lane_boost.py): a sink that
keeps the events, and polling the pipeline until something was seen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from vigild.daemon.pipeline.core import Pipeline


class Collect:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def handle(self, event: Any, record: Any) -> None:
        self.events.append(event)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def poll_until(pipeline: Pipeline, done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pipeline.run_once(20)
        if done():
            return True
    return False
