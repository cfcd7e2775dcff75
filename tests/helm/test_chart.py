"""The chart renders, lints strictly, validates as Kubernetes objects and passes the operator the
flags `feldera-operator run` really has."""

from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes_validate
import pytest
import yaml

from feldera_operator import runner
from feldera_sandbox import helm

from .conftest import (
    CHART_DIR,
    NAMESPACE,
    RELEASE,
    ROOT,
    VALUE_SETS,
    container,
    find,
    one,
    operator_args,
    render,
)

KUBERNETES_VERSION = "1.33"


def test_chart_crds_are_the_top_level_crds_byte_for_byte() -> None:
    top = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART_DIR / "files" / "crds").glob("*.yaml")}
    assert top, "no CRDs at the top level"
    assert chart == top, "helm/feldera-operator/files/crds/ differs from crds/: run `make crds`"


def test_chart_metadata() -> None:
    metadata = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert metadata["apiVersion"] == "v2"
    assert metadata["appVersion"] == "0.1.0"
    # No crds/ directory: Helm would install it once and never upgrade it.
    assert not (CHART_DIR / "crds").exists()
    assert helm.helm("show", "crds", str(CHART_DIR)).stdout.strip() == ""


def test_rendered_crds_are_the_generated_ones_with_the_release_labels() -> None:
    rendered = {c["metadata"]["name"]: c for c in find(render({}), "CustomResourceDefinition")}
    top = {d["metadata"]["name"]: d for p in (ROOT / "crds").glob("*.yaml") for d in _docs(p)}
    assert set(rendered) == set(top)
    for name, crd in rendered.items():
        metadata = crd["metadata"]
        assert metadata.pop("annotations") == {"helm.sh/resource-policy": "keep"}, name
        assert metadata.pop("labels")["app.kubernetes.io/managed-by"] == "Helm"
        assert crd == top[name], f"{name}: the rendered CRD differs from crds/"
    unkept = find(render({"crds": {"keep": False}}), "CustomResourceDefinition")
    assert unkept and all("annotations" not in c["metadata"] for c in unkept)
    assert find(render({"crds": {"install": False}}), "CustomResourceDefinition") == []


def _docs(path: Any) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_helm_lint_strict(value_set: tuple[str, dict[str, Any]], tmp_path: Any) -> None:
    _, values = value_set
    result = helm.helm(
        "lint",
        str(CHART_DIR),
        "--strict",
        "--namespace",
        NAMESPACE,
        "--values",
        str(helm.values_file(values, tmp_path)),
        check=False,
    )
    # --strict fails on warnings too.
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_every_object_validates_strictly(value_set: tuple[str, dict[str, Any]]) -> None:
    _, values = value_set
    for obj in render(values):
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            # The Prometheus Operator's kinds: kubernetes-validate has no schema for them.
            assert obj["kind"] in ("ServiceMonitor", "PodMonitor", "PrometheusRule")
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_namespaced_objects_land_in_the_release_namespace_or_a_watched_one(
    value_set: tuple[str, dict[str, Any]],
) -> None:
    _, values = value_set
    allowed = {NAMESPACE, *values.get("watchNamespaces", [])}
    for obj in render(values):
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"):
            assert "namespace" not in obj["metadata"]
        else:
            assert obj["metadata"]["namespace"] in allowed, obj["kind"]


# ----------------------------------------------------------------------- the operator's flags


def test_default_values_run_cluster_wide_with_json_logs_and_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = operator_args({}, monkeypatch)
    config = runner.config_from_args(args)
    assert config.namespaces == ()
    assert config.default_url is None and config.default_api_key is None
    assert args.log_format == "json"
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    assert config.metrics_port == 9090
    assert config.leader_election is None
    assert config.period == 10
    assert config.selector is None
    assert (config.feldera_rps, config.kube_request_timeout, config.external_stop_grace) == (
        50,
        15,
        60,
    )


