"""The Prometheus exporter: what agents did (a sink turning events into counters and histograms)
and how vigild itself is doing (a collector reading `pipeline.health()` when scraped).

Names start with `vigil_`, are in base units (seconds, bytes) and counters end in `_total`.
Labels come from small fixed sets (agent kind, provider, model, tool, outcome, kind); never a
pid, session, path or prompt. `drop_labels` removes labels for large fleets: the series that
differed only by them are summed.
"""

from __future__ import annotations

import platform
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from vigild.bpf.events import KIND_NAMES
from vigild.correlate.detections import ALL_DETECTIONS
from vigild.correlate.redact import redact_text
from vigild.daemon.events import Event
from vigild.daemon.version import package_version

UNKNOWN = "unknown"
LLM_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
TTFT_SECONDS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32)
TOOL_SECONDS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
# 1 MiB .. 16 GiB, x2: a call capped at a power of two reads its cap at p95, not the next bucket up.
MEMORY_BYTES = tuple(float(1 << shift) for shift in range(20, 35))
LIBRARIES = ("openssl", "gnutls")  # TlsSensor's library names
DECODE_REASONS = ("short_record", "unknown_kind")  # EventDecoder's reasons
SESSIONS_REMEMBERED = 4096  # session -> agent entries kept after their session ended


# Labels whose values an agent, a model or a network peer chooses: each keeps at most
# `max_label_values` distinct values, later ones are folded into OTHER (and counted), and every
# value is scrubbed of credentials first (a "model" string is whatever the request said).
OPEN_LABELS = ("agent", "provider", "model", "tool", "namespace", "container")
OTHER = "other"
MAX_LABEL_VALUES = 200


BUILD_INFO = (package_version(), platform.python_version(), platform.release())


class LabelBudget:
    """Distinct values admitted per open label; what overflows is folded into OTHER and counted."""

    def __init__(self, max_values: int = MAX_LABEL_VALUES) -> None:
        self.max_values = max_values
        self._seen: dict[str, set[str]] = {label: set() for label in OPEN_LABELS}
        self.folded: dict[str, int] = dict.fromkeys(OPEN_LABELS, 0)

    def admit(self, label: str, value: str) -> str:
        seen = self._seen.get(label)
        if seen is None or value in seen:
            return value
        value = redact_text(value)
        if value in seen:
            return value
        if len(seen) >= self.max_values:
            self.folded[label] += 1
            return OTHER
        seen.add(value)
        return value


class _Family:
    """A labelled metric minus the dropped labels; observations name every label and the
    dropped ones are ignored."""

    def __init__(self, factory: Callable[..., Any], name: str, doc: str, labels: Iterable[str],
                 drop: frozenset[str], registry: CollectorRegistry, budget: LabelBudget, **kwargs: Any) -> None:
        self.labels = tuple(label for label in labels if label not in drop)
        self.budget = budget
        self.metric = factory(name, doc, self.labels, registry=registry, **kwargs)

    def child(self, **values: str) -> Any:
        if not self.labels:
            return self.metric
        return self.metric.labels(*(self.budget.admit(label, values[label]) for label in self.labels))


