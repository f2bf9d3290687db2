"""The Grafana dashboard in deploy/monitoring: imported as a ConfigMap with the label
Grafana's sidecar looks for, every query valid PromQL (promtool) over the operator's fixed
metric names only, each of the issue's views present. That the names are really exported
is proven against a scrape of the running operator in tests/integration."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from deployhelpers import DEPLOY, Doc, require_tool, run
from test_prometheusrule import FIXED_METRICS

from promql import dashboard_queries, metric_names

DASHBOARD_FILE = DEPLOY / "monitoring" / "grafana-dashboard.json"
DASHBOARD = json.loads(DASHBOARD_FILE.read_text())
# A histogram is scraped as its _bucket, _sum and _count series; a counter as _total.
SERIES = {
    "dtrtrust_certificate_expiry_timestamp_seconds",
    "dtrtrust_reconcile_total",
    "dtrtrust_ca_fetch_duration_seconds_bucket",
    "dtrtrust_ca_fetch_duration_seconds_sum",
    "dtrtrust_ca_fetch_duration_seconds_count",
    "dtrtrust_nodes_desired",
    "dtrtrust_nodes_synced",
}


def _family(series: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", series)


def test_dashboard_is_a_configmap_with_the_grafana_dashboard_label(
    kustomize: Callable[[Path], list[Doc]],
) -> None:
    docs = kustomize(DEPLOY / "monitoring")
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]

    assert config_map["metadata"]["name"] == "dtrtrust-grafana-dashboard"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["dtrtrust.json"]) == DASHBOARD


def test_queries_use_only_the_operators_metrics_and_cover_every_one() -> None:
    used = {m for q in dashboard_queries(DASHBOARD) for m in metric_names(q)}

    assert used <= SERIES
    assert {_family(m) for m in used} == FIXED_METRICS


@pytest.mark.parametrize(
    ("title", "metric"),
    [
        (
            "Certificate expiry per trust (days left)",
            "dtrtrust_certificate_expiry_timestamp_seconds",
        ),
        ("Nodes synced and desired per trust", "dtrtrust_nodes_synced"),
        ("Reconcile results per second", "dtrtrust_reconcile_total"),
        ("CA fetch duration", "dtrtrust_ca_fetch_duration_seconds_bucket"),
    ],
)
def test_each_view_of_the_issue_has_its_panel(title: str, metric: str) -> None:
    panels = {p["title"]: p for p in DASHBOARD["panels"]}
    exprs = [t["expr"] for t in panels[title]["targets"]]
    assert any(metric in metric_names(e) for e in exprs)


def test_every_panel_uses_the_datasource_variable() -> None:
    for panel in DASHBOARD["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


def test_promtool_accepts_every_query(tmp_path: Path) -> None:
    promtool = require_tool("promtool", "DTRTRUST_PROMTOOL", "apt-get install prometheus")
    rules = [
        {
            "record": f"dashboard:query:{i}",
            "expr": q.replace("$__rate_interval", "5m").replace("$trust", ".*"),
        }
        for i, q in enumerate(dashboard_queries(DASHBOARD))
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    done = run([promtool, "check", "rules", path])

    assert done.returncode == 0, done.stdout + done.stderr
