"""`vigil`: the argument parser and the dispatch to each command's module (trace: `trace` and `run`;
stored: the history; socket_commands: `status`, `top`, `declare`; doctor; hook)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from vigild.bpf.loader import BpfError, BpfUnavailable
from vigild.cgroups import KNOBS, CgroupError, Knob
from vigild.daemon.cli import socket_commands, stored, trace
from vigild.daemon.config import knob_value
from vigild.daemon.config import parse_size as config_size
from vigild.daemon.launch import LaunchError
from vigild.daemon.store import StoreError
from vigild.daemon.version import package_version
from vigild.daemon.vocabulary import ONLY_WORDS

DEFAULT_DB = Path(os.environ.get("VIGIL_DB", "/var/lib/vigild/vigil.db"))
DB_HELP = f"the history store to read (default {DEFAULT_DB}, vigild's; $VIGIL_DB overrides)"
DEFAULT_SOCKET = Path(os.environ.get("VIGIL_SOCKET", "/run/vigild/vigild.sock"))
DEFAULT_KEY_FILE = Path(os.environ["VIGIL_KEY_FILE"]) if os.environ.get("VIGIL_KEY_FILE") else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description="Watch what AI agents and their tools really do.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log libbpf and pipeline details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    trace = sub.add_parser("trace", help="trace process trees live",
                           description="Trace processes and their descendants: fork, exec (full argv), exit.")
    trace.add_argument("-p", "--pid", type=int, action="append", default=[], help="trace a running process and its descendants")
    trace.add_argument("-c", "--comm", action="append", default=[], help="trace every process that execs a program with this name")
    _add_trace_options(trace)
    trace.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...: start CMD already traced")

    run = sub.add_parser("run", help="run an agent with every tool call in its own limited cgroup",
                         description="Run CMD traced like `vigil trace -- CMD`; each process tree it spawns (a "
                                     "tool call) runs in its own cgroup with the limits below, placed before "
                                     "its first instruction.")
    _add_trace_options(run)
    for knob in KNOBS:
        run.add_argument(f"--tool-{knob.flag}", dest=f"tool_{knob.name}", type=knob_arg(knob),
                         metavar="SIZE" if knob.unit == "size" else "N",
                         help=f"per-call {knob.help}" + (", e.g. 512M" if knob.unit == "size" else ""))
    run.add_argument("--tool-timeout", type=float, metavar="S", help="kill a tool call after S seconds")
    run.add_argument("--spike", type=parse_size, default=100 << 20, metavar="SIZE",
                     help="report a mem_spike when a call's memory grows by more than SIZE (default 100M; 0: off)")
    run.add_argument("--spike-window", type=float, default=1.0, metavar="S",
                     help="... within S seconds (default 1)")
    run.add_argument("--config", type=Path, metavar="PATH",
                     help="vigild config for per-tool [[policies]], [limits] (bounds on declared needs) and [adaptive]")
    run.add_argument("--adaptive", action="store_true",
                     help="raise calls' memory.high while the host has headroom, lower it under pressure")
    run.add_argument("--socket", type=Path, metavar="PATH",
                     help="where to serve declarations (default /run/vigild/run-<pid>.sock; the agent gets it as VIGIL_SOCKET)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...: the agent to run")
    run.set_defaults(pid=[], comm=[])

    sessions = sub.add_parser("sessions", help="list recorded sessions")
    sessions.add_argument("--db", type=Path, default=DEFAULT_DB, metavar="PATH", help=DB_HELP)
    sessions.add_argument("-n", "--limit", type=int, default=50, help="the newest N sessions (default 50)")
    sessions.add_argument("-o", "--output", choices=("text", "json"), default="text",
                          help="a table (tab-separated when piped) or JSON Lines")

    show = sub.add_parser("show", help="print a session's timeline: LLM calls, tool calls, processes, effects, alerts")
    show.add_argument("session", nargs="?", help="session id or its first digits (default: the latest)")
    show.add_argument("--db", type=Path, default=DEFAULT_DB, metavar="PATH", help=DB_HELP)
    show.add_argument("-o", "--output", choices=("text", "json"), default="text",
                      help="the folded story, or the whole nested structure as JSON")
    show.add_argument("--key-file", type=Path, default=DEFAULT_KEY_FILE, help="key for encrypted prompt content")

    report = sub.add_parser("report", help="write a session as one self-contained HTML page",
                            description="The story `vigil show` prints, as an HTML page with collapsible LLM calls "
                                        "and tool calls, that opens offline anywhere.")
    report.add_argument("session", nargs="?", help="session id or its first digits (default: the latest)")
    report.add_argument("--html", type=Path, required=True, metavar="FILE", help="where to write the page")
    report.add_argument("--db", type=Path, default=DEFAULT_DB, metavar="PATH", help=DB_HELP)
    report.add_argument("--key-file", type=Path, default=DEFAULT_KEY_FILE, help="key for encrypted prompt content")

    export = sub.add_parser("export", help="send a session to an OpenTelemetry collector as a trace")
    export.add_argument("session", help="session id (or its first digits)")
    export.add_argument("--otlp-endpoint", required=True, metavar="URL",
                        help="OTLP/HTTP endpoint: a base URL (http://host:4318) or the full /v1/traces URL")
    export.add_argument("--db", type=Path, default=DEFAULT_DB, metavar="PATH", help=DB_HELP)
    export.add_argument("--key-file", type=Path, default=DEFAULT_KEY_FILE, help="key for encrypted prompt content")
    export.add_argument("--capture-content", action="store_true",
                        help="include messages, response text and tool arguments (off by default)")
    export.add_argument("--header", action="append", default=[], metavar="NAME=VALUE", help="HTTP header to send")
    export.add_argument("--timeout", type=float, default=10.0, metavar="S", help="give up after S seconds (default 10)")

    keygen = sub.add_parser("keygen", help="write a new key for encrypting prompt content at rest")
    keygen.add_argument("path", type=Path, help="where to write it (created with mode 0600; never overwritten)")

    declare = sub.add_parser("declare", help="declare what a tool call needs, then run it",
                             description="Tell vigil what this tool call needs (inside a call: now) or what the next "
                                         "one needs (--next, or without CMD), then exec CMD. Declared values above "
                                         "the host's bounds are clamped, and vigil says so.")
    for knob in KNOBS:
        declare.add_argument(f"--{knob.flag}", dest=knob.name, type=knob_arg(knob),
                             metavar="SIZE" if knob.unit == "size" else "N", help=knob.help)
    declare.add_argument("--timeout", type=float, metavar="S", help="kill the call after S seconds (from its start)")
    declare.add_argument("--next", action="store_true", help="for the next tool call of this session, not this one")
    declare.add_argument("--match", metavar="TEXT", help="with --next: only a call whose command line contains TEXT")
    declare.add_argument("--tag", metavar="TAG", help="with --next: a name to ask about the call later (last_tool_end)")
    declare.add_argument("--socket", type=Path, default=DEFAULT_SOCKET, help=f"vigil socket (default $VIGIL_SOCKET or {DEFAULT_SOCKET})")
    declare.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...: what to run with these needs")

    hook = sub.add_parser("hook", help="Claude Code hooks (daemon/claude-code-hooks.json)",
                          description="Read a Claude Code hook's JSON on stdin; pre-tool-use declares a Bash call's "
                                      "needs, post-tool-use tells the agent which limit its call hit. Never blocks.")
    hook.add_argument("event", choices=("pre-tool-use", "post-tool-use"),
                      help="the Claude Code hook event this invocation answers")
    hook.add_argument("--socket", type=Path, default=DEFAULT_SOCKET, help=f"vigil socket (default $VIGIL_SOCKET or {DEFAULT_SOCKET})")

    top = sub.add_parser("top", help="a live view of the sessions vigild is watching",
                         description="One row per session vigild watches, refreshed every second; --session "
                                     "drills into one. Ctrl-C quits.")
    top.add_argument("--socket", type=Path, default=DEFAULT_SOCKET, help=f"control socket (default {DEFAULT_SOCKET})")
    top.add_argument("--session", type=int, metavar="ID", help="also show this session's recent activity")
    top.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between refreshes (default 1)")
    top.add_argument("--once", action="store_true", help="print one snapshot and exit (for scripts: with -o json)")
    top.add_argument("-o", "--output", choices=("text", "json"), default="text",
                     help="with --once: a table, or vigild's answer as JSON")

    doctor = sub.add_parser("doctor", help="say which TLS a running process uses and whether vigil can read it",
                            description="For a running process: its TLS stacks (libraries it maps, TLS compiled "
                                        "into its executable), and for each whether vigil hooks it (how) or is "
                                        "blind to it (why).")
    doctor.add_argument("pid", type=int, help="the process to examine")
    doctor.add_argument("-o", "--output", choices=("text", "json"), default="text",
                        help="human-readable lines or one JSON object")

    status = sub.add_parser("status", help="ask the running vigild how it is doing")
    status.add_argument("--socket", type=Path, default=DEFAULT_SOCKET, help=f"control socket (default {DEFAULT_SOCKET})")
    status.add_argument("-o", "--output", choices=("text", "json"), default="text",
                        help="human-readable lines or one JSON object")
    return parser


def _add_trace_options(p: argparse.ArgumentParser) -> None:
    """Output and capture options `trace` and `run` share."""
    p.add_argument("-o", "--output", choices=("text", "json"), default="text",
                   help="text (live view) or json (JSON Lines on stdout; the traced command's stdout then goes to "
                        "vigil's stderr, so stdout holds events only)")
    p.add_argument("--all", action="store_true",
                   help="text view: also print reads of system and language-runtime files, failed lookups and "
                        "/dev opens (counted in the summary otherwise)")
    p.add_argument("-w", "--write", type=Path, metavar="FILE",
                   help="also write the events to FILE as JSON Lines (the live view and the command's output stay)")
    p.add_argument("--only", type=parse_only, metavar="KINDS",
                   help=f"print/write only these kinds, comma-separated: {', '.join(ONLY_WORDS)} (sessions and "
                        "losses are always shown; the store keeps everything)")
    p.add_argument("--timeout", type=float, help="stop after this many seconds (a started command gets SIGTERM; exit 124)")
    p.add_argument("--db", type=Path, help="also record into this SQLite store")
    p.add_argument("--key-file", type=Path, default=DEFAULT_KEY_FILE,
                   help="encrypt prompt content in the store with this key (see `vigil keygen`)")
    p.add_argument("--no-tls", action="store_true", help="do not capture TLS plaintext (no LLM calls)")
    p.add_argument("--no-tls-locate", action="store_true",
                   help="do not search stripped executables (Bun: Claude Code, opencode) for their TLS functions")
    p.add_argument("--tls-locate-timeout", type=float, default=30.0,
                   help="hold a new executable's first exec at most this long while its TLS is searched "
                        "(default 30 s; then it runs on and is hooked when the search ends)")
    p.add_argument("--http-port", type=_port, action="append", default=[], metavar="PORT",
                   help="also decode plain TCP to this remote port as HTTP whatever its first bytes (repeatable, "
                        "at most 8; connections whose first write is a request line are decoded anyway)")
    p.add_argument("--no-effects", action="store_true", help="do not trace file and network effects")
    p.add_argument("--no-fold-opens", action="store_true",
                   help="one event per open (default: a thread's repeated read-only opens of a file are counted)")
    p.add_argument("--no-detections", action="store_true", help="do not raise detection events")
    p.add_argument("--capture-content", action="store_true",
                   help="include the (redacted) request messages of LLM calls")
    p.add_argument("--max-call-bytes", type=int, default=16 * 1024 * 1024,
                   help="plaintext captured per TLS call at most (default 16 MiB; the rest is marked lost)")
    p.add_argument("--agent-telemetry", action="store_true",
                   help="turn on the started agent's own OpenTelemetry (Codex, Claude Code, Gemini CLI), "
                        "receive it on loopback and merge it with what TLS decoded")


def parse_only(text: str) -> frozenset[str]:
    """`--only llm,tool,alert` -> the event types those words stand for."""
    words = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in words if w not in ONLY_WORDS]
    if unknown or not words:
        raise argparse.ArgumentTypeError(f"unknown kinds {unknown or [text]}; known: {', '.join(ONLY_WORDS)}")
    return frozenset(t for w in words for t in ONLY_WORDS[w])


def _port(text: str) -> int:
    """A TCP port, 1..65535."""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return int(text)


def parse_size(text: str) -> int:
    """`512M`, `1G`, `1.5G`, `4096` (bytes): the config's sizes, as an argparse type."""
    try:
        return config_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def knob_arg(knob: Knob) -> Callable[[str], int]:
    """The argparse type of one knob's flag: its value, in its range."""
    parse = knob_value(knob)

    def convert(text: str) -> int:
        try:
            return parse(text if knob.unit == "size" else int(text))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{knob.flag}: {exc}") from None

    return convert


