"""The alert rules in deploy/monitoring: fixed metric names, annotations a person can act
on, and (with promtool from Debian's ``prometheus`` package) the expressions evaluated
on sample series: which alert fires when, with which labels."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from deployhelpers import DEPLOY, ROOT, Doc, require_tool, run

RULE = yaml.safe_load((DEPLOY / "monitoring" / "prometheusrule.yaml").read_text())
RULES = {r["alert"]: r for g in RULE["spec"]["groups"] for r in g["rules"]}
# The fixed metric names of DESIGN.md (and dtrtrust/metrics.py).
FIXED_METRICS = {
    "dtrtrust_certificate_expiry_timestamp_seconds",
    "dtrtrust_reconcile_total",
    "dtrtrust_ca_fetch_duration_seconds",
    "dtrtrust_nodes_desired",
    "dtrtrust_nodes_synced",
}
DAY = 86400


def test_rule_is_a_prometheus_operator_rule_with_the_expected_alerts() -> None:
    assert RULE["apiVersion"] == "monitoring.coreos.com/v1"
    assert RULE["kind"] == "PrometheusRule"
    assert RULE["metadata"]["namespace"] == "dtrtrust-system"
    assert set(RULES) == {
        "DTRTrustCertificateExpiringSoon",
        "DTRTrustCertificateExpiryCritical",
        "DTRTrustNodesNotSynced",
        "DTRTrustCARefreshFailing",
        "DTRTrustReconcileErrors",
        "DTRTrustOperatorDown",
    }


def test_rules_use_only_metric_names_the_operator_exports() -> None:
    from dtrtrust.operator import metrics

    exported = {
        metrics.CERT_EXPIRY,
        metrics.RECONCILE_TOTAL._name + "_total",
        metrics.NODES_DESIRED,
        metrics.NODES_SYNCED,
        metrics.CA_FETCH_DURATION._name,
    }
    assert exported == FIXED_METRICS
    used = {m for r in RULES.values() for m in re.findall(r"\bdtrtrust_[a-z_]+", r["expr"])}
    assert used
    assert used <= FIXED_METRICS | {metrics.TRUST_CONDITION}


@pytest.mark.parametrize("alert", sorted(RULES))
def test_every_alert_has_severity_summary_description_and_runbook(alert: str) -> None:
    rule = RULES[alert]
    assert rule["labels"]["severity"] in {"warning", "critical"}
    annotations = rule["annotations"]
    assert annotations["summary"]
    assert len(annotations["description"]) > 80
    assert "README.md#troubleshooting" in annotations["runbook"]


def test_expiry_thresholds_are_30_days_warning_and_7_days_critical() -> None:
    soon, critical = (
        RULES["DTRTrustCertificateExpiringSoon"],
        RULES["DTRTrustCertificateExpiryCritical"],
    )
    assert soon["expr"].endswith("< 30 * 86400")
    assert soon["labels"]["severity"] == "warning"
    assert critical["expr"].endswith("< 7 * 86400")
    assert critical["labels"]["severity"] == "critical"
    assert RULES["DTRTrustNodesNotSynced"]["for"] == "15m"


# --- promtool ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> Path:
    return require_tool(
        "promtool", "DTRTRUST_PROMTOOL", "apt-get install prometheus (Debian ships promtool in it)"
    )


def _rule_file(path: Path, *, annotations: bool) -> Path:
    """The groups of the PrometheusRule as a plain Prometheus rule file; without
    annotations, promtool's alert tests compare labels only."""
    groups = yaml.safe_load(yaml.safe_dump(RULE["spec"]["groups"]))
    if not annotations:
        for group in groups:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    path.write_text(yaml.safe_dump({"groups": groups}))
    return path


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    return _rule_file(tmp_path / "rules.yaml", annotations=True)


def test_promtool_accepts_the_rules_and_their_templates(promtool: Path, rules_file: Path) -> None:
    done = run([promtool, "check", "rules", rules_file])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in done.stdout


