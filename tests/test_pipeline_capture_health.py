"""The pipeline's per-process capture health (when a process last had TLS plaintext, its open
connections) is kept while a process may still close sockets, and dropped after it exited: a
long-running vigild must not grow with every process its agents ever ran."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import time
from typing import Any

import pytest
from vigild.bpf.effects import EffectsSensor
from vigild.bpf.lineage import LineageSensor
from vigild.daemon.pipeline import capture_health as pipeline_module
from vigild.daemon.launch import spawn_gated
from vigild.daemon.pipeline import Pipeline


class NullSink:
    def handle(self, event: Any, record: dict[str, Any]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_an_exited_process_keeps_its_late_close_then_is_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline_module, "EXITED_GRACE_S", 1.0)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    # The child sends bytes and exits without closing: the kernel closes its socket in do_exit,
    # after the exit event the pipeline sees.
    code = textwrap.dedent(f"""
        import os, socket
        s = socket.create_connection(("127.0.0.1", {port}))
        s.sendall(b"x" * 4096)
        os._exit(0)
    """)
    lineage = LineageSensor()
    effects = EffectsSensor(lineage.shared_maps)
    pipeline = Pipeline(lineage, [NullSink()], sensors=[effects])
    pipeline.start()
    try:
        child = spawn_gated([sys.executable, "-S", "-c", code])
        pipeline.add_pending_root(child.pid, ["python"], os.getcwd(), 0)
        child.release()
        conn, _ = listener.accept()
        conn.recv(8192)
        os.waitpid(child.pid, 0)
        assert pipeline.wait_exit(child.pid, timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not sum(pipeline.blind_connections.values()):
            time.sleep(0.05)
        assert sum(pipeline.blind_connections.values()) == 1, pipeline.blind_connections
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and child.pid in pipeline.capture.connects:
            time.sleep(0.05)
        assert child.pid not in pipeline.capture.connects and child.pid not in pipeline.capture.plaintext_ns
        assert not pipeline.capture.exited_pids
    finally:
        pipeline.stop()
        effects.close()
        lineage.close()
        listener.close()
