"""RBAC judged by Kubernetes itself: the operator runs with a token of the chart's ServiceAccount,
bound by exactly the roles `helm template` renders.

- With those grants, for each values shape (all namespaces; a namespace list; several replicas),
  everything works, no request is refused, and every grant is used: the chart grants no more than
  the operator needs.
- Minimal: with any one rule removed, the operator names what it lacks at start-up (verb,
  resource, scope, and what will not work), and the behaviour that needs the rule fails with
  Kubernetes' own message, naming the verb and the resource, in the log or on the resource.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from e2e.conftest import API_KEY, SQL

from feldera_sandbox import helm
from feldera_sandbox.controlplane import request_key
from feldera_sandbox.sandbox import (
    OPERATOR_RELEASE as RELEASE,
)
from feldera_sandbox.sandbox import (
    Process,
    Sandbox,
    condition,
    is_ready,
    namespace_manifest,
    wait_for,
)

from .test_rbac import roles

pytestmark = pytest.mark.e2e

RELEASE_NS = "feldera-system"
SHAPES: dict[str, dict[str, Any]] = {
    "all namespaces": {},
    "listed namespaces": {"watchNamespaces": ["team-a", "team-b"]},
    "several replicas": {"replicas": 2, "leaderElection": {"leaseDuration": 3}},
}
_tags = iter(range(1, 1000))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(tmp_path_factory.mktemp("rbac"))
    try:
        sb.start_kubernetes()
        sb.start_feldera("--api-key", API_KEY)
        sb.install_crds()
        yield sb
    finally:
        sb.stop()


def values(shape: dict[str, Any], feldera_url: str) -> dict[str, Any]:
    return shape | {
        "feldera": {"url": feldera_url, "apiKeySecret": {"name": "default-key", "key": "k"}},
        "logFormat": "text",
        "period": 1,
    }


def secret(name: str, namespace: str, key: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"feldera.dev/credentials": "true"},
        },
        "stringData": {key: API_KEY},
    }


PROGRAM_SQL = "CREATE TABLE t (x INT);\nCREATE VIEW v AS SELECT * FROM t;\n"


def scenario(sb: Sandbox, namespace: str, tag: str) -> tuple[str, str, str]:
    """A FelderaInstance with its Secret, a pipeline on it with deletionPolicy Stop, a pipeline
    on the default instance, and one that declares its program (spec.program.sqlFrom) from a
    ConfigMap still without the label feldera.dev/program. Returns the three pipeline names."""
    by_instance, by_default, by_program = f"{tag}-inst", f"{tag}-dflt", f"{tag}-prog"
    for name in (by_instance, by_default):
        sb.feldera("PUT", f"/v0/pipelines/{name}", {"name": name, "program_code": SQL}, API_KEY)
    sb.apply(
        [
            namespace_manifest(namespace),
            secret("instance-key", namespace, "apiKey"),
            {
                "apiVersion": "feldera.dev/v1alpha1",
                "kind": "FelderaInstance",
                "metadata": {"name": "local", "namespace": namespace},
                "spec": {"url": sb.feldera_url, "apiKeySecretRef": {"name": "instance-key"}},
            },
            {
                "apiVersion": "feldera.dev/v1alpha1",
                "kind": "FelderaPipeline",
                "metadata": {"name": by_instance, "namespace": namespace},
                "spec": {"instanceRef": {"name": "local"}, "deletionPolicy": "Stop"},
            },
            {
                "apiVersion": "feldera.dev/v1alpha1",
                "kind": "FelderaPipeline",
                "metadata": {"name": by_default, "namespace": namespace},
                "spec": {},
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"{tag}-sql", "namespace": namespace},
                "data": {"program.sql": PROGRAM_SQL},
            },
            {
                "apiVersion": "feldera.dev/v1alpha1",
                "kind": "FelderaPipeline",
                "metadata": {"name": by_program, "namespace": namespace},
                "spec": {
                    "program": {
                        "sqlFrom": {"configMapKeyRef": {"name": f"{tag}-sql", "key": "program.sql"}}
                    }
                },
            },
        ]
    )
    return by_instance, by_default, by_program


def install(sb: Sandbox, shape: dict[str, Any]) -> tuple[list[dict[str, Any]], str, str]:
    """The chart's identity for this shape, replacing any earlier one's roles, with namespaces of
    its own (tests leave what they made; the sandbox goes at the end). Returns the
    rendered objects, a served namespace and a tag for names."""
    tag = f"t{next(_tags)}"
    if "watchNamespaces" in shape:
        shape = shape | {"watchNamespaces": [f"{tag}-{n}" for n in shape["watchNamespaces"]]}
    for kind in ("clusterrolebinding", "clusterrole"):
        sb.kubectl("delete", kind, "-l", "app.kubernetes.io/instance=feldera-operator")
    sb.kubectl(
        "delete", "rolebinding,role", "-A", "-l", "app.kubernetes.io/instance=feldera-operator"
    )
    sb.kubectl("delete", "lease", "-n", RELEASE_NS, "--all", "--ignore-not-found")  # a fresh start
    namespaces = shape.get("watchNamespaces") or [f"{tag}-ns"]
    sb.apply([namespace_manifest(n) for n in (*namespaces, RELEASE_NS)])
    sb.apply([secret("default-key", RELEASE_NS, "k")])
    return sb.install_operator_identity(values(shape, sb.feldera_url)), namespaces[0], tag


def start(sb: Sandbox, name: str) -> Process:
    sb.reset_kube_counts()
    return sb.start_operator("--metrics-port", "0", name=name)


def granted(objects: list[dict[str, Any]]) -> set[str]:
    """'verb resource' pairs the chart grants, as the audit log names requests."""
    out = set()
    for role in roles(objects):
        for rule in role["rules"]:
            for resource in rule["resources"]:
                out |= {f"{verb} {resource}" for verb in rule["verbs"]}
    return out


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_the_charts_grants_are_enough_and_all_used(sandbox: Sandbox, shape: dict[str, Any]) -> None:
    sb = sandbox
    objects, namespace, tag = install(sb, shape)
    operator = start(sb, f"operator-{tag}")
    try:
        assert "RBAC: every permission this operator uses is granted" in operator.log_text()
        by_instance, by_default, by_program = scenario(sb, namespace, tag)
        # The ConfigMap lacks the label: read by name to say so; labelled, it is watched.
        wait_for(
            lambda: (
                (
                    condition(sb.get("felderapipelines", by_program, namespace) or {}, "Ready")
                    or {}
                ).get("reason")
                == "ConfigMapNotLabelled"
            ),
            timeout=30,
            what="ConfigMapNotLabelled",
        )
        sb.kubectl("label", "configmap", f"{tag}-sql", "-n", namespace, "feldera.dev/program=true")
        wait_for(
            lambda: (
                all(
                    is_ready(sb.get("felderapipelines", p, namespace) or {})
                    for p in (by_instance, by_default, by_program)
                )
                and is_ready(sb.get("felderainstances", "local", namespace) or {})
            ),
            timeout=30,
            what="the three pipelines and the instance Ready",
        )
        obj = sb.get("felderapipelines", by_instance, namespace) or {}
        assert "feldera.dev/stop-pipeline" in obj["metadata"].get("finalizers", [])
        # Drift: someone pauses a pipeline; the operator confirms the resource exists, resumes.
        sb.feldera("POST", f"/v0/pipelines/{by_default}/pause", api_key=API_KEY)
        wait_for(
            lambda: sb.kube_counts().get("get felderapipelines"),
            timeout=15,
            what="the drift corrected after confirming the resource",
        )
        sb.kubectl("delete", "fpl", by_instance, "-n", namespace, "--wait=false")
        wait_for(
            lambda: sb.get("felderapipelines", by_instance, namespace) is None,
            timeout=30,
            what="the pipeline with deletionPolicy Stop deleted (finalizer released)",
        )
        if shape.get("replicas"):
            wait_for(
                lambda: sb.kube_counts().get("update leases"), timeout=15, what="lease renewed"
            )
        requests = sb.operator_requests()
        refused = [
            f"{request_key(e)} -> {e['responseStatus']['code']}"
            for e in requests
            if e.get("responseStatus", {}).get("code") == 403
        ]
        assert refused == [], refused
        # Discovery (non-resource URLs) and the start-up self-reviews are every user's right.
        used = {request_key(e) for e in requests if e.get("objectRef")}
        used -= {"create selfsubjectaccessreviews"}
        assert used <= granted(objects), sorted(used - granted(objects))
        assert granted(objects) <= used, f"granted, never used: {granted(objects) - used}"
    finally:
        operator.stop()


def rules_of(shape: dict[str, Any], feldera_url: str) -> dict[tuple[str, int], str]:
    """Every rule the chart renders for this shape: (role name, index) -> the rule's content."""
    rendered = helm.template(values(shape, feldera_url), release=RELEASE, namespace=RELEASE_NS)
    return {
        (role["metadata"]["name"], i): json.dumps(rule, sort_keys=True)
        for role in roles(rendered)
        for i, rule in enumerate(role["rules"])
    }


