"""The fleet's metric pipelines (daemon/deploy/fleet) in the real programs: `promtool check config`
accepts the shipped files; a real vigild is scraped by a host Prometheus run from the shipped
node config, which remote-writes to a central Prometheus (--web.enable-remote-write-receiver),
while a second central Prometheus federates the host's from the shipped federation config. Both
centers end up with vigild's series labelled with the host's name. Only the addresses and
intervals are changed for the test; everything else is the shipped configuration."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from support.require import need
from support.prometheus import Prometheus
from support.vigild_proc import Vigild, agent_config

pytestmark = pytest.mark.usefixtures("root")

FLEET = Path(__file__).resolve().parent.parent / "daemon" / "deploy" / "fleet"


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
