"""Load, configure and attach BPF objects through the system libbpf, and read their ring buffers.

Every libbpf failure becomes a BpfError naming the step, the errno and (for loads) the verifier
log, so a user sees why a program was refused instead of a bare -EINVAL.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import logging
import mmap
import os
import re
import resource
import select
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from ctypes import byref, c_size_t
from pathlib import Path
from typing import TypeVar

from vigild.bpf import libbpf

log = logging.getLogger("vigild.bpf")
ConfigT = TypeVar("ConfigT", bound=ctypes.Structure)

KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


class BpfError(RuntimeError):
    """A libbpf step failed. `step` says which, `errno` why; `log` holds libbpf's own words.

    For a refused load, `program` names the program libbpf could not load and `reason` is the
    verifier's (or libbpf's) own explanation in one line, when the log has one."""

    def __init__(self, step: str, err: int, log_text: str = "") -> None:
        self.step = step
        self.errno = abs(err)
        self.log = log_text
        self.program = _failed_program(log_text)
        self.reason = _refusal_reason(log_text)
        reason = os.strerror(self.errno) if self.errno else "unknown error"
        message = f"{step}: {reason} (errno {self.errno})"
        if log_text:
            message += "\n" + log_text
        super().__init__(message)

    @property
    def summary(self) -> str:
        """One line for a user: the step, the errno and, for a refused program, why."""
        first = str(self).splitlines()[0]
        if self.program and self.reason:
            return f"{first}: program {self.program}: {self.reason}"
        return first


class BpfUnavailable(RuntimeError):
    """The host cannot run vigild's BPF programs at all (no BTF, no privileges, no libbpf).
    The message is one line meant for the user."""


# ---- libbpf's log: captured per load so failures carry the verifier's explanation --------------

_capture = threading.local()


def _on_libbpf_print(level: int, fmt: bytes, va_list: int) -> int:
    try:
        text = libbpf.format_va(fmt, va_list).rstrip("\n")
        lines = getattr(_capture, "lines", None)
        if lines is not None:
            lines.append(text)
        log.debug("libbpf: %s", text)
    except Exception:  # never let an exception unwind into C
        pass
    return 0


_print_cb = libbpf.PRINT_FN(_on_libbpf_print)  # kept alive for the life of the process
_print_installed = False


def _lib() -> ctypes.CDLL:
    global _print_installed
    lib = libbpf.lib()
    if not _print_installed:
        lib.libbpf_set_print(_print_cb)
        _print_installed = True
    return lib


class _CaptureLog:
    def __enter__(self) -> list[str]:
        _capture.lines = []
        return _capture.lines

    def __exit__(self, *exc: object) -> None:
        _capture.lines = None


def _errno() -> int:
    return ctypes.get_errno() or errno_mod.EINVAL


# ---- preflight ---------------------------------------------------------------------------------

def _effective_caps() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_host(btf_path: Path = KERNEL_BTF) -> None:
    """Say in one line why this host cannot load vigild's programs, before libbpf says it in 40."""
    if not btf_path.exists():
        raise BpfUnavailable(
            f"this kernel has no BTF ({btf_path} is missing): vigild needs a kernel built with "
            "CONFIG_DEBUG_INFO_BTF=y (every current Debian, Ubuntu, Fedora and RHEL kernel has it)"
        )
    caps = _effective_caps()
    has_bpf = caps & (1 << CAP_BPF) and caps & (1 << CAP_PERFMON)
    if not has_bpf and not caps & (1 << CAP_SYS_ADMIN):
        who = "this user" if os.geteuid() else "root without capabilities (a restricted container?)"
        raise BpfUnavailable(
            f"loading BPF programs needs root with CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); {who} "
            "has neither: run with sudo, or grant those capabilities"
        )
    try:
        libbpf.lib()
    except libbpf.LibbpfMissing as exc:
        raise BpfUnavailable(str(exc)) from None