def without(objects: list[dict[str, Any]], role_name: str, index: int) -> dict[str, Any]:
    """The one role, minus one rule; returns the removed rule."""
    for role in roles(objects):
        if role["metadata"]["name"] == role_name:
            return dict(role["rules"].pop(index))
    raise LookupError(role_name)


# Every rule of every shape, by the shape that renders it (rules shared by several shapes are
# tried once, in the first).
RULES = [
    ("all namespaces", "feldera-operator", 0),  # FelderaPipelines get, list, watch, patch
    ("all namespaces", "feldera-operator", 1),  # FelderaInstances list, watch
    ("all namespaces", "feldera-operator", 2),  # both statuses: patch
    ("all namespaces", "feldera-operator", 3),  # Secrets get
    ("all namespaces", "feldera-operator", 4),  # Events create
    ("all namespaces", "feldera-operator", 5),  # ConfigMaps get, list, watch
    ("all namespaces", "feldera-operator", 6),  # CRDs list, watch
    ("listed namespaces", "feldera-operator-discovery", 1),  # namespaces list, watch
    ("listed namespaces", "feldera-operator-release", 0),  # the default instance's Secret
    ("several replicas", "feldera-operator-release", 0),  # Lease create
    ("several replicas", "feldera-operator-release", 1),  # the Lease get, update
]


