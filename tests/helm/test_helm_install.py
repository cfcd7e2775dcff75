"""The chart installed, upgraded and uninstalled by the real helm on the real control plane.

- Every value set installs (`helm install`, no --wait: nothing runs Pods here) and each object
  helm rendered exists as rendered (the API server may only add defaults).
- CRDs: the chart installs and upgrades them as templates. A chart whose CRD schema gained a
  field is `helm upgrade`d, and the API server then accepts a resource using the field that it
  refused before. `helm uninstall` leaves, on purpose, the CRDs (crds.keep), the custom resources
  and the user's Secrets, and removes the release's own objects. With crds.keep=false uninstalling
  deletes the CRDs and every custom resource with them.
- Moving from CRDs applied by hand (or by the old chart's crds/ directory) to the release: the
  README's label-and-annotate step lets `helm install` adopt them.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from feldera_sandbox import helm
from feldera_sandbox.sandbox import Sandbox, wait_for

from .conftest import CHART_DIR, ROOT, VALUE_SETS

CRD_NAMES = ("felderapipelines.feldera.dev", "felderainstances.feldera.dev")


def run_helm(sb: Sandbox, *args: str, check: bool = True) -> Any:
    return helm.helm(*args, kubeconfig=sb.kubeconfig, check=check)


def differences(live: Any, rendered: Any, path: str = "") -> list[str]:
    """Where `live` does not hold `rendered`: every rendered field must be there with the same
    value; fields the API server added (defaults, status, metadata) are ignored."""
    if isinstance(rendered, dict):
        if not isinstance(live, dict):
            return [f"{path}: {live!r} is not an object"]
        out = []
        for key, value in rendered.items():
            if key not in live:
                out.append(f"{path}.{key}: missing")
            else:
                out += differences(live[key], value, f"{path}.{key}")
        return out
    if isinstance(rendered, list):
        if not isinstance(live, list) or len(live) != len(rendered):
            return [f"{path}: {live!r} != {rendered!r}"]
        return [
            d
            for i, (a, b) in enumerate(zip(live, rendered, strict=True))
            for d in differences(a, b, f"{path}[{i}]")
        ]
    return [] if live == rendered else [f"{path}: {live!r} != {rendered!r}"]


def live_object(sb: Sandbox, obj: dict[str, Any]) -> dict[str, Any]:
    kind = (
        f"{obj['kind'].lower()}.{obj['apiVersion'].split('/')[0]}"
        if "/" in obj["apiVersion"]
        else obj["kind"].lower()
    )
    args = ["get", kind, obj["metadata"]["name"]]
    if obj["metadata"].get("namespace"):
        args += ["-n", obj["metadata"]["namespace"]]
    result: dict[str, Any] = sb.kubectl_json(*args)
    return result


def exists(sb: Sandbox, kind: str, name: str, namespace: str | None = None) -> bool:
    args = ["get", kind, name, "--ignore-not-found", "-o", "name"]
    if namespace:
        args += ["-n", namespace]
    return bool(sb.kubectl(*args).stdout.strip())


# ----------------------------------------------------------------------- every value set


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_each_value_set_installs_and_its_objects_exist_as_rendered(
    cluster: Sandbox, name: str, tmp_path: Path
) -> None:
    # The shared control plane's CRDs were applied with kubectl, outside any release.
    values = {**copy.deepcopy(VALUE_SETS[name]), "crds": {"install": False}}
    release, namespace = f"vs-{name}", f"vs-{name}"
    for watched in values.get("watchNamespaces", []):  # helm creates only the release's own
        cluster.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": watched}}])
    run_helm(
        cluster,
        "install",
        release,
        str(CHART_DIR),
        "-n",
        namespace,
        "--create-namespace",
        "-f",
        str(helm.values_file(values, tmp_path)),
    )
    try:
        manifest = run_helm(cluster, "get", "manifest", release, "-n", namespace).stdout
        objects = [d for d in yaml.safe_load_all(manifest) if d]
        assert {o["kind"] for o in objects} >= {"Deployment", "ServiceAccount"}
        for obj in objects:
            found = differences(live_object(cluster, obj), obj)
            assert not found, f"{obj['kind']}/{obj['metadata']['name']}: {found}"
    finally:
        run_helm(cluster, "uninstall", release, "-n", namespace)


def test_the_comparison_can_fail() -> None:
    rendered = {"spec": {"replicas": 2, "template": {"ports": [{"containerPort": 9090}]}}}
    live = {
        "spec": {
            "replicas": 1,
            "template": {"ports": [{"containerPort": 9090, "protocol": "TCP"}]},
        },
        "status": {},
    }
    assert differences(live, rendered) == [".spec.replicas: 1 != 2"]


# ----------------------------------------------------------------------- CRDs through a release

RELEASE, NAMESPACE = "feldera-operator", "feldera-system"


def pipeline(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "feldera.dev/v1alpha1",
        "kind": "FelderaPipeline",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def apply(sb: Sandbox, obj: dict[str, Any]) -> Any:
    return sb.kubectl("apply", "-f", "-", input=json.dumps(obj), check=False)


def chart_with_a_new_field(tmp_path: Path) -> Path:
    """The chart as a later version would ship it: FelderaPipeline's spec has `owner`."""
    chart = tmp_path / "chart" / "feldera-operator"
    shutil.copytree(CHART_DIR, chart)
    crd_file = chart / "files" / "crds" / "feldera.dev_felderapipelines.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert "owner" not in spec["properties"]
    spec["properties"]["owner"] = {"type": "string", "description": "Who to call."}
    crd_file.write_text(yaml.safe_dump(crd, sort_keys=False))
    metadata = yaml.safe_load((chart / "Chart.yaml").read_text())
    metadata["version"] = "0.2.0"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False))
    return chart


