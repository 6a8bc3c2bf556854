"""`vigild`: the long-running service. It loads the configuration, the BPF sensors and the
pipeline, finds the agents already running, and serves metrics and the control socket until
SIGTERM; SIGHUP reloads the configuration (a broken one is refused and the running one kept).

Signals are blocked in every thread and taken by the main loop with sigtimedwait, so a reload or
a shutdown never runs inside whatever code a signal happened to interrupt.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import time
from collections import Counter, deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from vigild.bpf.features import Features
from vigild.bpf.loader import BpfError, BpfUnavailable
from vigild.daemon import config as configuration
from vigild.daemon.config import Config, ConfigError
from vigild.daemon.service.agents import AgentMatcher, running_agents
from vigild.daemon.store import Store, StoreError
from vigild.daemon.version import package_version

if TYPE_CHECKING:
    from vigild.bpf.lineage import LineageSensor
    from vigild.bpf.tls import TlsSensor
    from vigild.daemon.assembly import ToolsFactory
    from vigild.daemon.tools.control_loop import ToolCallControl

log = logging.getLogger("vigild")

EX_CONFIG = 78  # sysexits: the unit does not restart on a configuration error
SIGNALS = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}
TICK_S = 1.0
RATE_WINDOW = 10  # ticks over which `status` reports events/s
PRUNE_EVERY_S = 600.0
# Settings that are read once at start; a reload that changes them says a restart is needed.
RESTART_FIELDS = ("capture_tls", "max_call_bytes", "store_path", "store_key_file", "metrics_address",
                  "drop_labels", "max_label_values", "socket_path", "socket_group", "tools_enabled", "capture_effects",
                  "fold_opens", "placement_warm", "backlog_bytes", "favordynmods", "raise_gil_holder")


class OneLineFormatter(logging.Formatter):
    """One line per record, tracebacks included, so journald and grep keep records whole."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


class OtlpSessionExporter:
    """Sends each session to the OTLP endpoint when it ends, from a thread of its own: an export
    may wait on the network for seconds and must never hold up the pipeline. With the agents'
    telemetry received, a session is sent once the late-link grace after its end is over: its
    telemetry-made LLM calls, late links and held alerts arrive after the session ended."""

    def __init__(self, store_path: Path, config: Config) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.store_path = store_path
        self.config = config
        self.settle_s = config.unrequested_grace_s if config.telemetry_address is not None else 0.0
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vigil-otlp")
        self.ended: list[tuple[float, int]] = []  # (when it ended, monotonic; session id)

    def handle(self, event: Any, record: dict[str, Any]) -> None:
        if event.type == "session_end":
            self.ended.append((time.monotonic(), event.session.id))

    def flush(self, settled: bool = False) -> None:
        # Sinks flush in order and this one comes after the store's: the batch that ended these
        # sessions is committed, so the export can read them back.
        now = time.monotonic()
        due = [sid for ended, sid in self.ended if settled or now - ended >= self.settle_s]
        for session_id in due:
            self.pool.submit(self._export, session_id)
        self.ended = [(ended, sid) for ended, sid in self.ended if sid not in due]

    def _export(self, session_id: int) -> None:
        from vigild.daemon.sinks.otlp import OtlpExportError, export_session

        store = Store(self.store_path, key_file=self.config.store_key_file)
        try:
            spans = export_session(store, session_id, self.config.otlp_endpoint or "",
                                   capture_content=self.config.otlp_content)
            log.info("exported session %d to %s (%d spans)", session_id, self.config.otlp_endpoint, spans)
        except (OtlpExportError, StoreError) as exc:
            log.warning("could not export session %d: %s", session_id, exc)
        finally:
            store.close()

    def close(self) -> None:
        self.flush(settled=True)  # stopping: what the pipeline had is all there is
        self.pool.shutdown(wait=True)


