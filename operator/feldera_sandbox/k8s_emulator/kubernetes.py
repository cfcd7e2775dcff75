"""A Kubernetes API emulator that a real `kubectl` and a real `kopf run` operator use unchanged.

Served by aiohttp on 127.0.0.1 over plain HTTP; any bearer token is accepted.

Why not kmock (the in-memory emulator by kopf's author): as measured in k8s-substrate.md, kmock 0.8
stores no uid / resourceVersion / generation (so kopf's finalizer JSON patch, which starts with a
`test /metadata/resourceVersion`, fails forever), gives no 409 on stale writes, has no PUT, no
spec/status separation, no schema validation or selectors, ignores the resourceVersion and
timeout of watches, serves no discovery, OpenAPI or list kinds that kubectl needs, and rescans its
whole request log on every request. This emulator keeps its own store (k8s_store) instead.

What it does (see KubernetesEmulator): server-filled metadata with one global resourceVersion;
get / list / watch / create / update / patch (merge, JSON, strategic, server-side apply) / delete /
deletecollection; 404 / 409 / 410 / 422 / 400 Status bodies like the apiserver's; finalizers and
deletionTimestamp; status subresources; CRD registration with structural checks, CR validation,
defaulting and pruning against the CRD schema (k8s_schema), strict / warn / ignore field
validation; label and field selectors; watches that resume from a bounded history, bookmarks and
`sendInitialEvents`; discovery, OpenAPI v3 and server-side Table printing for kubectl; request
counters and fault injection for tests.

What it does not do:
- Protobuf, except the bodies `kubectl create secret|configmap|namespace|serviceaccount` send
  (k8s_protobuf; answers are JSON, which kubectl accepts; other protobuf gets 406 / 415).
- Aggregated discovery (legacy discovery is served and clients fall back to it); OpenAPI v2 is
  an empty document; built-in kinds have OpenAPI paths but no schemas (`kubectl explain` works
  for CRDs only).
- Server-side apply tracks the fields of apply managers only (in memory, by uid; `managedFields`
  is never written): it reports conflicts between apply managers (`force` takes the fields
  over) and removes what a manager stops applying unless another apply manager applies it.
  Writers that are not apply (create, update, patch: kopf, client-side kubectl apply) own
  nothing, so they never conflict with an apply and their fields are not protected by it.
  Lists declared `x-kubernetes-list-type: map` merge by their keys, `set` lists by value,
  everything else is replaced.
- Strategic merge patch of built-in kinds knows the merge keys of a few common lists only
  (containers, env, ports, volumes, ...); custom resources refuse it with 415 like the apiserver.
- Built-in kinds are stored as given: no schema, no defaults (except Secret.stringData and
  Namespace.status.phase), no controllers (Deployments never become ready), no garbage
  collection by ownerReferences, no RBAC, no admission webhooks, no CR version conversion other
  than relabelling (`strategy: None`).
- Namespaces carry no `spec.finalizers`: a deleted namespace (or CRD) is marked, its contents
  are deleted (each honouring its own finalizers) and it goes once it is empty, as with the
  apiserver's controllers, but synchronously, within the DELETE request.
- Paginated lists (`limit` / `continue`) read the current state, not a snapshot.
- Field selectors on built-in kinds accept any field path (the apiserver a few per kind);
  custom resources accept metadata.name, metadata.namespace and the CRD's selectableFields.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import hashlib
import json
import logging
import random
import re
import signal
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml
from aiohttp import web

from feldera_sandbox.k8s_emulator import k8s_kinds, k8s_patch, k8s_protobuf, k8s_store
from feldera_sandbox.k8s_emulator.k8s_kinds import ResourceType
from feldera_sandbox.k8s_emulator.k8s_store import Collection, Obj, Watcher, WatchEvent

log = logging.getLogger(__name__)

VERSION_INFO = {
    "major": "1",
    "minor": "37",
    "gitVersion": "v1.37.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # what the apiserver's generateName draws from
_CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
_NAMESPACES_KEY = ("", "namespaces")
_SERVER_METADATA = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds")
_MERGE = "application/merge-patch+json"
_JSON_PATCH = "application/json-patch+json"
_STRATEGIC = "application/strategic-merge-patch+json"
_APPLY = "application/apply-patch+yaml"


# --- errors ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cause:
    reason: str
    field: str
    message: str


class ApiError(Exception):
    """An error answered as a `Status` body, shaped like the apiserver's."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        return status_body(self.code, self.reason, self.message, self.details)


