"""Resource types of the Kubernetes API emulator: the built-in table, CRD-defined types, discovery.

Built-in kinds are stored as plain objects with no schema: the emulator checks what a real client
relies on (metadata, conflicts, status separation), not each built-in's field rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass
class ResourceType:
    group: str
    versions: list[str]  # served versions, preferred (storage) first
    plural: str
    kind: str
    namespaced: bool
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    status_subresource: bool = False
    # Kinds whose metadata.generation the apiserver maintains (CRs and the workload kinds).
    generation: bool = False
    singular: str = ""
    list_kind: str = ""
    # The CustomResourceDefinition that defines this type; None for built-ins.
    crd: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.singular = self.singular or self.kind.lower()
        self.list_kind = self.list_kind or f"{self.kind}List"

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def resource(self) -> str:
        """`plural.group` as it appears in error messages (`configmaps "x" not found`)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def group_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    def crd_version(self, version: str) -> dict[str, Any] | None:
        """The `spec.versions[]` entry of the defining CRD for `version`.

        The stored CRD itself, not a copy: it is never mutated (a CRD update stores a new one),
        and k8s_schema caches compiled schemas by identity, so copies would recompile per call.
        """
        if self.crd is None:
            return None
        for entry in self.crd["spec"]["versions"]:
            if entry.get("name") == version:
                return entry  # type: ignore[no-any-return]
        return None

    def schema(self, version: str) -> dict[str, Any] | None:
        entry = self.crd_version(version)
        if entry is None:
            return None
        schema = (entry.get("schema") or {}).get("openAPIV3Schema")
        return schema if isinstance(schema, dict) else None


def _t(
    group: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    status: bool = False,
    generation: bool = False,
    categories: tuple[str, ...] = (),
) -> ResourceType:
    return ResourceType(
        group=group,
        versions=["v1"],
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        short_names=list(short),
        categories=list(categories),
        status_subresource=status,
        generation=generation,
    )


def builtin_types() -> list[ResourceType]:
    """The built-in kinds a kopf operator, kubectl and the project's Helm chart touch."""
    workload = ("all",)
    return [
        _t("", "namespaces", "Namespace", namespaced=False, short=("ns",), status=True),
        _t("", "secrets", "Secret"),
        _t("", "configmaps", "ConfigMap", short=("cm",)),
        _t("", "serviceaccounts", "ServiceAccount", short=("sa",)),
        _t("", "services", "Service", short=("svc",), status=True, categories=workload),
        _t("", "events", "Event", short=("ev",)),
        _t("", "pods", "Pod", short=("po",), status=True, categories=workload),
        _t("", "persistentvolumeclaims", "PersistentVolumeClaim", short=("pvc",), status=True),
        _t("events.k8s.io", "events", "Event", short=("ev",)),
        _t("coordination.k8s.io", "leases", "Lease"),
        _t(
            "apps",
            "deployments",
            "Deployment",
            short=("deploy",),
            status=True,
            generation=True,
            categories=workload,
        ),
        _t(
            "apps",
            "statefulsets",
            "StatefulSet",
            short=("sts",),
            status=True,
            generation=True,
            categories=workload,
        ),
        _t(
            "apps",
            "daemonsets",
            "DaemonSet",
            short=("ds",),
            status=True,
            generation=True,
            categories=workload,
        ),
        _t(
            "apps",
            "replicasets",
            "ReplicaSet",
            short=("rs",),
            status=True,
            generation=True,
            categories=workload,
        ),
        _t("batch", "jobs", "Job", status=True, generation=True, categories=workload),
        _t(
            "batch",
            "cronjobs",
            "CronJob",
            short=("cj",),
            status=True,
            generation=True,
            categories=workload,
        ),
        _t("rbac.authorization.k8s.io", "roles", "Role"),
        _t("rbac.authorization.k8s.io", "rolebindings", "RoleBinding"),
        _t("rbac.authorization.k8s.io", "clusterroles", "ClusterRole", namespaced=False),
        _t(
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            "ClusterRoleBinding",
            namespaced=False,
        ),
        _t(
            "policy",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            short=("pdb",),
            status=True,
            generation=True,
        ),
        _t(
            "networking.k8s.io",
            "networkpolicies",
            "NetworkPolicy",
            short=("netpol",),
            generation=True,
        ),
        _t(
            "networking.k8s.io",
            "ingresses",
            "Ingress",
            short=("ing",),
            status=True,
            generation=True,
        ),
        _t(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            namespaced=False,
            short=("crd", "crds"),
            status=True,
            generation=True,
        ),
    ]


