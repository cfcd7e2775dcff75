"""What the operator may do in Kubernetes, checked once at start-up.

A missing grant otherwise shows up late and far from its cause (a status never written, a
finalizer never added, a watch retried by kopf). At start-up the operator asks the API server,
with one SelfSubjectAccessReview per permission (every authenticated user may: the bootstrap role
`system:basic-user`), for each verb and resource it uses, in the scope it uses it, and logs every
one it lacks: the verb, the resource, where, and what will not work without it. The list mirrors
the Helm chart's RBAC (templates/rbac.yaml), and a test keeps the two equal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import kubernetes

from feldera_operator.config import OperatorConfig
from feldera_operator.models import GROUP, FelderaInstance, FelderaPipeline

log = logging.getLogger(__name__)

CLUSTER = ""  # the namespace of a cluster-wide permission


@dataclass(frozen=True)
class Permission:
    verb: str
    group: str
    resource: str  # with its subresource, e.g. felderapipelines/status
    namespace: str  # CLUSTER: cluster-wide
    consequence: str  # what does not work without it
    name: str = ""  # one object only

    def describe(self) -> str:
        where = "cluster-wide" if self.namespace == CLUSTER else f"in namespace {self.namespace}"
        named = f" {self.name!r}" if self.name else ""
        group = f"{self.group}/" if self.group else ""
        return f"{self.verb} {group}{self.resource}{named} {where}"


_PROGRAMS = (
    "kopf cannot watch the ConfigMaps labelled feldera.dev/program: a program's SQL in one "
    "(spec.program.sqlFrom) is read by name at every reconcile, and its edits are not noticed "
    "at once"
)


def _served(namespace: str) -> list[Permission]:
    pipelines, instances = FelderaPipeline.PLURAL, FelderaInstance.PLURAL
    watch = "nothing is reconciled: kopf cannot watch {}"
    return [
        Permission(
            "get",
            GROUP,
            pipelines,
            namespace,
            "drift is corrected without first confirming the resource still exists",
        ),
        Permission("list", GROUP, pipelines, namespace, watch.format("FelderaPipelines")),
        Permission("watch", GROUP, pipelines, namespace, watch.format("FelderaPipelines")),
        Permission(
            "patch",
            GROUP,
            pipelines,
            namespace,
            "the finalizer of deletionPolicy Stop cannot be added or removed",
        ),
        Permission("list", GROUP, instances, namespace, watch.format("FelderaInstances")),
        Permission("watch", GROUP, instances, namespace, watch.format("FelderaInstances")),
        Permission(
            "patch",
            GROUP,
            f"{pipelines}/status",
            namespace,
            "FelderaPipeline statuses are not written",
        ),
        Permission(
            "patch",
            GROUP,
            f"{instances}/status",
            namespace,
            "FelderaInstance statuses are not written",
        ),
        Permission(
            "get",
            "",
            "secrets",
            namespace,
            "FelderaInstances' API keys and CA bundles cannot be read",
        ),
        Permission("create", "", "events", namespace, "no Events are posted"),
        Permission(
            "get",
            "",
            "configmaps",
            namespace,
            "a ConfigMap named by spec.program.sqlFrom that the watch does not hold cannot be "
            "read, so a missing one and one without the label feldera.dev/program are not told "
            "apart, and no SQL is read from one before its watch delivers it",
        ),
        Permission("list", "", "configmaps", namespace, _PROGRAMS),
        Permission("watch", "", "configmaps", namespace, _PROGRAMS),
    ]


def required(config: OperatorConfig) -> list[Permission]:
    """Every permission the operator uses with this configuration, in the scope it uses it."""
    namespaces = list(config.namespaces) or [CLUSTER]
    result = [p for ns in namespaces for p in _served(ns)]
    crds = "kopf cannot notice the feldera.dev CRDs being installed or upgraded"
    result += [
        Permission("list", "apiextensions.k8s.io", "customresourcedefinitions", CLUSTER, crds),
        Permission("watch", "apiextensions.k8s.io", "customresourcedefinitions", CLUSTER, crds),
    ]
    if config.namespaces:
        gone = "kopf cannot follow the listed namespaces"
        result += [
            Permission("list", "", "namespaces", CLUSTER, gone),
            Permission("watch", "", "namespaces", CLUSTER, gone),
        ]
    ref = config.default_api_key
    if ref is not None and config.namespaces and ref.namespace not in config.namespaces:
        result.append(
            Permission(
                "get",
                "",
                "secrets",
                ref.namespace,
                "the default instance's API key cannot be read",
                name=ref.name,
            )
        )
    election = config.leader_election
    if election is not None:
        lead = "this replica cannot take part in leader election, so it never acts"
        ns, name = election.namespace, election.name
        result += [
            Permission("create", "coordination.k8s.io", "leases", ns, lead),
            Permission("get", "coordination.k8s.io", "leases", ns, lead, name=name),
            Permission("update", "coordination.k8s.io", "leases", ns, lead, name=name),
        ]
    return result


async def missing(
    api_client: kubernetes.client.ApiClient, permissions: Iterable[Permission]
) -> list[Permission]:
    """The permissions the API server says this identity lacks."""
    api = kubernetes.client.AuthorizationV1Api(api_client)

    def allowed(p: Permission) -> bool:
        resource, _, subresource = p.resource.partition("/")
        review = kubernetes.client.V1SelfSubjectAccessReview(
            spec=kubernetes.client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=kubernetes.client.V1ResourceAttributes(
                    verb=p.verb,
                    group=p.group,
                    resource=resource,
                    subresource=subresource or None,
                    namespace=p.namespace or None,
                    name=p.name or None,
                )
            )
        )
        answer = api.create_self_subject_access_review(review, _request_timeout=10)
        return bool(answer.status and answer.status.allowed)

    result = []
    for permission in permissions:
        if not await asyncio.to_thread(allowed, permission):
            result.append(permission)
    return result


async def check(api_client: kubernetes.client.ApiClient, config: OperatorConfig) -> Sequence[str]:
    """Log each missing permission as an error (the operator runs on: what it can do, it does).
    Returns the lines logged."""
    try:
        lacking = await missing(api_client, required(config))
    except Exception as e:  # a cluster that forbids even self-reviews: say so, go on
        log.warning("could not check this operator's permissions: %s", type(e).__name__)
        return []
    lines = [f"RBAC: cannot {p.describe()}: {p.consequence}" for p in lacking]
    for line in lines:
        log.error(line)
    if not lacking:
        log.info("RBAC: every permission this operator uses is granted")
    return lines