def status_body(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def _not_found(rt: ResourceType, name: str) -> ApiError:
    details = {"name": name, "group": rt.group, "kind": rt.plural}
    return ApiError(404, f'{rt.resource} "{name}" not found', details=details)


def _already_exists(rt: ResourceType, name: str) -> ApiError:
    details = {"name": name, "group": rt.group, "kind": rt.plural}
    return ApiError(
        409, f'{rt.resource} "{name}" already exists', reason="AlreadyExists", details=details
    )


def _conflict(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {rt.resource} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        details={"name": name, "group": rt.group, "kind": rt.plural},
    )


def _invalid(rt: ResourceType, name: str, causes: list[Cause]) -> ApiError:
    texts = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return ApiError(
        422,
        f'{rt.group_kind} "{name}" is invalid: {summary}',
        details={
            "name": name,
            "group": rt.group,
            "kind": rt.kind,
            "causes": [
                {"reason": c.reason, "message": c.message, "field": c.field} for c in causes
            ],
        },
    )


def _bad_request(message: str) -> ApiError:
    return ApiError(400, message)


# --- small helpers ---------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _status_response(error: ApiError) -> web.Response:
    return _json(error.status(), error.code, error.headers)


def _spec_part(obj: Obj, status_subresource: bool) -> Obj:
    """What metadata.generation tracks: everything but metadata (and status when separate)."""
    skip = {"metadata", "status"} if status_subresource else {"metadata"}
    return {k: v for k, v in obj.items() if k not in skip}


@dataclass
class Target:
    """What a resource URL names."""

    rt: ResourceType
    version: str
    namespace: str | None
    name: str | None
    subresource: str | None

    @property
    def counter(self) -> str:
        return f"{self.rt.plural}/{self.subresource}" if self.subresource else self.rt.plural


@dataclass
class Fault:
    verb: str
    resource: str
    status: int  # 0: answer normally (after the delay)
    remaining: int
    delay: float = 0.0


@dataclass(frozen=True)
class Format:
    """How a GET / LIST / WATCH answer is rendered, from the Accept header."""

    kind: str  # "json", "table" or "partial"
    api_version: str = "meta.k8s.io/v1"


def _negotiate(accept: str) -> Format:
    if not accept.strip():
        return Format("json")
    for item in accept.split(","):
        media, *raw = (p.strip() for p in item.split(";"))
        params = dict(p.split("=", 1) for p in raw if "=" in p)
        media = media.lower()
        if media not in ("application/json", "*/*", "application/*"):
            continue  # protobuf, yaml, CBOR: not served
        as_ = params.get("as")
        if as_ is None:
            return Format("json")
        if params.get("g") != "meta.k8s.io":
            continue  # e.g. aggregated discovery: answered by the legacy form instead
        api_version = f"meta.k8s.io/{params.get('v', 'v1')}"
        if as_ == "Table":
            return Format("table", api_version)
        if as_ in ("PartialObjectMetadata", "PartialObjectMetadataList"):
            return Format("partial", api_version)
    raise ApiError(406, f"only the following media types are accepted: application/json ({accept})")


# --- the emulator ----------------------------------------------------------------------------


class KubernetesEmulator:
    """An in-memory Kubernetes API server. `await start()` returns its base URL.

    Options: `history_size` events of watch history kept per resource type (older resumes get
    410 Expired); `bookmark_interval` seconds of idleness before a BOOKMARK on watches that allow
    them; `default_watch_timeout` for watches without timeoutSeconds; `log_requests`.

    Test hooks: `request_counts()` / `reset_counts()` (also GET / DELETE `/_emulator/requests`),
    keyed "VERB resource[/subresource]" with VERB one of get, list, watch, create, update, patch,
    delete, deletecollection (e.g. "patch felderapipelines/status"); `inject_fault(verb, resource,
    status, count, delay=0)` (also POST `/_emulator/faults` with that JSON, DELETE to clear)
    makes the next `count` matching requests fail with `status` before they touch the store;
    `objects(group, plural)` reads the store directly.
    """

    def __init__(
        self,
        *,
        history_size: int = 50_000,
        bookmark_interval: float = 10.0,
        default_watch_timeout: float = 1800.0,
        log_requests: bool = False,
    ) -> None:
        self.store = k8s_store.Store(history_size)
        self.log_requests = log_requests
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self._types: dict[tuple[str, str], ResourceType] = {}
        self._routes: dict[tuple[str, str, str], ResourceType] = {}
        self._builtin_groups: list[str] = []
        self._counts: Counter[str] = Counter()
        self._faults: list[Fault] = []
        # Fields each server-side apply manager owns, by object uid (see k8s_patch).
        self._owners: dict[str, dict[str, frozenset[k8s_patch.FieldPath]]] = {}
        self._openapi_cache: dict[str, bytes] = {}
        self._runner: web.AppRunner | None = None
        self._stopping = False
        for rt in k8s_kinds.builtin_types():
            self._register(rt)
            if rt.group and rt.group not in self._builtin_groups:
                self._builtin_groups.append(rt.group)
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self._seed(self._types[("", "namespaces")], {"metadata": {"name": ns}})

    # --- public API ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        # Short keep-alive and shutdown timeouts: watches are closed by stop() themselves.
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        return f"http://{host}:{bound}"

    async def stop(self) -> None:
        self._stopping = True
        for collection in self.store.collections():
            collection.close_watchers()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @staticmethod
    def write_kubeconfig(path: str, url: str, namespace: str = "default") -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": url}}],
            "users": [{"name": "emulator", "user": {"token": "emulator-token"}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace},
                }
            ],
            "current-context": "emulator",
            "preferences": {},
        }
        with open(path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(config, fh, sort_keys=False)

    def request_counts(self) -> dict[str, int]:
        return dict(self._counts)

    def reset_counts(self) -> None:
        self._counts.clear()

    def inject_fault(
        self, verb: str, resource: str, status: int, count: int = 1, *, delay: float = 0.0
    ) -> None:
        """Fail the next `count` requests of `verb` on `resource` (e.g. "patch",
        "felderapipelines/status") with `status`; "*" matches any verb or resource.

        `delay` seconds pass before the answer; with `status` 0 the request then proceeds as
        usual (a slow server rather than a failing one).
        """
        self._faults.append(Fault(verb, resource, status, count, delay))

    def clear_faults(self) -> None:
        self._faults.clear()

    def objects(self, group: str, plural: str) -> list[Obj]:
        """The stored objects of a type, for tests that look behind the API."""
        return list(self.store.collection((group, plural)).items())

    # --- type registry ---------------------------------------------------------------------------

    def _register(self, rt: ResourceType) -> None:
        old = self._types.get(rt.key)
        if old is not None:
            for version in old.versions:
                self._routes.pop((old.group, version, old.plural), None)
        self._types[rt.key] = rt
        for version in rt.versions:
            self._routes[(rt.group, version, rt.plural)] = rt
        self._openapi_cache.clear()

    def _unregister(self, key: tuple[str, str]) -> None:
        old = self._types.pop(key, None)
        if old is not None:
            for version in old.versions:
                self._routes.pop((old.group, version, old.plural), None)
        self._openapi_cache.clear()

    def _seed(self, rt: ResourceType, obj: Obj) -> None:
        obj = {"apiVersion": rt.api_version("v1"), "kind": rt.kind, **obj}
        self._commit_create(rt, self._admit_builtin(rt, obj, None), dry_run=False)

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {g: [] for g in self._builtin_groups}
        for rt in self._types.values():
            if rt.group:
                versions = groups.setdefault(rt.group, [])
                versions.extend(v for v in rt.versions if v not in versions)
        return {g: sorted(v, key=k8s_kinds.version_priority) for g, v in groups.items() if v}

    def _types_in(self, group: str, version: str) -> list[ResourceType]:
        return [rt for (g, v, _), rt in self._routes.items() if g == group and v == version]

    # --- HTTP entry point ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self.log_requests:
            return await self._answer(request)
        started = asyncio.get_running_loop().time()
        response = await self._answer(request)
        elapsed = (asyncio.get_running_loop().time() - started) * 1000
        log.info("%s %s -> %d (%.1f ms)", request.method, request.path_qs, response.status, elapsed)
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._route(request)
        except ApiError as error:
            return _status_response(error)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug here must answer like a server, not hang the client
            log.exception("emulator error on %s %s", request.method, request.path_qs)
            return _status_response(ApiError(500, f"emulator internal error: {exc!r}"))

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        parts = path.strip("/").split("/") if path != "/" else []
        if parts[:1] == ["_emulator"]:
            return await self._control(request, parts[1:])
        if request.method == "GET":
            if path == "/version":
                return _json(VERSION_INFO)
            if path in ("/healthz", "/livez", "/readyz"):
                return web.Response(text="ok")
            if parts[:1] == ["openapi"]:
                return self._openapi(request, parts[1:])
            discovery = self._discovery(request, parts)
            if discovery is not None:
                return discovery
        target = self._parse(parts)
        if target is None:
            raise ApiError(404, "the server could not find the requested resource")
        return await self._resource(request, target)

    def _parse(self, parts: list[str]) -> Target | None:
        if parts[:1] == ["api"] and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace = None
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            return None
        rt = self._routes.get((group, version, rest[0]))
        if rt is None:
            return None
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and not (sub == "status" and rt.status_subresource):
            return None
        if rt.namespaced and namespace is None and name is not None:
            return None
        if not rt.namespaced and namespace is not None:
            return None
        return Target(rt, version, namespace, name, sub)

    async def _resource(self, request: web.Request, target: Target) -> web.StreamResponse:
        method, query = request.method, request.query
        watch = query.get("watch", "").lower() in ("true", "1")
        verbs = {
            ("GET", True): "watch" if watch else "get",
            ("GET", False): "watch" if watch else "list",
            ("POST", False): "create",
            ("PUT", True): "update",
            ("PATCH", True): "patch",
            ("DELETE", True): "delete",
            ("DELETE", False): "deletecollection",
        }
        verb = verbs.get((method, target.name is not None))
        if verb is None:
            raise ApiError(
                405, f"the server does not allow this method on the requested resource ({method})"
            )
        if target.subresource and verb not in ("get", "update", "patch"):
            raise ApiError(405, "the server does not allow this method on a subresource")
        self._counts[f"{verb} {target.counter}"] += 1
        await self._apply_faults(verb, target)
        if verb in ("get", "list", "watch"):
            fmt = _negotiate(request.headers.get("Accept", ""))
            if verb == "get":
                return self._get(target, fmt)
            if verb == "list":
                return self._list(target, query, fmt)
            return await self._watch(request, target, fmt)
        _negotiate(request.headers.get("Accept", ""))
        body = await self._body(request, verb)
        if verb == "create":
            return self._create(target, body, query)
        if verb == "update":
            return self._update(target, body, query)
        if verb == "patch":
            return self._patch(target, body, query, request.content_type)
        if verb == "delete":
            return self._delete(target, body, query)
        return self._delete_collection(target, query)

    async def _body(self, request: web.Request, verb: str) -> Any:
        raw = await request.read()
        content_type = request.content_type
        if content_type == k8s_protobuf.CONTENT_TYPE and verb == "create":
            try:
                return k8s_protobuf.decode(raw)
            except k8s_protobuf.ProtobufError as exc:
                raise ApiError(
                    415, f"the body of the request was in an unknown format - {exc}"
                ) from None
        if "protobuf" in content_type or "cbor" in content_type:
            raise ApiError(
                415,
                f"the body of the request was in an unknown format - {content_type} "
                "is not served by this emulator",
            )
        if not raw.strip():
            if verb in ("delete", "deletecollection"):
                return {}
            raise _bad_request("the body of the request was empty")
        try:
            if content_type == _APPLY:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise _bad_request(f"the body of the request could not be decoded: {exc}") from None

    async def _apply_faults(self, verb: str, target: Target) -> None:
        for fault in self._faults:
            if fault.remaining <= 0:
                continue
            if fault.verb not in ("*", verb) or fault.resource not in ("*", target.counter):
                continue
            fault.remaining -= 1
            if fault.delay > 0:
                await asyncio.sleep(fault.delay)
            if not fault.status:
                return
            name = target.name or ""
            if fault.status == 409:
                raise _conflict(target.rt, name)
            if fault.status == 404:
                raise _not_found(target.rt, name)
            headers = {"Retry-After": "1"} if fault.status in (429, 503) else None
            raise ApiError(
                fault.status, f"injected fault ({verb} {target.counter})", headers=headers
            )

    # --- control endpoints for tests -------------------------------------------------------------

    async def _control(self, request: web.Request, parts: list[str]) -> web.Response:
        what = parts[0] if parts else ""
        if what == "requests":
            if request.method == "DELETE":
                self.reset_counts()
            return _json(self.request_counts())
        if what == "faults":
            if request.method == "POST":
                spec = await request.json()
                self.inject_fault(
                    str(spec["verb"]),
                    str(spec["resource"]),
                    int(spec.get("status", 0)),
                    int(spec.get("count", 1)),
                    delay=float(spec.get("delay", 0.0)),
                )
            elif request.method == "DELETE":
                self.clear_faults()
            return _json([f.__dict__ for f in self._faults if f.remaining > 0])
        raise ApiError(404, "unknown emulator control endpoint")

    # --- discovery and OpenAPI -------------------------------------------------------------------

    def _discovery(self, request: web.Request, parts: list[str]) -> web.Response | None:
        # Aggregated discovery is asked for first; the legacy answer with a plain
        # application/json Content-Type makes client-go fall back to the legacy requests.
        if parts == ["api"]:
            host = request.host
            return _json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": host}
                    ],
                }
            )
        if parts == ["api", "v1"]:
            return _json(k8s_kinds.api_resource_list("v1", self._types_in("", "v1")))
        if parts == ["apis"]:
            groups = [k8s_kinds.api_group(g, v) for g, v in self._groups().items()]
            return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if len(parts) == 2 and parts[0] == "apis":
            versions = self._groups().get(parts[1])
            if not versions:
                raise ApiError(404, "the server could not find the requested resource")
            group = k8s_kinds.api_group(parts[1], versions)
            return _json({"kind": "APIGroup", "apiVersion": "v1", **group})
        if len(parts) == 3 and parts[0] == "apis":
            types = self._types_in(parts[1], parts[2])
            if not types:
                raise ApiError(404, "the server could not find the requested resource")
            return _json(k8s_kinds.api_resource_list(f"{parts[1]}/{parts[2]}", types))
        return None

    def _openapi_doc(self, key: str) -> bytes | None:
        cached = self._openapi_cache.get(key)
        if cached is not None:
            return cached
        if key == "api/v1":
            doc = k8s_kinds.builtin_openapi_document("v1", self._types_in("", "v1"))
        else:
            _, group, version = key.split("/")
            types = self._types_in(group, version)
            if not types:
                return None
            builtins = [t for t in types if t.crd is None]
            crds = [t.crd for t in types if t.crd is not None]
            if crds:
                from feldera_sandbox.k8s_emulator import k8s_schema

                doc = k8s_schema.openapi_v3_document(group, version, crds)
                # kubectl decides that the server validates fields itself by finding
                # `fieldValidation` on the kind's PATCH operation: make sure the paths exist.
                paths = doc.setdefault("paths", {})
                for path, item in k8s_kinds.openapi_paths(
                    [t for t in types if t.crd is not None], version
                ).items():
                    paths.setdefault(path, item)
                if builtins:
                    paths.update(k8s_kinds.openapi_paths(builtins, version))
            else:
                doc = k8s_kinds.builtin_openapi_document(f"{group}/{version}", builtins)
        data = json.dumps(doc, sort_keys=True).encode()
        self._openapi_cache[key] = data
        return data

    def _openapi(self, request: web.Request, parts: list[str]) -> web.Response:
        if parts == ["v2"]:
            # kubectl falls back to OpenAPI v2 (asked for as protobuf only) when a kind is in no
            # v3 document; a 404 or JSON there would hide the real error ("no matches for
            # kind ..."). An empty document - `swagger: "2.0"` (field 1) and nothing else - lets
            # it get there.
            return web.Response(
                body=b"\x0a\x032.0",
                content_type="application/octet-stream",
            )
        if parts[:1] != ["v3"]:
            raise ApiError(404, "the server could not find the requested resource")
        if len(parts) == 1:
            keys = ["api/v1"] + [
                f"apis/{g}/{v}" for g, versions in self._groups().items() for v in versions
            ]
            paths = {}
            for key in keys:
                data = self._openapi_doc(key)
                if data is not None:
                    digest = hashlib.sha512(data).hexdigest().upper()
                    paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
            return _json({"paths": paths})
        data = self._openapi_doc("/".join(parts[1:]))
        if data is None:
            raise ApiError(404, "the server could not find the requested resource")
        headers = {"Cache-Control": "public, immutable"} if "hash" in request.query else {}
        return web.Response(body=data, content_type="application/json", headers=headers)

    # --- rendering -------------------------------------------------------------------------------

    def _present(self, target: Target, obj: Obj) -> Obj:
        api_version = target.rt.api_version(target.version)
        if obj.get("apiVersion") == api_version:
            return obj
        return {**obj, "apiVersion": api_version}

    def _table(self, target: Target, objects: list[Obj], fmt: Format, include: str) -> Obj:
        from feldera_sandbox.k8s_emulator import k8s_schema

        entry = target.rt.crd_version(target.version)
        if entry is not None:
            table: Obj = k8s_schema.printer_columns_table(entry, objects, include_object=include)
        else:
            now = datetime.now(UTC)
            columns = _BUILTIN_COLUMNS.get(target.rt.key)
            if columns is None:
                columns = [_NAME_COLUMN, _AGE_COLUMN]
            table = {
                "kind": "Table",
                "columnDefinitions": [
                    {
                        "name": name,
                        "type": "string",
                        "format": "name" if name == "Name" else "",
                        "priority": priority,
                        "description": "",
                    }
                    for name, priority, _ in columns
                ],
                "rows": [
                    {
                        "cells": [cell(o, now) for _, _, cell in columns],
                        **({"object": _row_object(o, include)} if include != "None" else {}),
                    }
                    for o in objects
                ],
            }
        table["apiVersion"] = fmt.api_version
        table.setdefault("metadata", {})["resourceVersion"] = str(self.store.rv)
        return table

    def _render_one(self, target: Target, obj: Obj, fmt: Format, include: str) -> Obj:
        if fmt.kind == "table":
            return self._table(target, [self._present(target, obj)], fmt, include)
        if fmt.kind == "partial":
            return {
                "kind": "PartialObjectMetadata",
                "apiVersion": fmt.api_version,
                "metadata": obj["metadata"],
            }
        return self._present(target, obj)

    # --- reads -----------------------------------------------------------------------------------

    def _collection(self, rt: ResourceType) -> Collection:
        return self.store.collection(rt.key)

    def _key(self, target: Target, name: str | None = None) -> tuple[str, str]:
        return (target.namespace or "", name or target.name or "")

    def _existing(self, target: Target) -> Obj:
        obj = self._collection(target.rt).objects.get(self._key(target))
        if obj is None:
            raise _not_found(target.rt, target.name or "")
        return obj

    def _get(self, target: Target, fmt: Format) -> web.Response:
        obj = self._existing(target)
        return _json(self._render_one(target, obj, fmt, "Object"))

    def _filter(self, target: Target, query: Any) -> Callable[[Obj], bool]:
        namespace = target.namespace
        try:
            labels = k8s_patch.parse_label_selector(query.get("labelSelector", ""))
        except k8s_patch.SelectorError as exc:
            raise _bad_request(str(exc)) from None
        fields = self._field_selector(target, query.get("fieldSelector", ""))
        if target.name is not None:  # a watch on one object
            fields.append(("metadata.name", True, target.name))

        def accepts(obj: Obj) -> bool:
            meta = obj["metadata"]
            if namespace is not None and meta.get("namespace") != namespace:
                return False
            if labels:
                present = meta.get("labels") or {}
                if not all(r.matches(present) for r in labels):
                    return False
            for path, equal, value in fields:
                if (k8s_patch.field_value(obj, path) == value) != equal:
                    return False
            return True

        return accepts

    def _field_selector(self, target: Target, selector: str) -> list[tuple[str, bool, str]]:
        try:
            fields = k8s_patch.parse_field_selector(selector)
        except k8s_patch.SelectorError as exc:
            raise _bad_request(str(exc)) from None
        if target.rt.crd is not None:
            entry = target.rt.crd_version(target.version) or {}
            allowed = {"metadata.name", "metadata.namespace"} | {
                str(f.get("jsonPath", "")).lstrip(".") for f in entry.get("selectableFields") or []
            }
            for path, _, _ in fields:
                if path not in allowed:
                    raise _bad_request(f"field label not supported: {path}")
        return fields

    def _list(self, target: Target, query: Any, fmt: Format) -> web.Response:
        rt = target.rt
        accepts = self._filter(target, query)
        collection = self._collection(rt)
        start: tuple[str, str] | None = None
        if query.get("continue"):
            try:
                token = json.loads(base64.urlsafe_b64decode(query["continue"].encode()))
                start = (str(token["start"][0]), str(token["start"][1]))
            except (ValueError, KeyError, IndexError, TypeError):
                raise _bad_request("continue key is not valid") from None
        limit = int(query.get("limit", "0") or 0)
        keys = sorted(collection.objects)
        if start is not None:
            keys = keys[bisect.bisect_right(keys, start) :]
        items: list[Obj] = []
        meta: Obj = {"resourceVersion": str(self.store.rv)}
        for index, key in enumerate(keys):
            obj = collection.objects[key]
            if target.namespace is not None and key[0] != target.namespace:
                continue
            if not accepts(obj):
                continue
            if limit and len(items) >= limit:
                last = items[-1]["metadata"]
                token = {"rv": self.store.rv, "start": [last.get("namespace", ""), last["name"]]}
                meta["continue"] = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
                if "labelSelector" not in query and "fieldSelector" not in query:
                    meta["remainingItemCount"] = len(keys) - index
                break
            items.append(obj)
        if fmt.kind == "table":
            include = query.get("includeObject", "Metadata")
            table = self._table(target, [self._present(target, o) for o in items], fmt, include)
            table["metadata"].update(meta)
            return _json(table)
        if fmt.kind == "partial":
            return _json(
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": fmt.api_version,
                    "metadata": meta,
                    "items": [
                        {
                            "kind": "PartialObjectMetadata",
                            "apiVersion": fmt.api_version,
                            "metadata": o["metadata"],
                        }
                        for o in items
                    ],
                }
            )
        return _json(
            {
                "kind": rt.list_kind,
                "apiVersion": rt.api_version(target.version),
                "metadata": meta,
                "items": [self._present(target, o) for o in items],
            }
        )

    async def _watch(self, request: web.Request, target: Target, fmt: Format) -> web.StreamResponse:
        query = request.query
        rt = target.rt
        accepts = self._filter(target, query)
        send_initial = query.get("sendInitialEvents", "").lower() == "true"
        if send_initial and query.get("resourceVersionMatch") != "NotOlderThan":
            raise ApiError(
                422,
                'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: '
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            )
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        timeout = float(query.get("timeoutSeconds") or self.default_watch_timeout)
        rv_param = query.get("resourceVersion", "")
        collection = self._collection(rt)

        # Everything from here to registering the watcher runs without awaiting, so no write
        # can slip between the initial state (or history) and the live events.
        initial: list[WatchEvent] = []
        too_old: str | None = None
        if send_initial or rv_param in ("", "0"):
            initial = [
                WatchEvent("ADDED", obj, int(obj["metadata"]["resourceVersion"]))
                for obj in collection.items(target.namespace)
                if accepts(obj)
            ]
        else:
            try:
                since = int(rv_param)
            except ValueError:
                raise _bad_request(f'invalid resource version: "{rv_param}"') from None
            events = collection.history.since(since)
            if events is None:
                too_old = f"too old resource version: {since} ({collection.history.floor + 1})"
            else:
                replay = Watcher(accepts)
                for event in events:
                    replay.offer(event)
                while not replay.queue.empty():
                    item = replay.queue.get_nowait()
                    if item is not None:
                        initial.append(item)
        start_rv = self.store.rv
        watcher = Watcher(accepts)
        if too_old is None and not self._stopping:
            collection.watchers.add(watcher)

        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            if too_old is not None:
                error = status_body(410, "Expired", too_old)
                await response.write(_line({"type": "ERROR", "object": error}))
                return response
            chunk = [_line(self._watch_event(target, e, fmt)) for e in initial]
            if send_initial:
                chunk.append(_line(self._bookmark(target, start_rv, initial_end=True)))
            if chunk:
                await response.write(b"".join(chunk))
            await self._stream(response, target, watcher, fmt, timeout, bookmarks)
        except ConnectionResetError:
            pass  # the client went away: nothing to answer
        finally:
            collection.watchers.discard(watcher)
        return response

    async def _stream(
        self,
        response: web.StreamResponse,
        target: Target,
        watcher: Watcher,
        fmt: Format,
        duration: float,
        bookmarks: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration
        while not self._stopping:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            wait = min(remaining, self.bookmark_interval) if bookmarks else remaining
            try:
                event = await asyncio.wait_for(watcher.queue.get(), wait)
            except TimeoutError:
                if bookmarks and loop.time() < deadline:
                    # The queue is empty: every event up to the current rv has been sent.
                    await response.write(_line(self._bookmark(target, self.store.rv)))
                continue
            if event is None:
                return
            batch: list[WatchEvent | None] = [event]
            while not watcher.queue.empty():  # drain bursts into one write
                batch.append(watcher.queue.get_nowait())
            closing = batch[-1] is None
            lines = [_line(self._watch_event(target, e, fmt)) for e in batch if e is not None]
            await response.write(b"".join(lines))
            if closing:
                return

    def _watch_event(self, target: Target, event: WatchEvent, fmt: Format) -> Obj:
        return {"type": event.type, "object": self._render_one(target, event.obj, fmt, "Object")}

    def _bookmark(self, target: Target, rv: int, *, initial_end: bool = False) -> Obj:
        meta: Obj = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {
            "kind": target.rt.kind,
            "apiVersion": target.rt.api_version(target.version),
            "metadata": meta,
        }
        return {"type": "BOOKMARK", "object": obj}

    # --- writes: admission -----------------------------------------------------------------------

    def _field_validation(self, query: Any) -> str:
        value = query.get("fieldValidation", "Warn") or "Warn"
        if value not in ("Ignore", "Warn", "Strict"):
            raise _bad_request(
                f'fieldValidation: Unsupported value: "{value}": supported values: '
                '"Ignore", "Strict", "Warn"'
            )
        return value

    def _admit(
        self,
        target: Target,
        new: Obj,
        old: Obj | None,
        *,
        subresource: str | None,
        validation: str,
    ) -> tuple[Obj, list[str]]:
        """Turn a client's object into the one to store, or raise the apiserver's error.

        `new` is owned by the caller's request (it is mutated); `old` is the stored object or
        None on create.
        """
        rt = target.rt
        if not isinstance(new, dict):
            raise _bad_request("the body of the request must be a JSON object")
        expected = rt.api_version(target.version)
        kind, api_version = new.get("kind"), new.get("apiVersion")
        if kind not in (None, rt.kind) or api_version not in (None, expected):
            raise _bad_request(
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({expected})"
                if api_version not in (None, expected)
                else f'{kind} in version "{target.version}" cannot be handled as a {rt.kind}: '
                f'kind "{kind}" does not match "{rt.kind}"'
            )
        new["apiVersion"], new["kind"] = expected, rt.kind
        meta = new.get("metadata")
        if meta is None:
            meta = new["metadata"] = {}
        if not isinstance(meta, dict):
            raise _bad_request("metadata must be an object")
        name = target.name or meta.get("name") or ""
        if target.name is not None and meta.get("name") not in (None, target.name):
            raise _bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the "
                f"URL ({target.name})"
            )
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", target.namespace):
                raise _bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            meta["namespace"] = target.namespace
        else:
            meta.pop("namespace", None)
        meta.pop("managedFields", None)

        if old is not None and subresource == "status":
            # A status write changes status only: everything else comes from the stored object.
            status = new.get("status")
            new = k8s_patch.deep_copy(old)
            new["apiVersion"] = expected
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        elif rt.status_subresource:
            # Writes to the main resource never change status; a created custom resource (or
            # CRD, whose status is the emulator's) starts without one.
            if old is not None and "status" in old:
                new["status"] = k8s_patch.deep_copy(old["status"])
            elif old is not None or rt.crd is not None or rt.key == _CRD_KEY:
                new.pop("status", None)
        meta = new["metadata"]
        if old is not None:
            old_meta = old["metadata"]
            for key in ("name", "namespace", *_SERVER_METADATA, "generation"):
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
            if old_meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
                if added:
                    raise _invalid(
                        rt,
                        name,
                        [
                            Cause(
                                "FieldValueForbidden",
                                "metadata.finalizers",
                                "Forbidden: no new finalizers can be added if the object is being "
                                f"deleted, found new finalizers {sorted(added)}",
                            )
                        ],
                    )
        else:
            for key in (*_SERVER_METADATA, "generation", "resourceVersion"):
                meta.pop(key, None)
        warnings: list[str] = []
        if rt.crd is not None:
            new, warnings = self._admit_custom(target, new, old, validation, name)
        elif rt.key == _CRD_KEY:
            new = self._admit_crd(target, new, old, name)
        else:
            new = self._admit_builtin(rt, new, old)
        return new, warnings

    def _check_name(self, rt: ResourceType, meta: Obj) -> str:
        name = meta.get("name")
        if not name:
            if meta.get("generateName"):
                return ""
            raise _invalid(
                rt,
                "",
                [
                    Cause(
                        "FieldValueRequired",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    )
                ],
            )
        if rt.group == "rbac.authorization.k8s.io":
            # RBAC names are path segments ("system:controller:x" is valid).
            if isinstance(name, str) and name not in (".", "..") and not set(name) & {"/", "%"}:
                return name
            raise _invalid(
                rt,
                str(name),
                [
                    Cause(
                        "FieldValueInvalid",
                        "metadata.name",
                        f"Invalid value: \"{name}\": may not contain '/' or '%'",
                    )
                ],
            )
        label = rt.key in (("", "namespaces"), ("", "services"))
        pattern, limit = (_DNS_LABEL, 63) if label else (_DNS_SUBDOMAIN, 253)
        if not isinstance(name, str) or len(name) > limit or not pattern.match(name):
            what = "RFC 1123 label" if label else "RFC 1123 subdomain"
            raise _invalid(
                rt,
                str(name),
                [
                    Cause(
                        "FieldValueInvalid",
                        "metadata.name",
                        f'Invalid value: "{name}": a lowercase {what} must consist of lower case '
                        "alphanumeric characters, '-'"
                        + ("" if label else " or '.'")
                        + ", and must start and end with an alphanumeric character",
                    )
                ],
            )
        return str(name)

    def _admit_custom(
        self, target: Target, new: Obj, old: Obj | None, validation: str, name: str
    ) -> tuple[Obj, list[str]]:
        rt = target.rt
        if old is None:
            self._check_name(rt, new["metadata"])
        schema = rt.schema(target.version)
        if schema is None:
            return new, []
        from feldera_sandbox.k8s_emulator import k8s_schema

        envelope: Obj = {k: new[k] for k in ("apiVersion", "kind", "metadata") if k in new}
        unknown = [p.lstrip(".") for p in k8s_schema.unknown_fields(schema, new)]
        for path in unknown:
            # ObjectMeta drops fields it does not know when the apiserver decodes it.
            if path.startswith("metadata.") and "." not in path[len("metadata.") :]:
                envelope["metadata"].pop(path[len("metadata.") :], None)
        warnings: list[str] = []
        if unknown:
            texts = [f'unknown field "{p}"' for p in unknown]
            if validation == "Strict":
                raise _bad_request(
                    f'{rt.kind} in version "{target.version}" cannot be handled as a {rt.kind}: '
                    "strict decoding error: " + ", ".join(texts)
                )
            if validation == "Warn":
                warnings = texts
        new = k8s_schema.prune(schema, new)
        new = k8s_schema.apply_defaults(schema, new)
        new.update(envelope)  # the schema never governs the envelope
        causes = k8s_schema.validate(schema, new, old)
        if causes:
            raise _invalid(
                rt,
                name or new["metadata"].get("generateName", ""),
                [_cause_from_schema(c.reason, c.field, c.message) for c in causes],
            )
        return new, warnings

    def _admit_crd(self, target: Target, new: Obj, old: Obj | None, name: str) -> Obj:
        rt = target.rt
        from feldera_sandbox.k8s_emulator import k8s_schema

        # Names, scope, versions, storage version and the schemas: what the apiserver refuses.
        problems = k8s_schema.check_structural(new)
        if problems:
            raise _invalid(rt, name, [_cause_from_text(p) for p in problems])
        spec, names, versions = new["spec"], new["spec"]["names"], new["spec"]["versions"]
        if old is not None and old["spec"].get("group") != spec["group"]:
            raise _invalid(
                rt,
                name,
                [Cause("FieldValueInvalid", "spec.group", "Invalid value: field is immutable")],
            )
        names.setdefault("singular", str(names["kind"]).lower())
        names.setdefault("listKind", f"{names['kind']}List")
        spec.setdefault("conversion", {"strategy": "None"})
        for version in versions:
            version.setdefault("served", True)
        storage = next(v["name"] for v in versions if v.get("storage"))
        stored = list((old or {}).get("status", {}).get("storedVersions") or [])
        if storage not in stored:
            stored.append(storage)
        now = _now()
        conditions = [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": now,
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": now,
            },
        ]
        if old is not None:  # keep the transition times: nothing flipped
            previous = {c.get("type"): c for c in old.get("status", {}).get("conditions") or []}
            conditions = [previous.get(c["type"], c) for c in conditions]
        new["status"] = {
            "conditions": conditions,
            "acceptedNames": {
                k: names[k]
                for k in ("plural", "singular", "shortNames", "kind", "listKind", "categories")
                if k in names
            },
            "storedVersions": stored,
        }
        return new

    def _admit_builtin(self, rt: ResourceType, new: Obj, old: Obj | None) -> Obj:
        if old is None:
            self._check_name(rt, new["metadata"])
        if rt.key == ("", "secrets"):
            string_data = new.pop("stringData", None)
            if isinstance(string_data, dict):
                data = new.setdefault("data", {})
                for key, value in string_data.items():
                    data[key] = base64.b64encode(str(value).encode()).decode()
            new.setdefault("type", "Opaque")
        elif rt.key == ("", "namespaces"):
            status = new.setdefault("status", {})
            status["phase"] = (
                "Terminating" if new["metadata"].get("deletionTimestamp") else ("Active")
            )
            if old is None:
                labels = new["metadata"].setdefault("labels", {})
                labels["kubernetes.io/metadata.name"] = new["metadata"].get("name", "")
        return new

    # --- writes: commit --------------------------------------------------------------------------

    def _commit_create(self, rt: ResourceType, obj: Obj, *, dry_run: bool) -> Obj:
        collection = self._collection(rt)
        meta = obj["metadata"]
        if not meta.get("name"):
            for _ in range(16):
                candidate = meta["generateName"] + "".join(random.choices(_NAME_CHARS, k=5))
                if (meta.get("namespace", ""), candidate) not in collection.objects:
                    meta["name"] = candidate
                    break
        key = (meta.get("namespace", ""), meta["name"])
        if key in collection.objects:
            raise _already_exists(rt, meta["name"])
        terminating = self._terminating(rt)
        if terminating is not None:
            raise terminating
        if rt.namespaced and meta.get("namespace") not in ("", None):
            namespaces = self._collection(self._types[("", "namespaces")]).objects
            if ("", meta["namespace"]) not in namespaces:
                raise _not_found(self._types[("", "namespaces")], meta["namespace"])
            ns = namespaces[("", meta["namespace"])]
            if ns["metadata"].get("deletionTimestamp"):
                raise ApiError(
                    403,
                    f'{rt.plural} "{meta["name"]}" is forbidden: unable to create new content in '
                    f"namespace {meta['namespace']} because it is being terminated",
                    reason="Forbidden",
                )
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        if rt.generation:
            meta["generation"] = 1
        if dry_run:
            return obj
        meta["resourceVersion"] = str(self.store.next_rv())
        self.store.put(collection, key, obj, "ADDED")
        if rt.key == _CRD_KEY:
            self._register(k8s_kinds.type_from_crd(obj))
        return obj

    def _commit_update(self, rt: ResourceType, obj: Obj, old: Obj, *, dry_run: bool) -> Obj:
        meta = obj["metadata"]
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if rt.generation and _spec_part(obj, rt.status_subresource) != _spec_part(
            old, rt.status_subresource
        ):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        if obj == old:
            return old  # a no-op write: the apiserver neither bumps the rv nor emits an event
        if dry_run:
            return obj
        collection = self._collection(rt)
        key = (meta.get("namespace", ""), meta["name"])
        meta["resourceVersion"] = str(self.store.next_rv())
        self.store.put(collection, key, obj, "MODIFIED")
        if rt.key == _CRD_KEY:
            self._register(k8s_kinds.type_from_crd(obj))
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            if not self._has_contents(rt, obj):
                return self._remove(rt, obj)
        return obj

    def _remove(self, rt: ResourceType, obj: Obj) -> Obj:
        collection = self._collection(rt)
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        final = {**obj, "metadata": {**meta, "resourceVersion": str(self.store.next_rv())}}
        self.store.remove(collection, key, final)
        self._owners.pop(meta.get("uid", ""), None)
        if rt.key == _CRD_KEY:
            spec = obj["spec"]
            type_key = (spec["group"], spec["names"]["plural"])
            self.store.collection(type_key).close_watchers()
            self._unregister(type_key)
        # The last object of a terminating namespace or CRD lets that one go too.
        if rt.namespaced:
            self._finish_if_empty(_NAMESPACES_KEY, ("", meta["namespace"]))
        if rt.crd is not None:
            self._finish_if_empty(_CRD_KEY, ("", rt.resource))
        return final

    # Namespaces and CRDs terminate like the apiserver's controllers make them: deleting one
    # marks it, deletes what it contains (each object honouring its own finalizers), and removes
    # it once nothing is left.

    def _contents(self, rt: ResourceType, obj: Obj) -> list[tuple[ResourceType, Obj]]:
        if rt.key == _NAMESPACES_KEY:
            name = obj["metadata"]["name"]
            return [
                (t, o)
                for t in list(self._types.values())
                if t.namespaced
                for o in list(self._collection(t).items(name))
            ]
        if rt.key == _CRD_KEY:
            spec = obj["spec"]
            cr = self._types.get((spec["group"], spec["names"]["plural"]))
            return [] if cr is None else [(cr, o) for o in list(self._collection(cr).items())]
        return []

    def _has_contents(self, rt: ResourceType, obj: Obj) -> bool:
        if rt.key == _NAMESPACES_KEY:
            name = obj["metadata"]["name"]
            return any(
                self._collection(t).count(name) for t in self._types.values() if t.namespaced
            )
        if rt.key == _CRD_KEY:
            spec = obj["spec"]
            return bool(self.store.collection((spec["group"], spec["names"]["plural"])).objects)
        return False

    def _finish_if_empty(self, key: tuple[str, str], obj_key: tuple[str, str]) -> None:
        rt = self._types[key]
        container = self._collection(rt).objects.get(obj_key)
        if container is None or not container["metadata"].get("deletionTimestamp"):
            return
        if container["metadata"].get("finalizers") or self._has_contents(rt, container):
            return
        self._remove(rt, container)

    def _terminating(self, rt: ResourceType) -> ApiError | None:
        """Why no new object of a CRD that is going away may be created."""
        if rt.crd is not None:
            crd = self._collection(self._types[_CRD_KEY]).objects.get(("", rt.resource))
            if crd is not None and crd["metadata"].get("deletionTimestamp"):
                return ApiError(
                    405, "create not allowed while custom resource definition is terminating"
                )
        return None

    # --- writes: verbs ---------------------------------------------------------------------------

    def _respond(self, target: Target, obj: Obj, status: int, warnings: list[str]) -> web.Response:
        response = _json(self._present(target, obj), status)
        for warning in warnings:
            response.headers.add("Warning", f'299 - "{_escape(warning)}"')
        return response

    def _create(self, target: Target, body: Any, query: Any) -> web.Response:
        if target.subresource:
            raise ApiError(405, "create is not allowed on a subresource")
        validation = self._field_validation(query)
        if isinstance(body, dict) and (body.get("metadata") or {}).get("resourceVersion"):
            raise ApiError(500, "resourceVersion should not be set on objects to be created")
        obj, warnings = self._admit(target, body, None, subresource=None, validation=validation)
        obj = self._commit_create(target.rt, obj, dry_run=_dry_run(query))
        return self._respond(target, obj, 201, warnings)

    def _update(self, target: Target, body: Any, query: Any) -> web.Response:
        validation = self._field_validation(query)
        old = self._existing(target)
        if not isinstance(body, dict):
            raise _bad_request("the body of the request must be a JSON object")
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if rv in (None, ""):
            if target.rt.crd is not None or target.rt.key == _CRD_KEY:
                raise _invalid(
                    target.rt,
                    target.name or "",
                    [
                        Cause(
                            "FieldValueInvalid",
                            "metadata.resourceVersion",
                            "Invalid value: 0x0: must be specified for an update",
                        )
                    ],
                )
        elif str(rv) != old["metadata"]["resourceVersion"]:
            raise _conflict(target.rt, target.name or "")
        obj, warnings = self._admit(
            target, body, old, subresource=target.subresource, validation=validation
        )
        obj = self._commit_update(target.rt, obj, old, dry_run=_dry_run(query))
        return self._respond(target, obj, 200, warnings)

    def _patch(self, target: Target, body: Any, query: Any, content_type: str) -> web.Response:
        rt = target.rt
        validation = self._field_validation(query)
        collection = self._collection(rt)
        old = collection.objects.get(self._key(target))
        owners: dict[str, frozenset[k8s_patch.FieldPath]] | None = None
        if content_type == _APPLY:
            if not query.get("fieldManager"):
                raise ApiError(
                    422,
                    'PatchOptions.meta.k8s.io "" is invalid: fieldManager: '
                    "Required value: is required for apply patch",
                    reason="Invalid",
                )
            if not isinstance(body, dict):
                raise _bad_request("an apply patch must be an object")
            if old is None:
                if target.subresource:
                    raise _not_found(rt, target.name or "")
                obj, warnings = self._admit(
                    target, body, None, subresource=None, validation=validation
                )
                obj = self._commit_create(rt, obj, dry_run=_dry_run(query))
                if not _dry_run(query):
                    keys_of, type_of = self._schema_lookups(target)
                    fields = k8s_patch.applied_fields(body, keys_of, type_of)
                    self._owners[obj["metadata"]["uid"]] = {
                        str(query["fieldManager"]): frozenset(fields)
                    }
                return self._respond(target, obj, 201, warnings)
            manager = str(query["fieldManager"])
            force = query.get("force", "").lower() in ("true", "1")
            patched, owners = self._apply(target, old, body, manager, force)
        else:
            if old is None:
                raise _not_found(rt, target.name or "")
            try:
                if content_type == _MERGE:
                    patched = k8s_patch.merge_patch(old, body)
                elif content_type == _JSON_PATCH:
                    patched = k8s_patch.json_patch(old, body)
                elif content_type == _STRATEGIC and rt.crd is None:
                    patched = k8s_patch.strategic_merge_patch(old, body)
                else:
                    raise ApiError(
                        415,
                        f"the body of the request was in an unknown format - accepted media "
                        f"types include: {_JSON_PATCH}, {_MERGE}, {_APPLY}"
                        + ("" if rt.crd is not None else f", {_STRATEGIC}"),
                    )
            except k8s_patch.PatchError as exc:
                if exc.test_failed:
                    raise ApiError(422, str(exc), reason="Invalid") from None
                raise ApiError(
                    422,
                    f"the server rejected our request due to an error in our request: {exc}",
                    reason="Invalid",
                ) from None
        if not isinstance(patched, dict):
            raise _bad_request("the patched object is not a JSON object")
        patched = k8s_patch.deep_copy(patched)
        rv = (patched.get("metadata") or {}).get("resourceVersion")
        if rv not in (None, "") and str(rv) != old["metadata"]["resourceVersion"]:
            raise _conflict(rt, target.name or "")
        obj, warnings = self._admit(
            target, patched, old, subresource=target.subresource, validation=validation
        )
        obj = self._commit_update(rt, obj, old, dry_run=_dry_run(query))
        stored = collection.objects.get(self._key(target))
        if owners is not None and not _dry_run(query) and stored is not None:
            self._owners[stored["metadata"]["uid"]] = owners
        return self._respond(target, obj, 200, warnings)

    def _schema_lookups(self, target: Target) -> tuple[k8s_patch.ListMapKeys, k8s_patch.ListTypeOf]:
        schema = target.rt.schema(target.version)
        if schema is None:
            return (lambda _path: None), (lambda _path: None)
        from feldera_sandbox.k8s_emulator import k8s_schema

        def keys_of(path: k8s_patch.SchemaPath) -> list[str] | None:
            return k8s_schema.list_map_keys(schema, path)

        def type_of(path: k8s_patch.SchemaPath) -> str | None:
            return k8s_schema.list_type(schema, path)

        return keys_of, type_of

    def _apply(
        self, target: Target, old: Obj, body: Obj, manager: str, force: bool
    ) -> tuple[Obj, dict[str, frozenset[k8s_patch.FieldPath]]]:
        keys_of, type_of = self._schema_lookups(target)
        meta = body.get("metadata")
        if isinstance(meta, dict) and meta.get("resourceVersion") not in (None, ""):
            # An applied resourceVersion is a precondition, as in any other write.
            if str(meta["resourceVersion"]) != old["metadata"]["resourceVersion"]:
                raise _conflict(target.rt, target.name or "")
        config = {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
        owners = self._owners.get(old["metadata"]["uid"], {})
        try:
            merged, owners = k8s_patch.server_side_apply(
                old,
                config,
                manager,
                owners,
                force=force,
                list_map_keys=keys_of,
                list_type=type_of,
            )
        except k8s_patch.ApplyConflict as exc:
            raise ApiError(
                409,
                str(exc),
                reason="Conflict",
                details={
                    "causes": [
                        {
                            "reason": "FieldManagerConflict",
                            "message": f'conflict with "{m}"',
                            "field": field,
                        }
                        for m, field in exc.conflicts
                    ]
                },
            ) from None
        return merged, owners

    def _delete(self, target: Target, body: Any, query: Any) -> web.Response:
        rt = target.rt
        old = self._existing(target)
        preconditions = body.get("preconditions") if isinstance(body, dict) else None
        preconditions = preconditions if isinstance(preconditions, dict) else {}
        if preconditions.get("uid") not in (None, old["metadata"].get("uid")):
            raise ApiError(
                409,
                f"Precondition failed: UID in precondition: "
                f"{preconditions['uid']}, UID in object meta: {old['metadata']['uid']}",
                reason="Conflict",
            )
        if preconditions.get("resourceVersion") not in (None, old["metadata"]["resourceVersion"]):
            raise _conflict(rt, target.name or "")
        obj = self._delete_one(rt, old, dry_run=_dry_run(query))
        return _json(self._present(target, obj), 200)

    def _delete_one(self, rt: ResourceType, old: Obj, *, dry_run: bool) -> Obj:
        meta = old["metadata"]
        container = rt.key in (_NAMESPACES_KEY, _CRD_KEY)
        if meta.get("finalizers") or container:
            if meta.get("deletionTimestamp"):
                return old
            obj = {
                **old,
                "metadata": {**meta, "deletionTimestamp": _now(), "deletionGracePeriodSeconds": 0},
            }
            if rt.key == _NAMESPACES_KEY:
                obj["status"] = {**obj.get("status", {}), "phase": "Terminating"}
            if rt.key == _CRD_KEY:
                status = obj.get("status") or {}
                conditions = [
                    c for c in status.get("conditions") or [] if c.get("type") != "Terminating"
                ]
                conditions.append(
                    {
                        "type": "Terminating",
                        "status": "True",
                        "reason": "InstanceDeletionInProgress",
                        "message": "CustomResource deletion is in progress",
                        "lastTransitionTime": _now(),
                    }
                )
                obj["status"] = {**status, "conditions": conditions}
            if dry_run:
                return obj
            obj["metadata"]["resourceVersion"] = str(self.store.next_rv())
            key = (meta.get("namespace", ""), meta["name"])
            self.store.put(self._collection(rt), key, obj, "MODIFIED")
            if container:
                for content_rt, content in self._contents(rt, obj):
                    self._delete_one(content_rt, content, dry_run=False)
                self._finish_if_empty(rt.key, key)
            return self._collection(rt).objects.get(key, obj)
        if dry_run:
            return old
        return self._remove(rt, old)

    def _delete_collection(self, target: Target, query: Any) -> web.Response:
        accepts = self._filter(target, query)
        collection = self._collection(target.rt)
        deleted = [
            self._delete_one(target.rt, obj, dry_run=_dry_run(query))
            for obj in list(collection.items(target.namespace))
            if accepts(obj)
        ]
        return _json(
            {
                "kind": target.rt.list_kind,
                "apiVersion": target.rt.api_version(target.version),
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": [self._present(target, o) for o in deleted],
            }
        )


def _since(timestamp: Any, now: datetime) -> str:
    from feldera_sandbox.k8s_emulator import k8s_schema

    if not isinstance(timestamp, str) or not timestamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    return k8s_schema.human_duration((now - then).total_seconds())


def _event_object(event: Obj) -> str:
    ref = event.get("involvedObject") or event.get("regarding") or {}
    return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"


def _age(obj: Obj, now: datetime) -> str:
    """The Age cell as the apiserver prints it for built-in kinds ("5m3s")."""
    return _since(obj["metadata"].get("creationTimestamp"), now)


# Server-side printing of the built-in kinds people `kubectl get` here: (name, priority, cell);
# kubectl shows priority 0 columns and, with -o wide, the others.
_Column = tuple[str, int, Callable[[Obj, datetime], Any]]
_NAME_COLUMN: _Column = ("Name", 0, lambda o, _: o["metadata"]["name"])
_AGE_COLUMN: _Column = ("Age", 0, _age)
_EVENT_COLUMNS: list[_Column] = [
    (
        "Last Seen",
        0,
        lambda o, now: _since(
            o.get("lastTimestamp") or o.get("deprecatedLastTimestamp") or o.get("eventTime"), now
        ),
    ),
    ("Type", 0, lambda o, _: o.get("type", "")),
    ("Reason", 0, lambda o, _: o.get("reason", "")),
    ("Object", 0, lambda o, _: _event_object(o)),
    ("Message", 0, lambda o, _: o.get("message") or o.get("note", "")),
    ("Name", 1, lambda o, _: o["metadata"]["name"]),
]
_BUILTIN_COLUMNS: dict[tuple[str, str], list[_Column]] = {
    ("", "namespaces"): [
        _NAME_COLUMN,
        ("Status", 0, lambda o, _: o.get("status", {}).get("phase", "")),
        _AGE_COLUMN,
    ],
    ("", "secrets"): [
        _NAME_COLUMN,
        ("Type", 0, lambda o, _: o.get("type", "")),
        ("Data", 0, lambda o, _: len(o.get("data") or {})),
        _AGE_COLUMN,
    ],
    ("", "configmaps"): [
        _NAME_COLUMN,
        ("Data", 0, lambda o, _: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
        _AGE_COLUMN,
    ],
    ("", "events"): _EVENT_COLUMNS,
    ("events.k8s.io", "events"): _EVENT_COLUMNS,
}


def _row_object(obj: Obj, include: str) -> Obj:
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }


def _line(event: Obj) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _dry_run(query: Any) -> bool:
    return "All" in query.getall("dryRun", [])


def _cause_from_schema(reason: str, field: str, message: str) -> Cause:
    """k8s_schema's messages start with the field, as the Status message does; a Status cause
    carries the field separately and its message without it."""
    prefix = f"{field}: "
    return Cause(reason, field, message[len(prefix) :] if message.startswith(prefix) else message)


def _cause_from_text(text: str) -> Cause:
    """A structural-schema complaint `field: message` as a Status cause."""
    field, sep, message = text.partition(": ")
    if sep and " " not in field:
        return Cause("FieldValueInvalid", field, message)
    return Cause("FieldValueInvalid", "", text)


# --- command line ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on.")
    parser.add_argument("--port", type=int, default=0, help="Port (0 picks a free one).")
    parser.add_argument(
        "--kubeconfig",
        required=True,
        help="Write a kubeconfig for the emulator here once it listens.",
    )
    parser.add_argument(
        "--namespace",
        default="default",
        help="Namespace of the kubeconfig's context (default: default).",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="Log every request with its status and duration."
    )


async def _serve(args: argparse.Namespace) -> None:
    emulator = KubernetesEmulator(log_requests=getattr(args, "verbose", False))
    url = await emulator.start(args.host, args.port)
    KubernetesEmulator.write_kubeconfig(args.kubeconfig, url, args.namespace)
    print(f"kubernetes emulator listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="kubernetes-emulator")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
