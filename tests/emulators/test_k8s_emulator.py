"""The Kubernetes API emulator against a real kubectl, a real Python client and raw HTTP.

The emulator runs in a background thread with its own event loop, so kubectl can be called as a
plain subprocess. Every kubectl call gets its own discovery cache directory under tmp_path.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from feldera_sandbox.k8s_emulator import k8s_patch
from feldera_sandbox.k8s_emulator.kubernetes import KubernetesEmulator

KUBECTL = str(Path(sys.executable).parent / "kubectl")
FIXTURES = Path(__file__).parent / "fixtures"
GROUP, VERSION, PLURAL = "emulator.feldera.dev", "v1", "testpipelines"
CRD_NAME = f"{PLURAL}.{GROUP}"
BASE = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"


@dataclass
class Reply:
    status: int
    body: Any
    headers: http.client.HTTPMessage


class Api:
    """A minimal HTTP client, so assertions see exactly what the server answered."""

    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlparse(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            data = (
                None
                if body is None
                else (body if isinstance(body, bytes) else json.dumps(body).encode())
            )
            sent = {"Content-Type": content_type, "Accept": "application/json", **(headers or {})}
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            raw = response.read()
            parsed = json.loads(raw) if raw.strip().startswith((b"{", b"[")) else raw.decode()
            return Reply(response.status, parsed, response.headers)
        finally:
            conn.close()

    def get(self, path: str) -> Any:
        reply = self.request("GET", path)
        assert reply.status == 200, reply.body
        return reply.body

    def create(self, path: str, obj: dict[str, Any]) -> Any:
        reply = self.request("POST", path, obj)
        assert reply.status == 201, reply.body
        return reply.body

    def merge(self, path: str, patch: dict[str, Any]) -> Reply:
        return self.request("PATCH", path, patch, "application/merge-patch+json")

    def watch(self, path: str, **params: str) -> list[dict[str, Any]]:
        """The events of a watch that the server ends by its timeoutSeconds."""
        query = urllib.parse.urlencode({"watch": "true", "timeoutSeconds": "1", **params})
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request("GET", f"{path}?{query}")
            response = conn.getresponse()
            assert response.status == 200, response.read()
            return [json.loads(line) for line in response.read().splitlines() if line.strip()]
        finally:
            conn.close()


@dataclass
class Cluster:
    emulator: KubernetesEmulator
    url: str
    kubeconfig: Path
    tmp: Path
    api: Api
    loop: asyncio.AbstractEventLoop

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        cmd = [
            KUBECTL,
            "--kubeconfig",
            str(self.kubeconfig),
            "--cache-dir",
            str(self.tmp / "kube-cache"),
            *args,
        ]
        result = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the emulator's loop thread (for in-process store access)."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)


def start_cluster(tmp_path: Path, **options: Any) -> tuple[Cluster, threading.Thread]:
    emulator = KubernetesEmulator(**options)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    url = asyncio.run_coroutine_threadsafe(emulator.start(), loop).result(10)
    kubeconfig = tmp_path / "kubeconfig"
    KubernetesEmulator.write_kubeconfig(str(kubeconfig), url)
    return Cluster(emulator, url, kubeconfig, tmp_path, Api(url), loop), thread


def stop_cluster(cluster: Cluster, thread: threading.Thread) -> None:
    asyncio.run_coroutine_threadsafe(cluster.emulator.stop(), cluster.loop).result(10)
    cluster.loop.call_soon_threadsafe(cluster.loop.stop)
    thread.join(10)
    cluster.loop.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running, thread = start_cluster(tmp_path)
    try:
        yield running
    finally:
        stop_cluster(running, thread)


def install_crd(cluster: Cluster) -> None:
    crd = yaml.safe_load((FIXTURES / "crd.yaml").read_text())
    cluster.api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)


def pipeline(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TestPipeline",
        "metadata": {"name": name},
        "spec": {"pipelineName": name.replace("-", "_"), **spec},
    }


@pytest.fixture
def crd_cluster(cluster: Cluster) -> Cluster:
    install_crd(cluster)
    return cluster


def wait_until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- patch semantics and selectors, without a server ------------------------------------------


def test_merge_patch_merges_maps_deletes_nulls_and_replaces_lists() -> None:
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2], "k": "v"}
    patched = k8s_patch.merge_patch(target, {"a": {"b": None, "d": 3}, "l": [3], "k": None})
    assert patched == {"a": {"c": 2, "d": 3}, "l": [3]}
    assert target == {"a": {"b": 1, "c": 2}, "l": [1, 2], "k": "v"}  # the stored object is intact


def test_json_patch_operations_and_failed_test() -> None:
    doc = {"metadata": {"resourceVersion": "5", "finalizers": ["a"]}, "spec": {"x": 1}}
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "5"},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "b"},
        {"op": "replace", "path": "/spec/x", "value": 2},
        {"op": "copy", "from": "/spec/x", "path": "/spec/y"},
        {"op": "move", "from": "/spec/y", "path": "/spec/z"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
        {"op": "add", "path": "/metadata/annotations", "value": {"a~b/c": "1"}},
        {"op": "test", "path": "/metadata/annotations/a~0b~1c", "value": "1"},
    ]
    assert k8s_patch.json_patch(doc, ops) == {
        "metadata": {"resourceVersion": "5", "finalizers": ["b"], "annotations": {"a~b/c": "1"}},
        "spec": {"x": 2, "z": 2},
    }
    with pytest.raises(k8s_patch.PatchError) as failed:
        k8s_patch.json_patch(
            doc, [{"op": "test", "path": "/metadata/resourceVersion", "value": "4"}]
        )
    assert failed.value.test_failed
    with pytest.raises(k8s_patch.PatchError) as missing:
        k8s_patch.json_patch(doc, [{"op": "remove", "path": "/spec/nope"}])
    assert not missing.value.test_failed


def test_strategic_merge_patch_merges_containers_by_name_and_honours_directives() -> None:
    live = {
        "spec": {
            "containers": [
                {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
                {"name": "b", "image": "b:1"},
            ],
            "finalizers": ["f1"],
        }
    }
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "a", "image": "a:2"}, {"name": "b", "$patch": "delete"}],
            "$deleteFromPrimitiveList/finalizers": ["f1"],
        }
    }
    assert k8s_patch.strategic_merge_patch(live, patch) == {
        "spec": {
            "containers": [{"name": "a", "image": "a:2", "env": [{"name": "X", "value": "1"}]}],
            "finalizers": [],
        }
    }


def test_apply_merge_merges_list_maps_by_key_and_sets_by_value() -> None:
    def keys(path: k8s_patch.SchemaPath) -> list[str] | None:
        return ["table", "connector"] if path == ("spec", "inputs") else None

    def kinds(path: k8s_patch.SchemaPath) -> str | None:
        return "set" if path == ("metadata", "finalizers") else None

    live = {
        "metadata": {"finalizers": ["a"]},
        "spec": {
            "inputs": [
                {"table": "t", "connector": "x", "paused": True},
                {"table": "t", "connector": "y", "paused": True},
            ],
            "other": [1, 2],
        },
    }
    applied = {
        "metadata": {"finalizers": ["b"]},
        "spec": {"inputs": [{"table": "t", "connector": "y", "paused": False}], "other": [3]},
    }
    assert k8s_patch.apply_merge(live, applied, keys, kinds) == {
        "metadata": {"finalizers": ["a", "b"]},
        "spec": {
            "inputs": [
                {"table": "t", "connector": "x", "paused": True},
                {"table": "t", "connector": "y", "paused": False},
            ],
            "other": [3],
        },
    }


def test_server_side_apply_owns_fields_conflicts_and_removes_what_is_no_longer_applied() -> None:
    def keys(path: k8s_patch.SchemaPath) -> list[str] | None:
        return ["connector"] if path == ("spec", "inputs") else None

    def kinds(path: k8s_patch.SchemaPath) -> str | None:
        return None

    def entry(connector: str, paused: bool) -> dict[str, Any]:
        return {"connector": connector, "paused": paused}

    def apply(
        live: Any, inputs: list[dict[str, Any]], manager: str, owners: Any, force: bool = False
    ) -> Any:
        config = {"metadata": {"name": "p"}, "spec": {"inputs": inputs}}
        return k8s_patch.server_side_apply(
            live, config, manager, owners, force=force, list_map_keys=keys, list_type=kinds
        )

    live, owners = apply({}, [entry("a", True), entry("b", True)], "git", {})
    # Another manager takes one entry's field: a conflict unless forced.
    with pytest.raises(k8s_patch.ApplyConflict) as conflict:
        apply(live, [entry("a", False)], "tool", owners)
    assert conflict.value.conflicts == [("git", '.spec.inputs[connector="a"].paused')]
    assert str(conflict.value) == (
        'Apply failed with 1 conflict: conflict with "git": .spec.inputs[connector="a"].paused'
    )
    live, owners = apply(live, [entry("a", False)], "tool", owners, force=True)
    assert live["spec"]["inputs"] == [entry("a", False), entry("b", True)]
    # The same value is no conflict; git stops applying b, which nobody else applies: it goes.
    live, owners = apply(live, [entry("a", False)], "git", owners)
    assert live["spec"]["inputs"] == [entry("a", False)]
    # Both now apply a's paused (same value: shared). tool lets go: git still holds it.
    live, owners = apply(live, [], "tool", owners)
    assert live["spec"]["inputs"] == [entry("a", False)]
    # git takes "a" back without a paused value: the field nobody applies any more goes.
    live, owners = apply(live, [{"connector": "a"}], "git", owners)
    assert live["spec"]["inputs"] == [{"connector": "a"}]


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("team=web", True),
        ("team==web", True),
        ("team!=web", False),
        ("team!=db", True),
        ("team in (db, web)", True),
        ("team notin (web)", False),
        ("tier", False),
        ("!tier", True),
        ("team,!tier", True),
        ("team=web,tier in (1)", False),
        ("size>3", True),
        ("size<3", False),
    ],
)
def test_label_selectors(selector: str, matches: bool) -> None:
    labels = {"team": "web", "size": "5"}
    requirements = k8s_patch.parse_label_selector(selector)
    assert all(r.matches(labels) for r in requirements) is matches


def test_bad_label_selector_is_refused() -> None:
    with pytest.raises(k8s_patch.SelectorError):
        k8s_patch.parse_label_selector("team in web")


# --- kubectl ---------------------------------------------------------------------------------


def test_kubectl_applies_the_crd_and_waits_for_established(cluster: Cluster) -> None:
    out = cluster.kubectl("apply", "-f", str(FIXTURES / "crd.yaml")).stdout
    assert f"customresourcedefinition.apiextensions.k8s.io/{CRD_NAME} created" in out
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=20s")
    resources = cluster.kubectl("api-resources", f"--api-group={GROUP}").stdout
    assert "testpipelines" in resources and "tpl" in resources and "TestPipeline" in resources


def test_kubectl_applies_resources_with_default_validation_and_shows_printer_columns(
    crd_cluster: Cluster,
) -> None:
    out = crd_cluster.kubectl("apply", "-f", str(FIXTURES / "pipelines.yaml")).stdout
    assert "testpipeline.emulator.feldera.dev/orders created" in out
    table = crd_cluster.kubectl("get", "tpl").stdout.splitlines()
    assert table[0].split() == ["NAME", "PIPELINE", "PAUSED", "READY", "AGE"]
    assert table[2].split()[:3] == ["orders", "Orders_Main", "false"]
    # Re-applying unchanged manifests writes nothing: kubectl sends an empty patch for clicks,
    # and the list patch it sends for orders (whose defaults the server filled in) is a no-op.
    rv = crd_cluster.api.get(f"{BASE}/orders")["metadata"]["resourceVersion"]
    again = crd_cluster.kubectl("apply", "-f", str(FIXTURES / "pipelines.yaml")).stdout
    assert "testpipeline.emulator.feldera.dev/clicks unchanged" in again
    assert crd_cluster.api.get(f"{BASE}/orders")["metadata"]["resourceVersion"] == rv
    # Defaults from the schema were filled in.
    stored = crd_cluster.api.get(f"{BASE}/orders")
    assert stored["spec"]["inputs"][1]["paused"] is False


def test_kubectl_get_shows_the_ready_condition_column(crd_cluster: Cluster) -> None:
    crd_cluster.api.create(BASE, pipeline("ready"))
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "Converged",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    reply = crd_cluster.api.merge(f"{BASE}/ready/status", {"status": {"conditions": [condition]}})
    assert reply.status == 200, reply.body
    row = crd_cluster.kubectl("get", "tpl", "ready", "--no-headers").stdout.split()
    assert row[:4] == ["ready", "ready", "false", "True"]


def test_kubectl_explain_reads_the_crd_schema(crd_cluster: Cluster) -> None:
    out = crd_cluster.kubectl("explain", "testpipeline.spec").stdout
    assert "pipelineName" in out and "inputs" in out


def test_kubectl_applies_the_project_crds_and_explains_them(cluster: Cluster) -> None:
    crds = Path(__file__).parents[2] / "crds"
    if not crds.is_dir():
        pytest.skip("the project's CRDs are not generated yet")
    cluster.kubectl("apply", "-f", str(crds))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=20s")
    out = cluster.kubectl("explain", "felderapipeline.spec").stdout
    assert "KIND:       FelderaPipeline" in out and "inputs" in out


def test_kubectl_wait_for_ready_condition_set_through_status(crd_cluster: Cluster) -> None:
    crd_cluster.api.create(BASE, pipeline("waits"))
    waiter = subprocess.Popen(
        [
            KUBECTL,
            "--kubeconfig",
            str(crd_cluster.kubeconfig),
            "--cache-dir",
            str(crd_cluster.tmp / "wait-cache"),
            "wait",
            "--for=condition=Ready",
            "tpl/waits",
            "--timeout=30s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Only once kubectl is watching does the condition appear, so the watch must deliver it.
        wait_until(
            lambda: crd_cluster.emulator.request_counts().get("watch testpipelines", 0) > 0,
            what="kubectl to watch",
        )
        condition = {
            "type": "Ready",
            "status": "True",
            "reason": "Converged",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
        reply = crd_cluster.api.merge(
            f"{BASE}/waits/status", {"status": {"conditions": [condition]}}
        )
        assert reply.status == 200, reply.body
        out, err = waiter.communicate(timeout=30)
    finally:
        waiter.kill()
    assert waiter.returncode == 0, err
    assert "condition met" in out


def test_kubectl_wait_for_jsonpath(crd_cluster: Cluster) -> None:
    crd_cluster.api.create(BASE, pipeline("jp", paused=True))
    out = crd_cluster.kubectl(
        "wait", "--for=jsonpath={.spec.paused}=true", "tpl/jp", "--timeout=20s"
    ).stdout
    assert "condition met" in out


def test_kubectl_patch_merge_changes_spec_and_generation(crd_cluster: Cluster) -> None:
    crd_cluster.api.create(BASE, pipeline("patched"))
    crd_cluster.kubectl(
        "patch", "tpl", "patched", "--type", "merge", "-p", '{"spec":{"paused":true}}'
    )
    stored = crd_cluster.api.get(f"{BASE}/patched")
    assert stored["spec"]["paused"] is True
    assert stored["metadata"]["generation"] == 2


def test_server_side_apply_of_one_list_entry_keeps_the_other_entries(
    crd_cluster: Cluster,
) -> None:
    crd_cluster.kubectl("apply", "--server-side", "-f", str(FIXTURES / "pipelines.yaml"))
    entry = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TestPipeline",
        "metadata": {"name": "orders"},
        "spec": {
            "pipelineName": "Orders_Main",
            "inputs": [{"table": "orders", "connector": "live", "paused": False}],
        },
    }
    apply_entry = ["apply", "--server-side", "--field-manager=connector-owner", "-f", "-"]
    # kubectl's manager applied live's paused state: taking it over is a conflict, unless forced.
    refused = crd_cluster.kubectl(*apply_entry, stdin=json.dumps(entry), check=False)
    assert refused.returncode != 0
    assert 'conflict with "kubectl"' in refused.stderr
    assert '.spec.inputs[connector="live",table="orders"].paused' in refused.stderr
    crd_cluster.kubectl(*apply_entry, "--force-conflicts", stdin=json.dumps(entry))
    inputs = crd_cluster.api.get(f"{BASE}/orders")["spec"]["inputs"]
    assert {(i["connector"], i["paused"]) for i in inputs} == {("live", False), ("backfill", False)}
    # An entry only one manager applies goes when that manager stops applying it.
    extra = json.loads(json.dumps(entry))
    extra["spec"]["inputs"] = [{"table": "orders", "connector": "extra", "paused": True}]
    crd_cluster.kubectl(
        "apply", "--server-side", "--field-manager=tool", "-f", "-", stdin=json.dumps(extra)
    )
    extra["spec"]["inputs"] = []
    crd_cluster.kubectl(
        "apply", "--server-side", "--field-manager=tool", "-f", "-", stdin=json.dumps(extra)
    )
    inputs = crd_cluster.api.get(f"{BASE}/orders")["spec"]["inputs"]
    assert sorted(i["connector"] for i in inputs) == ["backfill", "live"]


def test_kubectl_delete_wait_returns_once_the_finalizer_is_removed(crd_cluster: Cluster) -> None:
    obj = pipeline("final")
    obj["metadata"]["finalizers"] = ["example.com/hold"]
    crd_cluster.api.create(BASE, obj)
    deleter = subprocess.Popen(
        [
            KUBECTL,
            "--kubeconfig",
            str(crd_cluster.kubeconfig),
            "--cache-dir",
            str(crd_cluster.tmp / "delete-cache"),
            "delete",
            "tpl",
            "final",
            "--wait",
            "--timeout=30s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: "deletionTimestamp" in crd_cluster.api.get(f"{BASE}/final")["metadata"],
            what="deletionTimestamp",
        )
        assert deleter.poll() is None  # still waiting: the finalizer holds the object
        reply = crd_cluster.api.merge(f"{BASE}/final", {"metadata": {"finalizers": None}})
        assert reply.status == 200, reply.body
        _, err = deleter.communicate(timeout=30)
    finally:
        deleter.kill()
    assert deleter.returncode == 0, err
    assert crd_cluster.api.request("GET", f"{BASE}/final").status == 404


def test_kubectl_refuses_an_unknown_field_through_strict_server_validation(
    crd_cluster: Cluster,
) -> None:
    obj = pipeline("strict")
    obj["spec"]["colour"] = "red"
    result = crd_cluster.kubectl("apply", "-f", "-", stdin=json.dumps(obj), check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.colour"' in result.stderr


def test_kubectl_refuses_a_schema_invalid_resource_naming_the_field(crd_cluster: Cluster) -> None:
    obj = pipeline("invalid")
    obj["spec"]["inputs"] = [{"table": "bad table", "connector": "c"}]
    result = crd_cluster.kubectl("apply", "-f", "-", stdin=json.dumps(obj), check=False)
    assert result.returncode != 0
    assert "spec.inputs[0].table" in result.stderr


def test_kubectl_applies_built_in_kinds_and_reapplies_changes(cluster: Cluster) -> None:
    manifest: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]}
                    ]
                },
            },
        },
    }
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    out = cluster.kubectl("apply", "-f", "-", stdin=json.dumps(manifest)).stdout
    assert "deployment.apps/web configured" in out
    stored = cluster.api.get("/apis/apps/v1/namespaces/default/deployments/web")
    assert stored["spec"]["template"]["spec"]["containers"] == [
        {"name": "web", "image": "nginx:2", "ports": [{"containerPort": 80}]}
    ]
    assert stored["metadata"]["generation"] == 2


def test_kubectl_applies_chart_like_built_in_manifests_both_ways_and_deletes_them(
    cluster: Cluster,
) -> None:
    manifests = str(FIXTURES / "builtins.yaml")
    created = cluster.kubectl("apply", "-f", manifests).stdout
    assert "clusterrole.rbac.authorization.k8s.io/feldera-operator:role created" in created
    changed = (FIXTURES / "builtins.yaml").read_text().replace("port: 8080", "port: 8081")
    out = cluster.kubectl("apply", "-f", "-", stdin=changed).stdout
    assert "service/op configured" in out
    ports = cluster.api.get("/api/v1/namespaces/default/services/op")["spec"]["ports"]
    assert ports == [{"name": "http", "port": 8081, "targetPort": 8080}]
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", manifests)
    deleted = cluster.kubectl("delete", "-f", manifests, "--wait").stdout
    assert deleted.count("deleted") == 9


def test_a_kind_without_its_crd_is_refused_as_kubectl_reports_it_then_served_once_installed(
    cluster: Cluster,
) -> None:
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "op"},
        "spec": {"endpoints": [{"port": "metrics"}], "selector": {"matchLabels": {"a": "b"}}},
    }
    refused = cluster.kubectl("apply", "-f", "-", stdin=json.dumps(monitor), check=False)
    assert refused.returncode != 0
    assert 'no matches for kind "ServiceMonitor" in version "monitoring.coreos.com/v1"' in (
        refused.stderr
    )
    cluster.kubectl("apply", "-f", str(FIXTURES / "servicemonitor-crd.yaml"))
    out = cluster.kubectl("apply", "-f", "-", stdin=json.dumps(monitor)).stdout
    assert "servicemonitor.monitoring.coreos.com/op created" in out


def test_deletecollection_deletes_what_the_selector_selects(crd_cluster: Cluster) -> None:
    for name, team in [("d1", "web"), ("d2", "web"), ("d3", "db")]:
        obj = pipeline(name)
        obj["metadata"]["labels"] = {"team": team}
        crd_cluster.api.create(BASE, obj)
    reply = crd_cluster.api.request("DELETE", f"{BASE}?labelSelector=team%3Dweb")
    assert reply.status == 200, reply.body
    assert [i["metadata"]["name"] for i in crd_cluster.api.get(BASE)["items"]] == ["d3"]
    counts = crd_cluster.emulator.request_counts()
    assert counts["deletecollection testpipelines"] == 1


# --- API semantics -----------------------------------------------------------------------------


def test_server_fills_metadata(crd_cluster: Cluster) -> None:
    obj = pipeline("ignored")
    obj["metadata"] = {"generateName": "gen-"}
    created = crd_cluster.api.create(BASE, obj)
    meta = created["metadata"]
    assert meta["name"].startswith("gen-") and len(meta["name"]) == len("gen-") + 5
    assert meta["namespace"] == "default"
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    other = crd_cluster.api.create(BASE, pipeline("second"))
    assert int(other["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    # The CRD's status says it is served.
    crd = crd_cluster.api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}")
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert crd["status"]["acceptedNames"]["kind"] == "TestPipeline"


def test_not_found_and_already_exists_answer_status_bodies(crd_cluster: Cluster) -> None:
    missing = crd_cluster.api.request("GET", f"{BASE}/nope")
    assert missing.status == 404
    assert missing.body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'testpipelines.emulator.feldera.dev "nope" not found',
        "reason": "NotFound",
        "details": {"name": "nope", "group": GROUP, "kind": "testpipelines"},
        "code": 404,
    }
    crd_cluster.api.create(BASE, pipeline("twice"))
    again = crd_cluster.api.request("POST", BASE, pipeline("twice"))
    assert again.status == 409
    assert again.body["reason"] == "AlreadyExists"
    assert again.body["message"] == 'testpipelines.emulator.feldera.dev "twice" already exists'


def test_schema_invalid_resource_is_refused_with_422_naming_the_field(
    crd_cluster: Cluster,
) -> None:
    obj = pipeline("bad")
    obj["spec"]["inputs"] = [{"table": "not a name", "connector": "c"}]
    reply = crd_cluster.api.request("POST", BASE, obj)
    assert reply.status == 422, reply.body
    assert reply.body["reason"] == "Invalid"
    assert reply.body["message"].startswith(
        'TestPipeline.emulator.feldera.dev "bad" is invalid: spec.inputs[0].table: '
    )
    assert [c["field"] for c in reply.body["details"]["causes"]] == ["spec.inputs[0].table"]
    assert reply.body["details"]["kind"] == "TestPipeline"


def test_status_is_validated_too(crd_cluster: Cluster) -> None:
    crd_cluster.api.create(BASE, pipeline("st"))
    reply = crd_cluster.api.merge(f"{BASE}/st/status", {"status": {"phase": "Sideways"}})
    assert reply.status == 422, reply.body
    assert reply.body["details"]["causes"][0]["field"] == "status.phase"


def test_transition_rule_keeps_pipeline_name_immutable(crd_cluster: Cluster) -> None:
    crd_cluster.api.create(BASE, pipeline("immutable"))
    reply = crd_cluster.api.merge(f"{BASE}/immutable", {"spec": {"pipelineName": "other"}})
    assert reply.status == 422, reply.body
    assert "pipelineName is immutable" in reply.body["message"]


def test_unknown_fields_strict_refuses_warn_warns_ignore_prunes(crd_cluster: Cluster) -> None:
    obj = pipeline("unknown")
    obj["spec"]["colour"] = "red"
    strict = crd_cluster.api.request("POST", f"{BASE}?fieldValidation=Strict", obj)
    assert strict.status == 400, strict.body
    assert strict.body["reason"] == "BadRequest"
    assert 'unknown field "spec.colour"' in strict.body["message"]
    warned = crd_cluster.api.request("POST", f"{BASE}?fieldValidation=Warn", obj)
    assert warned.status == 201, warned.body
    assert 'unknown field \\"spec.colour\\"' in (warned.headers.get("Warning") or "")
    assert "colour" not in warned.body["spec"]
    obj["metadata"]["name"] = "ignored"
    ignored = crd_cluster.api.request("POST", f"{BASE}?fieldValidation=Ignore", obj)
    assert ignored.status == 201 and ignored.headers.get("Warning") is None
    assert "colour" not in ignored.body["spec"]


def test_stale_resource_version_gets_409(crd_cluster: Cluster) -> None:
    first = crd_cluster.api.create(BASE, pipeline("stale"))
    assert crd_cluster.api.merge(f"{BASE}/stale", {"spec": {"paused": True}}).status == 200
    stale = dict(first, spec={**first["spec"], "paused": False})
    put = crd_cluster.api.request("PUT", f"{BASE}/stale", stale)
    assert put.status == 409 and put.body["reason"] == "Conflict", put.body
    assert put.body["message"].startswith(
        'Operation cannot be fulfilled on testpipelines.emulator.feldera.dev "stale": '
    )
    rv = first["metadata"]["resourceVersion"]
    patch = crd_cluster.api.merge(f"{BASE}/stale", {"metadata": {"resourceVersion": rv}})
    assert patch.status == 409
    status = crd_cluster.api.request("PUT", f"{BASE}/stale/status", stale)
    assert status.status == 409


def test_json_patch_test_failure_gets_422_and_success_applies(crd_cluster: Cluster) -> None:
    created = crd_cluster.api.create(BASE, pipeline("jsonpatch"))
    rv = created["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x.dev/f"]},
    ]
    ok = crd_cluster.api.request("PATCH", f"{BASE}/jsonpatch", ops, "application/json-patch+json")
    assert ok.status == 200 and ok.body["metadata"]["finalizers"] == ["x.dev/f"]
    failed = crd_cluster.api.request(
        "PATCH", f"{BASE}/jsonpatch", ops, "application/json-patch+json"
    )
    assert failed.status == 422, failed.body


def test_strategic_merge_patch_is_refused_for_custom_resources(crd_cluster: Cluster) -> None:
    crd_cluster.api.create(BASE, pipeline("smp"))
    reply = crd_cluster.api.request(
        "PATCH", f"{BASE}/smp", {"spec": {"paused": True}}, "application/strategic-merge-patch+json"
    )
    assert reply.status == 415 and reply.body["reason"] == "UnsupportedMediaType"


def test_generation_moves_on_spec_changes_only(crd_cluster: Cluster) -> None:
    crd_cluster.api.create(BASE, pipeline("gen"))

    def generation() -> int:
        return int(crd_cluster.api.get(f"{BASE}/gen")["metadata"]["generation"])

    crd_cluster.api.merge(f"{BASE}/gen", {"metadata": {"labels": {"a": "b"}}})
    assert generation() == 1
    crd_cluster.api.merge(f"{BASE}/gen/status", {"status": {"phase": "Created"}})
    assert generation() == 1
    crd_cluster.api.merge(f"{BASE}/gen", {"spec": {"paused": True}})
    assert generation() == 2
    # A write that changes nothing keeps the resourceVersion too.
    before = crd_cluster.api.get(f"{BASE}/gen")["metadata"]["resourceVersion"]
    crd_cluster.api.merge(f"{BASE}/gen", {"spec": {"paused": True}})
    assert crd_cluster.api.get(f"{BASE}/gen")["metadata"]["resourceVersion"] == before


def test_status_and_spec_are_written_only_through_their_own_endpoints(
    crd_cluster: Cluster,
) -> None:
    obj = pipeline("split")
    obj["status"] = {"phase": "Created"}
    created = crd_cluster.api.create(BASE, obj)
    assert "status" not in created  # status is dropped on create
    main = crd_cluster.api.merge(
        f"{BASE}/split", {"spec": {"paused": True}, "status": {"phase": "Updated"}}
    )
    assert main.body["spec"]["paused"] is True and "status" not in main.body
    status = crd_cluster.api.merge(
        f"{BASE}/split/status", {"spec": {"paused": False}, "status": {"phase": "Updated"}}
    )
    assert status.body["spec"]["paused"] is True
    assert status.body["status"] == {"phase": "Updated"}


def test_label_and_field_selectors_filter_lists(crd_cluster: Cluster) -> None:
    for name, labels in [("a", {"team": "web", "tier": "1"}), ("b", {"team": "db"}), ("c", {})]:
        obj = pipeline(name)
        obj["metadata"]["labels"] = labels
        crd_cluster.api.create(BASE, obj)

    def names(query: str) -> list[str]:
        items = crd_cluster.api.get(f"{BASE}?{query}")["items"]
        return [i["metadata"]["name"] for i in items]

    q = urllib.parse.quote
    assert names("labelSelector=" + q("team=web")) == ["a"]
    assert names("labelSelector=" + q("team==web")) == ["a"]
    assert names("labelSelector=" + q("team!=web")) == ["b", "c"]
    assert names("labelSelector=" + q("team in (web,db)")) == ["a", "b"]
    assert names("labelSelector=" + q("team notin (web)")) == ["b", "c"]
    assert names("labelSelector=" + q("tier")) == ["a"]
    assert names("labelSelector=" + q("!team")) == ["c"]
    assert names("fieldSelector=" + q("metadata.name=b")) == ["b"]
    assert names("fieldSelector=" + q("metadata.namespace!=default")) == []
    listed = crd_cluster.api.get(f"/apis/{GROUP}/{VERSION}/{PLURAL}")
    assert listed["kind"] == "TestPipelineList" and listed["apiVersion"] == f"{GROUP}/{VERSION}"
    assert int(listed["metadata"]["resourceVersion"]) > 0
    assert len(listed["items"]) == 3
    bad = crd_cluster.api.request("GET", f"{BASE}?fieldSelector=" + q("spec.paused=true"))
    assert bad.status == 400


def test_watch_resumes_from_a_resource_version(crd_cluster: Cluster) -> None:
    first = crd_cluster.api.create(BASE, pipeline("w1"))
    crd_cluster.api.create(BASE, pipeline("w2"))
    crd_cluster.api.merge(f"{BASE}/w1", {"spec": {"paused": True}})
    crd_cluster.api.request("DELETE", f"{BASE}/w2")
    events = crd_cluster.api.watch(BASE, resourceVersion=first["metadata"]["resourceVersion"])
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "w2"),
        ("MODIFIED", "w1"),
        ("DELETED", "w2"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs)
    # Without a resourceVersion a watch starts with the current objects.
    fresh = crd_cluster.api.watch(BASE)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in fresh] == [("ADDED", "w1")]
    # A label selector turns an object leaving the selection into DELETED.
    crd_cluster.api.merge(f"{BASE}/w1", {"metadata": {"labels": {"team": "web"}}})
    rv = crd_cluster.api.get(f"{BASE}/w1")["metadata"]["resourceVersion"]
    crd_cluster.api.merge(f"{BASE}/w1", {"metadata": {"labels": {"team": "db"}}})
    moved = crd_cluster.api.watch(BASE, resourceVersion=rv, labelSelector="team=web")
    assert [e["type"] for e in moved] == ["DELETED"]


def test_watch_from_a_too_old_resource_version_gets_410(tmp_path: Path) -> None:
    running, thread = start_cluster(tmp_path, history_size=3)
    try:
        install_crd(running)
        first = running.api.create(BASE, pipeline("old"))
        for paused in (True, False, True, False):
            running.api.merge(f"{BASE}/old", {"spec": {"paused": paused}})
        events = running.api.watch(BASE, resourceVersion=first["metadata"]["resourceVersion"])
        assert len(events) == 1 and events[0]["type"] == "ERROR"
        status = events[0]["object"]
        assert status["code"] == 410 and status["reason"] == "Expired"
        assert status["message"].startswith("too old resource version")
    finally:
        stop_cluster(running, thread)


def test_send_initial_events_ends_with_the_initial_events_end_bookmark(
    crd_cluster: Cluster,
) -> None:
    crd_cluster.api.create(BASE, pipeline("i1"))
    crd_cluster.api.create(BASE, pipeline("i2"))
    events = crd_cluster.api.watch(
        BASE,
        sendInitialEvents="true",
        resourceVersionMatch="NotOlderThan",
        allowWatchBookmarks="true",
    )
    assert [e["type"] for e in events[:3]] == ["ADDED", "ADDED", "BOOKMARK"]
    bookmark = events[2]["object"]
    assert bookmark["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(bookmark["metadata"]["resourceVersion"]) >= int(
        events[1]["object"]["metadata"]["resourceVersion"]
    )


def test_idle_watches_get_periodic_bookmarks(tmp_path: Path) -> None:
    running, thread = start_cluster(tmp_path, bookmark_interval=0.2)
    try:
        events = running.api.watch(
            "/api/v1/namespaces/default/configmaps",
            allowWatchBookmarks="true",
            resourceVersion="1",
        )
        assert events and {e["type"] for e in events} == {"BOOKMARK"}
        assert events[-1]["object"]["kind"] == "ConfigMap"
        assert int(events[-1]["object"]["metadata"]["resourceVersion"]) >= 1
    finally:
        stop_cluster(running, thread)


def test_deleting_the_crd_removes_its_objects_and_its_api(crd_cluster: Cluster) -> None:
    crd_cluster.api.create(BASE, pipeline("gone"))
    reply = crd_cluster.api.request(
        "DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"
    )
    assert reply.status == 200, reply.body
    assert crd_cluster.api.request("GET", BASE).status == 404
    assert GROUP not in json.dumps(crd_cluster.api.get("/apis"))
    install_crd(crd_cluster)
    assert crd_cluster.api.get(BASE)["items"] == []


def test_crd_updates_are_served_at_once_with_every_served_version(crd_cluster: Cluster) -> None:
    crd_cluster.api.create(BASE, pipeline("versions"))
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"
    crd = crd_cluster.api.get(path)
    beta = json.loads(json.dumps(crd["spec"]["versions"][0]))
    beta.update(name="v2beta1", storage=False)
    crd["spec"]["versions"].append(beta)
    reply = crd_cluster.api.request("PUT", path, crd)
    assert reply.status == 200, reply.body
    assert reply.body["metadata"]["generation"] == 2
    group = crd_cluster.api.get(f"/apis/{GROUP}")
    assert group["preferredVersion"]["version"] == "v1"
    assert [v["version"] for v in group["versions"]] == ["v1", "v2beta1"]
    # Objects are served in every version (conversion None relabels them).
    beta_path = f"/apis/{GROUP}/v2beta1/namespaces/default/{PLURAL}/versions"
    assert crd_cluster.api.get(beta_path)["apiVersion"] == f"{GROUP}/v2beta1"
    listed = crd_cluster.kubectl("get", f"{PLURAL}.v2beta1.{GROUP}", "-o", "name").stdout
    assert listed.strip() == f"testpipeline.{GROUP}/versions"


def test_dry_run_changes_nothing(crd_cluster: Cluster) -> None:
    created = crd_cluster.api.request("POST", f"{BASE}?dryRun=All", pipeline("dry"))
    assert created.status == 201 and created.body["metadata"]["name"] == "dry"
    assert crd_cluster.api.request("GET", f"{BASE}/dry").status == 404
    crd_cluster.api.create(BASE, pipeline("wet"))
    patched = crd_cluster.api.request(
        "PATCH",
        f"{BASE}/wet?dryRun=All",
        {"spec": {"paused": True}},
        "application/merge-patch+json",
    )
    assert patched.status == 200 and patched.body["spec"]["paused"] is True
    assert crd_cluster.api.get(f"{BASE}/wet")["spec"]["paused"] is False
    assert crd_cluster.api.request("DELETE", f"{BASE}/wet?dryRun=All").status == 200
    assert crd_cluster.api.request("GET", f"{BASE}/wet").status == 200


def test_non_structural_crd_is_refused(cluster: Cluster) -> None:
    crd = yaml.safe_load((FIXTURES / "crd.yaml").read_text())
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].pop("type")
    reply = cluster.api.request(
        "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd
    )
    assert reply.status == 422, reply.body
    assert reply.body["details"]["kind"] == "CustomResourceDefinition"


def test_discovery_lists_groups_and_resources(crd_cluster: Cluster) -> None:
    groups = {g["name"] for g in crd_cluster.api.get("/apis")["groups"]}
    assert {"apiextensions.k8s.io", "events.k8s.io", "coordination.k8s.io", GROUP} <= groups
    resources = crd_cluster.api.get(f"/apis/{GROUP}/{VERSION}")["resources"]
    by_name = {r["name"]: r for r in resources}
    assert by_name["testpipelines"]["shortNames"] == ["tpl"]
    assert by_name["testpipelines"]["categories"] == ["feldera-test"]
    assert by_name["testpipelines"]["singularName"] == "testpipeline"
    assert "testpipelines/status" in by_name
    core = {r["name"] for r in crd_cluster.api.get("/api/v1")["resources"]}
    assert {"namespaces", "secrets", "configmaps", "events", "serviceaccounts"} <= core
    # Aggregated discovery is answered in the legacy form, plainly typed, so clients fall back.
    aggregated = crd_cluster.api.request(
        "GET",
        "/apis",
        headers={
            "Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
            "application/json"
        },
    )
    assert aggregated.headers["Content-Type"].startswith("application/json")
    assert "as=" not in aggregated.headers["Content-Type"]
    assert aggregated.body["kind"] == "APIGroupList"
    index = crd_cluster.api.get("/openapi/v3")["paths"]
    assert "?hash=" in index[f"apis/{GROUP}/{VERSION}"]["serverRelativeURL"]


def test_protobuf_only_clients_get_406(crd_cluster: Cluster) -> None:
    reply = crd_cluster.api.request(
        "GET", BASE, headers={"Accept": "application/vnd.kubernetes.protobuf"}
    )
    assert reply.status == 406


def test_secret_string_data_is_stored_as_base64_data(cluster: Cluster) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "key"},
        "stringData": {"token": "s3cr3t"},
    }
    created = cluster.api.create("/api/v1/namespaces/default/secrets", secret)
    assert created["data"] == {"token": "czNjcjN0"} and "stringData" not in created


def test_kubectl_create_of_secrets_configmaps_and_namespaces_sends_protobuf_that_is_read(
    cluster: Cluster,
) -> None:
    cluster.kubectl("create", "namespace", "team")
    cluster.kubectl(
        "-n", "team", "create", "secret", "generic", "key", "--from-literal=apiKey=s3cr3t"
    )
    cluster.kubectl("-n", "team", "create", "configmap", "settings", "--from-literal=a=b")
    cluster.kubectl("-n", "team", "create", "serviceaccount", "op")
    secret = cluster.api.get("/api/v1/namespaces/team/secrets/key")
    assert secret["data"] == {"apiKey": "czNjcjN0"} and secret["type"] == "Opaque"
    assert cluster.api.get("/api/v1/namespaces/team/configmaps/settings")["data"] == {"a": "b"}
    assert cluster.api.get("/api/v1/namespaces/team/serviceaccounts/op")["metadata"]["uid"]
    refused = cluster.kubectl("create", "deployment", "web", "--image=nginx", check=False)
    assert refused.returncode != 0 and "UnsupportedMediaType" not in refused.stdout


def test_deleting_a_namespace_removes_its_objects(cluster: Cluster) -> None:
    cluster.api.create("/api/v1/namespaces", {"metadata": {"name": "team"}})
    cluster.api.create(
        "/api/v1/namespaces/team/configmaps", {"metadata": {"name": "c"}, "data": {}}
    )
    missing = cluster.api.request(
        "POST", "/api/v1/namespaces/nowhere/configmaps", {"metadata": {"name": "c"}}
    )
    assert missing.status == 404
    cluster.kubectl("delete", "namespace", "team", "--wait", "--timeout=20s")
    assert cluster.api.get("/api/v1/configmaps")["items"] == []


def test_namespace_and_crd_deletion_wait_for_the_finalizers_of_what_they_contain(
    crd_cluster: Cluster,
) -> None:
    api = crd_cluster.api
    api.create("/api/v1/namespaces", {"metadata": {"name": "team"}})
    held = pipeline("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    team = f"/apis/{GROUP}/{VERSION}/namespaces/team/{PLURAL}"
    api.create(team, held)
    api.create(team, pipeline("free"))
    assert api.request("DELETE", "/api/v1/namespaces/team").status == 200
    namespace = api.get("/api/v1/namespaces/team")
    assert namespace["status"]["phase"] == "Terminating"
    assert [i["metadata"]["name"] for i in api.get(team)["items"]] == ["held"]
    assert "deletionTimestamp" in api.get(f"{team}/held")["metadata"]
    refused = api.request("POST", team, pipeline("late"))
    assert refused.status == 403 and refused.body["reason"] == "Forbidden"
    api.merge(f"{team}/held", {"metadata": {"finalizers": None}})
    assert api.request("GET", "/api/v1/namespaces/team").status == 404

    api.create(BASE, held)
    crd_path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"
    assert api.request("DELETE", crd_path).status == 200
    crd = api.get(crd_path)
    assert {"type": "Terminating", "status": "True"}.items() <= crd["status"]["conditions"][
        -1
    ].items()
    assert api.request("POST", BASE, pipeline("late")).status == 405
    api.merge(f"{BASE}/held", {"metadata": {"finalizers": None}})
    assert api.request("GET", crd_path).status == 404
    assert api.request("GET", BASE).status == 404


def test_request_counts_and_injected_faults(crd_cluster: Cluster) -> None:
    crd_cluster.api.create(BASE, pipeline("counted"))
    crd_cluster.emulator.reset_counts()
    crd_cluster.api.merge(f"{BASE}/counted/status", {"status": {"phase": "Created"}})
    crd_cluster.api.get(BASE)
    counts = crd_cluster.api.get("/_emulator/requests")
    assert counts == {"patch testpipelines/status": 1, "list testpipelines": 1}
    reply = crd_cluster.api.request(
        "POST",
        "/_emulator/faults",
        {"verb": "patch", "resource": "testpipelines/status", "status": 409, "count": 1},
    )
    assert reply.status == 200
    faulted = crd_cluster.api.merge(f"{BASE}/counted/status", {"status": {"phase": "Updated"}})
    assert faulted.status == 409 and faulted.body["reason"] == "Conflict"
    assert (
        crd_cluster.api.merge(f"{BASE}/counted/status", {"status": {"phase": "Updated"}}).status
        == 200
    )
    assert crd_cluster.api.request("DELETE", "/_emulator/requests").status == 200
    assert crd_cluster.emulator.request_counts() == {}
    crd_cluster.emulator.inject_fault("get", "testpipelines", 0, count=1, delay=0.3)
    started = time.monotonic()
    assert crd_cluster.api.request("GET", f"{BASE}/counted").status == 200
    assert time.monotonic() - started >= 0.3
    crd_cluster.emulator.inject_fault("*", "*", 500, count=5)
    assert crd_cluster.api.request("DELETE", "/_emulator/faults").status == 200
    assert crd_cluster.api.request("GET", f"{BASE}/counted").status == 200


# --- another real client -----------------------------------------------------------------------


def test_the_kubernetes_python_client_creates_lists_patches_and_watches(
    crd_cluster: Cluster,
) -> None:
    from kubernetes import client, config, watch

    api_client = config.new_client_from_config(str(crd_cluster.kubeconfig))  # type: ignore[no-untyped-call]
    custom = client.CustomObjectsApi(api_client)
    created: Any = custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, pipeline("py")
    )
    listed: Any = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["py"]
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "py", {"spec": {"paused": True}}
    )
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "py", {"status": {"phase": "Updated"}}
    )
    seen = []
    stream: Any = watch.Watch().stream(  # type: ignore[no-untyped-call]
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        "default",
        PLURAL,
        resource_version=created["metadata"]["resourceVersion"],
        timeout_seconds=1,
    )
    for event in stream:
        seen.append((event["type"], event["object"]["spec"]["paused"]))
    assert seen == [("MODIFIED", True), ("MODIFIED", True)]
    core = client.CoreV1Api(api_client)
    namespaces: Any = core.list_namespace().items
    assert "default" in [n.metadata.name for n in namespaces]
    api_client.close()


def test_pykube_creates_lists_patches_and_watches(crd_cluster: Cluster) -> None:
    import pykube  # type: ignore[import-untyped]

    api = pykube.HTTPClient(pykube.KubeConfig.from_file(str(crd_cluster.kubeconfig)))
    kind: Any = pykube.object_factory(api, f"{GROUP}/{VERSION}", "TestPipeline")
    created = kind(api, pipeline("pk"))
    created.create()
    start_rv = created.obj["metadata"]["resourceVersion"]
    listed = [o.name for o in kind.objects(api).filter(namespace="default")]
    assert listed == ["pk"]
    created.patch({"metadata": {"labels": {"via": "pykube"}}})
    found = kind.objects(api).filter(namespace="default", selector={"via": "pykube"})
    assert [o.name for o in found] == ["pk"]
    query = (
        kind.objects(api)
        .filter(namespace="default")
        .watch(since=start_rv, params={"timeoutSeconds": "1"})
    )
    assert [(e.type, e.object.labels.get("via")) for e in query] == [("MODIFIED", "pykube")]
    api.session.close()


# --- command line and scale --------------------------------------------------------------------


def test_cli_serves_writes_the_kubeconfig_and_stops_on_sigterm(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "feldera_operator.cli",
            "emulator",
            "kubernetes",
            "--port",
            "0",
            "--kubeconfig",
            str(kubeconfig),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("kubernetes emulator listening on http://127.0.0.1:"), line
        config = yaml.safe_load(kubeconfig.read_text())
        assert config["clusters"][0]["cluster"]["server"] == line.split()[-1]
        result = subprocess.run(
            [
                KUBECTL,
                "--kubeconfig",
                str(kubeconfig),
                "--cache-dir",
                str(tmp_path / "c"),
                "get",
                "namespace",
                "default",
                "-o",
                "name",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.stdout.strip() == "namespace/default", result.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()


def test_scale_20000_objects_created_and_listed(crd_cluster: Cluster) -> None:
    """Not a benchmark: prints timings and checks that nothing grows with past requests."""
    import aiohttp

    total = 20_000

    async def load() -> tuple[float, float, float]:
        async with aiohttp.ClientSession(crd_cluster.url) as session:
            semaphore = asyncio.Semaphore(32)

            async def create(i: int) -> None:
                async with semaphore:
                    obj = pipeline(f"p-{i:05d}", inputs=[{"table": "t", "connector": f"c{i}"}])
                    async with session.post(BASE, json=obj) as response:
                        assert response.status == 201, await response.text()

            async def timed_get() -> float:
                start = time.perf_counter()
                async with session.get(f"{BASE}/anchor") as response:
                    assert response.status == 200
                    await response.read()
                return time.perf_counter() - start

            async with session.post(BASE, json=pipeline("anchor")) as response:
                assert response.status == 201
            early = min([await timed_get() for _ in range(20)])
            start = time.perf_counter()
            await asyncio.gather(*(create(i) for i in range(total)))
            created = time.perf_counter() - start
            late = min([await timed_get() for _ in range(20)])
            return created, early, late

    created, early, late = asyncio.run(load())
    start = time.perf_counter()
    listed = crd_cluster.api.get(BASE)
    list_time = time.perf_counter() - start
    assert len(listed["items"]) == total + 1
    start = time.perf_counter()
    page = crd_cluster.api.get(f"{BASE}?limit=500")
    page_time = time.perf_counter() - start
    assert len(page["items"]) == 500 and page["metadata"]["continue"]
    events = crd_cluster.api.watch(
        BASE, resourceVersion=str(int(listed["metadata"]["resourceVersion"]) - 10)
    )
    assert len(events) == 10
    print(
        f"\n{total} creates: {created:.1f}s ({total / created:.0f}/s); list all: "
        f"{list_time * 1000:.0f} ms; list page of 500: {page_time * 1000:.0f} ms; "
        f"GET before/after: {early * 1000:.2f}/{late * 1000:.2f} ms"
    )
    assert late < early * 20 + 0.05  # generous: guards against per-request cost growth only