def test_crd_lifecycle_through_a_release(tmp_path: Path) -> None:
    """One release's life, step by step, on a control plane of its own (here the CRDs belong
    to the release): hand-over of CRDs applied by hand, an upgrade that changes a CRD's schema,
    uninstall with keep, install again and uninstall without keep."""
    sb = Sandbox(tmp_path / "cluster")
    try:
        sb.start_kubernetes()
        hand_over_crds_applied_by_hand_as_the_readme_says(sb)
        helm_upgrade_serves_the_new_crd_schema(sb, tmp_path)
        helm_uninstall_keeps_crds_resources_and_secrets_and_removes_the_release(sb)
        without_keep_uninstalling_deletes_the_crds_and_every_resource(sb, tmp_path)
    finally:
        sb.stop()


def hand_over_crds_applied_by_hand_as_the_readme_says(sb: Sandbox) -> None:
    """Before this chart templated its CRDs, they were applied by hand or from crds/. helm
    refuses to take over objects it did not create; after the README's hand-over, helm owns
    them alone, so the next test's upgrade (a schema change) meets no other claim."""
    sb.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    install = [
        "upgrade",
        "--install",
        RELEASE,
        str(CHART_DIR),
        "-n",
        NAMESPACE,
        "--create-namespace",
    ]
    refused = run_helm(sb, *install, check=False)
    assert refused.returncode != 0
    assert "invalid ownership metadata" in refused.stderr
    section = readme_section("Upgrading CRDs")
    for name in CRD_NAMES:
        label = ["label", "crd", name, "app.kubernetes.io/managed-by=Helm"]
        annotate = [
            "annotate",
            "crd",
            name,
            f"meta.helm.sh/release-name={RELEASE}",
            f"meta.helm.sh/release-namespace={NAMESPACE}",
        ]
        for command in (label, annotate):
            shown = " ".join("$crd" if c == name else c for c in command)
            assert f"kubectl {shown}" in section, command
            sb.kubectl(*command)
    assert (
        "helm upgrade --install feldera-operator ./helm/feldera-operator -n feldera-system"
        in section
    )
    run_helm(sb, *install)
    assert "kubectl apply --server-side -f -" in section
    for name in CRD_NAMES:
        intent = (
            "{apiVersion: apiextensions.k8s.io/v1, kind: CustomResourceDefinition, "
            f"metadata: {{name: {name}}}}}"
        )
        assert intent.replace(name, "$crd") in section
        sb.kubectl("apply", "--server-side", "-f", "-", input=intent)
    for name in CRD_NAMES:
        crd = sb.kubectl_json("get", "crd", name, "--show-managed-fields")
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["helm.sh/chart"] == "feldera-operator-0.1.0"
        spec_owners = {
            f["manager"]
            for f in crd["metadata"]["managedFields"]
            if "f:spec" in (f.get("fieldsV1") or {})
        }
        assert spec_owners == {"helm"}, spec_owners


def readme_section(title: str) -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def helm_upgrade_serves_the_new_crd_schema(sb: Sandbox, tmp_path: Path) -> None:
    refused = apply(sb, pipeline("orders", owner="data-team"))
    assert refused.returncode != 0
    assert 'unknown field "spec.owner"' in refused.stderr
    run_helm(sb, "upgrade", RELEASE, str(chart_with_a_new_field(tmp_path)), "-n", NAMESPACE)
    crd = sb.kubectl_json("get", "crd", CRD_NAMES[0])
    assert crd["metadata"]["labels"]["helm.sh/chart"] == "feldera-operator-0.2.0"
    # The API server rebuilds its validation from the stored CRD asynchronously: a deadline.
    wait_for(
        lambda: apply(sb, pipeline("orders", owner="data-team")).returncode == 0,
        timeout=30,
        what="the new field accepted",
    )
    stored = sb.kubectl_json("get", "fpl", "orders", "-n", "default")
    assert stored["spec"]["owner"] == "data-team"


