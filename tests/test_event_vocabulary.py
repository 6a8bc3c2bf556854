"""One event vocabulary: every event class in bpf/, correlate/ and daemon/ names itself with a
`type` ClassVar, and daemon/vocabulary.py lists each one that reaches a sink, once."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator

import pytest

import vigild.bpf
import vigild.correlate
import vigild.daemon
from vigild.correlate.intent import ParseFailure
from vigild.correlate.mcp import McpCall
from vigild.daemon.cli.main import parse_only
from vigild.daemon.events import Attributed
from vigild.daemon.sinks.record import record_of
from vigild.daemon.vocabulary import BY_NAME, EVENT_TYPES, INTERNAL, NAMES, ONLY_WORDS


def _classes() -> Iterator[type]:
    """Every class defined in the three layers' modules (not the programs' `__main__`s)."""
    for package in (vigild.bpf, vigild.correlate, vigild.daemon):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if info.name.endswith(".__main__"):
                continue
            module = importlib.import_module(info.name)
            for value in vars(module).values():
                if isinstance(value, type) and value.__module__ == module.__name__:
                    yield value


def _event_classes() -> list[type]:
    return [cls for cls in _classes() if isinstance(vars(cls).get("type"), str)]


def test_no_event_class_keeps_the_other_convention() -> None:
    assert [cls.__qualname__ for cls in _classes() if "TYPE" in vars(cls)] == []


def test_every_event_class_is_listed_internal_or_a_base_of_listed_ones() -> None:
    classes = _event_classes()
    listed = {t.cls for t in EVENT_TYPES}
    assert len(classes) > len(listed)  # the scan found the bases and internal events too
    unaccounted = [cls.__qualname__ for cls in classes if cls not in listed and cls not in INTERNAL
                   and not any(issubclass(other, cls) for other in listed)]
    assert unaccounted == []


def test_names_are_unique_and_read_from_the_classes() -> None:
    assert len(BY_NAME) == len(EVENT_TYPES) == len(NAMES)
    for event_type in EVENT_TYPES:
        assert event_type.name == vars(event_type.cls)["type"], event_type.cls


def test_a_decoder_event_carries_its_name_through_the_session_wrapper() -> None:
    failure = ParseFailure(ts_ns=1_700_000_000_000_000_000, pid=7, conn_id=3, comm="node", reason="bad_frame",
                           detail="x")
    wrapped = Attributed(failure, session_id=4)
    assert wrapped.type == "parse_failure" and "parse_failure" in NAMES
    line = record_of(wrapped)
    assert (line["type"], line["session_id"], line["ts"]) == ("parse_failure", 4, "2023-11-14T22:13:20.000000Z")
    call = McpCall(ts_ns=1, pid=7, comm="node", transport="stdio", method="tools/list", request_id="1")
    assert Attributed(call, None).to_dict()["type"] == "mcp_call" and "mcp_call" in NAMES


@pytest.mark.parametrize("word", sorted(ONLY_WORDS))
def test_only_words_select_listed_types(word: str) -> None:
    selected = parse_only(word)
    assert selected and selected <= NAMES


def test_narrow_only_words() -> None:
    assert parse_only("exec") == {"exec"}
    assert parse_only("write") == parse_only("file") - {"file_open"}
    assert parse_only("llm,alert") == {"llm_call", "https_request", "parse_failure", "detection", "alert_retracted"}
