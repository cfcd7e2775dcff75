"""Fakes of the reconciler's two edges, for driving the real `Reconciler` in unit tests.

- `FakeKube`: the operator's own Kubernetes calls (status and finalizer patches, Secret reads,
  Events), over objects held in memory, with failures and hangs to inject.
- `FakeFeldera`: a Feldera API in memory (pipelines, their connectors, their programs, every call
  recorded), and `FakeFelderaClient`, what the reconciler's client factory hands out for it.

They model only what the reconciler relies on; Feldera's own behaviour is the emulator's business.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from feldera_operator import decision as d
from feldera_operator.config import OperatorConfig
from feldera_operator.feldera_client import (
    FelderaClientClosed,
    FelderaConfig,
    FelderaError,
    FelderaNotDeployed,
    FelderaNotFound,
    Pipeline,
    PipelineStats,
    Selector,
)
from feldera_operator.instance_connection import ClientSettings
from feldera_operator.kube import KubeError, SecretData, SecretMissing
from feldera_operator.reconciler import Reconciler

API_VERSION = "feldera.dev/v1alpha1"
_uids = itertools.count(1)


def pipeline_body(
    name: str,
    namespace: str = "default",
    *,
    generation: int = 1,
    uid: str | None = None,
    created: str = "2026-01-01T00:00:00Z",
    finalizers: list[str] | None = None,
    deleting: bool = False,
    status: Mapping[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid or f"uid-{next(_uids)}",
        "generation": generation,
        "resourceVersion": "1",
        "creationTimestamp": created,
    }
    if finalizers:
        meta["finalizers"] = list(finalizers)
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T01:00:00Z"
    return {
        "apiVersion": API_VERSION,
        "kind": "FelderaPipeline",
        "metadata": meta,
        "spec": spec,
        "status": dict(status or {}),
    }


def instance_body(
    name: str, namespace: str = "default", *, generation: int = 1, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "FelderaInstance",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{next(_uids)}",
            "generation": generation,
            "resourceVersion": "1",
        },
        "spec": spec,
        "status": {},
    }


# ----------------------------------------------------------------------------- Kubernetes


@dataclass
class Event:
    name: str
    reason: str
    message: str
    warning: bool


class FakeKube:
    """Objects by (plural, namespace, name); each call recorded in `calls`."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[Event] = []
        self.calls: list[tuple[str, ...]] = []
        # Errors to raise, by call name ("patch_status", "patch_object", "read_secret",
        # "post_event"), first in first out.
        self.failures: dict[str, list[KubeError]] = {}
        # While set for a call name, that call waits for the event (a hung connection).
        self.hang: dict[str, asyncio.Event] = {}
        self._rv = itertools.count(2)

    # -- set-up
    def add(self, plural: str, body: Mapping[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        stored = copy.deepcopy(dict(body))
        self.objects[(plural, meta.get("namespace") or "default", meta["name"])] = stored
        return stored

    def add_secret(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, str],
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.secrets[(namespace, name)] = {
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }

    def add_configmap(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, str],
        labels: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """A ConfigMap as the API serves it (and as its watch event carries it)."""
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
            "data": dict(data),
        }
        self.configmaps[(namespace, name)] = body
        return copy.deepcopy(body)

    def fail(
        self, call: str, status: int | None, message: str = "injected", count: int = 1
    ) -> None:
        self.failures.setdefault(call, []).extend(
            KubeError(f"{status} {message}", status) for _ in range(count)
        )

    # -- what the tests read
    def status_of(self, plural: str, name: str, namespace: str = "default") -> dict[str, Any]:
        status: dict[str, Any] = self.objects[(plural, namespace, name)].get("status") or {}
        return status

    def count(self, call: str) -> int:
        return sum(1 for c in self.calls if c[0] == call)

    def status_writes(self, name: str) -> int:
        return sum(1 for c in self.calls if c[0] == "patch_status" and c[3] == name)

    def events_of(self, name: str) -> list[Event]:
        return [e for e in self.events if e.name == name]

    # -- the KubeClient protocol
    async def _enter(self, call: str) -> None:
        hang = self.hang.get(call)
        if hang is not None:
            await hang.wait()
        queue = self.failures.get(call)
        if queue:
            raise queue.pop(0)

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        self.calls.append(("patch_status", plural, namespace, name))
        await self._enter("patch_status")
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            raise KubeError(f"404 NotFound: {plural} {name!r} not found", 404)
        merged = _merge(obj.get("status") or {}, dict(status))
        _check_list_map_keys(merged)
        obj["status"] = merged
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(obj)

    async def patch_object(
        self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        self.calls.append(("patch_object", plural, namespace, name))
        await self._enter("patch_object")
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            raise KubeError(f"404 NotFound: {plural} {name!r} not found", 404)
        meta_patch = dict(patch.get("metadata") or {})
        meta_patch.pop("resourceVersion", None)
        obj["metadata"].update(meta_patch)
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        if obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers"):
            del self.objects[(plural, namespace, name)]
        return copy.deepcopy(obj)

    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get_object", plural, namespace, name))
        await self._enter("get_object")
        obj = self.objects.get((plural, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get_configmap", namespace, name))
        await self._enter("get_configmap")
        body = self.configmaps.get((namespace, name))
        return copy.deepcopy(body) if body is not None else None

    async def read_secret(self, namespace: str, name: str) -> SecretData:
        self.calls.append(("read_secret", namespace, name))
        await self._enter("read_secret")
        secret = self.secrets.get((namespace, name))
        if secret is None:
            raise SecretMissing(f"Secret {namespace}/{name} not found", 404)
        return SecretData(
            namespace=namespace,
            name=name,
            labels=dict(secret["metadata"]["labels"]),
            data=dict(secret["data"]),
        )

    async def post_event(
        self, involved: Mapping[str, Any], *, reason: str, message: str, warning: bool = False
    ) -> None:
        self.calls.append(("post_event", reason))
        try:
            await self._enter("post_event")
        except KubeError:
            return  # as KubeApi.post_event: an Event is a courtesy
        name = str((involved.get("metadata") or {}).get("name"))
        self.events.append(Event(name, reason, message, warning))


def _merge(old: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386): null removes, maps merge, lists are replaced."""
    result = dict(old)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = _merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _check_list_map_keys(status: Mapping[str, Any]) -> None:
    """What the API server does with the CRD's list-map keys: a duplicate key is a 422."""
    for field_name, relation in (("inputs", "table"), ("outputs", "view")):
        seen: set[tuple[Any, Any]] = set()
        for i, entry in enumerate(status.get(field_name) or []):
            key = (entry.get(relation), entry.get("connector"))
            if key in seen:
                raise KubeError(
                    f"422 Invalid: status.{field_name}[{i}]: Duplicate value: {key}", 422
                )
            seen.add(key)


# ----------------------------------------------------------------------------- Feldera


@dataclass
class FakePipeline:
    name: str
    status: str = "Stopped"
    desired: str = "Stopped"
    program_status: str = "Success"
    program_version: int = 1
    deployment_error: str | None = None
    # "table.connector" -> paused
    inputs: dict[str, bool] = field(default_factory=dict)
    outputs: dict[str, bool] = field(default_factory=dict)
    # The program, as Feldera stores it (configs stored as given: no defaults filled in).
    version: int = 1
    program_code: str = ""
    udf_rust: str = ""
    udf_toml: str = ""
    program_config: dict[str, Any] = field(default_factory=dict)
    runtime_config: dict[str, Any] = field(default_factory=dict)
    storage_status: str = "Cleared"

    def render(self, selector: str = "status") -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "deployment_status": self.status,
            "deployment_desired_status": self.desired,
            "program_status": self.program_status,
            "program_version": self.program_version,
            "deployment_error": self.deployment_error,
            "storage_status": self.storage_status,
        }
        if selector == "all":
            out.update(
                program_code=self.program_code,
                udf_rust=self.udf_rust,
                udf_toml=self.udf_toml,
                program_config=copy.deepcopy(self.program_config),
                runtime_config=copy.deepcopy(self.runtime_config),
                program_error=None,
            )
        return out


class FakeFeldera:
    """One Feldera API in memory. Transitions are instant when `instant` (a start from Stopped
    lands in Running or Paused at once), else they wait for `settle()`."""

    def __init__(self, *, instant: bool = True) -> None:
        self.pipelines: dict[str, FakePipeline] = {}
        self.instant = instant
        self.calls: list[tuple[str, ...]] = []
        self.times: list[float] = []  # loop time of each call
        # Errors to raise by operation ("config", "list", "get", "stats", "start", "pause",
        # "resume", "stop", "dismiss_error", "input", "output"), first in first out.
        self.failures: dict[str, list[FelderaError]] = {}
        # While set for an operation, calls to it wait (a server that never answers).
        self.hang: dict[str, asyncio.Event] = {}
        # Called after each call is recorded and before it is carried out: tests change the
        # world from inside a call (a pipeline stopped by someone else, for instance).
        self.on_call: Callable[[tuple[str, ...]], None] | None = None
        self.clients: list[FakeFelderaClient] = []
        self.version = "0.369.0"
        self.edition = "Open source"
        # What POST .../diff answers (Feldera's PipelineDiff): one view added, by default.
        self.diff_answer: dict[str, Any] = {
            "program_diff": {"added_views": ["v2"]},
            "program_diff_error": None,
        }

    # -- set-up
    def add(self, name: str, **kw: Any) -> FakePipeline:
        pipeline = FakePipeline(name, **kw)
        self.pipelines[name] = pipeline
        return pipeline

    def fail(self, op: str, error: FelderaError, count: int = 1) -> None:
        self.failures.setdefault(op, []).extend([error] * count)

    def settle(self) -> None:
        for p in self.pipelines.values():
            p.status = p.desired

    # -- what the tests read
    def count(self, op: str) -> int:
        return sum(1 for c in self.calls if c[0] == op)

    def times_of(self, op: str) -> list[float]:
        return [t for c, t in zip(self.calls, self.times, strict=True) if c[0] == op]

    def actions(self) -> list[tuple[str, ...]]:
        reads = ("config", "list", "get", "get_all", "stats", "diff")
        return [c for c in self.calls if c[0] not in reads]

    def client(self, settings: ClientSettings) -> FakeFelderaClient:
        """The reconciler's client factory."""
        if settings.api_key is not None and " " in settings.api_key:
            raise ValueError("api_key must be non-empty printable ASCII without spaces")
        client = FakeFelderaClient(self, settings)
        self.clients.append(client)
        return client

    # -- the calls
    async def call(self, client: FakeFelderaClient, op: str, *args: str) -> None:
        if client.closed:
            raise FelderaClientClosed("the client is closed; nothing was sent", endpoint=op)
        self.calls.append((op, *args))
        self.times.append(asyncio.get_running_loop().time())
        if self.on_call is not None:
            self.on_call((op, *args))
        hang = self.hang.get(op)
        if hang is not None:
            await hang.wait()
        await asyncio.sleep(0)
        queue = self.failures.get(op)
        if queue:
            raise queue.pop(0)

    def pipeline(self, op: str, name: str) -> FakePipeline:
        p = self.pipelines.get(name)
        if p is None:
            raise FelderaNotFound(
                f"Unknown pipeline name '{name}'",
                endpoint=f"{op} /v0/pipelines/{name}",
                status=404,
                error_code="UnknownPipelineName",
            )
        return p

    def move(self, p: FakePipeline, desired: str) -> None:
        p.desired = desired
        if self.instant:
            p.status = desired


class FakeFelderaClient:
    def __init__(self, server: FakeFeldera, settings: ClientSettings) -> None:
        self.server = server
        self.settings = settings
        self.closed = False

    @property
    def base_url(self) -> str:
        return self.settings.url

    async def close(self) -> None:
        self.closed = True

    async def config(self) -> FelderaConfig:
        await self.server.call(self, "config")
        return {"version": self.server.version, "edition": self.server.edition}

    async def list_pipelines(self, selector: Selector = "status") -> list[Pipeline]:
        await self.server.call(self, "list")
        return [p.render() for p in self.server.pipelines.values()]  # type: ignore[misc]

    async def get_pipeline(self, name: str, selector: Selector = "status") -> Pipeline:
        await self.server.call(self, "get_all" if selector == "all" else "get", name)
        return self.server.pipeline("GET", name).render(selector)  # type: ignore[return-value]

    async def stats(self, name: str) -> PipelineStats:
        await self.server.call(self, "stats", name)
        p = self.server.pipeline("GET", name)
        if p.status not in d.DEPLOYED:
            raise FelderaNotDeployed(
                "not deployed",
                endpoint=f"GET /v0/pipelines/{name}/stats",
                status=503,
                error_code="PipelineInteractionNotDeployed",
            )
        return {
            "inputs": [{"endpoint_name": k, "paused": v} for k, v in p.inputs.items()],
            "outputs": [{"endpoint_name": k, "paused": v} for k, v in p.outputs.items()],
        }

    async def start(self, name: str, initial: str, bootstrap_policy: str | None = None) -> None:
        policy = () if bootstrap_policy is None else (f"bootstrap_policy={bootstrap_policy}",)
        await self.server.call(self, "start", name, initial, *policy)
        p = self.server.pipeline("POST", name)
        p.storage_status = "InUse"  # at the first start, in every edition
        self.server.move(p, "Running" if initial == "running" else "Paused")

    async def pause(self, name: str) -> None:
        await self.server.call(self, "pause", name)
        self.server.move(self.server.pipeline("POST", name), "Paused")

    async def resume(self, name: str) -> None:
        await self.server.call(self, "resume", name)
        self.server.move(self.server.pipeline("POST", name), "Running")

    async def stop(self, name: str, force: bool = True) -> None:
        await self.server.call(self, "stop", name, *(() if force else ("force=false",)))
        self.server.move(self.server.pipeline("POST", name), "Stopped")

    # -- the program (compiled at once: program_status Success)
    async def put_pipeline(self, name: str, body: Mapping[str, Any]) -> Pipeline:
        await self.server.call(self, "put", name)
        p = self.server.pipelines.get(name) or self.server.add(name)
        self._store(p, body)
        return p.render("all")  # type: ignore[return-value]

    async def patch_pipeline(self, name: str, body: Mapping[str, Any]) -> Pipeline:
        await self.server.call(self, "patch", name, *sorted(body))
        p = self.server.pipeline("PATCH", name)
        self._store(p, body)
        return p.render("all")  # type: ignore[return-value]

    @staticmethod
    def _store(p: FakePipeline, body: Mapping[str, Any]) -> None:
        program = False
        for key in ("program_code", "udf_rust", "udf_toml", "program_config", "runtime_config"):
            if key in body and body[key] != getattr(p, key):
                setattr(p, key, copy.deepcopy(body[key]))
                program = program or key != "runtime_config"
                p.version += 1
        if program:
            p.program_version += 1
            p.program_status = "Success"

    async def delete_pipeline(self, name: str) -> None:
        await self.server.call(self, "delete", name)
        self.server.pipeline("DELETE", name)
        del self.server.pipelines[name]

    async def diff(
        self, name: str, program_code: str, runtime_version: str | None = None
    ) -> dict[str, Any]:
        await self.server.call(self, "diff", name)
        self.server.pipeline("POST", name)
        return copy.deepcopy(self.server.diff_answer)

    async def clear(self, name: str) -> None:
        await self.server.call(self, "clear", name)
        self.server.pipeline("POST", name).storage_status = "Cleared"

    async def approve(self, name: str) -> None:
        await self.server.call(self, "approve", name)

    async def dismiss_error(self, name: str) -> None:
        await self.server.call(self, "dismiss_error", name)
        self.server.pipeline("POST", name).deployment_error = None

    async def input_connector_action(
        self, pipeline: str, table: str, connector: str, action: str
    ) -> None:
        await self.server.call(self, "input", pipeline, f"{table}.{connector}", action)
        self._flag(self.server.pipeline("POST", pipeline).inputs, table, connector, action)

    async def output_connector_action(
        self, pipeline: str, view: str, connector: str, action: str
    ) -> None:
        await self.server.call(self, "output", pipeline, f"{view}.{connector}", action)
        self._flag(self.server.pipeline("POST", pipeline).outputs, view, connector, action)

    @staticmethod
    def _flag(flags: dict[str, bool], relation: str, connector: str, action: str) -> None:
        wanted = d.canonical_spec_relation(relation)
        for name in flags:
            rel, conn = d.split_endpoint_name(name)
            if d.canonical_reported_relation(rel) == wanted and conn == connector:
                flags[name] = action == "pause"
                return
        raise FelderaNotFound(
            "Unknown input endpoint",
            endpoint=f"POST .../{relation}/connectors/{connector}/{action}",
            status=404,
            error_code="UnknownInputEndpoint",
            details={"endpoint_name": f"{relation}.{connector}"},
        )


# ----------------------------------------------------------------------------- the reconciler


class FakeClock:
    """The wall clock of condition timestamps, moved by the test."""

    def __init__(self) -> None:
        self.t = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)

    def __call__(self) -> str:
        return self.t.strftime("%Y-%m-%dT%H:%M:%SZ")

    def tick(self, seconds: float = 1.0) -> None:
        self.t += datetime.timedelta(seconds=seconds)


def make_reconciler(
    kube: FakeKube,
    feldera: FakeFeldera,
    *,
    loops: bool = False,
    clock: Callable[[], str] | None = None,
    **config: Any,
) -> Reconciler:
    """The real Reconciler on both fakes, leading, with the default instance pointing at
    `feldera` and no settling delay. Without `loops` no instance loop runs by itself: tests
    drive passes with `observe_pass()`."""
    # spread 0: a driven pass reads everything at once (its spreading has tests of its own).
    settings: dict[str, Any] = {
        "period": 60.0,
        "default_url": "http://feldera.test",
        "spread": 0.0,
    }
    settings.update(config)
    reconciler = Reconciler(
        OperatorConfig(**settings),
        kube,
        client_factory=feldera.client,
        settle_seconds=0.0,
        run_loops=loops,
        clock=clock or FakeClock(),
    )
    reconciler.leading.set()
    OPEN.append(reconciler)
    return reconciler


# Every reconciler made by a test, closed at its end even when the test failed (see the
# `close_reconcilers` fixture): a reconciler left open keeps its loops and timers running.
OPEN: list[Reconciler] = []


async def close_all() -> None:
    while OPEN:
        await OPEN.pop().close()


async def observe_pass(reconciler: Reconciler, key: tuple[str, str] = ("", "")) -> bool:
    """One pass of an instance's loop, as the loop runs it."""
    return await reconciler.observer.observe(reconciler.instance_state(key))


async def add_pipeline(
    reconciler: Reconciler, kube: FakeKube, body: dict[str, Any], event: str | None = "ADDED"
) -> dict[str, Any]:
    """Store the resource in the fake API and deliver its watch event."""
    stored = kube.add("felderapipelines", body)
    await reconciler.on_pipeline_event(event, copy.deepcopy(stored))
    return stored


async def deliver(
    reconciler: Reconciler, kube: FakeKube, name: str, event: str = "MODIFIED"
) -> None:
    """Deliver the stored object's current state as a watch event."""
    stored = kube.objects[("felderapipelines", "default", name)]
    await reconciler.on_pipeline_event(event, copy.deepcopy(stored))


def ready(status: Mapping[str, Any]) -> Mapping[str, Any]:
    return d.ready_condition(status)


def condition(status: Mapping[str, Any], ctype: str) -> Mapping[str, Any]:
    for c in status.get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return {}


async def until(check: Callable[[], Any], within: float = 5.0, what: str = "condition") -> Any:
    """Poll `check` (every 10 ms of loop time) until truthy, or fail at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.01)