class Service:
    """The sensors, pipeline, exporter and control socket of one vigild process."""

    def __init__(self, config: Config, config_path: Path, config_missing_ok: bool) -> None:
        from vigild.bpf.tls_locate import Locator
        from vigild.daemon.assembly import detector_for, open_pipeline, open_sensors
        from vigild.daemon.sinks.metrics import Exporter, build_registry
        from vigild.daemon.service.control import ControlServer
        from vigild.daemon.sinks.session_stats import SessionStatsSink
        from vigild.daemon.sinks import JournalSink, StoreSink
        from vigild.daemon.telemetry_receiver import TelemetryReceiver
        from vigild.daemon.tools.declare import Bounds, DeclareCommands, PeerControlServer

        self.config = config
        self.config_path = config_path
        self.config_missing_ok = config_missing_ok
        self.started = time.time()
        self.reloads: Counter[str] = Counter()
        self.rate: deque[tuple[float, int]] = deque(maxlen=RATE_WINDOW + 1)
        self.last_prune = 0.0
        self.exporter: Exporter | None = None
        self.control: ControlServer | None = None
        self.telemetry: Any = None  # TelemetryReceiver with [telemetry] receive
        self.tools_on = config.tools_enabled  # fixed for the process: cgroups and watchdog are set up once
        self.features = Features(log.warning)
        self.store = Store(config.store_path, key_file=config.store_key_file)
        if abandoned := self.store.close_abandoned():
            log.warning("closed %d session(s) a previous vigild left open (it stopped without ending them): %s",
                        len(abandoned), ", ".join(map(str, abandoned[:10])) + (" …" if len(abandoned) > 10 else ""))
        if not config.tools_enabled:
            for feature in ("memory_spikes", "oom_kills"):
                self.features.turned_off(feature, "tool calls are not governed ([tools] enabled = false)")
        # With TLS capture, an agent's exec of a not yet examined executable is held until its TLS
        # is hooked (Bun builds carry BoringSSL); a watchdog lets held processes go if vigild dies.
        try:
            self.sensors = open_sensors(self.features, root_comms=config.root_comms, root_flags=self.root_flags,
                                        capture_tls=config.capture_tls, capture_effects=config.capture_effects,
                                        fold_opens=config.fold_opens,
                                        max_call_bytes=config.max_call_bytes, tools=self._tools_factory(),
                                        tools_hold=config.tools_enabled,
                                        tls_off="[capture] tls = false", effects_off="[capture] effects = false",
                                        locator=Locator())
        except BaseException:
            self.store.close()
            raise
        try:
            self.matcher = AgentMatcher(config.agents)
            if config.telemetry_address is not None:
                self.telemetry = TelemetryReceiver(list, *config.telemetry_address)
            self.pipeline = open_pipeline(self.sensors, capture_content=config.capture_content,
                                          max_body_bytes=config.max_call_bytes, detector=detector_for(config),
                                          telemetry=self.telemetry, classify_root=self.matcher.classify,
                                          backlog_bytes=config.backlog_bytes,
                                          raise_gil_holder=config.raise_gil_holder)
            registry, metrics_sink = build_registry(self.health, config.drop_labels, config.max_label_values,
                                                    config.container_labels)
            self.session_stats = SessionStatsSink()
            self.pipeline.sinks += [StoreSink(self.store, self.pipeline.processes), metrics_sink,
                                    JournalSink(logging.getLogger("vigild.sessions")), self.session_stats]
            if config.otlp_endpoint:
                self.pipeline.sinks.append(OtlpSessionExporter(self.store.path, config))
            if config.metrics_address is not None:
                self.exporter = Exporter(registry, config.metrics_address)
            # PeerControlServer: `declare` needs to know which process asks (SO_PEERCRED pid).
            self.control = PeerControlServer(config.socket_path, config.socket_group)
            self.control.register("status", lambda _request: self.status())
            self.control.register("top", lambda request: self.session_stats.snapshot(request.get("session_id")))
            DeclareCommands(self.pipeline, Bounds.from_config(config)).register(self.control)
        except BaseException:
            self._release()
            self.store.close()
            raise

    def _tools_factory(self) -> ToolsFactory | None:
        """Per-tool-call cgroups for tracked agents, as `vigil run` has them: the [tools] limits,
        the [[policies]] over them, adaptive memory.high if enabled; calls go in the agent's own
        cgroup where it is delegated. With [tools] off, tool calls are observed instead."""
        from vigild.daemon.assembly import open_tool_control
        from vigild.daemon.tools.control_loop import CallPolicy

        config = self.config
        if not config.tools_enabled:
            return self._observing_factory
        return lambda lineage: open_tool_control(lineage, CallPolicy.of(config.tool_limits), self.features,
                                                 config, adaptive=config.adaptive, delegated=True)

    def _observing_factory(self, lineage: LineageSensor) -> ToolCallControl:
        """Tool calls of tracked agents followed but not governed ([tools] enabled = false): linked
        to the model's tool ids, told apart from the agents' relaunches and housekeeping."""
        from vigild.daemon.tools.control_loop import open_trace_control

        tools = open_trace_control(lineage)
        tools.profiles = self.config.profiles
        return tools

    @property
    def lineage(self) -> LineageSensor:
        return self.sensors.lineage

    @property
    def tls(self) -> TlsSensor | None:
        return self.sensors.tls

    @property
    def tools(self) -> ToolCallControl | None:
        return self.sensors.tools

    @property
    def root_flags(self) -> int:
        """Agents found by name are controlled from their exec when tool calls are governed, and
        observed (their tool calls marked, never held) when not."""
        from vigild.bpf.events import TRACK_CONTROLLED, TRACK_OBSERVED

        return TRACK_CONTROLLED if self.tools_on else TRACK_OBSERVED

    # ---- lifecycle ----
    def start(self) -> None:
        if self.config.scan_running:
            self.adopt_running()
        self.pipeline.start()
        if self.telemetry is not None:
            self.telemetry.start()
        assert self.control is not None
        self.control.start()  # last: a status answer means vigild is fully up
        where = f"http://{self.config.metrics_address[0]}:{self.exporter.port}/metrics" if self.exporter else "off"
        log.info("tracking %s; store %s; metrics %s; control %s",
                 ", ".join(sorted({a.name for a in self.config.agents})) or "no agents",
                 self.config.store_path, where, self.config.socket_path)

    def adopt_running(self) -> None:
        """Agents that started before vigild (or before a reload named them)."""
        for pid, agent in running_agents(self.matcher).items():
            if self.lineage.tracked_info(pid) is not None:
                continue  # the kernel caught its exec already
            try:
                session = self.pipeline.add_root(pid, agent=agent, controlled=self.tools is not None)
            except psutil.Error:
                continue  # exited meanwhile
            log.info("adopted running %s pid %d as session %d", agent, pid, session.id)

    def tick(self) -> None:
        now = time.monotonic()
        self.rate.append((now, sum(self.pipeline.counts.values())))
        retention, max_bytes = self.config.retention_s, self.config.store_max_bytes
        if (retention or max_bytes) and now - self.last_prune >= PRUNE_EVERY_S:
            self.last_prune = now
            result = self.store.prune(time.time_ns() - int(retention * 1e9) if retention else None,
                                      max_bytes=max_bytes)
            if result:
                log.info("retention: removed %d sessions and %d events; store %d -> %d bytes", result.sessions,
                         result.events, result.bytes_before, result.bytes_after)

    def reload(self) -> None:
        try:
            new = configuration.load(self.config_path, missing_ok=self.config_missing_ok)
        except ConfigError as exc:
            self.reloads["failed"] += 1
            log.error("reload refused, keeping the running configuration: %s", exc)
            return
        old = self.config
        for comm in set(new.root_comms) - set(old.root_comms):
            self.lineage.add_root_comm(comm, self.root_flags)
        for comm in set(old.root_comms) - set(new.root_comms):
            self.lineage.remove_root_comm(comm)
        self.matcher.specs = new.agents
        if self.tools is not None:
            self.tools.profiles = new.profiles
        if self.pipeline.intent is not None:
            self.pipeline.intent.capture_content = new.capture_content
        logging.getLogger().setLevel(new.log_level.upper())
        restart = [name for name in RESTART_FIELDS if getattr(new, name) != getattr(old, name)]
        if restart:
            log.warning("reload: %s take effect at the next restart", ", ".join(restart))
        if not old.root_comms and new.root_comms:
            log.warning("reload: vigild started with no agents; process-name matching starts at the next restart")
        self.config = new
        self.reloads["ok"] += 1
        if new.scan_running:
            self.adopt_running()
        log.info("reloaded %s; tracking %s", ", ".join(map(str, new.files)) or "defaults",
                 ", ".join(sorted({a.name for a in new.agents})) or "no agents")

    def stop(self) -> None:
        """Detach every BPF program, drain and flush the pipeline into the store, close the
        endpoints."""
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.tools is not None:
            self.pipeline.end_tool_calls("shutdown", timeout=3.0)
        self.pipeline.stop()  # flushes and closes the sinks, the store among them
        self._release()
        log.info("stopped")

    def _release(self) -> None:
        if self.telemetry is not None:
            self.telemetry.close()
            self.telemetry = None
        self.sensors.release()
        if self.exporter is not None:
            self.exporter.close()
            self.exporter = None
        if self.control is not None:
            self.control.close()
            self.control = None

    # ---- state ----
    @property
    def programs_attached(self) -> int:
        links = sum(len(f.links) for f in self.tls.files.values()) if self.tls else 0
        return len(self.lineage.attached) + links

    def health(self) -> dict[str, Any]:
        """`Pipeline.health()` plus what only the service knows, for the metrics collector."""
        return {**self.pipeline.health(), "programs_attached": self.programs_attached,
                "config_reloads": dict(self.reloads), "start_time": self.started,
                "features": {name: state["available"] for name, state in self.features.as_dict().items()}}

    def events_per_second(self) -> float:
        if len(self.rate) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.rate[0], self.rate[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def status(self) -> dict[str, Any]:
        health = self.pipeline.health()
        sessions = [s for s in list(self.pipeline.sessions.values()) if s.ended_ns is None]
        store_bytes = sum(p.stat().st_size for p in self.store.path.parent.glob(self.store.path.name + "*")
                          if p.is_file())
        return {
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 1),
            "config_files": [str(p) for p in self.config.files],
            "programs_attached": self.programs_attached,
            "tls_libraries_hooked": len(self.tls.hooked_paths) if self.tls else 0,
            "agents": sorted({a.name for a in self.config.agents}),
            "sessions": [{"session_id": s.id, "agent": s.agent, "pid": s.root_pid,
                          "started_ns": s.started_ns, "argv": s.argv[:8], "container": s.container}
                         for s in sessions],
            "sessions_open": health["sessions_open"],
            "sessions_total": health["sessions_total"],
            "tracked_processes": health["tracked_processes"],
            "events_total": sum(health["events_dispatched"].values()),
            "events_per_s": round(self.events_per_second(), 2),
            "drops": sum(health["drops_by_kind"].values()),
            "drops_by_kind": health["drops_by_kind"],
            "tls_captures": health["tls_captures"],
            "tls_blind_connections": sum(health["tls_blind_connections"].values()),
            "store": {"path": str(self.store.path), "bytes": store_bytes},
            "features": self.features.as_dict(),
            "tool_placement": placement.describe() if (placement := getattr(self.tools, "placement", None)) else None,
        }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigild", description="Watch AI agents: history, metrics, control.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument("--config", type=Path, help=f"configuration file (default {configuration.DEFAULT_PATH}, "
                                                    "plus conf.d/*.toml next to it)")
    parser.add_argument("--db", type=Path, help="SQLite store (overrides [store] path)")
    parser.add_argument("--metrics-address", help="HOST:PORT for Prometheus, '' for none (overrides [metrics] address)")
    parser.add_argument("--socket", type=Path, help="control socket path (overrides [control] socket)")
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    return parser


