"""`vigil`: live tracing (`trace`), governed runs (`run`), the history (`sessions`, `show`) and the service (`status`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from vigild.bpf.features import Features
from vigild.bpf.loader import BpfError, BpfUnavailable
from vigild.cgroups import KNOBS, CgroupError, Knob
from vigild.daemon.cli.telemetry_setup import telemetry_env, with_telemetry
from vigild.daemon.config import knob_value
from vigild.daemon.config import parse_size as config_size
from vigild.daemon.launch import LaunchError, spawn_gated
from vigild.daemon.store import Store, StoreError
from vigild.daemon.version import package_version
from vigild.daemon.vocabulary import ONLY_WORDS

if TYPE_CHECKING:
    from vigild.daemon.assembly import ToolsFactory
    from vigild.daemon.config import Config
    from vigild.daemon.service.control import ControlServer
    from vigild.daemon.pipeline import Pipeline
    from vigild.daemon.telemetry_receiver import TelemetryReceiver

DEFAULT_DB = Path(os.environ.get("VIGIL_DB", "/var/lib/vigild/vigil.db"))
DB_HELP = f"the history store to read (default {DEFAULT_DB}, vigild's; $VIGIL_DB overrides)"
DEFAULT_SOCKET = Path(os.environ.get("VIGIL_SOCKET", "/run/vigild/vigild.sock"))
DEFAULT_KEY_FILE = Path(os.environ["VIGIL_KEY_FILE"]) if os.environ.get("VIGIL_KEY_FILE") else None
COMM_MAX = 15
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: stop tracing cleanly."""


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # said with the subcommand's own usage, not the top level's
        subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        subcommands.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="vigil: %(levelname)s %(name)s: %(message)s")
    try:
        if args.command in ("trace", "run"):
            return cmd_trace(parser, args)
        if args.command == "sessions":
            return cmd_sessions(args)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "top":
            return cmd_top(args)
        if args.command == "doctor":
            from vigild.daemon.cli.doctor import cmd_doctor

            return cmd_doctor(args.pid, args.output, sys.stdout)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "keygen":
            return cmd_keygen(args)
        if args.command == "declare":
            return cmd_declare(args)
        if args.command == "hook":
            from vigild.daemon.cli.hook import run_hook

            return run_hook(args.event, sys.stdin, sys.stdout, args.socket)
        return cmd_show(args)
    except (BpfUnavailable, BpfError, StoreError, LaunchError, CgroupError) as exc:
        first_line = str(exc).splitlines()[0]
        print(f"vigil: error: {first_line}", file=sys.stderr)
        if args.verbose and "\n" in str(exc):
            print(str(exc), file=sys.stderr)
        return exc.status if isinstance(exc, LaunchError) else 1


def _tools_factory(args: argparse.Namespace, command: list[str], features: Features) -> ToolsFactory | None:
    """`vigil run`: the --tool-* defaults, the config's per-tool policies over them, adaptive
    memory.high. `vigil trace`: every root's tool calls observed (marked at their first exec, never
    held, placed or limited)."""
    from vigild.cgroups import CallLimits
    from vigild.daemon.assembly import open_tool_control
    from vigild.daemon.tools.control_loop import CallPolicy, open_trace_control

    if args.command == "run":
        limits = CallLimits(**{knob.name: getattr(args, f"tool_{knob.name}") for knob in KNOBS},
                            timeout_s=args.tool_timeout)
        config = args.run_config
        adaptive = args.adaptive or (config is not None and config.adaptive)
        return lambda lineage: open_tool_control(lineage, CallPolicy.of(limits), features=features,
                                                 config=config, adaptive=adaptive, spike_bytes=args.spike,
                                                 spike_window_ns=int(args.spike_window * 1e9))
    return open_trace_control  # every root's children's execs are tool calls, observed