class MetricsSink:
    """Events -> metrics. Agent kind comes from the session's `session_start`."""

    def __init__(self, registry: CollectorRegistry, drop_labels: frozenset[str] = frozenset(),
                 max_label_values: int = MAX_LABEL_VALUES, container_labels: frozenset[str] = frozenset()) -> None:
        self.budget = LabelBudget(max_label_values)

        def family(factory: Callable[..., Any], name: str, doc: str, labels: Iterable[str], **kw: Any) -> _Family:
            return _Family(factory, name, doc, labels, drop_labels, registry, self.budget, **kw)

        self._agents: OrderedDict[int, str] = OrderedDict()
        self._initialised: set[str] = set()
        # tool call id -> tool name, for the memory events that name only the call
        self._tool_names: OrderedDict[int, str] = OrderedDict()
        self.sessions_started = family(Counter, "vigil_agent_sessions_started", "Agent sessions started", ["agent"])
        self.sessions_active = family(Gauge, "vigil_agent_sessions", "Agent sessions running now", ["agent"])
        # Names (pod namespace, container name) only where [metrics] container_labels allows them.
        self.container_sessions = _Family(
            Counter, "vigil_container_sessions_started", "Agent sessions started in containers, by runtime",
            ["agent", "runtime", "namespace", "container"],
            drop_labels | ({"namespace", "container"} - container_labels), registry, self.budget)
        self.execs = family(Counter, "vigil_process_execs", "Programs executed in agent process trees", ["agent"])
        llm = ["agent", "provider", "model"]
        self.llm_calls = family(Counter, "vigil_llm_calls", "LLM API calls; outcome ok, http_4xx, http_5xx or error",
                                [*llm, "outcome"])
        self.llm_tokens = family(Counter, "vigil_llm_tokens",
                                 "LLM tokens; type input, output, cache_read or cache_creation", [*llm, "type"])
        self.llm_duration = family(Histogram, "vigil_llm_call_duration_seconds",
                                   "LLM call duration, request to last response byte", llm, buckets=LLM_SECONDS)
        self.llm_ttft = family(Histogram, "vigil_llm_ttft_seconds", "Time to first token of streamed LLM calls",
                               llm, buckets=TTFT_SECONDS)
        self.llm_tool_requests = family(Counter, "vigil_llm_tool_requests",
                                        "Tool calls the model asked for, by tool name", ["agent", "provider", "tool"])
        self.https = family(Counter, "vigil_https_requests", "HTTPS requests that were not LLM calls", ["agent"])
        tool = ["agent", "tool"]
        self.tool_calls = family(Counter, "vigil_tool_calls",
                                 "Tool calls finished; outcome ok, exit, oom_killed, signal or timeout",
                                 [*tool, "outcome"])
        self.tool_duration = family(Histogram, "vigil_tool_call_duration_seconds", "Tool call duration", tool,
                                    buckets=TOOL_SECONDS)
        self.tool_memory = family(Histogram, "vigil_tool_call_peak_memory_bytes", "Peak memory of a tool call",
                                  tool, buckets=MEMORY_BYTES)
        self.limits_hit = family(Counter, "vigil_tool_limits_hit", "Tool calls that reached a limit, by limit",
                                 [*tool, "limit"])
        self.oom_kills = family(Counter, "vigil_oom_kills", "Processes of agents killed by the OOM killer", tool)
        self.mem_spikes = family(Counter, "vigil_memory_spikes", "Sudden memory growth in agent process trees", tool)
        self.unrequested = family(Counter, "vigil_unrequested_processes",
                                  "Processes no tool call the model requested accounts for", ["agent"])
        self.detections = family(Counter, "vigil_detections", "Detections, by kind", ["agent", "kind"])
        self.retracted = family(Counter, "vigil_detections_retracted",
                                "Detections withdrawn after they were raised (a late link showed the model "
                                "asked for the tool call), by kind", ["agent", "kind"])
        self.file_effects = family(Counter, "vigil_file_effects", "File effects of agents, by kind (opens: every "
                                   "open, folded ones included)", ["agent", "kind"])
        self.folded_opens = family(Counter, "vigil_folded_opens", "Repeated read-only opens the kernel counted "
                                   "instead of sending each (in vigil_file_effects too)", ["agent"])
        self.net_effects = family(Counter, "vigil_net_effects", "Network effects of agents, by kind", ["agent", "kind"])

    # ---- Sink ----
    def handle(self, event: Event, record: dict[str, Any]) -> None:
        kind = event.type
        if kind in ("fork", "exit"):
            return
        if kind == "exec":
            self.execs.child(agent=self._agent(getattr(event, "session_id", None))).inc()
            return
        d = record
        agent = self._agent(d.get("session_id"))
        if kind == "session_start":
            agent = str(d.get("agent") or UNKNOWN)
            self._remember(d["session_id"], agent)
            self.sessions_started.child(agent=agent).inc()
            if container := d.get("container"):
                self.container_sessions.child(agent=agent, runtime=str(container.get("runtime") or UNKNOWN),
                                              namespace=str(container.get("pod_namespace") or ""),
                                              container=str(container.get("name") or "")).inc()
            self._init_agent(agent)
            self.sessions_active.child(agent=agent).inc()
        elif kind == "session_end":
            self.sessions_active.child(agent=agent).dec()
        elif kind == "llm_call":
            self._llm_call(agent, d)
        elif kind == "https_request":
            self.https.child(agent=agent).inc()
        elif kind == "tool_end":
            self._tool_end(agent, d)
        elif kind == "tool_start" and d.get("tool_call") is not None:
            self._tool_names[d["tool_call"]] = _label(d.get("tool_name"))
            while len(self._tool_names) > SESSIONS_REMEMBERED:
                self._tool_names.popitem(last=False)
        elif kind == "oom_kill":
            self.oom_kills.child(agent=agent, tool=self._tool_names.get(d.get("tool_call"), "none")).inc()
        elif kind == "mem_spike":
            self.mem_spikes.child(agent=agent, tool=self._tool_names.get(d.get("tool_call"), "none")).inc()
        elif kind == "detection":
            what = _label(d.get("name"))
            self.detections.child(agent=agent, kind=what).inc()
            if what == "unrequested":
                self.unrequested.child(agent=agent).inc()
        elif kind == "alert_retracted":
            self.retracted.child(agent=agent, kind=_label(d.get("name"))).inc()
        elif kind.startswith("file_"):
            opens = d.get("opens", 1) if kind == "file_open" else 1
            self.file_effects.child(agent=agent, kind=kind.removeprefix("file_")).inc(opens)
            if d.get("folded"):
                self.folded_opens.child(agent=agent).inc(opens)
        elif kind.startswith(("net_", "dns_")):
            self.net_effects.child(agent=agent, kind=kind.split("_", 1)[1]).inc()

    def flush(self) -> None:
        """Metrics are live; nothing is buffered."""

    def close(self) -> None:
        """The registry outlives the sink until the exporter stops."""

    # ---- events ----
    def _llm_call(self, agent: str, d: Mapping[str, Any]) -> None:
        labels = {"agent": agent, "provider": _label(d.get("provider")), "model": _label(d.get("model"))}
        self.llm_calls.child(**labels, outcome=_llm_outcome(d)).inc()
        for kind, key in (("input", "input_tokens"), ("output", "output_tokens"),
                          ("cache_read", "cache_read_input_tokens"), ("cache_creation", "cache_creation_input_tokens")):
            if d.get(key):
                self.llm_tokens.child(**labels, type=kind).inc(d[key])
        if d.get("duration_ms") is not None:
            self.llm_duration.child(**labels).observe(d["duration_ms"] / 1000)
        if d.get("ttft_ms") is not None:
            self.llm_ttft.child(**labels).observe(d["ttft_ms"] / 1000)
        for call in d.get("tool_calls") or ():
            self.llm_tool_requests.child(agent=agent, provider=labels["provider"], tool=_label(call.get("name"))).inc()

    def _tool_end(self, agent: str, d: Mapping[str, Any]) -> None:
        self._tool_names.pop(d.get("tool_call"), None)  # type: ignore[arg-type]
        labels = {"agent": agent, "tool": _label(d.get("tool_name"))}
        self.tool_calls.child(**labels, outcome=_label(d.get("outcome"))).inc()
        if d.get("duration_ms") is not None:
            self.tool_duration.child(**labels).observe(d["duration_ms"] / 1000)
        if d.get("peak_memory_bytes") is not None:
            self.tool_memory.child(**labels).observe(d["peak_memory_bytes"])
        for limit in d.get("limits_hit") or ():
            self.limits_hit.child(**labels, limit=_label(limit)).inc()

    def _init_agent(self, agent: str) -> None:
        """Series whose other labels are known in advance start at 0 when their agent first shows
        up, so a panel reads 0 rather than "No data" until something happens."""
        if agent in self._initialised:
            return
        self._initialised.add(agent)
        self.execs.child(agent=agent)
        self.https.child(agent=agent)
        self.unrequested.child(agent=agent)
        self.folded_opens.child(agent=agent)
        for name in ALL_DETECTIONS:
            self.detections.child(agent=agent, kind=name)
        self.retracted.child(agent=agent, kind="unrequested")
        for name in KIND_NAMES.values():
            if name.startswith("file_"):
                self.file_effects.child(agent=agent, kind=name.removeprefix("file_"))
            elif name.startswith(("net_", "dns_")):
                self.net_effects.child(agent=agent, kind=name)

    def _remember(self, session_id: int, agent: str) -> None:
        self._agents[session_id] = agent
        while len(self._agents) > SESSIONS_REMEMBERED:
            self._agents.popitem(last=False)

    def _agent(self, session_id: object) -> str:
        return self._agents.get(session_id, UNKNOWN) if isinstance(session_id, int) else UNKNOWN