def helm_uninstall_keeps_crds_resources_and_secrets_and_removes_the_release(
    sb: Sandbox,
) -> None:
    sb.kubectl(
        "create", "secret", "generic", "feldera-api-key", "-n", NAMESPACE, "--from-literal=apiKey=k"
    )
    apply(sb, pipeline("kept", paused=True))
    release_objects = [
        ("deployment", "feldera-operator", NAMESPACE),
        ("serviceaccount", "feldera-operator", NAMESPACE),
        ("service", "feldera-operator-metrics", NAMESPACE),
        ("clusterrole", "feldera-operator", None),
        ("clusterrolebinding", "feldera-operator", None),
        ("clusterrole", "feldera-operator-edit", None),
        ("clusterrole", "feldera-operator-view", None),
    ]
    for kind, name, namespace in release_objects:
        assert exists(sb, kind, name, namespace), (kind, name)
    run_helm(sb, "uninstall", RELEASE, "-n", NAMESPACE)
    # What goes: the release's own objects, and helm's record of the release.
    for kind, name, namespace in release_objects:
        assert not exists(sb, kind, name, namespace), (kind, name)
    assert run_helm(sb, "status", RELEASE, "-n", NAMESPACE, check=False).returncode != 0
    # What stays, on purpose: the CRDs (helm.sh/resource-policy: keep), so every custom resource,
    # and the Secrets the user created.
    for name in CRD_NAMES:
        assert exists(sb, "crd", name)
    assert exists(sb, "fpl", "kept", "default")
    assert exists(sb, "fpl", "orders", "default")
    assert exists(sb, "secret", "feldera-api-key", NAMESPACE)


def crd_states(listing: str) -> list[dict[str, Any]]:
    """Each feldera.dev CRD left: its finalizers and conditions."""
    return [
        {
            "name": crd["metadata"]["name"],
            "finalizers": crd["metadata"].get("finalizers"),
            "deletionTimestamp": crd["metadata"].get("deletionTimestamp"),
            "conditions": [
                (c["type"], c["status"], c.get("reason"), c.get("message"))
                for c in crd.get("status", {}).get("conditions", [])
            ],
        }
        for crd in json.loads(listing or '{"items": []}')["items"]
        if crd["metadata"]["name"] in CRD_NAMES
    ]


def without_keep_uninstalling_deletes_the_crds_and_every_resource(
    sb: Sandbox, tmp_path: Path
) -> None:
    # The kept CRDs still carry this release's ownership: installing it again adopts them.
    values = helm.values_file({"crds": {"keep": False}}, tmp_path)
    run_helm(sb, "install", RELEASE, str(CHART_DIR), "-n", NAMESPACE, "-f", str(values))
    crd = sb.kubectl_json("get", "crd", CRD_NAMES[0])
    assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})
    # The install updated the CRDs, so the API server rebuilds their storage. A CRD deleted
    # before that is done has its instances' cleanup fail ("could not list instances: storage is
    # (re)initializing") and retried with a growing backoff, a minute and more later. Wait until
    # the custom resources can be listed again, as they can long before anyone uninstalls.
    wait_for(
        lambda: sb.kubectl("get", "fpl,fi", "-A", check=False).returncode == 0,
        timeout=30,
        what="the custom resources served again",
    )
    run_helm(sb, "uninstall", RELEASE, "-n", NAMESPACE)
    # kube-apiserver deletes every custom resource of a deleted CRD, then the CRD.
    started = time.monotonic()
    try:
        wait_for(
            lambda: not any(exists(sb, "crd", n) for n in CRD_NAMES),
            timeout=60,
            what="the CRDs deleted",
        )
    except TimeoutError as e:
        # Say what holds them: the CRDs' finalizers and conditions (Terminating names the step).
        left = sb.kubectl("get", "crd", "-o", "json", check=False).stdout
        raise AssertionError(f"{e}; the CRDs left: {crd_states(left)}") from e
    print(f"CRDs deleted {time.monotonic() - started:.1f} s after helm uninstall")
    kinds = sb.kubectl("api-resources", "--api-group=feldera.dev", "-o", "name").stdout
    assert kinds.strip() == ""
    assert exists(sb, "secret", "feldera-api-key", NAMESPACE)  # never the chart's to delete