def raise_memlock_limit() -> None:
    """Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK (8 MiB by default); newer ones
    charge the memory cgroup and ignore it. Raising it is harmless where it is not needed."""
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError) as exc:
        log.debug("could not raise RLIMIT_MEMLOCK: %s", exc)


# ---- objects -----------------------------------------------------------------------------------

class Link:
    """An attachment; destroying it detaches the program."""

    def __init__(self, ptr: int, description: str) -> None:
        self._ptr: int | None = ptr
        self.description = description

    def destroy(self) -> None:
        if self._ptr:
            _lib().bpf_link__destroy(self._ptr)
            self._ptr = None


class Map:
    """A BPF map addressed by file descriptor; keys and values are raw bytes or ctypes objects."""

    def __init__(self, ptr: int, name: str) -> None:
        self._ptr = ptr
        self.name = name

    @property
    def fd(self) -> int:
        return _lib().bpf_map__fd(self._ptr)

    @property
    def key_size(self) -> int:
        return _lib().bpf_map__key_size(self._ptr)

    @property
    def value_size(self) -> int:
        return _lib().bpf_map__value_size(self._ptr)

    @property
    def max_entries(self) -> int:
        """Entries the map holds; a ring buffer's size in bytes."""
        return _lib().bpf_map__max_entries(self._ptr)

    def lookup(self, key: ctypes._CData, value_size: int | None = None, keep_gil: bool = False) -> bytes | None:
        """The value for key, or None when absent. value_size overrides for per-CPU maps, whose
        values are one 8-byte-aligned slot per possible CPU. keep_gil: see libbpf.lib_keeping_gil."""
        buf = ctypes.create_string_buffer(value_size or self.value_size)
        lib = libbpf.lib_keeping_gil() if keep_gil else _lib()
        if lib.bpf_map_lookup_elem(self.fd, byref(key), buf) != 0:
            err = _errno()
            if err == errno_mod.ENOENT:
                return None
            raise BpfError(f"lookup in map {self.name}", err)
        return buf.raw

    def lookup_percpu(self, key: ctypes._CData) -> list[bytes]:
        """One value per possible CPU."""
        slot = (self.value_size + 7) // 8 * 8
        ncpu = possible_cpus()
        raw = self.lookup(key, slot * ncpu)
        if raw is None:
            return []
        return [raw[i * slot:i * slot + self.value_size] for i in range(ncpu)]

    def update(self, key: ctypes._CData, value: ctypes._CData, flags: int = 0) -> None:
        if _lib().bpf_map_update_elem(self.fd, byref(key), byref(value), flags) != 0:
            raise BpfError(f"update of map {self.name}", _errno())

    def delete(self, key: ctypes._CData, keep_gil: bool = False) -> bool:
        """Remove key; False when it was not there. keep_gil: see libbpf.lib_keeping_gil."""
        lib = libbpf.lib_keeping_gil() if keep_gil else _lib()
        if lib.bpf_map_delete_elem(self.fd, byref(key)) != 0:
            err = _errno()
            if err == errno_mod.ENOENT:
                return False
            raise BpfError(f"delete from map {self.name}", err)
        return True

    def keys(self) -> Iterator[bytes]:
        key_size = self.key_size
        prev = None
        nxt = ctypes.create_string_buffer(key_size)
        while _lib().bpf_map_get_next_key(self.fd, prev, nxt) == 0:
            yield nxt.raw
            prev = ctypes.create_string_buffer(nxt.raw, key_size)


_ncpus: int | None = None


def possible_cpus() -> int:
    global _ncpus
    if _ncpus is None:
        n = _lib().libbpf_num_possible_cpus()
        if n <= 0:
            raise BpfError("count possible CPUs", n)
        _ncpus = n
    return _ncpus


