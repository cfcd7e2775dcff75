"""What the chart ships, checked against a running operator: the real operator reconciling real
resources on the real control plane. It first converges a pipeline, corrects drift and meets a
rejected API key (labelled series exist only once something happened), then:

- every metric and label the dashboard and the alerts read is served at /metrics;
- Argo CD's health check reads the resources as the operator really writes them."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from e2e.conftest import E2E, pipeline_manifest, start_sandbox, unique
from prometheus_client.parser import text_string_to_metric_families

from feldera_sandbox.sandbox import condition

from .argocd import health
from .promql import SYNTHETIC, label_names, metric_names
from .test_monitoring import dashboard, dashboard_queries, rule_expressions

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def served(port: int) -> dict[str, set[str]]:
    """Sample name -> its label names, as /metrics serves them (a histogram's _bucket, _sum and
    _count are samples of their own)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


# Labels the scrape adds (the chart's monitors set `job`; the Prometheus Operator adds `pod`).
TARGET_LABELS = {"job", "pod"}


def unserved_labels(queries: list[str], metrics: dict[str, set[str]]) -> dict[str, set[str]]:
    """query -> the labels it matches or groups by that none of the metrics it reads carries."""
    out = {}
    for query in queries:
        names = metric_names(query) - SYNTHETIC
        if not names:
            continue
        carried = set().union(*(metrics.get(n, set()) for n in names))
        missing = label_names(query) - TARGET_LABELS - carried
        if missing:
            out[query] = missing
    return out


@dataclass
class Live:
    metrics: dict[str, set[str]]  # sample name -> label names
    resources: dict[str, dict[str, Any]]  # what the operator wrote, by role


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    port = free_port()
    sb = start_sandbox(
        tmp_path_factory.mktemp("metrics"), "--metrics-port", str(port), examples=False
    )
    try:
        e2e = E2E(sb)
        # A pipeline converged: reconciles, requests to Feldera, actions, resources.
        name = unique("metrics")
        e2e.create_pipeline(name)
        inputs = [{"table": "orders", "connector": "backfill", "paused": False}]
        e2e.apply(pipeline_manifest(name, inputs=inputs))
        e2e.wait_ready(name)
        # Drift: a connector paused behind the operator's back, and put back.
        e2e.feldera("POST", f"/v0/pipelines/{name}/tables/orders/connectors/backfill/pause")
        e2e.wait(
            lambda: any(e["reason"] == "DriftCorrected" for e in e2e.events(name)),
            "a DriftCorrected Event",
        )
        # An instance whose key Feldera rejects: an instance problem.
        wrong = unique("wrong")
        sb.apply(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        "name": wrong,
                        "namespace": "default",
                        "labels": {"feldera.dev/credentials": "true"},
                    },
                    "stringData": {"apiKey": "apikey:" + "rejected" * 8},
                },
                {
                    "apiVersion": "feldera.dev/v1alpha1",
                    "kind": "FelderaInstance",
                    "metadata": {"name": wrong, "namespace": "default"},
                    "spec": {"url": sb.feldera_url, "apiKeySecretRef": {"name": wrong}},
                },
                pipeline_manifest(wrong, instanceRef={"name": wrong}),
            ]
        )
        e2e.wait(
            lambda: (
                (c := condition(e2e.get(wrong), "Ready"))
                and c.get("reason") == "CredentialsRejected"
            ),
            "CredentialsRejected",
        )
        # Counters move where things happen, and the instance's problem is exported once its
        # loop has seen it: wait for the last of them to be served.
        names: dict[str, set[str]] = e2e.wait(
            lambda: (
                (found := served(port))
                and "feldera_operator_drift_corrections_total" in found
                and "feldera_operator_instance_problem" in found
                and found
            ),
            "drift corrections and the instance's problem on /metrics",
        )
        yield Live(names, {"converged": e2e.get(name), "rejected": e2e.get(wrong)})
    finally:
        sb.stop()


def test_every_metric_the_dashboard_queries_is_served(
    live: Live,
) -> None:
    queries = dashboard_queries(dashboard())
    missing = set().union(*(metric_names(q) for q in queries)) - SYNTHETIC - set(live.metrics)
    assert not missing, f"the dashboard queries metrics the operator does not serve: {missing}"


def test_every_metric_the_alerts_read_is_served(live: Live) -> None:
    queries = rule_expressions()
    missing = set().union(*(metric_names(q) for q in queries)) - SYNTHETIC - set(live.metrics)
    assert not missing, f"the alerts read metrics the operator does not serve: {missing}"


def test_every_label_the_dashboard_and_alerts_use_is_served(
    live: Live,
) -> None:
    unserved = unserved_labels(dashboard_queries(dashboard()) + rule_expressions(), live.metrics)
    assert not unserved, f"labels no metric of the query carries: {unserved}"


def test_the_checks_can_fail(live: Live) -> None:
    """A metric name with a typo, or a label a metric does not have, is found."""
    assert "feldera_operator_reconciles_total" in live.metrics
    assert "feldera_operator_reconcile_total" not in live.metrics
    query = "sum by (kind, colour) (rate(feldera_operator_reconciles_total[5m]))"
    assert unserved_labels([query], live.metrics) == {query: {"colour"}}


def test_argo_cd_reads_what_the_operator_writes(live: Live) -> None:
    converged = health(live.resources["converged"])
    assert converged["status"] == "Healthy"
    assert converged["message"].startswith("Converged: ")
    rejected = health(live.resources["rejected"])
    assert rejected["status"] == "Degraded"
    assert rejected["message"].startswith("CredentialsRejected: ")
