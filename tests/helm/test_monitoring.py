"""Monitoring in the chart: the ServiceMonitor or PodMonitor, the Grafana dashboard and the
alerts (checked and unit-tested by promtool). That the metrics they read really exist is
test_metrics_served.py's job."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from feldera_sandbox import helm

from .conftest import CHART_DIR, NAMESPACE, RELEASE, find, one, render
from .promql import metric_names

JOB = f"{NAMESPACE}/{RELEASE}-feldera-operator"
DASHBOARD = CHART_DIR / "dashboards" / "feldera-operator.json"
RULE_TESTS = Path(__file__).parent / "prometheus" / "feldera-operator.rules.test.yaml"
ALERTS = {
    "FelderaOperatorDown",
    "FelderaOperatorNoLeader",
    "FelderaInstanceUnreachable",
    "FelderaCredentialsRejected",
    "FelderaResourcesNotReady",
    "FelderaDriftCorrectedRepeatedly",
    "FelderaOperatorSlowReconciles",
}


# ----------------------------------------------------------------------- scraping


@pytest.mark.parametrize("kind", ["ServiceMonitor", "PodMonitor"])
def test_either_monitor_honours_the_operator_labels_and_sets_one_job(kind: str) -> None:
    key = "serviceMonitor" if kind == "ServiceMonitor" else "podMonitor"
    objects = render({"metrics": {key: {"enabled": True, "labels": {"release": "prom"}}}})
    (monitor,) = [o for o in objects if o["apiVersion"].startswith("monitoring.coreos.com/")]
    assert monitor["kind"] == kind
    assert monitor["metadata"]["labels"]["release"] == "prom"
    endpoints = monitor["spec"]["endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints"]
    (endpoint,) = endpoints
    assert endpoint["port"] == "metrics"
    # The operator's `instance` label names a Feldera instance: honoured, not exported_instance.
    assert endpoint["honorLabels"] is True
    # The job the alerts and the dashboard select, the same whichever monitor scrapes.
    assert endpoint["relabelings"] == [{"targetLabel": "job", "replacement": JOB}]
    selector = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert monitor["spec"]["selector"]["matchLabels"] == selector
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_no_monitor_by_default_and_never_both() -> None:
    assert not [o for o in render({}) if o["apiVersion"].startswith("monitoring.coreos.com/")]
    both = {"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}}
    with pytest.raises(helm.HelmError, match="enable one of them"):
        render(both)


# ----------------------------------------------------------------------- the dashboard


def dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return result


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression the dashboard runs (variables' label_values included)."""
    queries = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            assert match, query
            queries.append(match.group(1))
    return queries


def dashboard_metrics() -> set[str]:
    return set().union(*(metric_names(q) for q in dashboard_queries(dashboard())))


def test_dashboard_covers_what_an_operator_on_call_looks_at() -> None:
    names = dashboard_metrics()
    assert names >= {
        "up",
        "feldera_operator_leader",
        "feldera_operator_build_info",
        "feldera_operator_resources",
        "feldera_operator_reconciles_total",
        "feldera_operator_reconcile_duration_seconds_bucket",
        "feldera_operator_feldera_requests_total",
        "feldera_operator_feldera_request_duration_seconds_bucket",
        "feldera_operator_actions_total",
        "feldera_operator_drift_corrections_total",
        "feldera_operator_instance_up",
        "feldera_operator_instance_problem",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    }, names


def test_dashboard_is_portable_across_grafanas() -> None:
    board = dashboard()
    assert board["uid"] == "feldera-operator"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels(board):
        if panel["type"] == "row":
            continue
        # No data source uid of one Grafana baked in: the variable picks it.
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert 'job=~"$job"' in target["expr"], (panel["title"], target["expr"])


def test_dashboard_config_map_for_the_grafana_sidecar() -> None:
    assert find(render({}), "ConfigMap") == []
    values = {
        "monitoring": {
            "grafanaDashboards": {
                "enabled": True,
                "namespace": "monitoring",
                "labels": {"team": "platform"},
                "annotations": {"grafana_folder": "Feldera"},
            }
        }
    }
    config_map = one(render(values), "ConfigMap")
    metadata = config_map["metadata"]
    assert metadata["namespace"] == "monitoring"
    assert metadata["labels"]["grafana_dashboard"] == "1"
    assert metadata["labels"]["team"] == "platform"
    assert metadata["annotations"] == {"grafana_folder": "Feldera"}
    assert config_map["data"] == {"feldera-operator.json": DASHBOARD.read_text().rstrip("\n")}
    in_release = one(render({"monitoring": {"grafanaDashboards": {"enabled": True}}}), "ConfigMap")
    assert in_release["metadata"]["namespace"] == NAMESPACE


# ----------------------------------------------------------------------- the alerts


def promtool() -> str:
    """promtool, from Debian's `prometheus` package (.ci/run installs it). Missing on a
    developer's machine, these tests skip; in CI (CI set) they fail."""
    found = shutil.which("promtool")
    if found is None:
        message = "promtool not found: apt-get install prometheus (Debian's package provides it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def rendered_rules(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The PrometheusRule's spec: a plain Prometheus rules file."""
    enabled = {"monitoring": {"prometheusRule": {"enabled": True}}}
    rule = one(render({**enabled, **(values or {})}), "PrometheusRule")
    spec: dict[str, Any] = rule["spec"]
    return spec


def alerts(rules: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for group in rules["groups"] for r in group["rules"] if "alert" in r}


def run_promtool(
    rules: dict[str, Any], tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "feldera-operator.rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    return subprocess.run(
        [promtool(), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_rules_are_the_alerts_the_chart_promises() -> None:
    assert set(alerts(rendered_rules())) == ALERTS
    assert find(render({}), "PrometheusRule") == []
    labelled = render({"monitoring": {"prometheusRule": {"enabled": True, "labels": {"r": "p"}}}})
    assert one(labelled, "PrometheusRule")["metadata"]["labels"]["r"] == "p"
    for name, rule in alerts(rendered_rules()).items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["labels"]["job"] == JOB, name
        assert f'job="{JOB}"' in rule["expr"], name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    result = run_promtool(
        rendered_rules(), tmp_path, "check", "rules", "feldera-operator.rules.yaml"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_pass(tmp_path: Path) -> None:
    result = run_promtool(rendered_rules(), tmp_path, "test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    assert firing == ALERTS, ALERTS - firing
    assert silent == ALERTS, ALERTS - silent


def test_the_unit_tests_can_fail_a_rule_that_misses_its_reason(tmp_path: Path) -> None:
    rules = rendered_rules()
    rule = alerts(rules)["FelderaCredentialsRejected"]
    rule["expr"] = rule["expr"].replace('reason="CredentialsRejected"', 'reason=~".+"')
    result = run_promtool(rules, tmp_path, "test", "rules", RULE_TESTS.name)
    assert result.returncode != 0
    assert "FelderaCredentialsRejected" in result.stdout + result.stderr


def test_slow_reconcile_threshold_is_a_value() -> None:
    values = {"monitoring": {"prometheusRule": {"enabled": True, "slowReconcileSeconds": 2.5}}}
    rule = alerts(rendered_rules(values))["FelderaOperatorSlowReconciles"]
    assert rule["expr"].endswith(") > 2.5")
    assert "above 2.5s" in rule["annotations"]["description"]


def rule_expressions() -> list[str]:
    return [r["expr"] for r in alerts(rendered_rules()).values()]


def rule_metrics() -> set[str]:
    return set().union(*(metric_names(e) for e in rule_expressions()))
