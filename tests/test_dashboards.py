"""The Grafana dashboards: importable and provisionable (schema, stable uids, the datasource
variable everywhere), and every metric they name is one the exporter serves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from vigild.daemon.config import LABELS
from vigild.daemon.sinks.metrics import build_registry

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"
BOARDS = sorted(DASHBOARDS.glob("*.json"))
PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "le", "count_over_time", "or", "vector"}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def walk(node: Any) -> list[dict[str, Any]]:
    """Every dict in the dashboard (panels, targets, variables...)."""
    found = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found += walk(value)
    elif isinstance(node, list):
        for value in node:
            found += walk(value)
    return found


def served_metrics() -> set[str]:
    """Sample names the exporter serves (a labelled metric is listed before its first sample)."""
    registry, _sink = build_registry(dict)
    names = set()
    for family in registry.collect():
        names.add(family.name)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_there_are_three_boards() -> None:
    assert {load(p)["uid"] for p in BOARDS} == {"vigild-overview", "vigild-tools", "vigild-health"}


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.name)
def test_board_is_provisionable(path: Path) -> None:
    board = load(path)
    assert board["schemaVersion"] >= 39
    assert re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"])
    assert "id" not in board or board["id"] is None  # Grafana assigns ids; a fixed one clashes on import
    (datasource,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert datasource["name"] == "datasource" and datasource["query"] == "prometheus"
    refs = [d["datasource"] for d in walk(board["panels"]) + board["templating"]["list"] if "datasource" in d]
    assert refs, "no datasource references"
    for ref in refs:  # a hard-coded uid would not exist in another Grafana
        assert ref == {"type": "prometheus", "uid": "${datasource}"}, ref
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["title"] and panel["description"] and panel["targets"]


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.name)
def test_every_metric_is_served(path: Path) -> None:
    served = served_metrics()
    for target in [d for d in walk(load(path)["panels"]) if "expr" in d]:
        # Label values, range selectors and Grafana variables are not metric names.
        expr = re.sub(r'"[^"]*"|\[[^\]]*\]|\$\{?\w+\}?', "", target["expr"])
        for name in set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr)):
            if name in PROMQL_WORDS or name in LABELS or name in {"instance", "limit", "host"}:
                continue
            assert name in served, f"{path.name}: {name} in {target['expr']!r} is not served"


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.name)
def test_board_selects_hosts(path: Path) -> None:
    """A fleet's Grafana: a multi-value `host` variable (the label the fleet configs put on every
    series) and every series selector in every panel restricted to it."""
    board = load(path)
    (host,) = [v for v in board["templating"]["list"] if v["name"] == "host"]
    assert host["type"] == "query" and host["multi"] and host["includeAll"] and host["allValue"] == ".*"
    assert host["query"]["query"] == "label_values(vigil_build_info, host)"
    for target in [d for d in walk(board["panels"]) if "expr" in d]:
        selectors = re.findall(r"\b(vigil_\w+)(\{[^}]*\})?", target["expr"])
        assert selectors, target["expr"]
        for name, labels in selectors:
            assert labels.startswith('{host=~"$host"'), f"{path.name}: {name} in {target['expr']!r}"


def test_exporter_names_follow_the_conventions() -> None:
    for name in served_metrics():
        assert name.startswith("vigil_")
        assert not re.search(r"_(ms|milliseconds|kb|mb|percent)(_|$)", name), name


def test_prometheus_example_is_valid() -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    result = subprocess.run(["promtool", "check", "config", str(DASHBOARDS / "prometheus.yml")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_provisioning_points_at_the_dashboards() -> None:
    provider = (DASHBOARDS / "provisioning" / "dashboards" / "vigild.yaml").read_text()
    assert re.search(r"^apiVersion: 1$", provider, re.MULTILINE)
    assert re.search(r"^\s+type: file$", provider, re.MULTILINE)
    assert re.search(r"^\s+path: /\S+$", provider, re.MULTILINE)
    source = (DASHBOARDS / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    assert re.search(r"^\s+type: prometheus$", source, re.MULTILINE)
