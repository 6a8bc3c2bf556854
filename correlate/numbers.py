"""Numbers read from the wire: ASCII digits only, bounded length.

``str.isdigit()`` is true for Unicode digits ("¹", "١") that ``int()`` then refuses or reads
differently, and ``int()`` itself accepts "+5", " 5", "1_0" and, with base 16, "0x10": none of
those is a number in HTTP. A model, a proxy or a captured byte stream decides what these strings
hold, so every numeric field an observer parses goes through here instead.
"""

from __future__ import annotations

import re

_DECIMAL = re.compile(r"[0-9]{1,19}")
_HEX = re.compile(r"[0-9A-Fa-f]{1,16}")


def ascii_decimal(text: str | bytes) -> int | None:
    """A non-negative decimal of at most 19 ASCII digits, or None."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    return int(text) if _DECIMAL.fullmatch(text) else None


def ascii_hex(text: str | bytes) -> int | None:
    """A non-negative hexadecimal of at most 16 ASCII digits (an HTTP chunk size), or None."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    return int(text, 16) if _HEX.fullmatch(text) else None
