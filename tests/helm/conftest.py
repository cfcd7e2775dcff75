"""The chart rendered by the real helm (built from its Go module), for several value sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from feldera_sandbox import helm

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = helm.CHART_DIR
RELEASE = "fo"
NAMESPACE = "feldera-system"

# The value sets the chart is proven with: each renders, lints and applies.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {
        "watchNamespaces": ["team-a", "team-b"],
        "feldera": {
            "url": "http://feldera-api-server.feldera.svc:8080",
            "apiKeySecret": {"name": "feldera-api-key", "key": "token"},
        },
    },
    "ha": {"replicas": 3},
    "metrics-off": {"metrics": {"enabled": False}},
    "monitoring": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [
                {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}},
            ],
            "egress": [
                {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 443, "protocol": "TCP"}]}
            ],
        },
    },
}


def render(values: dict[str, Any], namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """The chart's objects, as `helm template RELEASE CHART -n NAMESPACE -f values` prints them."""
    return helm.template(values, release=RELEASE, namespace=namespace)


def find(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = find(objects, kind)
    return found


@pytest.fixture(params=sorted(VALUE_SETS), ids=sorted(VALUE_SETS))
def value_set(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param, VALUE_SETS[request.param]