def _label(value: object) -> str:
    return str(value) if value not in (None, "") else UNKNOWN


def _llm_outcome(d: Mapping[str, Any]) -> str:
    status = d.get("status") or 0
    if d.get("error") and not 400 <= status < 600:
        return "error"
    if 400 <= status < 500:
        return "http_4xx"
    if status >= 500:
        return "http_5xx"
    return "ok" if 200 <= status < 300 else "error"


class HealthCollector(Collector):
    """vigild's own state, read at scrape time from `health()` (`Pipeline.health()` and the keys
    the service adds: `programs_attached`, `config_reloads`, `start_time`, `features`). Known label values
    are reported as 0 before anything happens, so a panel shows 0 rather than no data."""

    def __init__(self, health: Callable[[], Mapping[str, Any]], drop_labels: frozenset[str] = frozenset()) -> None:
        self.health = health
        self.drop = drop_labels

    def collect(self) -> Iterator[Metric]:
        h = self.health()
        kinds = {name: 0 for name in KIND_NAMES.values()}
        yield self._counter("vigil_kernel_events", "Records the BPF programs wrote, by event kind", ["kind"],
                            {(k,): v for k, v in {**kinds, **h.get("events_by_kind", {})}.items()})
        yield self._counter("vigil_ringbuf_drops", "Records lost because the ring buffer was full, by event kind",
                            ["kind"], {(k,): v for k, v in {**kinds, **h.get("drops_by_kind", {})}.items()})
        yield self._counter("vigil_events", "Events handed to sinks, by type", ["type"],
                            {(k,): v for k, v in h.get("events_dispatched", {}).items()})
        yield self._counter("vigil_decode_errors", "Kernel records that could not be decoded, by reason", ["reason"],
                            {(k,): v for k, v in {**dict.fromkeys(DECODE_REASONS, 0),
                                                  **h.get("decode_errors", {})}.items()})
        yield self._counter("vigil_parse_failures", "Captured TLS plaintext that could not be decoded, by reason",
                            ["reason"], {(k,): v for k, v in h.get("parse_failures", {}).items()})
        attaches = {(lib, outcome): 0 for lib in LIBRARIES for outcome in ("ok", "failed")}
        attaches.update({(lib, "ok"): n for lib, n in h.get("attach_ok", {}).items()})
        attaches.update({(lib, "failed"): n for lib, n in h.get("attach_failed", {}).items()})
        yield self._counter("vigil_uprobe_attaches", "TLS library files hooked with uprobes, by library and outcome",
                            ["library", "outcome"], attaches)
        yield self._counter("vigil_tls_blind_connections",
                            "TCP connections of traced processes that moved bytes with no TLS plaintext captured, "
                            "by agent and reason", ["agent", "reason"],
                            {(agent, reason): n for (agent, reason), n in h.get("tls_blind_connections", {}).items()})
        reloads = {("ok",): 0, ("failed",): 0, **{(k,): v for k, v in h.get("config_reloads", {}).items()}}
        yield self._counter("vigil_config_reloads", "Configuration reloads (SIGHUP), by outcome", ["outcome"], reloads)
        yield self._counter("vigil_placement_warm_writes", "No-op cgroup moves keeping tool-call placement off the "
                            "RCU grace period (daemon/tools/placement_warm.py)", [],
                            {(): h.get("placement_warm_writes", 0)})
        yield self._counter("vigil_held_lane_placed", "Held tool calls placed by the held lane ahead of the event "
                            "stream (daemon/pipeline/held_lane.py)", [], {(): h.get("held_lane_placed", 0)})
        yield self._counter("vigil_held_lane_boosts", "Held execs during whose wait the held lane raised the pipeline "
                            "thread to real time (daemon/pipeline/gil_boost.py)", [], {(): h.get("held_lane_boosts", 0)})
        yield self._counter("vigil_held_lane_boost_refused", "Raises of the pipeline thread the kernel refused (then "
                            "the lane stops raising)", [], {(): h.get("held_lane_boost_refused", 0)})
        yield self._counter("vigil_sink_errors", "Exceptions raised by event sinks", [], {(): h.get("sink_errors", 0)})
        yield self._counter("vigil_store_errors", "Failed writes and commits of the history store", [],
                            {(): h.get("store_errors", 0)})
        yield self._counter("vigil_store_events_dropped", "Events not recorded because the store could not be written",
                            [], {(): h.get("store_events_dropped", 0)})
        yield self._gauge("vigil_store_writable", "1 while the history store accepts writes (0: failing, retried)",
                          [], {(): int(h.get("store_writable", True))})
        yield self._counter("vigil_callback_errors", "Exceptions in ring-buffer callbacks", [],
                            {(): h.get("callback_errors", 0)})
        yield self._gauge("vigil_ring_backlog_peak_bytes", "The most bytes of ring records vigild has held in its "
                          "own memory, copied out and not yet decoded, since it started (reader.py)", [],
                          {(): h.get("ring_backlog_peak_bytes", 0)})
        yield self._gauge("vigil_ring_backlog_limit_bytes", "The bound on that backlog ([effects] backlog); past it "
                          "the ring sheds effects, counted in vigil_ringbuf_drops_total", [],
                          {(): h.get("ring_backlog_limit_bytes", 0)})
        yield self._gauge("vigil_tracked_processes", "Live processes in agent process trees", [],
                          {(): h.get("tracked_processes", 0)})
        yield self._gauge("vigil_programs_attached", "BPF programs and uprobe links attached", [],
                          {(): h.get("programs_attached", 0)})
        yield self._gauge("vigil_feature_available",
                          "1 when this kernel runs the feature (lineage, tls, effects, memory_spikes, oom_kills), "
                          "0 when it does not or it is turned off; `vigil status` says why", ["feature"],
                          {(name,): int(bool(ok)) for name, ok in h.get("features", {}).items()})
        yield self._gauge("vigil_build_info", "vigild's version, its Python and the running kernel (value 1)",
                          ["version", "python", "kernel"], {BUILD_INFO: 1})
        if "start_time" in h:
            yield self._gauge("vigil_start_time_seconds", "When vigild started, Unix time", [],
                              {(): h["start_time"]})

    def _counter(self, name: str, doc: str, labels: list[str], values: Mapping[tuple[str, ...], float]) -> Metric:
        return self._family(CounterMetricFamily(name, doc, labels=self._kept(labels)), labels, values)

    def _gauge(self, name: str, doc: str, labels: list[str], values: Mapping[tuple[str, ...], float]) -> Metric:
        return self._family(GaugeMetricFamily(name, doc, labels=self._kept(labels)), labels, values)

    def _kept(self, labels: list[str]) -> list[str]:
        return [label for label in labels if label not in self.drop]

    def _family(self, family: Any, labels: list[str], values: Mapping[tuple[str, ...], float]) -> Metric:
        keep = [i for i, label in enumerate(labels) if label not in self.drop]
        summed: dict[tuple[str, ...], float] = {}
        for key, value in values.items():
            kept = tuple(key[i] for i in keep)
            summed[kept] = summed.get(kept, 0) + value
        for key, value in sorted(summed.items()):
            family.add_metric(list(key), value)
        return family


