"""ctypes declarations for the parts of the system libbpf (libbpf.so.1) vigild uses.

Hand-written because no maintained Python binding covers ring buffers and uprobes over the system
libbpf (pylibbpf has no ring buffer API; BCC needs kernel headers and LLVM on every host). Only
declarations live here; the Python-facing objects are in loader.py.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from ctypes import POINTER, c_bool, c_char_p, c_int, c_size_t, c_uint32, c_uint64, c_void_p


class LibbpfMissing(RuntimeError):
    """libbpf.so.1 cannot be loaded on this host."""


# libbpf's print callback gets a va_list; on x86-64 and arm64 it arrives as a pointer, which libc's
# vsnprintf formats for us.
PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
SAMPLE_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)


class UprobeOpts(ctypes.Structure):
    """struct bpf_uprobe_opts (libbpf >= 1.0)."""

    _fields_ = [
        ("sz", c_size_t),
        ("ref_ctr_offset", c_size_t),
        ("bpf_cookie", c_uint64),
        ("retprobe", c_bool),
        ("func_name", c_char_p),
    ]


def _declare(lib: ctypes.CDLL) -> None:
    sigs: dict[str, tuple[object, list[object]]] = {
        "bpf_object__open_file": (c_void_p, [c_char_p, c_void_p]),
        "bpf_object__load": (c_int, [c_void_p]),
        "bpf_object__close": (None, [c_void_p]),
        "bpf_object__find_program_by_name": (c_void_p, [c_void_p, c_char_p]),
        "bpf_object__next_program": (c_void_p, [c_void_p, c_void_p]),
        "bpf_object__find_map_by_name": (c_void_p, [c_void_p, c_char_p]),
        "bpf_object__next_map": (c_void_p, [c_void_p, c_void_p]),
        "bpf_map__name": (c_char_p, [c_void_p]),
        "bpf_program__name": (c_char_p, [c_void_p]),
        "bpf_program__set_autoload": (c_int, [c_void_p, c_bool]),
        "bpf_program__set_expected_attach_type": (c_int, [c_void_p, c_int]),
        "bpf_program__fd": (c_int, [c_void_p]),
        "bpf_program__attach": (c_void_p, [c_void_p]),
        "bpf_program__attach_tracepoint": (c_void_p, [c_void_p, c_char_p, c_char_p]),
        "bpf_program__attach_raw_tracepoint": (c_void_p, [c_void_p, c_char_p]),
        "bpf_program__attach_uprobe_opts": (c_void_p, [c_void_p, c_int, c_char_p, c_size_t, POINTER(UprobeOpts)]),
        "bpf_program__attach_cgroup": (c_void_p, [c_void_p, c_int]),
        "bpf_link__destroy": (c_int, [c_void_p]),
        "bpf_map__fd": (c_int, [c_void_p]),
        "bpf_map__set_max_entries": (c_int, [c_void_p, c_uint32]),
        "bpf_map__reuse_fd": (c_int, [c_void_p, c_int]),
        "bpf_map__initial_value": (c_void_p, [c_void_p, POINTER(c_size_t)]),
        "bpf_map__key_size": (c_uint32, [c_void_p]),
        "bpf_map__value_size": (c_uint32, [c_void_p]),
        "bpf_map__max_entries": (c_uint32, [c_void_p]),
        "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, c_uint64]),
        "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
        "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
        "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
        "ring_buffer__new": (c_void_p, [c_int, SAMPLE_FN, c_void_p, c_void_p]),
        "ring_buffer__add": (c_int, [c_void_p, c_int, SAMPLE_FN, c_void_p]),
        "ring_buffer__poll": (c_int, [c_void_p, c_int]),
        "ring_buffer__consume": (c_int, [c_void_p]),
        "ring_buffer__free": (None, [c_void_p]),
        "ring_buffer__epoll_fd": (c_int, [c_void_p]),
        "libbpf_set_print": (c_void_p, [PRINT_FN]),
        "libbpf_num_possible_cpus": (c_int, []),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


_lib: ctypes.CDLL | None = None
_lib_keeping_gil: ctypes.PyDLL | None = None
_libc: ctypes.CDLL | None = None
_lock = threading.Lock()


def lib() -> ctypes.CDLL:
    """The system libbpf, declared; loaded once."""
    global _lib, _libc
    with _lock:
        if _lib is None:
            name = os.environ.get("VIGIL_LIBBPF") or ctypes.util.find_library("bpf") or "libbpf.so.1"
            try:
                loaded = ctypes.CDLL(name, use_errno=True)
            except OSError as exc:
                raise LibbpfMissing(
                    f"cannot load {name}: {exc}; install the Debian package 'libbpf1'"
                ) from None
            _declare(loaded)
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
            _libc.vsnprintf.restype = c_int
            _lib = loaded
        return _lib


def lib_keeping_gil() -> ctypes.PyDLL:
    """The same libbpf, whose calls keep Python's GIL (a `ctypes.PyDLL`): for map operations and
    ring-buffer drains of microseconds on a thread that must not wait to take the GIL back after
    each (the held lane; see vigild.cgroups.gil_held). Never for a call that may block."""
    global _lib_keeping_gil
    loaded = lib()
    with _lock:
        if _lib_keeping_gil is None:
            handle = ctypes.PyDLL(loaded._name, handle=loaded._handle, use_errno=True)
            _declare(handle)
            _lib_keeping_gil = handle
        return _lib_keeping_gil


# A refused program's verifier log arrives as one "%s" of up to megabytes, and its last lines say
# why; a va_list cannot be formatted twice, so the buffer is sized for it up front (one per thread,
# reused: libbpf prints hundreds of short lines per load).
FORMAT_BUFFER_BYTES = 4 << 20
_format_buffers = threading.local()


def format_va(fmt: bytes, va_list: int) -> str:
    """Render a printf format with its va_list, as libbpf's print callback receives them."""
    assert _libc is not None
    buf = getattr(_format_buffers, "buf", None)
    if buf is None:
        buf = _format_buffers.buf = ctypes.create_string_buffer(FORMAT_BUFFER_BYTES)
    _libc.vsnprintf(buf, len(buf), fmt, va_list)
    return buf.value.decode(errors="replace")