def _doctor(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from vigild.daemon.cli.doctor import cmd_doctor  # reads /proc and ELF files: loaded only when asked

    return cmd_doctor(args.pid, args.output, sys.stdout)


def _hook(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from vigild.daemon.cli.hook import run_hook  # runs inside an agent's hook: kept off the common path

    return run_hook(args.event, sys.stdin, sys.stdout, args.socket)


def _command(name: str) -> Callable[[argparse.ArgumentParser, argparse.Namespace], int]:
    """The function behind one subcommand."""
    commands: dict[str, Callable[[argparse.ArgumentParser, argparse.Namespace], int]] = {
        "trace": trace.cmd_trace,
        "run": trace.cmd_trace,
        "sessions": lambda parser, args: stored.cmd_sessions(args),
        "status": lambda parser, args: socket_commands.cmd_status(args),
        "top": lambda parser, args: socket_commands.cmd_top(args),
        "doctor": _doctor,
        "export": lambda parser, args: stored.cmd_export(args),
        "report": lambda parser, args: stored.cmd_report(args),
        "keygen": lambda parser, args: stored.cmd_keygen(args),
        "declare": lambda parser, args: socket_commands.cmd_declare(args),
        "hook": _hook,
        "show": lambda parser, args: stored.cmd_show(args),
    }
    return commands[name]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # said with the subcommand's own usage, not the top level's
        subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        subcommands.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="vigil: %(levelname)s %(name)s: %(message)s")
    try:
        return _command(args.command)(parser, args)
    except (BpfUnavailable, BpfError, StoreError, LaunchError, CgroupError) as exc:
        first_line = str(exc).splitlines()[0]
        print(f"vigil: error: {first_line}", file=sys.stderr)
        if args.verbose and "\n" in str(exc):
            print(str(exc), file=sys.stderr)
        return exc.status if isinstance(exc, LaunchError) else 1


