"""Roles for people, judged by kube-apiserver's own RBAC authorizer. The chart's ClusterRoles are
labelled to aggregate into `admin`, `edit` and `view`. The roles themselves are bound to test users
in a namespace and asked (`kubectl auth can-i --as`, and real requests made as those users); and
users bound to Kubernetes' own `edit` and `view` get the same rights once kube-controller-manager
(which this control plane runs) has aggregated them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from feldera_sandbox.sandbox import Sandbox, wait_for

from .conftest import RELEASE, render, user_roles

NAMESPACE = "team-roles"
OTHER_NAMESPACE = "team-elsewhere"
EDITOR, VIEWER, STRANGER = "alice", "bob", "carol"
# Bound to Kubernetes' own aggregated roles, not to the chart's.
TEAM_EDITOR, TEAM_VIEWER = "dave", "erin"
FPL = "felderapipelines.feldera.dev"
FI = "felderainstances.feldera.dev"


@pytest.fixture(scope="module")
def roles(cluster: Sandbox) -> Sandbox:
    cluster.apply(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
            for n in (NAMESPACE, OTHER_NAMESPACE)
        ]
        + user_roles(render({}))
        + [binding(EDITOR, "edit"), binding(VIEWER, "view")]
        + [binding(TEAM_EDITOR, "edit", builtin=True), binding(TEAM_VIEWER, "view", builtin=True)]
    )
    return cluster


def binding(user: str, role: str, *, builtin: bool = False) -> dict[str, Any]:
    """`user` bound to the chart's role, or (builtin) to Kubernetes' own `edit`/`view`."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{user}-{role}", "namespace": NAMESPACE},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role if builtin else f"{RELEASE}-feldera-operator-{role}",
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


def can(sb: Sandbox, user: str, verb: str, resource: str, *extra: str) -> bool:
    namespace = extra[0] if extra and not extra[0].startswith("-") else NAMESPACE
    flags = [e for e in extra if e.startswith("-")]
    result = sb.kubectl(
        "auth", "can-i", verb, resource, "-n", namespace, f"--as={user}", *flags, check=False
    )
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), result.stdout + result.stderr
    return answer == "yes"


def test_the_roles_aggregate_into_the_default_user_roles() -> None:
    by_name = {r["metadata"]["name"]: r["metadata"]["labels"] for r in user_roles(render({}))}
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    assert by_name == {
        f"{RELEASE}-feldera-operator-edit": {
            **by_name[f"{RELEASE}-feldera-operator-edit"],
            f"{aggregate}edit": "true",
            f"{aggregate}admin": "true",
        },
        f"{RELEASE}-feldera-operator-view": {
            **by_name[f"{RELEASE}-feldera-operator-view"],
            f"{aggregate}view": "true",
        },
    }
    assert f"{aggregate}view" not in by_name[f"{RELEASE}-feldera-operator-edit"]
    assert user_roles(render({"rbac": {"userRoles": False}})) == []


def test_namespace_editors_and_viewers_get_them_through_the_aggregated_roles(
    roles: Sandbox,
) -> None:
    # kube-controller-manager folds the labelled roles into `edit` and `view`: a deadline.
    wait_for(
        lambda: can(roles, TEAM_EDITOR, "create", FPL) and can(roles, TEAM_VIEWER, "list", FI),
        timeout=30,
        what="the chart's roles aggregated into edit and view",
    )
    for resource in (FPL, FI):
        for verb in ("get", "list", "watch", "create", "patch", "delete"):
            assert can(roles, TEAM_EDITOR, verb, resource), (verb, resource)
        assert not can(roles, TEAM_EDITOR, "patch", resource, "--subresource=status")
        assert can(roles, TEAM_VIEWER, "get", resource)
        assert not can(roles, TEAM_VIEWER, "create", resource)
    edit = roles.kubectl_json("get", "clusterrole", "edit")
    assert any("felderapipelines" in (rule.get("resources") or []) for rule in edit["rules"])


@pytest.mark.parametrize("resource", [FPL, FI])
@pytest.mark.parametrize(
    "verb", ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
)
def test_editors_manage_both_kinds_in_their_namespace_only(
    roles: Sandbox, verb: str, resource: str
) -> None:
    assert can(roles, EDITOR, verb, resource)
    assert not can(roles, EDITOR, verb, resource, OTHER_NAMESPACE)


@pytest.mark.parametrize("resource", [FPL, FI])
def test_viewers_read_both_kinds_and_their_status(roles: Sandbox, resource: str) -> None:
    for verb in ("get", "list", "watch"):
        assert can(roles, VIEWER, verb, resource), verb
    assert can(roles, VIEWER, "get", resource, "--subresource=status")
    for verb in ("create", "update", "patch", "delete", "deletecollection"):
        assert not can(roles, VIEWER, verb, resource), verb


@pytest.mark.parametrize("user", [EDITOR, VIEWER])
def test_nobody_but_the_operator_writes_status(roles: Sandbox, user: str) -> None:
    for verb in ("update", "patch"):
        assert not can(roles, user, verb, FPL, "--subresource=status"), verb
        assert not can(roles, user, verb, FI, "--subresource=status"), verb


def test_the_roles_grant_no_secrets(roles: Sandbox) -> None:
    # The API key lives in a Secret: viewers must not read it through these roles.
    for user in (EDITOR, VIEWER):
        for verb in ("get", "list", "watch"):
            assert not can(roles, user, verb, "secrets"), (user, verb)


def test_the_check_can_fail_a_user_without_a_binding_may_do_nothing(roles: Sandbox) -> None:
    for verb in ("get", "list", "create"):
        assert not can(roles, STRANGER, verb, FPL)


def test_as_the_users_an_editor_creates_a_pipeline_a_viewer_reads_it_and_may_not_change_it(
    roles: Sandbox,
) -> None:
    manifest = {
        "apiVersion": "feldera.dev/v1alpha1",
        "kind": "FelderaPipeline",
        "metadata": {"name": "orders", "namespace": NAMESPACE},
        "spec": {"paused": True},
    }
    roles.kubectl("apply", f"--as={EDITOR}", "-f", "-", input=json.dumps(manifest))
    read = roles.kubectl_json("get", "fpl", "orders", "-n", NAMESPACE, f"--as={VIEWER}")
    assert read["spec"]["paused"] is True
    refused = roles.kubectl(
        "patch",
        "fpl",
        "orders",
        "-n",
        NAMESPACE,
        f"--as={VIEWER}",
        "--type=merge",
        "-p",
        '{"spec": {"paused": false}}',
        check=False,
    )
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr
    denied = roles.kubectl("get", "secrets", "-n", NAMESPACE, f"--as={VIEWER}", check=False)
    assert "forbidden" in denied.stderr
    roles.kubectl("delete", "fpl", "orders", "-n", NAMESPACE, f"--as={EDITOR}")