def _alert(name: str, labels: dict[str, str], **annotations: str) -> Doc:
    rule = RULES[name]
    alert: Doc = {"exp_labels": {**rule["labels"], **labels}}
    if annotations:
        alert["exp_annotations"] = annotations
    return alert


def _rendered(name: str, *, trust: str, value: str) -> dict[str, str]:
    """The alert's annotations with {{ $labels.trust }} and {{ $value }} filled in,
    as Prometheus renders them (only for templates without functions)."""
    result = {}
    for key, template in RULES[name]["annotations"].items():
        assert "|" not in template, f"{name}.{key}: has a template function"
        text = template.replace("{{ $labels.trust }}", trust).replace("{{ $value }}", value)
        assert "{{" not in text
        result[key] = text
    return result


def _up(value: str) -> dict[str, str]:
    return {
        "series": 'up{job="dtrtrust-operator-metrics",instance="op:8080"}',
        "values": value,
    }


@pytest.fixture
def promtool_test(promtool: Path, tmp_path: Path) -> Callable[..., None]:
    def check(tests: list[Doc], *, annotations: bool = False) -> None:
        rules_file = _rule_file(tmp_path / "rules.yaml", annotations=annotations)
        path = tmp_path / "tests.yaml"
        path.write_text(
            yaml.safe_dump(
                {"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": tests}
            )
        )
        done = run([promtool, "test", "rules", path])
        assert done.returncode == 0, done.stdout + done.stderr

    return check


def test_certificate_expiry_alerts_fire_at_30_and_7_days(promtool_test: Any) -> None:
    # At t=0 (promtool's time() starts at 0) the CA expires in 20 days, the client
    # certificate in 5, and another trust's CA in 90.
    series = [
        {
            "series": 'dtrtrust_certificate_expiry_timestamp_seconds{trust="prod",kind="ca"}',
            "values": f"{20 * DAY}x120",
        },
        {
            "series": 'dtrtrust_certificate_expiry_timestamp_seconds{trust="prod",kind="client"}',
            "values": f"{5 * DAY}x120",
        },
        {
            "series": 'dtrtrust_certificate_expiry_timestamp_seconds{trust="lab",kind="ca"}',
            "values": f"{90 * DAY}x120",
        },
        _up("1x120"),
    ]
    promtool_test(
        [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    # Not before `for` has passed.
                    {"eval_time": "10m", "alertname": "DTRTrustCertificateExpiringSoon"},
                    {
                        "eval_time": "2h",
                        "alertname": "DTRTrustCertificateExpiringSoon",
                        "exp_alerts": [
                            _alert(
                                "DTRTrustCertificateExpiringSoon", {"trust": "prod", "kind": "ca"}
                            ),
                            _alert(
                                "DTRTrustCertificateExpiringSoon",
                                {"trust": "prod", "kind": "client"},
                            ),
                        ],
                    },
                    {
                        "eval_time": "2h",
                        "alertname": "DTRTrustCertificateExpiryCritical",
                        "exp_alerts": [
                            _alert(
                                "DTRTrustCertificateExpiryCritical",
                                {"trust": "prod", "kind": "client"},
                            )
                        ],
                    },
                ],
            }
        ]
    )


def test_nodes_not_synced_fires_only_after_15_minutes_behind(promtool_test: Any) -> None:
    series = [
        # prod: 1 of 3 nodes for 20 minutes, then all 3.
        {"series": 'dtrtrust_nodes_desired{trust="prod"}', "values": "3x40"},
        {"series": 'dtrtrust_nodes_synced{trust="prod"}', "values": "1x20 3x20"},
        # lab: behind for 10 minutes only (a rollout), never alerts.
        {"series": 'dtrtrust_nodes_desired{trust="lab"}', "values": "2x40"},
        {"series": 'dtrtrust_nodes_synced{trust="lab"}', "values": "0x10 2x30"},
        _up("1x40"),
    ]
    promtool_test(
        [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "14m", "alertname": "DTRTrustNodesNotSynced"},
                    {
                        "eval_time": "17m",
                        "alertname": "DTRTrustNodesNotSynced",
                        "exp_alerts": [
                            _alert(
                                "DTRTrustNodesNotSynced",
                                {"trust": "prod"},
                                **_rendered("DTRTrustNodesNotSynced", trust="prod", value="1"),
                            )
                        ],
                    },
                    {"eval_time": "30m", "alertname": "DTRTrustNodesNotSynced"},
                ],
            }
        ],
        annotations=True,
    )