def build_registry(health: Callable[[], Mapping[str, Any]], drop_labels: frozenset[str] = frozenset(),
                   max_label_values: int = MAX_LABEL_VALUES,
                   container_labels: frozenset[str] = frozenset()) -> tuple[CollectorRegistry, MetricsSink]:
    """A registry serving the event metrics (fed through the returned sink), vigild's health and
    its own CPU and memory (`vigil_process_*`)."""
    disable_created_metrics()  # process-wide: `_created` series double the count and no panel uses them
    registry = CollectorRegistry(auto_describe=True)
    sink = MetricsSink(registry, drop_labels, max_label_values, container_labels)
    registry.register(HealthCollector(health, drop_labels))
    registry.register(_LabelOverflowCollector(sink.budget))
    ProcessCollector(namespace="vigil", registry=registry)
    return registry, sink


class _LabelOverflowCollector(Collector):
    """`vigil_metric_label_values_folded_total{label}`: observations whose new label value went to "other"."""

    def __init__(self, budget: LabelBudget) -> None:
        self.budget = budget

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("vigil_metric_label_values_folded",
                                     f"Observations whose label value was folded into {OTHER!r} past the cap",
                                     labels=["label"])
        for label, count in self.budget.folded.items():
            family.add_metric([label], count)
        yield family


class Exporter:
    """The HTTP endpoint Prometheus scrapes (`/metrics`), in a thread of its own."""

    def __init__(self, registry: CollectorRegistry, address: tuple[str, int]) -> None:
        self.server, self.thread = start_http_server(address[1], addr=address[0], registry=registry)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
