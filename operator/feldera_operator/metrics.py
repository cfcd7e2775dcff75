"""Prometheus metrics of the operator, served at `--metrics-port` (`/metrics`).

Counters and histograms are updated where things happen; the number of resources by observed
state is computed at scrape time from what the reconciler already holds, so it costs nothing
between scrapes.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from feldera_operator.decision import ready_condition

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
    "Requests to Feldera by endpoint template and HTTP status ('none' when no response came).",
    ["endpoint", "code"],
)
FELDERA_REQUEST_SECONDS = Histogram(
    "feldera_operator_feldera_request_duration_seconds",
    "Duration of requests to Feldera by endpoint template.",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ACTIONS = Counter(
    "feldera_operator_actions_total",
    "Actions issued to Feldera (start, pause, resume, stop; connector start, pause).",
    ["action"],
)
DRIFT_CORRECTIONS = Counter(
    "feldera_operator_drift_corrections_total",
    "Actions that corrected Feldera after it was changed behind the operator's back.",
    ["target"],
)
LEADER = Gauge("feldera_operator_leader", "1 while this replica is the active (leading) one.")
EVENTS_DROPPED = Counter(
    "feldera_operator_events_dropped_total",
    "Kubernetes Events not posted because too many were already in flight.",
)


def observe_feldera(endpoint: str, status: int | None, seconds: float) -> None:
    """The FelderaClient's on_response hook."""
    FELDERA_REQUESTS.labels(endpoint=endpoint, code=str(status) if status else "none").inc()
    FELDERA_REQUEST_SECONDS.labels(endpoint=endpoint).observe(seconds)


class ResourcesCollector(Collector):
    """`feldera_operator_resources{kind, state, ready}`: resources by observed state."""

    def __init__(self, snapshot: Callable[[], Iterable[tuple[str, Mapping[str, Any]]]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "feldera_operator_resources",
            "Resources by kind, observed Feldera state and Ready status.",
            labels=["kind", "state", "ready"],
        )
        tally: Tally[tuple[str, str, str]] = Tally()
        for kind, status in self._snapshot():
            ready = str(ready_condition(status).get("status", "Unknown"))
            tally[(kind, str(status.get("state") or "Unknown"), ready)] += 1
        for labels, count in sorted(tally.items()):
            family.add_metric(list(labels), count)
        yield family


def serve(port: int, snapshot: Callable[[], Iterable[tuple[str, Mapping[str, Any]]]]) -> None:
    """Serve /metrics on all interfaces (a daemon thread) and register the resources gauge."""
    REGISTRY.register(ResourcesCollector(snapshot))
    start_http_server(port, addr="0.0.0.0")