def test_a_ca_refresh_failing_for_an_hour_alerts_a_brief_outage_does_not(
    promtool_test: Any,
) -> None:
    failing = 'dtrtrust_trust_condition{trust="%s",type="CAAvailable",status="False"}'
    series = [
        {"series": failing % "prod", "values": "1x90"},  # failing for 90 minutes
        {"series": failing % "lab", "values": "1x20 0x70"},  # a 20-minute outage
        _up("1x90"),
    ]
    promtool_test(
        [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "50m", "alertname": "DTRTrustCARefreshFailing"},
                    {
                        "eval_time": "70m",
                        "alertname": "DTRTrustCARefreshFailing",
                        "exp_alerts": [
                            _alert(
                                "DTRTrustCARefreshFailing",
                                {"trust": "prod", "type": "CAAvailable", "status": "False"},
                            )
                        ],
                    },
                ],
            }
        ],
    )


def test_reconcile_errors_alert_on_temporary_and_permanent_results_only(
    promtool_test: Any,
) -> None:
    series = [
        {"series": 'dtrtrust_reconcile_total{result="ready"}', "values": "0+5x60"},
        {"series": 'dtrtrust_reconcile_total{result="waiting"}', "values": "0+1x60"},
        # One temporary failure at minute 10, none afterwards.
        {"series": 'dtrtrust_reconcile_total{result="temporary"}', "values": "0x9 1x50"},
        {"series": 'dtrtrust_reconcile_total{result="permanent"}', "values": "0x60"},
        _up("1x60"),
    ]
    promtool_test(
        [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "DTRTrustReconcileErrors"},
                    {
                        "eval_time": "12m",
                        "alertname": "DTRTrustReconcileErrors",
                        "exp_alerts": [_alert("DTRTrustReconcileErrors", {"result": "temporary"})],
                    },
                    # 15 minutes after the failure the window no longer holds it.
                    {"eval_time": "40m", "alertname": "DTRTrustReconcileErrors"},
                ],
            }
        ]
    )


def test_operator_down_fires_when_it_is_not_scraped(promtool_test: Any) -> None:
    promtool_test(
        [
            {
                "interval": "1m",
                "input_series": [_up("1x10 0x30")],
                "alert_rule_test": [
                    {"eval_time": "9m", "alertname": "DTRTrustOperatorDown"},
                    {
                        "eval_time": "25m",
                        "alertname": "DTRTrustOperatorDown",
                        "exp_alerts": [_alert("DTRTrustOperatorDown", {})],
                    },
                ],
            }
        ]
    )


def test_a_wrong_expectation_fails_promtool(promtool_test: Any) -> None:
    """The promtool tests above can fail: an alert that does not fire is reported."""
    with pytest.raises(AssertionError, match="DTRTrustOperatorDown"):
        promtool_test(
            [
                {
                    "interval": "1m",
                    "input_series": [_up("1x30")],
                    "alert_rule_test": [
                        {
                            "eval_time": "25m",
                            "alertname": "DTRTrustOperatorDown",
                            "exp_alerts": [_alert("DTRTrustOperatorDown", {})],
                        }
                    ],
                }
            ]
        )


def test_monitoring_kustomization_lists_the_monitor_the_rule_and_the_dashboard(
    kustomize: Callable[[Path], list[Doc]],
) -> None:
    docs = kustomize(ROOT / "deploy" / "monitoring")
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "PrometheusRule", "ServiceMonitor"]
    [monitor] = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    service_labels = {
        "app.kubernetes.io/name": "dtrtrust",
        "app.kubernetes.io/component": "operator",
    }
    assert monitor["spec"]["selector"]["matchLabels"] == service_labels
