"""SSE decoding: arbitrary byte splits (inside UTF-8 characters and CRLF pairs), line endings,
multi-line data, comments, ids, and gap recovery."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from support.wire import split
from vigild.correlate.sse import SseDecoder, SseEvent

STREAM = (
    ": keep-alive comment\n"
    "event: greeting\n"
    "data: héllo wörld ✓ 日本語 🎉\n"
    "\n"
    "id: 7\n"
    "data: line one\n"
    "data:line two\n"
    "data\n"
    "\n"
    "event: empty-is-not-dispatched\n"
    "\n"
    "data: {\"a\": \"\\u2028 kept\", \"b\": \"\u2028\"}\n"
    "\n"
)
EXPECTED = [
    SseEvent("greeting", "héllo wörld ✓ 日本語 🎉", None),
    SseEvent("message", "line one\nline two\n", "7"),
    SseEvent("message", "{\"a\": \"\\u2028 kept\", \"b\": \"\u2028\"}", "7"),
]


def decode(data: bytes, cuts: list[int]) -> list[SseEvent]:
    decoder = SseDecoder()
    events: list[SseEvent] = []
    for piece in split(data, cuts):
        events += decoder.feed(piece)
    return events + decoder.finish()


@settings(max_examples=200, deadline=None)
@given(eol=st.sampled_from(["\n", "\r\n", "\r"]), cuts=st.lists(st.integers(1, 400), max_size=40))
def test_any_split_any_line_ending(eol: str, cuts: list[int]) -> None:
    data = STREAM.replace("\n", eol).encode()
    assert decode(data, cuts) == EXPECTED


def test_every_single_byte_split_including_inside_multibyte_chars() -> None:
    data = STREAM.replace("\n", "\r\n").encode()
    assert decode(data, list(range(1, len(data)))) == EXPECTED


def test_cr_at_chunk_end_followed_by_lf_is_one_line_ending() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n\r") == [SseEvent("message", "a")]
    assert decoder.feed(b"\ndata: b\r\n\r\n") == [SseEvent("message", "b")]


def test_bom_is_stripped_and_unterminated_event_is_discarded() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"\xef\xbb\xbfdata: x\n\ndata: never finished") == [SseEvent("message", "x")]
    assert decoder.finish() == []


def test_reset_partial_drops_the_half_event_after_a_gap() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"event: a\ndata: first half") == []
    decoder.reset_partial()
    assert decoder.feed(b" tail\n\ndata: next\n\n") == [SseEvent("message", "next")]
