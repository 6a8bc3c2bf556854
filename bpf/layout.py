"""Fast readers of the kernel's fixed-size records, derived from their ctypes mirrors.

The ctypes structures in events.py and effects_events.py are the checked truth (the ABI test
holds them to each object's BTF), but building one per record (`from_buffer_copy`, then an
attribute read through a descriptor per field) costs several microseconds; a burst decodes tens
of thousands a second. `Layout` turns a mirror into one `struct.Struct` whose `unpack_from` reads
every field at the mirror's own offsets in one C call, and a named tuple of the same field names,
so decoders read `fixed.ret` exactly as they read the ctypes object, for a fraction of its cost.

Nested structures are flattened, their fields named after the structure's field (a record's
header fields are `hdr_kind`, `hdr_flags`, ...); `c_char` and `c_uint8` arrays read as `bytes` (a char array keeps its NULs: decoders
cut it where they need to); another array's elements as `name_0`, `name_1`, ...; padding fields
(named `_...`) are skipped.

`start` skips the fields before that offset (the record header, which the decoder has already
read): a record is then read once, not its header twice.
"""

from __future__ import annotations

import ctypes
import functools
import struct
from collections import namedtuple
from typing import Any

_CODES: dict[type, str] = {
    ctypes.c_uint8: "B", ctypes.c_int8: "b", ctypes.c_uint16: "H", ctypes.c_int16: "h",
    ctypes.c_uint32: "I", ctypes.c_int32: "i", ctypes.c_uint64: "Q", ctypes.c_int64: "q",
    ctypes.c_char: "s",
}
# A ctypes type's name is enough to find it again (c_uint64 is c_ulong on x86-64, one class).
_CODES_BY_NAME = {t.__name__: code for t, code in _CODES.items()}


def _code(ctype: type) -> str:
    code = _CODES_BY_NAME.get(ctype.__name__)
    if code is None:
        raise TypeError(f"no struct code for {ctype.__name__}")
    return code


class Layout:
    """The fields of a ctypes Structure from `start` up to `end` bytes (a record's fixed part
    before its variable tail), as one little-endian struct format and a named tuple type.
    `size` is the length a record needs (`end`), wherever the reading starts."""

    def __init__(self, mirror: type[ctypes.Structure], end: int | None = None, start: int = 0) -> None:
        self.mirror = mirror
        self.end = ctypes.sizeof(mirror) if end is None else end
        self.start = start
        self._format: list[str] = []
        self._names: list[str] = []
        self._pos = start
        self._walk(mirror, 0, "")
        if self._pos < self.end:
            self._format.append(f"{self.end - self._pos}x")
        self.struct = struct.Struct("<" + "".join(self._format))
        self.size = self.start + self.struct.size
        self.tuple = namedtuple(mirror.__name__ + "Fields", self._names)  # type: ignore[misc]
        # tuple.__new__ bound to the named tuple: what its _make does, without a Python frame
        self._make = functools.partial(tuple.__new__, self.tuple)

    def _walk(self, cls: type[ctypes.Structure], base: int, prefix: str) -> None:
        for name, ctype, *_ in cls._fields_:
            offset = base + getattr(cls, name).offset
            if offset >= self.end:
                return
            if offset < self.start:
                if offset + ctypes.sizeof(ctype) <= self.start:
                    continue  # before the reading starts (the header)
                if not (isinstance(ctype, type) and issubclass(ctype, ctypes.Structure)):
                    raise ValueError(f"{cls.__name__}.{name} crosses the start of the layout ({self.start})")
            if offset > self._pos:
                self._format.append(f"{offset - self._pos}x")  # padding the compiler put there too
            self._pos = offset
            if isinstance(ctype, type) and issubclass(ctype, ctypes.Structure):
                self._walk(ctype, offset, f"{prefix}{name}_")
                continue
            size = ctypes.sizeof(ctype)
            if offset + size > self.end:
                raise ValueError(f"{cls.__name__}.{name} crosses the end of the layout ({self.end})")
            if name.startswith("_"):
                continue  # padding: skipped by the next field's offset, or by the end
            if hasattr(ctype, "_length_"):
                element = ctype._type_
                code = _code(element)
                if code in ("s", "B"):
                    self._format.append(f"{ctype._length_}s")
                else:
                    self._format.append(f"{ctype._length_}{code}")
                    self._names.extend(f"{prefix}{name}_{i}" for i in range(ctype._length_))
                    self._pos = offset + size
                    continue
            else:
                self._format.append(_code(ctype))
            self._names.append(prefix + name)
            self._pos = offset + size

    def unpack(self, raw: bytes, offset: int = 0) -> Any:
        """The fields of the record in `raw` at `offset`, as a named tuple."""
        return self._make(self.struct.unpack_from(raw, offset + self.start))

    def named(self, values: tuple[Any, ...]) -> Any:
        """Values `struct.unpack_from` read (a decoder that unpacks a hot record into locals
        itself) as the named tuple `unpack` gives."""
        return self._make(values)
