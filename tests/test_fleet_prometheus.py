"""The fleet's metric pipelines (daemon/deploy/fleet) in the real programs: `promtool check config`
accepts the shipped files; a real vigild is scraped by a host Prometheus run from the shipped
node config, which remote-writes to a central Prometheus (--web.enable-remote-write-receiver),
while a second central Prometheus federates the host's from the shipped federation config. Both
centers end up with vigild's series labelled with the host's name. Only the addresses and
intervals are changed for the test; everything else is the shipped configuration."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.require import need
from support.vigild_proc import Vigild, agent_config, free_port

pytestmark = pytest.mark.usefixtures("root")

FLEET = Path(__file__).resolve().parent.parent / "daemon" / "deploy" / "fleet"


class Prometheus:
    """A real prometheus on loopback with its own storage; stopped by close()."""

    def __init__(self, workdir: Path, config: dict[str, Any], *flags: str, env: dict[str, str] | None = None) -> None:
        workdir.mkdir()
        self.port = free_port()
        path = workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={path}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn", *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1)
                return
            except OSError:
                assert self.proc.poll() is None, self.proc.communicate()[1]
                time.sleep(0.1)
        self.close()
        raise TimeoutError("prometheus did not become ready")

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def wait_for(self, expr: str, timeout: float = 90) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := self.query(expr):
                return found
            time.sleep(0.5)
        raise AssertionError(f"nothing for {expr} on :{self.port} within {timeout} s")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.parametrize("name", ["prometheus-node.yml", "prometheus-federate.yml"])
def test_promtool_accepts_the_shipped_configs(name: str) -> None:
    need(shutil.which("promtool") is not None, "promtool (Debian's prometheus package) is not installed")
    out = subprocess.run(["promtool", "check", "config", str(FLEET / name)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, (out.stdout, out.stderr)


def test_promtool_refuses_a_broken_config(tmp_path: Path) -> None:
    """The check is real: the node config with a remote_write lacking its url is refused."""
    need(shutil.which("promtool") is not None, "promtool (Debian's prometheus package) is not installed")
    config = yaml.safe_load((FLEET / "prometheus-node.yml").read_text())
    del config["remote_write"][0]["url"]
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(config))
    out = subprocess.run(["promtool", "check", "config", str(broken)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0, out.stdout


def test_vigild_series_reach_the_center_by_remote_write_and_federation(tmp_path: Path) -> None:
    need(shutil.which("prometheus") is not None, "prometheus (Debian's package) is not installed")
    host = f"fleet-test-{os.getpid()}"
    daemon = Vigild(tmp_path, agent_config("fleetagent", "fleetagent")).start()
    started: list[Prometheus] = []
    try:
        receiver = Prometheus(tmp_path / "central-rw", {"global": {"scrape_interval": "1s"}},
                              "--web.enable-remote-write-receiver")
        started.append(receiver)
        node = yaml.safe_load((FLEET / "prometheus-node.yml").read_text())
        node["global"]["scrape_interval"] = "1s"
        node["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{daemon.port}"]
        node["remote_write"][0]["url"] = f"http://127.0.0.1:{receiver.port}/api/v1/write"
        node["remote_write"][0]["queue_config"]["batch_send_deadline"] = "1s"
        host_prom = Prometheus(tmp_path / "host", node, "--enable-feature=expand-external-labels",
                               env={"HOST": host})
        started.append(host_prom)
        federate = yaml.safe_load((FLEET / "prometheus-federate.yml").read_text())
        federate["global"]["scrape_interval"] = "1s"
        federate["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{host_prom.port}"]
        center = Prometheus(tmp_path / "central-fed", federate)
        started.append(center)

        written = receiver.wait_for(f'vigil_build_info{{host="{host}"}}')
        assert {r["metric"]["job"] for r in written} == {"vigild"}
        assert receiver.query('{__name__=~"vigil_.*", host=""}') == []  # no series without its host
        assert receiver.wait_for(f'up{{host="{host}", job="vigild"}} == 1')  # the scrape's health goes too
        federated = center.wait_for(f'vigil_build_info{{host="{host}", job="vigild"}}')
        assert federated[0]["metric"]["instance"] == f"127.0.0.1:{daemon.port}"  # honor_labels kept it
        assert center.query(f'vigil_start_time_seconds{{host="{host}"}}')
    finally:
        for prom in reversed(started):
            prom.close()
        daemon.stop()
        daemon.kill_group()