class BpfObject:
    """One compiled .bpf.o: open it, configure it, load it, attach its programs, close it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.links: list[Link] = []
        self._loaded = False
        lib = _lib()
        with _CaptureLog() as lines:
            ptr = lib.bpf_object__open_file(str(self.path).encode(), None)
        if not ptr:
            raise BpfError(f"open {self.path.name}", _errno(), "\n".join(lines))
        self._ptr: int | None = ptr

    # -- before load --
    def _maps(self) -> Iterator[tuple[str, int]]:
        lib = _lib()
        m = lib.bpf_object__next_map(self._ptr, None)
        while m:
            yield lib.bpf_map__name(m).decode(), m
            m = lib.bpf_object__next_map(self._ptr, m)

    def _rodata(self, size_needed: int, step: str) -> int:
        """The address of the object's .rodata initial value (its `const volatile` config first)."""
        for name, ptr in self._maps():
            if name.endswith(".rodata"):
                size = c_size_t()
                data = _lib().bpf_map__initial_value(ptr, byref(size))
                if not data or size.value < size_needed:
                    raise BpfError(f"{step} of {self.path.name}", errno_mod.EINVAL)
                return data
        raise BpfError(f"{step} of {self.path.name}: no .rodata section", errno_mod.ENOENT)

    def rodata(self, config_type: type[ConfigT]) -> ConfigT:
        """The object's `const volatile` config as compiled (the C initialiser's values), so a
        default is written once, in the C source, and not again in Python."""
        data = self._rodata(ctypes.sizeof(config_type), "read config")
        return config_type.from_buffer_copy(ctypes.string_at(data, ctypes.sizeof(config_type)))

    def set_rodata(self, config: ctypes.Structure) -> None:
        """Write the object's `const volatile` config (its .rodata section starts with it)."""
        data = self._rodata(ctypes.sizeof(config), "set config")
        ctypes.memmove(data, byref(config), ctypes.sizeof(config))

    def set_max_entries(self, map_name: str, entries: int) -> None:
        err = _lib().bpf_map__set_max_entries(self._map_ptr(map_name), entries)
        if err:
            raise BpfError(f"resize map {map_name}", err)

    def reuse_map(self, map_name: str, other: Map) -> None:
        """Share another object's map instead of creating one (tracked set, ring buffer)."""
        err = _lib().bpf_map__reuse_fd(self._map_ptr(map_name), other.fd)
        if err:
            raise BpfError(f"reuse map {map_name}", err)

    def disable_program(self, name: str) -> None:
        """Leave a program out of the load, e.g. one this kernel cannot run."""
        _lib().bpf_program__set_autoload(self._prog_ptr(name), False)

    def set_expected_attach_type(self, name: str, attach_type: int) -> None:
        """Load a program for an attach type its SEC() name does not imply (libbpf 1.1 knows no
        `uprobe.multi` section)."""
        err = _lib().bpf_program__set_expected_attach_type(self._prog_ptr(name), attach_type)
        if err:
            raise BpfError(f"set the attach type of {name}", -err)

    def load(self) -> None:
        with _CaptureLog() as lines:
            err = _lib().bpf_object__load(self._ptr)
        if err:
            raise BpfError(f"load {self.path.name}", err, _verifier_excerpt(lines))
        self._loaded = True

    # -- after load --
    def map(self, name: str) -> Map:
        return Map(self._map_ptr(name), name)

    def program_names(self) -> list[str]:
        lib = _lib()
        names = []
        p = lib.bpf_object__next_program(self._ptr, None)
        while p:
            names.append(lib.bpf_program__name(p).decode())
            p = lib.bpf_object__next_program(self._ptr, p)
        return names

    def program_fd(self, name: str) -> int:
        return _lib().bpf_program__fd(self._prog_ptr(name))

    def attach(self, prog: str) -> Link:
        """Attach by the program's SEC() name (tp_btf/, tracepoint/, raw_tp/ ...)."""
        return self._link(_lib().bpf_program__attach(self._prog_ptr(prog)), f"attach {prog}")

    def attach_tracepoint(self, prog: str, category: str, name: str) -> Link:
        ptr = _lib().bpf_program__attach_tracepoint(self._prog_ptr(prog), category.encode(), name.encode())
        return self._link(ptr, f"attach {prog} to tracepoint {category}:{name}")

    def attach_raw_tracepoint(self, prog: str, name: str) -> Link:
        ptr = _lib().bpf_program__attach_raw_tracepoint(self._prog_ptr(prog), name.encode())
        return self._link(ptr, f"attach {prog} to raw tracepoint {name}")

    def attach_uprobe(
        self,
        prog: str,
        binary: str,
        symbol: str | None = None,
        offset: int = 0,
        pid: int = -1,
        retprobe: bool = False,
        cookie: int = 0,
    ) -> Link:
        """Attach to a function in an ELF file: by symbol (libbpf resolves it), or by file
        offset when symbol is None. pid -1 means every process that maps the file; the program
        reads `cookie` with bpf_get_attach_cookie()."""
        opts = libbpf.UprobeOpts(sz=ctypes.sizeof(libbpf.UprobeOpts), retprobe=retprobe, bpf_cookie=cookie,
                                 func_name=symbol.encode() if symbol else None)
        with _CaptureLog() as lines:
            ptr = _lib().bpf_program__attach_uprobe_opts(self._prog_ptr(prog), pid, binary.encode(),
                                                         offset, byref(opts))
        what = f"{symbol or hex(offset)} in {binary}"
        kind = "uretprobe" if retprobe else "uprobe"
        return self._link(ptr, f"attach {prog} as {kind} on {what}", lines)

    def attach_cgroup(self, prog: str, cgroup_fd: int) -> Link:
        ptr = _lib().bpf_program__attach_cgroup(self._prog_ptr(prog), cgroup_fd)
        return self._link(ptr, f"attach {prog} to cgroup")

    def detach_all(self) -> None:
        for link in reversed(self.links):
            link.destroy()
        self.links.clear()

    def close(self) -> None:
        self.detach_all()
        if self._ptr:
            _lib().bpf_object__close(self._ptr)
            self._ptr = None

    def __enter__(self) -> "BpfObject":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --
    def _link(self, ptr: int | None, step: str, lines: list[str] | None = None) -> Link:
        if not ptr:
            raise BpfError(step, _errno(), "\n".join(lines or []))
        link = Link(ptr, step)
        self.links.append(link)
        return link

    def _map_ptr(self, name: str) -> int:
        ptr = _lib().bpf_object__find_map_by_name(self._ptr, name.encode())
        if not ptr:
            raise BpfError(f"find map {name} in {self.path.name}", errno_mod.ENOENT)
        return ptr

    def _prog_ptr(self, name: str) -> int:
        ptr = _lib().bpf_object__find_program_by_name(self._ptr, name.encode())
        if not ptr:
            raise BpfError(f"find program {name} in {self.path.name}", errno_mod.ENOENT)
        return ptr


