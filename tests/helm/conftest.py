"""The chart rendered by the real helm (built from its Go module), for several value sets."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feldera_operator import runner
from feldera_sandbox import helm
from feldera_sandbox.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = helm.CHART_DIR
FIXTURES = Path(__file__).parent / "fixtures"
RELEASE = "fo"
NAMESPACE = "feldera-system"
# The extensions value set's priority class: the Pod Security test creates it.
PRIORITY_CLASS = "feldera-operator-critical"

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
    "podmonitor": {"metrics": {"podMonitor": {"enabled": True}}},
    # Every extension point at once: the Pod must still be admitted by Pod Security `restricted`.
    "extensions": {
        "image": {
            "repository": "registry.example/feldera-operator",
            "tag": "ignored-when-a-digest-is-given",
            "digest": "sha256:" + "ab" * 32,
        },
        "extraArgs": ["--request-timeout=30"],
        "extraEnv": [
            {"name": "HTTPS_PROXY", "value": "http://proxy.example:3128"},
            {
                "name": "NODE_NAME",
                "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
            },
        ],
        "extraVolumes": [{"name": "feldera-ca", "configMap": {"name": "feldera-ca"}}],
        "extraVolumeMounts": [
            {"name": "feldera-ca", "mountPath": "/etc/feldera-ca", "readOnly": True}
        ],
        "podLabels": {"team": "data"},
        "podAnnotations": {"example.com/owner": "data-platform"},
        "priorityClassName": PRIORITY_CLASS,
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}
        ],
        "affinity": {
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 1,
                        "preference": {
                            "matchExpressions": [
                                {"key": "pool", "operator": "In", "values": ["operators"]}
                            ]
                        },
                    }
                ]
            }
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
            }
        ],
        "probes": {"startup": {"failureThreshold": 90}, "liveness": {"timeoutSeconds": 3}},
    },
    "monitoring": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "monitoring": {
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
            "grafanaDashboards": {"enabled": True, "labels": {"grafana_folder": "feldera"}},
        },
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


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator container of the rendered Deployment."""
    (c,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def operator_args(values: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """Parse the rendered command line with `feldera-operator run`'s own parser, in the
    rendered environment: a flag the operator does not have fails here."""
    c = container(render(values))
    assert c["command"] == ["feldera-operator", "run"]
    for var in c.get("env", []):
        if "value" in var:
            monkeypatch.setenv(var["name"], var["value"])
        else:
            monkeypatch.setenv(var["name"], "fo-feldera-operator-abc12-xyz34")
    parser = argparse.ArgumentParser()
    runner.add_arguments(parser)
    return parser.parse_args(c["args"])


def user_roles(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ClusterRoles for people (aggregated into admin, edit, view), not the operator's."""
    return [
        o
        for o in find(objects, "ClusterRole")
        if any(
            k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in o["metadata"]["labels"]
        )
    ]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One real control plane for the chart's tests that need an API server: the feldera.dev CRDs
    applied as a cluster admin applies them (kubectl, outside any release), and stand-ins for the
    Prometheus Operator's CRDs. Each test module works in namespaces of its own."""
    sb = Sandbox(tmp_path_factory.mktemp("chart-cluster"))
    try:
        sb.start_kubernetes()
        sb.install_crds()
        sb.kubectl("apply", "-f", str(FIXTURES))
        sb.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd", "--all")
        yield sb
    finally:
        sb.stop()
