"""Prometheus metrics of the operator, served at `--metrics-port` (`/metrics`). docs/metrics.md
lists every one with its labels; the chart's dashboard and alerts rely on those names.

Counters and histograms are updated where things happen. What describes the resources and the
instances (`feldera_operator_resources`, `_instance_up`, `_instance_problem`) is computed at
scrape time from what the reconciler already holds, so it costs nothing between scrapes, and only
the leader exports it: a standby's view is a cache, not what is acted on.

The `instance` label is `<namespace>/<name>` of a FelderaInstance, or `default` for the default
instance.
"""

from __future__ import annotations

import platform
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from feldera_operator import __version__

BUILD_INFO = Gauge(
    "feldera_operator_build_info",
    "Always 1; the operator's version and Python's, as labels.",
    ["version", "python_version"],
)
BUILD_INFO.labels(version=__version__, python_version=platform.python_version()).set(1)
LEADER = Gauge("feldera_operator_leader", "1 while this replica is the active (leading) one.")
RECONCILES = Counter(
    "feldera_operator_reconciles_total",
    "Reconciles by resource kind and result (converged, progressing, stalled, error).",
    ["kind", "result"],
)
RECONCILE_SECONDS = Histogram(
    "feldera_operator_reconcile_duration_seconds",
    "Time to decide, act and write status for one resource, by kind.",
    ["kind"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
FELDERA_REQUESTS = Counter(
    "feldera_operator_feldera_requests_total",
    "Requests to Feldera by instance, endpoint template and HTTP status ('none' when no "
    "response came).",
    ["instance", "endpoint", "code"],
)
FELDERA_REQUEST_SECONDS = Histogram(
    "feldera_operator_feldera_request_duration_seconds",
    "Duration of requests to Feldera by instance and endpoint template.",
    ["instance", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ACTIONS = Counter(
    "feldera_operator_actions_total",
    "Actions issued to Feldera, by instance and action (the Event reason: PipelineStarted, "
    "ConnectorPaused...).",
    ["instance", "action"],
)
DRIFT_CORRECTIONS = Counter(
    "feldera_operator_drift_corrections_total",
    "Actions that corrected Feldera after it was changed behind the operator's back, by the "
    "resource's namespace, instance and target (pipeline, connector).",
    ["namespace", "instance", "target"],
)
OBSERVATION_PASS_SECONDS = Gauge(
    "feldera_operator_observation_pass_seconds",
    "Duration of the last whole observation pass over an instance (its reads are spread over "
    "the period); above the period, the instance has more pipelines than its request budget "
    "(--feldera-rps) lets the operator observe every period.",
    ["instance"],
)
EVENTS_DROPPED = Counter(
    "feldera_operator_events_dropped_total",
    "Kubernetes Events not posted because too many were already in flight.",
)


def observe_feldera(instance: str, endpoint: str, status: int | None, seconds: float) -> None:
    """The FelderaClient's on_response hook, with the instance bound."""
    FELDERA_REQUESTS.labels(
        instance=instance, endpoint=endpoint, code=str(status) if status else "none"
    ).inc()
    FELDERA_REQUEST_SECONDS.labels(instance=instance, endpoint=endpoint).observe(seconds)


@dataclass(frozen=True)
class ResourceRow:
    kind: str
    namespace: str
    instance: str
    state: str
    ready: str
    reason: str


@dataclass(frozen=True)
class InstanceRow:
    instance: str
    up: bool
    problem: str | None  # the catalogue reason while a problem holds


class StateCollector(Collector):
    """Resources by state and instances' health, from the reconciler, on the leader only."""

    def __init__(
        self,
        leading: Callable[[], bool],
        resources: Callable[[], Iterable[ResourceRow]],
        instances: Callable[[], Iterable[InstanceRow]],
    ) -> None:
        self._leading = leading
        self._resources = resources
        self._instances = instances

    def collect(self) -> Iterable[GaugeMetricFamily]:
        if not self._leading():
            return  # a standby exports none of these: its view is not what is acted on
        resources = GaugeMetricFamily(
            "feldera_operator_resources",
            "Resources by kind, namespace, instance, observed Feldera state, Ready status and "
            "Ready reason.",
            labels=["kind", "namespace", "instance", "state", "ready", "reason"],
        )
        tally: Tally[tuple[str, ...]] = Tally(
            (r.kind, r.namespace, r.instance, r.state, r.ready, r.reason) for r in self._resources()
        )
        for labels, count in sorted(tally.items()):
            resources.add_metric(list(labels), count)
        yield resources
        up = GaugeMetricFamily(
            "feldera_operator_instance_up",
            "1 when the last round trip to the instance's Feldera API succeeded, 0 otherwise.",
            labels=["instance"],
        )
        problem = GaugeMetricFamily(
            "feldera_operator_instance_problem",
            "1 while the instance has this problem (a catalogue reason); absent otherwise.",
            labels=["instance", "reason"],
        )
        for instance in sorted(self._instances(), key=lambda r: r.instance):
            up.add_metric([instance.instance], 1 if instance.up else 0)
            if instance.problem is not None:
                problem.add_metric([instance.instance, instance.problem], 1)
        yield up
        yield problem

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []  # computed at scrape time; nothing to check at registration


def serve(port: int, collector: StateCollector, registry: CollectorRegistry = REGISTRY) -> None:
    """Serve /metrics on all interfaces (a daemon thread) with the state collector."""
    registry.register(collector)
    _start_http_server(port, addr="0.0.0.0", registry=registry)