def load_leaving_out_refused(path: Path, configure: Callable[[BpfObject], None],
                             optional: Iterable[str]) -> tuple[BpfObject, dict[str, str]]:
    """Open, configure and load an object; when the kernel refuses one of the `optional`
    programs, load again without it, so a refused program costs its own feature only.

    libbpf loads an object's programs all or none and an object cannot be loaded twice, hence
    the reopen. Returns the loaded object and {program: why it was refused}; a refusal of any
    other program, or one without a program name, raises."""
    optional = set(optional)
    refused: dict[str, str] = {}
    while True:
        obj = BpfObject(path)
        try:
            configure(obj)
            for program in refused:
                obj.disable_program(program)
            obj.load()
            return obj, refused
        except BpfError as exc:
            obj.close()
            if exc.program not in optional or exc.program in refused:
                raise
            refused[exc.program] = exc.reason or str(exc).splitlines()[0]
        except BaseException:
            obj.close()
            raise


_FAILED_PROGRAM = re.compile(r"prog '([^']+)': failed to load")
_CORE_FAILURE = re.compile(r"failed to resolve CO-RE relocation (.*)")
# Verifier lines that close every log and explain nothing.
_LOG_NOISE = re.compile(r"^(processed \d+ insns|verification time|stack depth|\.\.\.$)")


