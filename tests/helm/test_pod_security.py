"""The operator's Pod is admitted by Pod Security `restricted`, judged by kube-apiserver itself:
a server-side dry run of a Pod made from the rendered Deployment's template, for every value set,
in a namespace labelled `pod-security.kubernetes.io/enforce=restricted`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from feldera_sandbox.sandbox import Sandbox

from .conftest import PRIORITY_CLASS, one, render

NAMESPACE = "restricted"


@pytest.fixture(scope="module")
def restricted(cluster: Sandbox) -> Sandbox:
    """The shared control plane with a namespace that enforces Pod Security `restricted`."""
    cluster.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": NAMESPACE,
                    "labels": {
                        "pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/enforce-version": "latest",
                    },
                },
            },
            # The extensions value set's pods name it; Priority admission refuses unknown ones.
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": PRIORITY_CLASS},
                "value": 1000000,
            },
        ]
    )
    return cluster


def pod_from(deployment: dict[str, Any]) -> dict[str, Any]:
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "operator-", "namespace": NAMESPACE, **template["metadata"]},
        "spec": template["spec"],
    }


def dry_run(sb: Sandbox, pod: dict[str, Any]) -> tuple[int, str]:
    result = sb.kubectl(
        "create", "--dry-run=server", "-n", NAMESPACE, "-f", "-", input=json.dumps(pod), check=False
    )
    return result.returncode, result.stdout + result.stderr


def test_the_operator_pod_is_admitted_by_restricted_pod_security(
    restricted: Sandbox, value_set: tuple[str, dict[str, Any]]
) -> None:
    _, values = value_set
    pod = pod_from(one(render(values, namespace=NAMESPACE), "Deployment"))
    code, output = dry_run(restricted, pod)
    assert code == 0, output
    assert "created (server dry run)" in output


def test_the_check_can_fail_a_privileged_pod_is_refused(restricted: Sandbox) -> None:
    pod = pod_from(one(render({}, namespace=NAMESPACE), "Deployment"))
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    code, output = dry_run(restricted, pod)
    assert code != 0
    assert 'violates PodSecurity "restricted:latest"' in output
    assert "allowPrivilegeEscalation != false" in output