def test_every_rule_is_listed(sandbox: Sandbox) -> None:
    """RULES removes, in turn, every distinct rule the chart renders in any shape."""
    rendered = {name: rules_of(shape, sandbox.feldera_url) for name, shape in SHAPES.items()}
    everything = {content for rules in rendered.values() for content in rules.values()}
    tried = {rendered[shape][(role, index)] for shape, role, index in RULES}
    assert everything - tried == set()


@pytest.mark.parametrize(("shape_name", "role", "index"), RULES, ids=lambda v: str(v))
def test_each_rule_removed_names_what_breaks(
    sandbox: Sandbox, shape_name: str, role: str, index: int
) -> None:
    sb = sandbox
    objects, namespace, tag = install(sb, SHAPES[shape_name])
    reduced = copy.deepcopy([o for o in objects if o["kind"] in ("ClusterRole", "Role")])
    rule = without(reduced, role, index)
    sb.apply(reduced)
    operator = start(sb, f"operator-{tag}")
    try:
        scenario(sb, namespace, tag)
        # Named at start-up by the operator's own check: verb, resource, scope, consequence.
        (group,) = rule["apiGroups"]
        for resource in rule["resources"]:
            for verb in rule["verbs"]:
                named = f"RBAC: cannot {verb} {group + '/' if group else ''}{resource} "
                assert named in operator.log_text(), (named, operator.log_tail(40))
        # And the behaviour itself fails with Kubernetes' own message naming verb and resource.
        refusals = [
            f'cannot {verb} resource "{resource}"'
            for resource in rule["resources"]
            for verb in rule["verbs"]
        ]
        wait_for(
            lambda: any(
                r in operator.log_text() or r in _statuses(sb, namespace) for r in refusals
            ),
            timeout=20,
            what=f"one of {refusals} in the operator's log or on a resource",
        )
    finally:
        operator.stop()


def _statuses(sb: Sandbox, namespace: str) -> str:
    texts = []
    for plural in ("felderapipelines", "felderainstances"):
        for obj in sb.list_objects(plural, namespace):
            texts.append(str(obj.get("status") or ""))
    return "\n".join(texts)