def type_from_crd(crd: dict[str, Any]) -> ResourceType:
    """The served resource type a (validated, defaulted) CRD defines."""
    spec = crd["spec"]
    names = spec["names"]
    versions = [v for v in spec["versions"] if v.get("served", True)]
    # Discovery lists versions by Kubernetes version priority (v2 > v1 > v1beta2 > v1alpha1 >
    # anything else), the first being the preferred one, as the apiserver does.
    versions.sort(key=lambda v: version_priority(str(v["name"])))
    return ResourceType(
        group=spec["group"],
        versions=[v["name"] for v in versions],
        plural=names["plural"],
        kind=names["kind"],
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        short_names=list(names.get("shortNames") or []),
        categories=list(names.get("categories") or []),
        status_subresource=any("status" in (v.get("subresources") or {}) for v in versions),
        generation=True,
        singular=names.get("singular") or names["kind"].lower(),
        list_kind=names.get("listKind") or f"{names['kind']}List",
        crd=crd,
    )


_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """A sort key putting versions in Kubernetes' priority order, highest first."""
    m = _VERSION.match(version)
    if m is None:
        return (4, 0, 0, version)
    stability = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    return (stability, -int(m.group(1)), -int(m.group(3) or 0), "")


def api_resource_list(group_version: str, types: list[ResourceType]) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for rt in sorted(types, key=lambda t: t.plural):
        entry: dict[str, Any] = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": ALL_VERBS,
        }
        if rt.short_names:
            entry["shortNames"] = rt.short_names
        if rt.categories:
            entry["categories"] = rt.categories
        resources.append(entry)
        if rt.status_subresource:
            resources.append(
                {
                    "name": f"{rt.plural}/status",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def api_group(group: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


# Query parameters of a write, as the apiserver's OpenAPI declares them. kubectl looks for
# `fieldValidation` on a PATCH operation to decide that the server validates fields itself.
_WRITE_PARAMS = [
    {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
    {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
    {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
]
_PATCH_PARAMS = [
    *_WRITE_PARAMS,
    {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": True}},
]


def openapi_paths(types: list[ResourceType], version: str) -> dict[str, Any]:
    """OpenAPI v3 paths of the given types: operations tagged with their group-version-kind."""
    paths: dict[str, Any] = {}
    for rt in types:
        prefix = "/api/v1" if not rt.group else f"/apis/{rt.group}/{version}"
        scope = f"{prefix}/namespaces/{{namespace}}" if rt.namespaced else prefix
        gvk = {"group": rt.group, "version": version, "kind": rt.kind}

        def op(
            action: str,
            params: list[dict[str, Any]],
            gvk: dict[str, Any] = gvk,
            kind: str = rt.kind,
        ) -> Any:
            return {
                "operationId": f"{action}{kind}",
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            }

        paths[f"{scope}/{rt.plural}"] = {
            "get": op("list", []),
            "post": op("post", _WRITE_PARAMS),
            "delete": op("deletecollection", []),
        }
        item = {
            "get": op("get", []),
            "put": op("put", _WRITE_PARAMS),
            "patch": op("patch", _PATCH_PARAMS),
            "delete": op("delete", []),
        }
        paths[f"{scope}/{rt.plural}/{{name}}"] = item
        if rt.status_subresource:
            paths[f"{scope}/{rt.plural}/{{name}}/status"] = {
                "get": op("get", []),
                "put": op("put", _WRITE_PARAMS),
                "patch": op("patch", _PATCH_PARAMS),
            }
    return paths


def builtin_openapi_document(group_version: str, types: list[ResourceType]) -> dict[str, Any]:
    """A minimal OpenAPI v3 document for built-in kinds: their paths, no schemas."""
    version = group_version.rsplit("/", 1)[-1]
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": openapi_paths(types, version),
        "components": {"schemas": {}},
    }
