"""Detections as a handler of the pipeline: the detector reads the record of each event of a type
it watches (the record the sinks got, not one of its own), and each detection it makes is
dispatched like any other event (to the sinks, and back here: a detection is not watched).
Some alerts wait for a late link (see Detector.expire): the pipeline's housekeeping releases them."""

from __future__ import annotations

import time
from collections.abc import Callable

from vigild.correlate.detections import WATCHED_TYPES, Detector
from vigild.daemon.events import Event
from vigild.daemon.sinks.record import Record


class DetectionRelay:
    def __init__(self, detector: Detector, emit: Callable[[Event], None]) -> None:
        self.detector = detector
        self.emit = emit

    def observe(self, event: Event, record: Record) -> None:
        if event.type in WATCHED_TYPES:
            for detection in self.detector.observe(record):
                self.emit(detection)

    def housekeeping(self) -> None:
        """Alerts held for a late link (a blind session's `unrequested`) whose grace is over."""
        for detection in self.detector.expire(time.time_ns()):
            self.emit(detection)

    def flush(self) -> None:
        """At stop, once the late intents are merged: the alerts still held stand."""
        for detection in self.detector.flush():
            self.emit(detection)
