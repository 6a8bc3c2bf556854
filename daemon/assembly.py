"""The one place that builds the machine: sensors, tool-call control, correlators and the pipeline.

`vigil trace`, `vigil run` and `vigild` differ in where their settings come from (flags or the
config) and in their sinks, not in how the parts fit together; building the parts here keeps the
order that matters (the watchdog forks before any thread; a failed step undoes the earlier ones;
teardown runs in the reverse order of what holds what) in one function instead of one per front end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from vigild.bpf.features import Features
    from vigild.bpf.lineage import LineageSensor
    from vigild.bpf.tls import TlsSensor
    from vigild.bpf.tls_locate import Locator
    from vigild.correlate.detections import Detector
    from vigild.daemon.config import Config
    from vigild.daemon.tools.control_loop import CallPolicy, ToolCallControl
    from vigild.daemon.pipeline import Pipeline

log = logging.getLogger(__name__)

# Builds the tool-call control over the lineage sensor (None for no tool control: the front end's choice).
ToolsFactory = Callable[["LineageSensor"], "ToolCallControl"]


@dataclass
class Sensors:
    """The kernel side of one vigil process, and what must be released when it stops."""

    lineage: LineageSensor
    tools: ToolCallControl | None = None
    watchdog: Any = None
    tls: TlsSensor | None = None
    effects: Any = None
    plain_http: Any = None  # SockDataSensor: LLM and MCP traffic over plain HTTP and pipes

    def release(self) -> None:
        """Detach and close in the order that leaves no process held: the TLS and effects programs,
        then lineage (which holds execs), then the tool cgroups, then the watchdog."""
        if self.tls is not None:
            self.tls.close()
            self.tls = None
        if self.plain_http is not None:
            self.plain_http.close()
            self.plain_http = None
        if self.effects is not None:
            self.effects.close()
            self.effects = None
        self.lineage.close()
        if self.tools is not None:
            self.tools.release_resources()
            self.tools = None
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None


def open_sensors(features: Features, *, root_comms: list[str], root_flags: int = 0, capture_tls: bool,
                 capture_effects: bool, max_call_bytes: int, tools: ToolsFactory | None, tls_off: str, effects_off: str,
                 locator: Locator | None, locate_timeout: float = 30.0, http_ports: tuple[int, ...] = (),
                 tools_hold: bool = True, fold_opens: bool = True) -> Sensors:
    """Lineage, the fail-safe watchdog, tool control, TLS (with plain-HTTP and MCP payload: the
    same intent, read at the socket instead of the TLS library) and effects. `http_ports`: ports
    whose connections are captured whatever their first bytes look like. `tools_hold`: the tool
    control governs (holds each call's first exec to place it) rather than only observes. `fold_opens`:
    the kernel counts a thread's repeated read-only opens of a file instead of sending each.

    The kernel holds processes while vigil decides about them: with TLS capture, an exec of a not
    yet examined executable until its TLS is hooked; with tool control, a tool call's first exec
    until it is classified and placed. The watchdog lets them all go if vigil dies; this is the one
    place that decides whether it runs. It forks: call before any thread starts."""
    from vigild.bpf.effects import open_effects
    from vigild.bpf.lineage import LineageSensor
    from vigild.bpf.sockdata import open_sockdata
    from vigild.bpf.tls import open_tls
    from vigild.daemon.tools.watchdog import start_watchdog

    sensors = Sensors(LineageSensor(root_comms=root_comms, root_flags=root_flags, hold_new_exe=capture_tls))
    features.available("lineage")
    try:
        if capture_tls or (tools is not None and tools_hold):
            sensors.watchdog = start_watchdog(sensors.lineage.held.fd)
        if tools is not None:
            sensors.tools = tools(sensors.lineage)
        # effects first: the plain-HTTP sensor's programs are called from its programs (one
        # program per syscall tracepoint for processes nobody tracks; bpf/sockdata.py)
        if capture_effects:
            sensors.effects = open_effects(sensors.lineage.shared_maps, features, fold_opens, chain_sock=capture_tls)
        else:
            features.turned_off("effects", effects_off)
        if capture_tls:
            sensors.tls = open_tls(sensors.lineage.shared_maps, features, max_call_bytes, locator=locator,
                                   locate_timeout=locate_timeout)
            links = sensors.tls.link_maps if sensors.tls is not None else {}
            sensors.plain_http = open_sockdata({**sensors.lineage.shared_maps, **links}, features, max_call_bytes,
                                               http_ports, effects=sensors.effects)
            if sensors.tls is not None and sensors.plain_http is not None:
                sensors.tls.rustls_linked = True  # rustls records find their socket through it
        else:
            features.turned_off("tls", tls_off)
            features.turned_off("plain_http", tls_off)
    except BaseException:
        if sensors.tools is not None:
            sensors.tools.close()
        sensors.release()
        raise
    if sensors.tls is not None:
        sensors.tls.attach_system_libraries()
    return sensors


def open_tool_control(lineage: LineageSensor, policy: CallPolicy, features: Features, config: Config | None,
                      adaptive: bool, delegated: bool = False, spike_bytes: int = 100 << 20,
                      spike_window_ns: int = 1_000_000_000) -> ToolCallControl:
    """Per-tool-call cgroups: `policy` as the
    default, the config's [[policies]] over it, adaptive memory.high if asked. `delegated`: calls go
    in the agent's own cgroup where it is delegated, so its container's limits stay above them."""
    from vigild.cgroups import detect
    from vigild.cgroups.dynmods import open_favor_dynmods
    from vigild.daemon.tools.adaptive import AdaptiveController, AdaptiveSettings, ProcHostReader
    from vigild.daemon.tools.agent_cgroups import AgentCgroups
    from vigild.daemon.tools.control_loop import open_run_control
    from vigild.daemon.tools.placement_warm import open_warmer
    from vigild.daemon.tools.policy import policy_for_config

    control = open_run_control(lineage, policy, spike_bytes=spike_bytes, spike_window_ns=spike_window_ns,
                               features=features)
    if config is not None and config.favordynmods:  # a move never waits a grace period: no warmer needed
        control.favoring = open_favor_dynmods()
    if control.favoring is None and (config is None or config.placement_warm == "auto"):
        control.warmer = open_warmer(control.backend.version, control.backend.controllers)
    if delegated:
        control.placement = AgentCgroups(control.backend, detect(), control.backend.path("").name)
    if config is not None and config.policies:
        control.policy_for = policy_for_config(config.policies, control.default_policy)
    if adaptive:
        settings = AdaptiveSettings.from_config(config) if config is not None else AdaptiveSettings()
        control.adaptive = AdaptiveController(settings, ProcHostReader())
    if config is not None:
        control.profiles = config.profiles
    return control


def detector_for(config: Config) -> Detector | None:
    """The config's [detections], or None when every detection is off."""
    from vigild.correlate.detections import DEFAULT_SECRET_GLOBS, DetectionConfig, Detector

    if not config.detections:
        return None
    return Detector(DetectionConfig(enabled=config.detections,
                                    secret_globs=DEFAULT_SECRET_GLOBS + config.secret_globs,
                                    unrequested_grace_s=config.unrequested_grace_s))


def open_pipeline(sensors: Sensors, *, capture_content: bool, max_body_bytes: int | None, detector: Detector | None,
                  telemetry: Any = None, classify_root: Callable[[Any], str | None] = lambda event: "",
                  backlog_bytes: int | None = None, raise_gil_holder: bool = False) -> Pipeline:
    """The pipeline over `sensors`, with the LLM decoder when TLS is captured. `telemetry` (a
    TelemetryReceiver) gets the pipeline's tracked pids as the processes it may attribute to.
    `max_body_bytes` None: the decoder's own default. `backlog_bytes` None: the reader's.
    `raise_gil_holder`: whether the held lane raises the pipeline thread while a held exec waits."""
    from vigild.correlate.tls_stream import DEFAULT_MAX_BODY_BYTES, TlsStreamDecoder
    from vigild.daemon.pipeline import Pipeline
    from vigild.daemon.pipeline.reader import DEFAULT_BACKLOG_BYTES

    intent = (TlsStreamDecoder(capture_content=capture_content, max_body_bytes=max_body_bytes or DEFAULT_MAX_BODY_BYTES)
              if sensors.tls or sensors.plain_http else None)
    pipeline = Pipeline(sensors.lineage, sinks=[], tls=sensors.tls, intent=intent, control=sensors.tools,
                        sensors=[s for s in (sensors.effects, sensors.plain_http) if s is not None], detector=detector,
                        telemetry=telemetry.records if telemetry is not None else None,
                        classify_root=classify_root,
                        own_hosts=[urlsplit(telemetry.endpoint).netloc] if telemetry is not None else [],
                        backlog_bytes=DEFAULT_BACKLOG_BYTES if backlog_bytes is None else backlog_bytes,
                        raise_gil_holder=raise_gil_holder)
    if telemetry is not None:
        telemetry.candidates = pipeline.tracked_pids
    return pipeline
