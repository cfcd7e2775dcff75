"""The operator's metrics, by exactly the names and labels docs/metrics.md lists (the chart's
dashboard and alerts match on them): computed from the real Reconciler on fakes."""

from __future__ import annotations

import platform
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from feldera_operator import __version__, metrics
from feldera_operator.feldera_client import FelderaUnreachable
from feldera_operator.instance_connection import ClientSettings, feldera_client
from feldera_operator.reconciler import Reconciler

from .reconciler_fakes import (
    FakeFeldera,
    FakeKube,
    add_pipeline,
    close_all,
    instance_body,
    make_reconciler,
    observe_pass,
    pipeline_body,
)


@pytest.fixture(autouse=True)
async def close_reconcilers() -> AsyncIterator[None]:
    yield
    await close_all()


def scrape(r: Reconciler) -> str:
    registry = CollectorRegistry()
    registry.register(
        metrics.StateCollector(r.leading.is_set, r.metric_resources, r.metric_instances)
    )
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (name, frozenset(labels.items()))


async def two_instances() -> tuple[Reconciler, FakeKube, FakeFeldera]:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders"))
    await observe_pass(r)
    prod = kube.add("felderainstances", instance_body("prod", "team-a", url="http://prod.test"))
    await r.on_instance_event("ADDED", prod)
    feldera.fail("config", FelderaUnreachable("refused", endpoint="GET /v0/config"))
    await observe_pass(r, ("team-a", "prod"))
    return r, kube, feldera


async def test_resources_and_instances_as_the_leader_sees_them() -> None:
    r, _, _ = await two_instances()
    got = samples(scrape(r))
    resources = "feldera_operator_resources"
    assert got == {
        sample(
            resources,
            kind="FelderaPipeline",
            namespace="default",
            instance="default",
            state="Running",
            ready="True",
            reason="Converged",
        ): 1.0,
        sample(
            resources,
            kind="FelderaInstance",
            namespace="team-a",
            instance="team-a/prod",
            state="Unreachable",
            ready="False",
            reason="FelderaUnreachable",
        ): 1.0,
        sample("feldera_operator_instance_up", instance="default"): 1.0,
        sample("feldera_operator_instance_up", instance="team-a/prod"): 0.0,
        # Only while a problem holds: none for the default instance.
        sample(
            "feldera_operator_instance_problem", instance="team-a/prod", reason="FelderaUnreachable"
        ): 1.0,
    }


async def test_a_standby_exports_no_resource_or_instance_metrics() -> None:
    r, _, _ = await two_instances()
    r.leading.clear()
    text = scrape(r)
    for name in ("resources", "instance_up", "instance_problem"):
        assert f"feldera_operator_{name}" not in text


async def test_actions_and_drift_corrections_carry_instance_and_namespace() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("drifty", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("drifty", namespace="team-b"))
    feldera.pipelines["drifty"].status = feldera.pipelines["drifty"].desired = "Paused"
    before = (
        REGISTRY.get_sample_value(
            "feldera_operator_actions_total", {"instance": "default", "action": "PipelineResumed"}
        )
        or 0.0
    )
    await observe_pass(r)
    assert (
        REGISTRY.get_sample_value(
            "feldera_operator_actions_total", {"instance": "default", "action": "PipelineResumed"}
        )
        == before + 1
    )
    assert (
        REGISTRY.get_sample_value(
            "feldera_operator_drift_corrections_total",
            {"namespace": "team-b", "instance": "default", "target": "pipeline"},
        )
        or 0.0
    ) >= 1


def test_feldera_requests_carry_the_instance() -> None:
    client = feldera_client(
        ClientSettings("http://x.test", None, None, None, 1.0, instance="team-a/prod")
    )
    hook = client._on_response  # type: ignore[attr-defined]
    hook("GET /v0/pipelines", 200, 0.01)
    labels = {"instance": "team-a/prod", "endpoint": "GET /v0/pipelines", "code": "200"}
    assert (REGISTRY.get_sample_value("feldera_operator_feldera_requests_total", labels) or 0) >= 1
    assert (
        REGISTRY.get_sample_value(
            "feldera_operator_feldera_request_duration_seconds_count",
            {"instance": "team-a/prod", "endpoint": "GET /v0/pipelines"},
        )
        or 0
    ) >= 1


def test_build_info_and_the_other_names_exist() -> None:
    assert (
        REGISTRY.get_sample_value(
            "feldera_operator_build_info",
            {"version": __version__, "python_version": platform.python_version()},
        )
        == 1.0
    )
    text = generate_latest(REGISTRY).decode()
    for name in (
        "feldera_operator_leader",
        "feldera_operator_reconciles_total",
        "feldera_operator_reconcile_duration_seconds",
        "feldera_operator_events_dropped_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