def _serve_declarations(args: argparse.Namespace, pipeline: Pipeline) -> ControlServer:
    """`vigil run`'s own socket for declared needs (the agent finds it in VIGIL_SOCKET): root, the
    user vigil runs as, and the processes of the run's session under whatever uid they now run."""
    from vigild.daemon.tools.declare import Bounds, DeclareCommands, PeerControlServer

    path = args.socket or Path(f"/run/vigild/run-{os.getpid()}.sock")
    server = PeerControlServer(path, uids=frozenset({os.getuid()}), member=pipeline.tracks)
    DeclareCommands(pipeline, Bounds.from_config(args.run_config)).register(server)
    server.start()
    os.environ["VIGIL_SOCKET"] = str(path)
    return server


def _start_receiver(args: argparse.Namespace, command: list[str]) -> TelemetryReceiver | None:
    """--agent-telemetry: the loopback OTLP receiver, its endpoint in the agent's environment."""
    if not args.agent_telemetry:
        return None
    if not command:
        print("vigil: warning: --agent-telemetry needs a started command (-- CMD): ignored", file=sys.stderr)
        return None
    from vigild.daemon.telemetry_receiver import TelemetryReceiver  # protobuf: only when asked for

    receiver = TelemetryReceiver(candidates=list).start()
    os.environ.update(telemetry_env(receiver.endpoint))
    return receiver


