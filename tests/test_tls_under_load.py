"""TLS capture when the client's threads fight for one CPU: a return probe preempted mid-copy by
another thread's must not cost a call (the scratch slot is taken per nesting depth)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from fakellm import CLIENTS_DIR, FakeLLMServer, client_env
from support.helpers import vigil_trace
from support.intent_match import matched

pytestmark = pytest.mark.usefixtures("root")


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv
        assert srv.errors == []


def test_concurrent_streams_on_one_busy_cpu_lose_nothing(server: FakeLLMServer) -> None:
    hogs = [subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        for _ in range(2):
            server.exchanges.clear()
            result = vigil_trace(["--no-effects", "--", "taskset", "-c", "0", sys.executable,
                                  str(CLIENTS_DIR / "concurrent_streams.py")], env=client_env(server), timeout=180)
            assert result.returncode == 0, result.stderr
            exchanges = server.exchanges.wait_finished(4)
            assert not result.of_type("lost") and not result.of_type("parse_failure"), result.stderr
            matched(result, exchanges)  # every call, field by field
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