def load_config(args: argparse.Namespace) -> tuple[Config, Path, bool]:
    path = args.config or configuration.DEFAULT_PATH
    missing_ok = args.config is None
    config = configuration.load(path, missing_ok=missing_ok)
    overrides: dict[str, Any] = {}
    if args.db is not None:
        overrides["store_path"] = args.db
    if args.metrics_address is not None:
        try:
            overrides["metrics_address"] = configuration.parse_address(args.metrics_address)
        except ValueError as exc:
            raise ConfigError(Path("--metrics-address"), None, str(exc)) from None
    if args.socket is not None:
        overrides["socket_path"] = args.socket
    return dataclasses.replace(config, **overrides), path, missing_ok


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    try:
        config, path, missing_ok = load_config(args)
    except ConfigError as exc:
        log.error("bad configuration: %s", exc)
        return EX_CONFIG
    logging.getLogger().setLevel(config.log_level.upper())
    if args.check_config:
        print(f"vigild: configuration OK ({', '.join(map(str, config.files)) or 'built-in defaults'})")
        return 0
    # Blocked before any thread starts, so every thread inherits the mask and only the main
    # loop's sigtimedwait receives them.
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        service = Service(config, path, missing_ok)
    except (BpfUnavailable, BpfError, StoreError, OSError, KeyError) as exc:
        log.error("cannot start: %s", str(exc).splitlines()[0])
        return 1
    try:
        service.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        service.stop()
        return 1
    while True:
        info = signal.sigtimedwait(SIGNALS, TICK_S)
        if info is None:
            service.tick()
        elif info.si_signo == signal.SIGHUP:
            service.reload()
        else:
            log.info("%s: stopping", signal.Signals(info.si_signo).name)
            break
    service.stop()
    return 0

