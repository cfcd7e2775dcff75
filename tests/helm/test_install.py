"""The rendered chart applies with kubectl, and the real operator, run with the chart's own flags
against the Kubernetes emulator, calls the API with exactly the verbs the chart's RBAC grants."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from feldera_sandbox.sandbox import Sandbox, is_ready, wait_for

from .conftest import VALUE_SETS, one, render
from .test_rbac import grants, named_grants, roles

API_KEY = "apikey:" + "0123456789abcdef" * 8
SQL = """
CREATE TABLE orders (id BIGINT) WITH ('connectors' = '[
  {"name": "live", "transport": {"name": "datagen", "config": {}}}]');
"""


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def secret(name: str, ns: str, key: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "stringData": {key: API_KEY},
    }


def apply(sb: Sandbox, objects: list[dict[str, Any]]) -> None:
    sb.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))


@pytest.fixture(scope="module")
def kubernetes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(tmp_path_factory.mktemp("helm-apply"))
    try:
        sb.start_kubernetes()
        sb.install_crds()
        yield sb
    finally:
        sb.stop()


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_chart_applies_with_kubectl(kubernetes: Sandbox, name: str) -> None:
    values = VALUE_SETS[name]
    release_ns = f"rel-{name}"
    objects = render(values, namespace=release_ns)
    # The Prometheus Operator's CRD is not installed here: kubectl would refuse a ServiceMonitor.
    applied = [o for o in objects if o["kind"] != "ServiceMonitor"]
    assert len(objects) - len(applied) == (1 if name == "monitoring" else 0)
    apply(kubernetes, [namespace(n) for n in (release_ns, *values.get("watchNamespaces", []))])
    apply(kubernetes, applied)
    for obj in applied:
        ns = obj["metadata"].get("namespace")
        got = kubernetes.kubectl_json(
            "get", obj["kind"].lower(), obj["metadata"]["name"], *(["-n", ns] if ns else [])
        )
        assert got["metadata"]["labels"]["app.kubernetes.io/instance"] == "fo"
    rendered_pod = one(applied, "Deployment")["spec"]["template"]["spec"]
    stored = kubernetes.kubectl_json("get", "deployment", "-n", release_ns, "fo-feldera-operator")
    stored_pod = stored["spec"]["template"]["spec"]
    for key, value in rendered_pod.items():
        assert stored_pod[key] == value, key


# ----------------------------------------------------------------------- RBAC, as really used


class Client:
    """HTTP to the emulator that remembers its own requests, so that only the operator's remain
    in the emulator's per-verb counts."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.sent: Counter[str] = Counter()

    def request(self, method: str, path: str, counter: str) -> Any:
        self.sent[counter] += 1
        req = urllib.request.Request(self.base + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def pipeline(self, ns: str, name: str) -> Any:
        path = f"/apis/feldera.dev/v1alpha1/namespaces/{ns}/felderapipelines/{name}"
        return self.request("GET", path, "get felderapipelines")

    def instance(self, ns: str, name: str) -> Any:
        path = f"/apis/feldera.dev/v1alpha1/namespaces/{ns}/felderainstances/{name}"
        return self.request("GET", path, "get felderainstances")

    def delete_pipeline(self, ns: str, name: str) -> Any:
        path = f"/apis/feldera.dev/v1alpha1/namespaces/{ns}/felderapipelines/{name}"
        return self.request("DELETE", path, "delete felderapipelines")

    def operator_counts(self) -> Counter[str]:
        with urllib.request.urlopen(self.base + "/_emulator/requests", timeout=10) as response:
            counts: Counter[str] = Counter(json.loads(response.read()))
        counts.subtract(self.sent)
        return +counts

    def reset(self) -> None:
        urllib.request.urlopen(
            urllib.request.Request(self.base + "/_emulator/requests", method="DELETE"), timeout=10
        ).close()
        self.sent.clear()


def granted_verbs(objects: list[dict[str, Any]]) -> set[str]:
    """ "verb resource" pairs the chart grants, in any scope (the emulator counts them so)."""
    out = set()
    for role in roles(objects):
        for (_, resource), verbs in grants(role).items():
            out |= {f"{verb} {resource}" for verb in verbs}
        for (_, resource, _), verbs in named_grants(role).items():
            out |= {f"{verb} {resource}" for verb in verbs}
    return out


def container_command(objects: list[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    (c,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    # The sandbox picks the ports: several operators and tests share this machine.
    args = [a for a in c["args"] if not a.startswith(("--liveness=", "--metrics-port="))]
    env = {v["name"]: v.get("value", "fo-feldera-operator-0") for v in c["env"]}
    return args, env


MODES = {
    "all namespaces": {"replicas": 2},
    "listed namespaces": {"replicas": 2, "watchNamespaces": ["team-a", "team-b"]},
}


@pytest.mark.e2e
@pytest.mark.parametrize("values", MODES.values(), ids=MODES.keys())
def test_operator_uses_exactly_the_rbac_the_chart_grants(
    tmp_path: Path, values: dict[str, Any]
) -> None:
    release_ns, ns = "feldera-system", "team-a"
    sb = Sandbox(tmp_path)
    try:
        sb.start_kubernetes()
        feldera_url = sb.start_feldera("--api-key", API_KEY)
        values = values | {
            "feldera": {"url": feldera_url, "apiKeySecret": {"name": "default-key", "key": "k"}},
            "leaderElection": {"leaseDuration": 3},
        }
        objects = render(values, namespace=release_ns)
        sb.install_crds()
        for pipeline in ("by-instance", "by-default"):
            sb.feldera(
                "PUT",
                f"/v0/pipelines/{pipeline}",
                {"name": pipeline, "program_code": SQL},
                api_key=API_KEY,
            )
        apply(sb, [namespace(release_ns), namespace(ns), namespace("team-b")])
        apply(
            sb,
            [
                secret("default-key", release_ns, "k"),
                # A FelderaInstance's Secret opts in; the default instance's needs not.
                secret("instance-key", ns, "apiKey", {"feldera.dev/credentials": "true"}),
                {
                    "apiVersion": "feldera.dev/v1alpha1",
                    "kind": "FelderaInstance",
                    "metadata": {"name": "local", "namespace": ns},
                    "spec": {"url": feldera_url, "apiKeySecretRef": {"name": "instance-key"}},
                },
                {
                    "apiVersion": "feldera.dev/v1alpha1",
                    "kind": "FelderaPipeline",
                    "metadata": {"name": "by-instance", "namespace": ns},
                    "spec": {"instanceRef": {"name": "local"}, "deletionPolicy": "Stop"},
                },
                {
                    "apiVersion": "feldera.dev/v1alpha1",
                    "kind": "FelderaPipeline",
                    "metadata": {"name": "by-default", "namespace": ns},
                    "spec": {},
                },
            ],
        )
        client = Client(sb.kube_url)
        client.reset()  # from here on, every request but the client's own is the operator's

        args, env = container_command(objects)
        sb.env.update(env)
        sb.start_operator(*args)
        wait_for(
            lambda: (
                all(is_ready(client.pipeline(ns, p)) for p in ("by-instance", "by-default"))
                and is_ready(client.instance(ns, "local"))
            ),
            timeout=30,
            what="both pipelines and the instance Ready",
        )
        # The finalizer of deletionPolicy Stop is on; deleting stops the pipeline, then lets go.
        assert client.pipeline(ns, "by-instance")["metadata"]["finalizers"]
        client.delete_pipeline(ns, "by-instance")
        wait_for(lambda: client.pipeline(ns, "by-instance") is None, timeout=30, what="deleted")
        # A renewal of the Lease (update) comes within one retry period of a 3 s lease.
        wait_for(
            lambda: client.operator_counts()["update leases"], timeout=10, what="lease renewed"
        )

        counts = client.operator_counts()
        used, granted = set(counts), granted_verbs(objects)
        assert used <= granted, f"called without a grant: {sorted(used - granted)} ({counts})"
        assert granted <= used, f"granted but never called: {sorted(granted - used)} ({counts})"
    finally:
        sb.stop()
