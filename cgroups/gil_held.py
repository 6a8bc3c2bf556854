"""Syscalls that keep Python's interpreter lock (GIL) while they run, for one thread's hot path.

Python gives the GIL up around every blocking call (os.rename, os.write, os.kill, ctypes CDLL
calls). While another thread decodes a flood of events, taking it back waits for the switch
interval and then for the scheduler to run this thread again: on a busy 2-core machine several
milliseconds, paid once per syscall. Placing a held process is about ten syscalls of a few
microseconds each (bench/placement.py measured 13 ms for three renames under a flood), so the
held lane makes them through libc loaded as a `ctypes.PyDLL`, whose calls keep the GIL: the lane
takes the interpreter once per placement. Only inside `keeping_gil()`, and only on that thread:
elsewhere (limit writes that may reclaim memory, teardown's rmdir) the ordinary calls still let
the other threads run.
"""

from __future__ import annotations

import ctypes
import os
import threading

_state = threading.local()
_libc = ctypes.PyDLL(None, use_errno=True)
_libc.rename.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
_libc.mkdir.argtypes = [ctypes.c_char_p, ctypes.c_uint]
_libc.open.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.write.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
_libc.write.restype = ctypes.c_ssize_t
_libc.close.argtypes = [ctypes.c_int]
_libc.kill.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.readlink.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
_libc.readlink.restype = ctypes.c_ssize_t


class _KeepingGil:
    """`keeping_gil()`'s block: a plain context manager, not a generator one (this runs once per
    placement on the held lane, where every object made costs cold-cache microseconds)."""

    def __enter__(self) -> None:
        _state.active = True

    def __exit__(self, *exc: object) -> None:
        _state.active = False


_KEEPING_GIL = _KeepingGil()


def keeping_gil() -> _KeepingGil:
    """Within this block, on this thread, the calls below keep the GIL."""
    return _KEEPING_GIL


def active() -> bool:
    """Whether this thread is inside `keeping_gil()`."""
    return getattr(_state, "active", False)


def _check(result: int, path: object) -> int:
    """The call's result, or its errno as the OSError subclass os would raise."""
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    return result


def rename(old: os.PathLike[str] | str | bytes, new: os.PathLike[str] | str | bytes) -> None:
    """os.rename, keeping the GIL when inside `keeping_gil()` (bytes paths are used as they are:
    a spare's, encoded when it was made)."""
    if not active():
        os.rename(old, new)
        return
    _check(_libc.rename(os.fsencode(old), os.fsencode(new)), old)


def write_fd(fd: int, data: bytes) -> None:
    """One write(2) to an open cgroup file (a spare's `cgroup.procs`); a short write is an error."""
    written = _check(_libc.write(fd, data, len(data)), fd) if active() else os.write(fd, data)
    if written != len(data):
        raise OSError(0, f"short write ({written} of {len(data)} bytes)", str(fd))


def close(fd: int) -> None:
    """close(2), keeping the GIL when inside `keeping_gil()`; errors are ignored as os.close's
    callers here would (the descriptor is gone either way)."""
    if active():
        _libc.close(fd)
        return
    try:
        os.close(fd)
    except OSError:
        pass


def mkdir(path: os.PathLike[str] | str | bytes, mode: int = 0o777) -> None:
    """os.mkdir, keeping the GIL when inside `keeping_gil()`."""
    if not active():
        os.mkdir(path, mode)
        return
    _check(_libc.mkdir(os.fsencode(path), mode), path)


def write_file(path: os.PathLike[str] | str | bytes, data: bytes) -> None:
    """open(O_WRONLY|O_CLOEXEC), one write(2), close: a cgroup file parses each write alone (no
    O_CREAT: cgroup files exist or the write is wrong). Keeps the GIL inside `keeping_gil()`."""
    if not active():
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
    else:
        fd = _check(_libc.open(os.fsencode(path), os.O_WRONLY | os.O_CLOEXEC), path)
        try:
            written = _check(_libc.write(fd, data, len(data)), path)
        finally:
            _libc.close(fd)
    if written != len(data):
        raise OSError(0, f"short write ({written} of {len(data)} bytes)", os.fsdecode(path))


def is_link(path: os.PathLike[str] | str) -> bool:
    """os.path.islink through readlink(2): false for anything that is not a symlink, or is gone."""
    if not active():
        return os.path.islink(path)
    buf = ctypes.create_string_buffer(1)
    return _libc.readlink(os.fsencode(path), buf, 1) >= 0


def kill(pid: int, sig: int) -> None:
    """os.kill, keeping the GIL when inside `keeping_gil()` (ProcessLookupError as os.kill)."""
    if not active():
        os.kill(pid, sig)
        return
    _check(_libc.kill(pid, sig), pid)  # OSError(ESRCH, ...) is a ProcessLookupError