def cmd_trace(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """`vigil trace`, and `vigil run` (the same, with tool-call control)."""
    from vigild.bpf.tls_locate import Locator
    from vigild.correlate.detections import Detector
    from vigild.bpf.events import TRACK_CONTROLLED, TRACK_OBSERVED
    from vigild.daemon.assembly import open_pipeline, open_sensors
    from vigild.daemon.live_view import TextView
    from vigild.daemon.sinks import JsonLinesSink, OnlySink, StoreSink

    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if args.command == "run" and not command:
        parser.error("run needs the agent to run: -- CMD ARGS...")
    if not (args.pid or args.comm or command):
        parser.error("trace needs something to trace: -p PID, -c COMM or -- CMD ARGS...")
    for pid in args.pid:
        if not Path(f"/proc/{pid}").exists():
            parser.error(f"no process with pid {pid}")
    for comm in args.comm:
        if len(comm.encode()) > COMM_MAX:
            print(f"vigil: warning: the kernel keeps {COMM_MAX} bytes of a process name; "
                  f"matching {comm.encode()[:COMM_MAX].decode(errors='ignore')!r}", file=sys.stderr)

    args.run_config = _load_run_config(parser, args) if args.command == "run" else None
    if len(args.http_port) > 8:
        parser.error("--http-port: at most 8 ports")
    features = Features(lambda line: print(f"vigil: warning: {line}", file=sys.stderr))
    sensors = open_sensors(features, root_comms=args.comm, capture_tls=not args.no_tls, tools_hold=args.command == "run",
                           root_flags=TRACK_CONTROLLED if args.command == "run" else TRACK_OBSERVED,
                           capture_effects=not args.no_effects, max_call_bytes=args.max_call_bytes,
                           tools=_tools_factory(args, command, features), tls_off="--no-tls", effects_off="--no-effects",
                           locator=None if args.no_tls_locate else Locator(), locate_timeout=args.tls_locate_timeout,
                           http_ports=tuple(args.http_port))
    control = sensors.tools
    declarations: ControlServer | None = None
    store = Store(args.db, key_file=args.key_file) if args.db else None
    if store is not None and (abandoned := store.close_abandoned()):
        print(f"vigil: closed {len(abandoned)} session(s) in {args.db} that a vigil which stopped without "
              "ending them left open", file=sys.stderr)
    receiver = _start_receiver(args, command)
    pipeline = open_pipeline(sensors, capture_content=args.capture_content, max_body_bytes=None,
                             detector=None if args.no_detections else Detector(), telemetry=receiver)
    if receiver is not None:
        command = with_telemetry(command, receiver.endpoint)
    shown = (lambda sink: OnlySink(sink, args.only)) if args.only else (lambda sink: sink)
    if args.output == "json":
        pipeline.sinks.append(shown(JsonLinesSink(sys.stdout)))
    else:
        # The status line is for watching others (-p, -c): a started command shares the terminal.
        pipeline.sinks.append(shown(TextView(pipeline.processes, show_all=args.all, verbose=args.verbose,
                                             status_line=not command)))
    if args.write is not None:
        try:
            written = open(args.write, "w", encoding="utf-8")  # closed by the sink when the pipeline stops
        except OSError as exc:
            raise StoreError(f"cannot write events to {args.write}: {exc.strerror}") from None
        pipeline.sinks.append(shown(JsonLinesSink(written, owned=True)))
    if store is not None:
        pipeline.sinks.append(StoreSink(store, pipeline.processes))

    signal.signal(signal.SIGTERM, _raise_interrupted)
    signal.signal(signal.SIGINT, _raise_interrupted)
    # Held back until everything is set up, so an early Ctrl-C finds a consistent state to undo.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    child = None
    status = 0
    try:
        if control is not None and not control.observe_only:
            declarations = _serve_declarations(args, pipeline)
        if command:
            # With JSON on stdout, the command's own stdout would interleave with the events.
            child = spawn_gated(command, stdout_fd=2 if args.output == "json" else None)
            pipeline.add_pending_root(child.pid, command, os.getcwd(), os.getuid(), controlled=control is not None)
            if control is not None:
                control.place_agent(child.pid)
        # Observing, every root is an agent; `vigil run -p` controls only an agent it recognises.
        roots = [pipeline.add_root(pid, controlled=control is not None and (control.observe_only
                                                                             or _known_agent(_cmdline(pid)))).root_pid
                 for pid in args.pid]
        pipeline.start()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if child is not None:
            child.release()
            status = _wait_child(child.pid, args.timeout)
            pipeline.wait_exit(child.pid, timeout=2.0)
            pipeline.end_tool_calls("agent_exited", timeout=3.0)
        else:
            _wait_roots(pipeline, roots, args.timeout, until_exit=not args.comm)
    except Interrupted:
        if child is not None:
            status = _reap_after_interrupt(child.pid)
            pipeline.wait_exit(child.pid, timeout=2.0)
            pipeline.end_tool_calls("interrupted", timeout=3.0)
        else:
            status = 130
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        if declarations is not None:
            declarations.close()
        if receiver is not None:
            receiver.close()
            if receiver.unattributed:
                print(f"vigil: {receiver.unattributed} telemetry requests came from no traced process "
                      "and were not merged", file=sys.stderr)
        pipeline.stop()
        sensors.release()
        if pipeline.total_dropped:
            print(f"vigil: {pipeline.total_dropped} events were lost (effects shed under load, or the ring buffer "
                  "full)", file=sys.stderr)
    return status


def _known_agent(command: list[str]) -> bool:
    """Whether `vigil trace` starts (`-- CMD`) or attaches to (`-p`) an agent a built-in profile
    recognises: then its tool calls are followed (and told apart from its relaunches and
    housekeeping), not only its processes."""
    import shutil

    from vigild.correlate.agent_profiles import Profiles, Proc

    if not command:
        return False
    exe = shutil.which(command[0]) or command[0]
    return Profiles().recognise(Proc(exe, [exe, *command[1:]])) is not None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _load_run_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Config | None:
    from vigild.daemon.config import ConfigError, load

    if args.config is None:
        return None
    try:
        return load(args.config)
    except ConfigError as exc:
        parser.error(str(exc))


def cmd_declare(args: argparse.Namespace) -> int:
    """Send the declaration, say what was applied (and clamped), then exec CMD. A vigil that
    cannot be reached costs the limits, never the work: CMD runs all the same."""
    from vigild.daemon.service.control import CommandError, request

    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    needs = {**{knob.name: getattr(args, knob.name) for knob in KNOBS}, "timeout_s": args.timeout}
    ok = True
    try:
        reply = request(args.socket, "declare", next=args.next or not command, match=args.match, tag=args.tag,
                        **{k: v for k, v in needs.items() if v is not None})
    except (OSError, CommandError) as exc:
        ok = False
        print(f"vigil: warning: cannot declare to {args.socket}: {exc}", file=sys.stderr)
    else:
        where = "this tool call" if reply["applies_to"] == "this_call" else "the next tool call"
        print(f"vigil: declared for {where}: {json.dumps(reply['applied'])}", file=sys.stderr)
        for clamp in reply["clamped"]:
            shown = (lambda v: f"{v / (1 << 20):g}M") if clamp["need"].startswith("memory") else (lambda v: f"{v:g}")
            print(f"vigil: {clamp['need']} {shown(clamp['declared'])} is above the host bound: clamped to "
                  f"{shown(clamp['bound'])}", file=sys.stderr)
    if command:
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            print(f"vigil: error: cannot run {command[0]!r}: {exc.strerror}", file=sys.stderr)
            return 127
    return 0 if ok else 1


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


def _open_store(path: Path, key_file: Path | None = None) -> Store:
    if not path.exists():
        raise StoreError(f"no store at {path} (record one with `vigil trace --db {path}` or run vigild)")
    return Store(path, key_file=key_file)


def cmd_sessions(args: argparse.Namespace) -> int:
    from vigild.daemon.cli.history import print_sessions

    print_sessions(_open_store(args.db), args.limit, args.output == "json", Console())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from vigild.daemon.cli.history import print_show, session_tree

    store = _open_store(args.db, args.key_file)
    session_id = store.resolve_session(args.session) if args.session else store.latest_session_id()
    tree = session_tree(store, session_id) if session_id is not None else None
    if tree is None:
        print(f"vigil: error: no session {args.session or ''} in {args.db}".replace("  ", " "), file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(tree, indent=2))
    else:
        print_show(tree, Console())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vigild.daemon.cli.history import session_tree
    from vigild.daemon.cli.report import write_html

    store = _open_store(args.db, args.key_file)
    session_id = store.resolve_session(args.session) if args.session else store.latest_session_id()
    tree = session_tree(store, session_id) if session_id is not None else None
    if tree is None:
        print(f"vigil: error: no session in {args.db}", file=sys.stderr)
        return 1
    try:
        write_html(tree, args.html, (store.session(session_id) or {}).get("agent"))
    except OSError as exc:
        print(f"vigil: error: cannot write {args.html}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote session {session_id} to {args.html}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from vigild.daemon.otlp import OtlpExportError, export_session

    headers = dict(h.partition("=")[::2] for h in args.header)
    try:
        store = _open_store(args.db, args.key_file)
        session_id = store.resolve_session(args.session)
        sent = export_session(store, session_id, args.otlp_endpoint,
                              capture_content=args.capture_content, headers=headers, timeout=args.timeout)
    except OtlpExportError as exc:
        print(f"vigil: error: {exc}", file=sys.stderr)
        return 1
    print(f"exported session {session_id}: {sent} spans")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from vigild.daemon.crypto import generate_key_file

    try:
        key_id = generate_key_file(args.path)
    except OSError as exc:
        print(f"vigil: error: cannot write a key to {args.path}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote key {key_id} to {args.path}; keep a copy: without it, stored prompts cannot be read")
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from vigild.daemon.service.control import CommandError, request
    from vigild.daemon.cli.top_view import render, run_top

    def ask() -> dict:
        return request(args.socket, "top", session_id=args.session)

    try:
        if args.once:
            snapshot = ask()
            if args.output == "json":
                print(json.dumps(snapshot, indent=2))
            else:
                Console().print(render(snapshot, args.session))
            return 0
        run_top(ask, Console(), args.session, args.interval)
    except (OSError, CommandError) as exc:
        print(f"vigil: error: cannot ask vigild at {args.socket}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from vigild.daemon.service.control import CommandError, request
    from vigild.daemon.cli.status_view import print_status

    try:
        status = request(args.socket, "status")
    except (OSError, CommandError) as exc:
        print(f"vigil: error: cannot ask vigild at {args.socket}: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(status, indent=2))
    else:
        print_status(status, Console())
    return 0

