"""RBAC holds exactly what the operator and kopf call, in the scope they call it, and no more."""

from __future__ import annotations

from typing import Any

import pytest

from feldera_operator import runner
from feldera_operator.permissions import CLUSTER, required

from .conftest import NAMESPACE, RELEASE, VALUE_SETS, find, render, user_roles
from .test_chart import operator_args

FULLNAME = f"{RELEASE}-feldera-operator"

# (apiGroup, resource) -> verbs, for a served namespace (or all of them).
SERVED = {
    ("feldera.dev", "felderapipelines"): {"get", "list", "watch", "patch"},
    ("feldera.dev", "felderainstances"): {"list", "watch"},
    ("feldera.dev", "felderapipelines/status"): {"patch"},
    ("feldera.dev", "felderainstances/status"): {"patch"},
    ("", "secrets"): {"get"},
    ("", "events"): {"create"},
    ("", "configmaps"): {"get", "list", "watch"},
}
CRDS = {("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}}
NAMESPACES = {("", "namespaces"): {"list", "watch"}}


def grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """Unrestricted grants (rules with resourceNames are returned by `named_grants`)."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        if rule.get("resourceNames"):
            continue
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def named_grants(role: dict[str, Any]) -> dict[tuple[str, str, str], set[str]]:
    out: dict[tuple[str, str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for name in rule.get("resourceNames", []):
                    out.setdefault((group, resource, name), set()).update(rule["verbs"])
    return out


def roles(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The operator's own Roles and ClusterRoles (test_user_roles.py checks those for people)."""
    people = {r["metadata"]["name"] for r in user_roles(objects)}
    return find(objects, "Role") + [
        r for r in find(objects, "ClusterRole") if r["metadata"]["name"] not in people
    ]


def test_no_wildcards_and_no_secret_list_or_watch(value_set: tuple[str, dict[str, Any]]) -> None:
    _, values = value_set
    for role in roles(render(values)):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
            if "secrets" in rule["resources"]:
                assert rule["verbs"] == ["get"], rule
            assert not {"escalate", "bind", "impersonate", "delete", "deletecollection"} & set(
                rule["verbs"]
            ), rule


def test_all_namespaces_one_cluster_role_with_exactly_what_is_used() -> None:
    objects = render({})
    (role,) = roles(objects)
    assert role["kind"] == "ClusterRole"
    assert grants(role) == SERVED | CRDS
    (binding,) = find(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
    ]
    assert find(objects, "RoleBinding") == []


def test_listed_namespaces_a_role_in_each_and_only_cluster_scoped_reads_cluster_wide() -> None:
    objects = render(VALUE_SETS["namespaced"])
    by_namespace = {r["metadata"]["namespace"]: r for r in find(objects, "Role")}
    assert set(by_namespace) == {"team-a", "team-b", NAMESPACE}
    for namespace in ("team-a", "team-b"):
        assert grants(by_namespace[namespace]) == SERVED
        (binding,) = [
            b for b in find(objects, "RoleBinding") if b["metadata"]["namespace"] == namespace
        ]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": by_namespace[namespace]["metadata"]["name"],
        }
        assert binding["subjects"][0]["namespace"] == NAMESPACE
    # The default instance's Secret lives in the release namespace, which is not served: only
    # that one Secret is readable there.
    release_role = by_namespace[NAMESPACE]
    assert grants(release_role) == {}
    assert named_grants(release_role) == {("", "secrets", "feldera-api-key"): {"get"}}
    (cluster_role,) = [r for r in roles(objects) if r["kind"] == "ClusterRole"]
    assert grants(cluster_role) == CRDS | NAMESPACES


def test_lease_rights_only_with_leader_election_and_only_in_the_release_namespace() -> None:
    assert find(render({}), "Role") == []
    for values in ({"replicas": 3}, {"leaderElection": {"enabled": True}}):
        objects = render(values)
        (role,) = find(objects, "Role")
        assert role["metadata"]["namespace"] == NAMESPACE
        # create cannot be restricted by name (the object does not exist yet); the rest is.
        assert grants(role) == {("coordination.k8s.io", "leases"): {"create"}}
        assert named_grants(role) == {
            ("coordination.k8s.io", "leases", FULLNAME): {"get", "update"}
        }
        (binding,) = find(objects, "RoleBinding")
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        for cluster_role in find(objects, "ClusterRole"):
            assert ("coordination.k8s.io", "leases") not in grants(cluster_role)


def test_rbac_can_be_left_to_the_cluster_admin() -> None:
    objects = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "x"}})
    assert roles(objects) == []
    assert find(objects, "ClusterRoleBinding") == find(objects, "RoleBinding") == []
    # The roles for people are a value of their own.
    assert len(user_roles(objects)) == 2
    bare = {
        "rbac": {"create": False, "userRoles": False},
        "serviceAccount": {"create": False},
        "crds": {"install": False},
    }
    assert {o["kind"] for o in render(bare)} == {"Deployment", "Service"}
    pod = find(objects, "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "x"


# ------------------------------------------- the operator's own list (its start-up RBAC check)


def chart_permissions(objects: list[dict[str, Any]]) -> set[tuple[str, str, str, str, str]]:
    """(verb, group, resource, namespace or '', name or '') the chart grants."""
    out = set()
    for role in roles(objects):
        namespace = role["metadata"].get("namespace", CLUSTER) if role["kind"] == "Role" else ""
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames") or [""]:
                            out.add((verb, group, resource, namespace, name))
    return out


@pytest.mark.parametrize("name", ["default", "namespaced", "ha"])
def test_the_operators_own_permission_list_is_what_the_chart_grants(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`permissions.required()` (what the operator checks at start-up) for the configuration the
    chart's own flags give it equals what the chart grants: one list cannot drift from the other."""
    values = VALUE_SETS[name] | {"feldera": {"url": "http://f:8080", "apiKeySecret": {"name": "k"}}}
    if name == "namespaced":
        values["feldera"]["apiKeySecret"]["key"] = "token"
    config = runner.config_from_args(operator_args(values, monkeypatch))
    needed = {(p.verb, p.group, p.resource, p.namespace, p.name) for p in required(config)}
    assert needed == chart_permissions(render(values))