def _failed_program(log_text: str) -> str | None:
    found = _FAILED_PROGRAM.findall(log_text)
    return found[-1] if found else None


def _refusal_reason(log_text: str) -> str | None:
    """Why a load was refused, in one line: a structure this kernel lays out otherwise ("CO-RE
    relocation ... struct mm_struct.rss_stat[0].count"), else the verifier's last line that says
    something ("combined stack size of 6 calls is 544. Too large", "unknown func bpf_loop#181")."""
    core = _CORE_FAILURE.findall(log_text)
    if core:
        return f"no CO-RE match on this kernel for {core[-1].strip()}"[:200]
    lines = log_text.splitlines()
    begins = [i for i, line in enumerate(lines) if "-- BEGIN PROG LOAD LOG --" in line]
    if not begins:
        return None
    body = []
    for line in lines[begins[-1] + 1:]:
        if "-- END PROG LOAD LOG --" in line:
            break
        body.append(line.strip())
    for text in reversed(body):
        if text and not _LOG_NOISE.match(text):
            return text[:200]
    return None


def _verifier_excerpt(lines: list[str], keep: int = 40) -> str:
    """The verifier's log can run to thousands of lines; its last lines say why it refused."""
    if len(lines) <= keep:
        return "\n".join(lines)
    return "\n".join(["...", *lines[-keep:]])


# ---- ring buffers ------------------------------------------------------------------------------

RecordHandler = Callable[[bytes], None]
# Handed a record's address and size in the ring, valid only during the call; returns 0, or
# RingBuffer.STOP to end the drain after this record (which counts as consumed all the same).
RawRecordHandler = Callable[[int, int], int]


def ring_size_error(size: int) -> str | None:
    """Why `size` bytes cannot be a BPF ring buffer's size, or None: the kernel takes a power of
    two of at least one page, and its sizes are 32-bit."""
    if size < mmap.PAGESIZE or size & (size - 1) or size > 1 << 31:
        return f"a ring buffer's size must be a power of two from {mmap.PAGESIZE} bytes to 2 GiB, not {size}"
    return None


