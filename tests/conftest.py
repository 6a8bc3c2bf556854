"""Shared fixtures, and the markers that separate the seconds-fast tests from the kernel ones.

Markers are applied here, by module, so test files carry none of their own:
- ``kernel``: loads BPF, uses real cgroups or runs vigil/vigild against the kernel (whole modules:
  a module mixing pure and kernel tests is marked whole); all of them need root too.
- ``root``: needs root (every kernel test, and every test that uses the ``root`` fixture).
- ``network``: may install pinned agent releases from the npm registry on first use.
``pytest -m "not kernel"`` runs the rest without root or BPF in seconds. Under
``VIGIL_REQUIRE_BPF=1`` (set by ``.ci/run``) a missing capability fails a test instead of skipping it.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest

from support.require import need

KERNEL_MODULES = frozenset({
    "test_agent_relaunch", "test_agent_telemetry", "test_bpf_kernels", "test_bpf_loader", "test_bun_agents",
    "test_cgroups_v1_real", "test_cgroups_v2_real", "test_codex_real", "test_control_intent", "test_control_run",
    "test_declare", "test_effects_session", "test_held_lane_boost", "test_effects_trace", "test_features", "test_flood", "test_history",
    "test_hooks", "test_intent_clients", "test_otlp", "test_policy", "test_real_agents", "test_secrets_channels",
    "test_service_lifecycle", "test_service_load", "test_service_prometheus", "test_service_unit",
    "test_store_crypto", "test_tls_under_load", "test_trace_lineage",
    "test_agent_matrix", "test_agent_telemetry_real", "test_burst_recorded", "test_containers_real",
    "test_fleet_prometheus", "test_idle_cost", "test_mcp_http", "test_mcp_stdio", "test_pid_reuse", "test_plain_http",
    "test_trace_observe", "test_syscall_tracepoints", "test_poll_wait", "test_pipeline_capture_health",
    "test_agent_api_errors", "test_placement_lane", "test_tls_per_process", "test_effects_fold",
    "test_placement_warm", "test_untracked_cost", "test_ring_reader", "test_favordynmods",
})
NETWORK_MODULES = frozenset({"test_bun_agents", "test_tls_locate"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__ if isinstance(item, pytest.Function) else ""
        if module in KERNEL_MODULES:
            item.add_marker(pytest.mark.kernel)
            item.add_marker(pytest.mark.root)
        elif "root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.root)
        if module in NETWORK_MODULES:
            item.add_marker(pytest.mark.network)


@pytest.fixture
def root() -> None:
    """The test needs to run as root."""
    need(os.geteuid() == 0, "this test needs root")


@pytest.fixture
def sink() -> Iterator[int]:
    """A loopback listener that is not the LLM provider: where the secret would go."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    listener.close()
