"""`vigil trace` and `vigil run`: open the sensors and the pipeline, start or attach to the agent,
print its events until it exits, the timeout passes or a stop signal arrives, then tear down in
order and say what was lost."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from vigild.bpf.features import Features
from vigild.cgroups import KNOBS
from vigild.daemon.cli.telemetry_setup import telemetry_env, with_telemetry
from vigild.daemon.launch import spawn_gated
from vigild.daemon.store import Store, StoreError

if TYPE_CHECKING:
    from vigild.daemon.assembly import ToolsFactory
    from vigild.daemon.config import Config
    from vigild.daemon.pipeline import Pipeline
    from vigild.daemon.service.control import ControlServer
    from vigild.daemon.telemetry_receiver import TelemetryReceiver
    from vigild.daemon.tools.control_loop import ToolCallControl

COMM_MAX = 15


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: stop tracing cleanly."""


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


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
    from vigild.bpf.events import TRACK_CONTROLLED, TRACK_OBSERVED
    from vigild.bpf.tls_locate import Locator
    from vigild.correlate.detections import Detector
    from vigild.daemon.assembly import open_pipeline, open_sensors
    from vigild.daemon.sinks.live_view import TextView
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
                           fold_opens=not args.no_fold_opens,
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
    run_config = args.run_config  # `vigil run --config`: its backlog bound and its held lane's raise too
    pipeline = open_pipeline(sensors, capture_content=args.capture_content, max_body_bytes=None,
                             detector=None if args.no_detections else Detector(), telemetry=receiver,
                             backlog_bytes=run_config.backlog_bytes if run_config is not None else None,
                             raise_gil_holder=run_config is not None and run_config.raise_gil_holder)
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
        roots = _add_roots(pipeline, args.pid, control)
        pipeline.start()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if args.pid and not roots and not args.comm and child is None:
            status = 1  # every process asked for was gone by the time the programs were loaded
        elif child is not None:
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


def _add_roots(pipeline: Pipeline, pids: list[int], control: ToolCallControl | None) -> list[int]:
    """Track each `-p` process. Loading the programs can take seconds on a busy host, and a
    process that exited meanwhile is said and skipped, not a crash."""
    roots = []
    for pid in pids:
        # Observing, every root is an agent; `vigil run -p` controls only an agent it recognises.
        controlled = control is not None and (control.observe_only or _known_agent(_cmdline(pid)))
        try:
            roots.append(pipeline.add_root(pid, controlled=controlled).root_pid)
        except psutil.NoSuchProcess:
            print(f"vigil: process {pid} exited before vigil could track it", file=sys.stderr)
    return roots


def _known_agent(command: list[str]) -> bool:
    """Whether `vigil trace` starts (`-- CMD`) or attaches to (`-p`) an agent a built-in profile
    recognises: then its tool calls are followed (and told apart from its relaunches and
    housekeeping), not only its processes."""
    import shutil

    from vigild.correlate.agent_profiles import Proc, Profiles

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