class RingPositions:
    """Whether a BPF ring buffer holds unread records, in a fraction of a microsecond: its
    consumer and producer positions read from pages mapped read-only (no syscall, no GIL
    released), for a thread that checks between the records of another ring it is decoding."""

    def __init__(self, ring: Map) -> None:
        page = mmap.PAGESIZE
        self._consumer = mmap.mmap(ring.fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=0)
        try:
            self._producer = mmap.mmap(ring.fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        except BaseException:
            self._consumer.close()
            raise

    def pending(self) -> bool:
        return _POS.unpack_from(self._producer)[0] != _POS.unpack_from(self._consumer)[0]

    def close(self) -> None:
        self._consumer.close()
        self._producer.close()


_POS = struct.Struct("<Q")


class RingBuffer:
    """Consumes one or more BPF ring buffers, handing each record's bytes to a Python callback.

    The callback runs on the thread that calls poll(). Exceptions are kept from unwinding into
    libbpf: they are counted and logged, and the next record is handled normally.

    poll() waits on an epoll set of its own holding libbpf's (the rings' wakeups) and an eventfd
    that wake() signals from any thread, so a consumer can block for seconds when nothing happens
    and still be woken at once for work that does not come through a ring (a new session, a stop)."""

    # What a raw handler returns to end a drain: libbpf stops at a sample callback's negative
    # return, with that record consumed (its consumer position already past it).
    STOP = -errno_mod.ENOBUFS

    def __init__(self) -> None:
        self._ptr: int | None = None
        self._callbacks: list[object] = []  # ctypes thunks must outlive the ring buffer
        self.callback_errors = 0
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll = select.epoll()
        self._epoll.register(self._wake_fd, select.EPOLLIN)

    def add(self, ring: Map, handler: RecordHandler) -> None:
        """Hand each record of `ring` to `handler` as a bytes object of its own."""
        def copy_out(data: int, size: int) -> int:
            handler(ctypes.string_at(data, size))
            return 0

        self.add_raw(ring, copy_out)

    def add_raw(self, ring: Map, handler: RawRecordHandler) -> None:
        """Like add, but the handler copies the record out itself (from its address, during the
        call) and may end the drain: for a consumer that keeps records somewhere cheaper than one
        bytes object each, up to a bound (daemon/pipeline/reader.py)."""
        def on_sample(_ctx: int, data: int, size: int) -> int:
            try:
                return handler(data, size)
            except Exception:  # never let an exception unwind into C
                self.callback_errors += 1
                log.exception("ring buffer handler failed")
                return 0

        self._register(ring, libbpf.SAMPLE_FN(on_sample))

    def _register(self, ring: Map, thunk: object) -> None:
        self._callbacks.append(thunk)
        lib = _lib()
        if self._ptr is None:
            ptr = lib.ring_buffer__new(ring.fd, thunk, None, None)
            if not ptr:
                raise BpfError(f"open ring buffer {ring.name}", _errno())
            self._ptr = ptr
            self._epoll.register(lib.ring_buffer__epoll_fd(ptr), select.EPOLLIN)
        else:
            err = lib.ring_buffer__add(self._ptr, ring.fd, thunk, None)
            if err:
                raise BpfError(f"add ring buffer {ring.name}", err)

    def poll(self, timeout_ms: int) -> int:
        """Wait up to timeout_ms for a wakeup (a ring's or wake()'s), then drain everything
        waiting; returns records seen.

        Producers skip most wakeups to save CPU, so the drain after the wait is what delivers
        records that arrived without one."""
        self.wait(timeout_ms)
        return self.consume()

    def wait(self, timeout_ms: int) -> None:
        """Wait up to timeout_ms for a wakeup (a ring's or wake()'s); consume nothing."""
        ready: list[tuple[int, int]] = []
        try:
            ready = self._epoll.poll(timeout_ms / 1000 if timeout_ms >= 0 else -1)
        except InterruptedError:
            pass
        if any(fd == self._wake_fd for fd, _ in ready):
            try:
                os.eventfd_read(self._wake_fd)
            except BlockingIOError:  # read by a wait that raced this one
                pass

    def wait_fds(self) -> tuple[int, int]:
        """The epoll set `wait` waits on and the eventfd `wake` signals, for a waiter of its own
        (daemon/pipeline/gil_boost.py waits without the GIL): it must read the eventfd when ready."""
        return self._epoll.fileno(), self._wake_fd

    def consume(self, keep_gil: bool = False) -> int:
        """Hand every waiting record to its handler; returns how many (0 when a raw handler
        stopped the drain: it counts its own). Not safe from two threads at once (libbpf's
        consumer state): callers that share a ring buffer hold a lock.
        keep_gil: the drain keeps the GIL (see libbpf.lib_keeping_gil)."""
        lib = libbpf.lib_keeping_gil() if keep_gil else _lib()
        m = lib.ring_buffer__consume(self._ptr)
        if m < 0 and m not in (-errno_mod.EINTR, self.STOP):
            raise BpfError("consume ring buffer", m)
        return max(m, 0)

    def wake(self) -> None:
        """End the current (or next) poll's wait now; safe from any thread."""
        os.eventfd_write(self._wake_fd, 1)

    def free(self) -> None:
        if self._ptr:
            _lib().ring_buffer__free(self._ptr)
            self._ptr = None
        if not self._epoll.closed:
            self._epoll.close()
            os.close(self._wake_fd)