def test_a_selector_and_the_time_and_rate_values_reach_the_operators_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = {
        "selector": "feldera.dev/shard in (a,b)",
        "felderaRps": 20,
        "kubeRequestTimeout": 5,
        "externalStopGrace": 0,
    }
    config = runner.config_from_args(operator_args(values, monkeypatch))
    assert config.selector == "feldera.dev/shard in (a,b)"
    assert (config.feldera_rps, config.kube_request_timeout, config.external_stop_grace) == (
        20,
        5,
        0,
    )


def test_default_instance_and_its_secret_in_the_release_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = runner.config_from_args(operator_args(VALUE_SETS["namespaced"], monkeypatch))
    assert config.default_url == "http://feldera-api-server.feldera.svc:8080"
    assert config.default_api_key is not None
    key = config.default_api_key
    assert (key.namespace, key.name, key.key) == (NAMESPACE, "feldera-api-key", "token")
    assert config.namespaces == ("team-a", "team-b")


def test_replicas_compete_for_a_lease_named_after_the_release(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = runner.config_from_args(operator_args({"replicas": 3}, monkeypatch))
    election = config.leader_election
    assert election is not None
    assert (election.namespace, election.name) == (NAMESPACE, f"{RELEASE}-feldera-operator")
    assert election.identity == "fo-feldera-operator-abc12-xyz34"  # the pod's name
    assert election.lease_duration == 15
    one_replica = runner.config_from_args(
        operator_args({"leaderElection": {"enabled": True}}, monkeypatch)
    )
    assert one_replica.leader_election is not None


def test_metrics_off_serves_no_metrics_and_renders_no_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = VALUE_SETS["metrics-off"]
    # The operator serves metrics unless told port 0, so "off" must say so.
    assert runner.config_from_args(operator_args(values, monkeypatch)).metrics_port == 0
    objects = render(values)
    assert find(objects, "Service") == []
    assert "metrics" not in {p["name"] for p in container(objects)["ports"]}
    monitored = copy.deepcopy(VALUE_SETS["monitoring"])
    monitored["metrics"]["enabled"] = False
    assert find(render(monitored), "ServiceMonitor") == []


def test_metrics_service_and_service_monitor() -> None:
    objects = render(VALUE_SETS["monitoring"])
    service = one(objects, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


def test_network_policy_admits_probes_and_the_listed_scrapers() -> None:
    policy = one(render(VALUE_SETS["monitoring"]), "NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    health, metrics = spec["ingress"]
    assert health == {"ports": [{"port": "health", "protocol": "TCP"}]}
    assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
    assert spec["egress"] == VALUE_SETS["monitoring"]["networkPolicy"]["egress"]
    ingress_only = render({"networkPolicy": {"enabled": True}})
    assert one(ingress_only, "NetworkPolicy")["spec"]["policyTypes"] == ["Ingress"]
    assert find(render({}), "NetworkPolicy") == []


def test_pod_disruption_budget_only_with_several_replicas() -> None:
    assert find(render({}), "PodDisruptionBudget") == []
    assert find(render({"leaderElection": {"enabled": True}}), "PodDisruptionBudget") == []
    budget = one(render({"replicas": 3}), "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1


def test_a_single_unelected_replica_is_replaced_not_rolled() -> None:
    # Two pods without leader election would both act on Feldera during a rolling update.
    assert one(render({}), "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert one(render({"replicas": 3}), "Deployment")["spec"]["strategy"]["type"] == (
        "RollingUpdate"
    )


def test_restricted_pod_security(value_set: tuple[str, dict[str, Any]]) -> None:
    _, values = value_set
    objects = render(values)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    c = container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {v["name"]: v for v in pod["volumes"]}["tmp"]["emptyDir"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
    assert c["resources"]["requests"] and c["resources"]["limits"]


# ----------------------------------------------------------------------- values.schema.json

BAD_VALUES: dict[str, dict[str, Any]] = {
    "unknown top-level key": {"replica": 2},
    "unknown nested key": {"feldera": {"apiKey": "plaintext"}},
    "unknown secret-ref key": {"feldera": {"apiKeySecret": {"name": "k", "key": "a", "ns": "x"}}},
    "zero replicas": {"replicas": 0},
    "replicas as text": {"replicas": "3"},
    "log format": {"logFormat": "xml"},
    "namespace not a DNS label": {"watchNamespaces": ["Team_A"]},
    "duplicate namespaces": {"watchNamespaces": ["a", "a"]},
    "namespaces as a string": {"watchNamespaces": "a,b"},
    "url without scheme": {"feldera": {"url": "feldera:8080"}},
    "secret name": {"feldera": {"apiKeySecret": {"name": "Bad Name", "key": "apiKey"}}},
    "secret key": {"feldera": {"apiKeySecret": {"name": "k", "key": "a/b"}}},
    "zero period": {"period": 0},
    "zero request budget": {"felderaRps": 0},
    "negative external-stop grace": {"externalStopGrace": -1},
    "kube request timeout under the operator's floor": {"kubeRequestTimeout": 0.1},
    "selector as a map": {"selector": {"shard": "a"}},
    "metrics on the health port": {"metrics": {"port": 8080}},
    "metrics port out of range": {"metrics": {"port": 70000}},
    "scrape interval": {"metrics": {"serviceMonitor": {"interval": "often"}}},
    "short lease": {"leaderElection": {"leaseDuration": 1}},
    "pull policy": {"image": {"pullPolicy": "Sometimes"}},
    "digest without algorithm": {"image": {"digest": "ab" * 32}},
    "unknown probe": {"probes": {"startupp": {"periodSeconds": 1}}},
    "unknown probe field": {"probes": {"liveness": {"httpGet": {"path": "/"}}}},
    "zero probe period": {"probes": {"readiness": {"periodSeconds": 0}}},
    "liveness success threshold": {"probes": {"liveness": {"successThreshold": 2}}},
    "extra args as a string": {"extraArgs": "--verbose"},
    "extra arg not a flag": {"extraArgs": ["verbose"]},
    "env var without a name": {"extraEnv": [{"value": "x"}]},
    "volume mount without a path": {"extraVolumeMounts": [{"name": "x"}]},
    "spread constraint without a key": {
        "topologySpreadConstraints": [{"maxSkew": 1, "whenUnsatisfiable": "ScheduleAnyway"}]
    },
}


@pytest.mark.parametrize("values", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_schema_rejects_bad_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError, match="values don't meet the specifications of the schema"):
        render(values)


def test_schema_accepts_every_value_set_and_the_defaults(
    value_set: tuple[str, dict[str, Any]],
) -> None:
    assert render(value_set[1])


# Values shaped by Kubernetes, not by the chart: open objects, typed as arrays of objects (with
# the fields the chart itself relies on required), validated by the API server.
KUBERNETES_SHAPED = {
    "values.extraEnv[]",
    "values.extraVolumes[]",
    "values.extraVolumeMounts[]",
}


def test_schema_is_strict_everywhere_the_chart_owns_the_shape() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    open_objects: set[str] = set()

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            if path in KUBERNETES_SHAPED:
                open_objects.add(path)
            else:
                assert node.get("additionalProperties") is False, path
            for key, child in node["properties"].items():
                walk(child, f"{path}.{key}")
        if node.get("type") == "array" and isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(schema, "values")
    assert open_objects == KUBERNETES_SHAPED
    values_keys = set(yaml.safe_load((CHART_DIR / "values.yaml").read_text()))
    assert values_keys <= set(schema["properties"]), values_keys - set(schema["properties"])


def test_values_file_is_documented_in_the_readme() -> None:
    """Every value of values.yaml, down to the objects the chart owns, is in the README's table."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| value | default | meaning |", 1)[1].split("\n\n", 1)[0]
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())["properties"]
    missing = []
    for key, value in values.items():
        if isinstance(value, dict) and "properties" in schema[key]:
            names = [f"{key}.{sub}" for sub in value]
        else:
            names = [key]
        for name in names:
            leaf = name.rsplit(".", 1)[-1]
            if f"`{name}" not in table and f", `.{leaf}`" not in table:
                missing.append(name)
    assert not missing, f"values missing from the README's values table: {missing}"
