"""`vigil`: live tracing (`trace`) and the history (`sessions`, `show`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from rich.console import Console

from vigild.bpf.loader import BpfError, BpfUnavailable
from vigild.daemon.launch import LaunchError, spawn_gated
from vigild.daemon.store import Store, StoreError

DEFAULT_DB = Path(os.environ.get("VIGIL_DB", "/var/lib/vigild/vigil.db"))
COMM_MAX = 15
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: stop tracing cleanly."""


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description="Watch what AI agents and their tools really do.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log libbpf and pipeline details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    trace = sub.add_parser("trace", help="trace process trees live",
                           description="Trace processes and their descendants: fork, exec (full argv), exit.")
    trace.add_argument("-p", "--pid", type=int, action="append", default=[], help="trace a running process and its descendants")
    trace.add_argument("-c", "--comm", action="append", default=[], help="trace every process that execs a program with this name")
    trace.add_argument("-o", "--output", choices=("text", "json"), default="text", help="text (live view) or json (JSON Lines)")
    trace.add_argument("--timeout", type=float, help="stop after this many seconds (a started command gets SIGTERM; exit 124)")
    trace.add_argument("--db", type=Path, help="also record into this SQLite store")
    trace.add_argument("--no-tls", action="store_true", help="do not capture TLS plaintext (no LLM calls)")
    trace.add_argument("--capture-content", action="store_true",
                       help="include the (redacted) request messages of LLM calls")
    trace.add_argument("--max-call-bytes", type=int, default=16 * 1024 * 1024,
                       help="plaintext captured per TLS call at most (default 16 MiB; the rest is marked lost)")
    trace.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...: start CMD already traced")

    sessions = sub.add_parser("sessions", help="list recorded sessions")
    sessions.add_argument("--db", type=Path, default=DEFAULT_DB)
    sessions.add_argument("-n", "--limit", type=int, default=50)
    sessions.add_argument("-o", "--output", choices=("text", "json"), default="text")

    show = sub.add_parser("show", help="print one session's process tree and events")
    show.add_argument("session", nargs="?", help="session id (default: the latest)")
    show.add_argument("--db", type=Path, default=DEFAULT_DB)
    show.add_argument("-o", "--output", choices=("text", "json"), default="text")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="vigil: %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "trace":
            return cmd_trace(parser, args)
        if args.command == "sessions":
            return cmd_sessions(args)
        return cmd_show(args)
    except (BpfUnavailable, BpfError, StoreError, LaunchError) as exc:
        first_line = str(exc).splitlines()[0]
        print(f"vigil: error: {first_line}", file=sys.stderr)
        if args.verbose and "\n" in str(exc):
            print(str(exc), file=sys.stderr)
        return 1


def cmd_trace(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from vigild.bpf.lineage import LineageSensor
    from vigild.bpf.tls import TlsSensor
    from vigild.correlate.tls_stream import TlsStreamDecoder
    from vigild.daemon.live_view import TextView
    from vigild.daemon.pipeline import Pipeline, exit_status
    from vigild.daemon.sinks import JsonLinesSink, StoreSink

    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not (args.pid or args.comm or command):
        parser.error("trace needs something to trace: -p PID, -c COMM or -- CMD ARGS...")
    for pid in args.pid:
        if not Path(f"/proc/{pid}").exists():
            parser.error(f"no process with pid {pid}")
    for comm in args.comm:
        if len(comm.encode()) > COMM_MAX:
            print(f"vigil: warning: the kernel keeps {COMM_MAX} bytes of a process name; "
                  f"matching {comm.encode()[:COMM_MAX].decode(errors='ignore')!r}", file=sys.stderr)

    lineage = LineageSensor(root_comms=args.comm)
    tls = None
    if not args.no_tls:
        try:
            tls = TlsSensor(lineage.shared_maps, max_call_bytes=args.max_call_bytes)
        except BaseException:
            lineage.close()
            raise
        tls.attach_system_libraries()
    store = Store(args.db) if args.db else None
    intent = TlsStreamDecoder(capture_content=args.capture_content) if tls else None
    pipeline = Pipeline(lineage, sinks=[], tls=tls, intent=intent)
    if args.output == "json":
        pipeline.sinks.append(JsonLinesSink(sys.stdout))
    else:
        pipeline.sinks.append(TextView(pipeline.processes))
    if store is not None:
        pipeline.sinks.append(StoreSink(store, pipeline.processes))

    signal.signal(signal.SIGTERM, _raise_interrupted)
    signal.signal(signal.SIGINT, _raise_interrupted)
    # Held back until everything is set up, so an early Ctrl-C finds a consistent state to undo.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    child = None
    status = 0
    try:
        if command:
            child = spawn_gated(command)
            pipeline.add_pending_root(child.pid, command, os.getcwd(), os.getuid())
        roots = [pipeline.add_root(pid).root_pid for pid in args.pid]
        pipeline.start()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if child is not None:
            child.release()
            status = _wait_child(child.pid, args.timeout)
            pipeline.wait_exit(child.pid, timeout=2.0)
        else:
            _wait_roots(pipeline, roots, args.timeout, until_exit=not args.comm)
    except Interrupted:
        if child is not None:
            status = _reap_after_interrupt(child.pid)
            pipeline.wait_exit(child.pid, timeout=2.0)
        else:
            status = 130
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        pipeline.stop()
        if tls is not None:
            tls.close()
        lineage.close()
        if pipeline.total_dropped:
            print(f"vigil: {pipeline.total_dropped} events were lost (ring buffer full)", file=sys.stderr)
    return status


def _wait_child(pid: int, timeout: float | None) -> int:
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        waited, status = os.waitpid(pid, os.WNOHANG if deadline else 0)
        if waited:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        if deadline and time.monotonic() >= deadline:
            _terminate(pid)
            return 124
        time.sleep(0.02)


def _terminate(pid: int, grace: float = 5.0) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _reap_after_interrupt(pid: int) -> int:
    """Ctrl-C reached the command too (same process group); give it time to finish on its own."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            waited, status = os.waitpid(pid, os.WNOHANG)
        except Interrupted:
            continue
        if waited:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        time.sleep(0.05)
    _terminate(pid, grace=2.0)
    return 130


def _wait_roots(pipeline: object, roots: list[int], timeout: float | None, until_exit: bool) -> None:
    deadline = time.monotonic() + timeout if timeout else None
    while deadline is None or time.monotonic() < deadline:
        if until_exit and roots and all(pipeline.wait_exit(pid, 0) for pid in roots):  # type: ignore[attr-defined]
            return
        time.sleep(0.1)


def _open_store(path: Path) -> Store:
    if not path.exists():
        raise StoreError(f"no store at {path} (record one with `vigil trace --db {path}` or run vigild)")
    return Store(path)


def cmd_sessions(args: argparse.Namespace) -> int:
    from vigild.daemon.history import print_sessions

    print_sessions(_open_store(args.db), args.limit, args.output == "json", Console())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from vigild.daemon.history import print_show, session_tree

    store = _open_store(args.db)
    session_id = int(args.session) if args.session else store.latest_session_id()
    tree = session_tree(store, session_id) if session_id is not None else None
    if tree is None:
        print(f"vigil: error: no session {args.session or ''} in {args.db}".replace("  ", " "), file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(tree, indent=2))
    else:
        print_show(tree, Console())
    return 0


if __name__ == "__main__":
    sys.exit(main())
