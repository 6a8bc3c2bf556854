"""Sinks: each receives an event and its record (daemon/sinks/record.py), built once by the
pipeline, and flushes once per pipeline batch."""

from vigild.daemon.sinks.journal import JournalSink
from vigild.daemon.sinks.jsonl import JsonLinesSink, OnlySink
from vigild.daemon.sinks.record import Record, record_of
from vigild.daemon.sinks.store import StoreSink

__all__ = ["JournalSink", "JsonLinesSink", "OnlySink", "Record", "StoreSink", "record_of"]
