"""The hub: what the operator knows of every resource, fed by kopf's watch events, and the parts
that act on it, one concern each:

- `instance_connection.py`: an instance's settings, Secrets and Feldera client;
- `instance_loop.py`: the per-instance observation loop (one listing per period);
- `pipeline_reconcile.py`: the reconcile of one FelderaPipeline (observe, decide, act);
- `program_reconcile.py`: its declared program's part (spec.program: SQL, preview, steps);
- `deletion.py`: the finalizer and the stop on deletion;
- `status_writer.py`, `events.py`: what is written back to Kubernetes.

The thinking is in `decision.py`, which is pure; everything here is the imperative shell.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any

import pydantic

from feldera_operator import decision as d
from feldera_operator import metrics
from feldera_operator.budget import interactive
from feldera_operator.config import OperatorConfig
from feldera_operator.deletion import Finalizer
from feldera_operator.events import EventRecorder
from feldera_operator.feldera_client import FelderaError
from feldera_operator.instance_connection import (
    ClientFactory,
    InstanceConnection,
    feldera_client,
    validation_message,
)
from feldera_operator.instance_loop import InstanceObserver
from feldera_operator.kube import KubeClient
from feldera_operator.models import (
    PIPELINE_NAME_MAX,
    FelderaInstance,
    FelderaPipeline,
    FelderaPipelineSpec,
)
from feldera_operator.observation import problem_from_error
from feldera_operator.pipeline_reconcile import PipelineReconciler
from feldera_operator.program import PROGRAM_LABEL
from feldera_operator.program_reconcile import ProgramReconciler
from feldera_operator.records import (
    DEFAULT_INSTANCE,
    Claim,
    InstanceState,
    ObjKey,
    PipelineRecord,
    instance_label,
)
from feldera_operator.status_writer import StatusWriter, as_int, now_iso

log = logging.getLogger(__name__)

_parse_spec = pydantic.TypeAdapter(FelderaPipelineSpec).validate_python


class Reconciler:
    """Every resource's record and every instance's state, and the parts that act on them.

    `kube` and `client_factory` are the two edges (the Kubernetes API, Feldera): the operator
    passes the real ones, the reconciler's unit tests fakes.
    """

    def __init__(
        self,
        config: OperatorConfig,
        kube: KubeClient,
        *,
        client_factory: ClientFactory = feldera_client,
        settle_seconds: float = 10.0,
        run_loops: bool = True,
        clock: Callable[[], str] = now_iso,
    ) -> None:
        self.config = config
        self.kube = kube
        self.client_factory = client_factory
        self.settle_seconds = settle_seconds
        self.run_loops = run_loops  # off in unit tests that drive each pass themselves
        self.clock = clock  # the wall clock of condition timestamps (RFC 3339)
        self.pipelines: dict[ObjKey, PipelineRecord] = {}
        # The same records by instance: each instance's loop asks for its own several times a
        # pass, and a scan of every record was 8 % of the CPU at 5,000 over 50 instances.
        self._by_instance: dict[ObjKey, dict[ObjKey, PipelineRecord]] = {}
        self.instance_objects: dict[ObjKey, dict[str, Any]] = {}
        self.instances: dict[ObjKey, InstanceState] = {}
        self.connections: dict[ObjKey, InstanceConnection] = {}
        # Which resources declare each Feldera pipeline: more than one is a conflict.
        self.claims: dict[Claim, set[ObjKey]] = {}
        # ConfigMaps labelled feldera.dev/program: "true", as their watch delivers them (labels
        # and data), and which resources read their SQL from each (spec.program.sqlFrom).
        self.configmaps: dict[ObjKey, dict[str, Any]] = {}
        self.configmap_readers: dict[ObjKey, set[ObjKey]] = {}
        self.closing = False
        self.events = EventRecorder(kube)
        self.status = StatusWriter(kube, self.events, clock)
        self.reconcile = PipelineReconciler(self)
        self.program = ProgramReconciler(self)
        self.deletion = Finalizer(self)
        self.observer = InstanceObserver(self)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.started = time.monotonic()
        # Set while this replica may act (always, without leader election).
        self.leading = asyncio.Event()
        self.spawn(self._lead())

    async def _lead(self) -> None:
        await self.leading.wait()
        metrics.LEADER.set(1)
        for state in self.instances.values():
            state.wake.set()
        # Deletions that arrived while this replica was standby: nobody else will finish them.
        for record in list(self.pipelines.values()):
            if record.deleting is not None:
                self.spawn(self.deletion.finalize(record))

    # ------------------------------------------------------------------ metrics (scrape time)

    def metric_resources(self) -> list[metrics.ResourceRow]:
        """One row per resource, for `feldera_operator_resources`."""
        rows = []
        for record in list(self.pipelines.values()):
            ready = d.ready_condition(record.status)
            rows.append(
                metrics.ResourceRow(
                    kind=FelderaPipeline.KIND,
                    namespace=record.key[0],
                    instance=instance_label(record.instance),
                    state=str(record.status.get("state") or "Unknown"),
                    ready=str(ready.get("status") or "Unknown"),
                    reason=str(ready.get("reason") or ""),
                )
            )
        for key in list(self.instance_objects):
            state = self.instances.get(key)
            status = state.status if state is not None else {}
            ready = d.ready_condition(status)
            reachable = status.get("reachable")
            state_name = (
                "Unknown" if reachable is None else "Reachable" if reachable else "Unreachable"
            )
            rows.append(
                metrics.ResourceRow(
                    kind=FelderaInstance.KIND,
                    namespace=key[0],
                    instance=instance_label(key),
                    state=state_name,
                    ready=str(ready.get("status") or "Unknown"),
                    reason=str(ready.get("reason") or ""),
                )
            )
        return rows

    def metric_instances(self) -> list[metrics.InstanceRow]:
        """One row per observed instance, for `_instance_up` and `_instance_problem`."""
        return [
            metrics.InstanceRow(instance_label(s.key), bool(s.up), s.problem)
            for s in list(self.instances.values())
            if s.up is not None
        ]

    # ------------------------------------------------------------------ watch events (kopf)

    async def on_pipeline_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key: ObjKey = (meta.get("namespace") or "default", meta["name"])
        if event_type == "DELETED":
            record = self.pipelines.get(key)
            if record is not None:
                self.forget(record)
            return

        record = self.pipelines.get(key)
        if record is None or record.ref["metadata"].get("uid") != meta.get("uid"):
            if record is not None:
                self.forget(record)  # deleted and created again under the same name
            record = PipelineRecord(
                key=key, ref=_ref(body), created=str(meta.get("creationTimestamp") or "")
            )
            self.pipelines[key] = record
            self._index(record)
        rv = as_int(meta.get("resourceVersion"))
        if rv >= record.resource_version:
            record.resource_version = rv
            record.status = dict(body.get("status") or {})
        generation = as_int(meta.get("generation")) or 1
        if generation != record.generation or (record.spec is None and not record.spec_error):
            before, source, indexed = record.claim, record.sql_source, record.instance
            self._load_spec(record, body, generation)
            self._update_claim(record, before)
            self._update_reader(record, source)
            if record.instance != indexed:
                self._by_instance.get(indexed, {}).pop(key, None)
                self._index(record)
        if record.ready_generation is None and _ready_for(record.status, generation):
            # Ready before this process started: a difference found now is drift, not a change.
            record.ready_generation = generation
        instance = self.instance_state(record.instance)
        if meta.get("deletionTimestamp"):
            record.deleting = body  # kept by a standby too: it finalizes once it leads
        if not self.leading.is_set():
            return  # a standby replica only keeps its cache warm
        if record.deleting is not None:
            await self.deletion.finalize(record)
            return
        await self.deletion.sync(record, body)

        if event_type is None:
            # The initial listing at start-up: the instance loop's first pass covers everyone
            # with one list call instead of a GET per resource.
            instance.wake.set()
            return
        if record.reconciled_generation != record.generation:
            await self.reconcile.reconcile_now(key)

    async def on_instance_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key: ObjKey = (meta.get("namespace") or "default", meta["name"])
        if event_type == "DELETED":
            self.instance_objects.pop(key, None)
            # Its client goes now; its loop ends after its next pass if nothing refers to it
            # (pipelines that do are told InstanceNotFound by that pass).
            await self.connection(key).close()
        else:
            old = self.instance_objects.get(key)
            self.instance_objects[key] = dict(body)
            if old is not None and old.get("spec") == body.get("spec"):
                self.instance_state(key).status = dict(body.get("status") or {})
                return
        state = self.instance_state(key)
        state.status = dict(body.get("status") or {})
        self.connection(key).invalidate()  # re-read the spec and Secret on the next pass
        state.wake.set()

    async def on_configmap_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A ConfigMap labelled feldera.dev/program: "true" (the watch's server-side selector
        delivers no other; one that loses the label comes as DELETED). An edit of its data
        reconciles the resources that read their SQL from it at once."""
        meta = body.get("metadata") or {}
        key: ObjKey = (meta.get("namespace") or "default", meta["name"])
        labels = meta.get("labels") or {}
        before = self.configmaps.get(key)
        if event_type == "DELETED" or labels.get(PROGRAM_LABEL) != "true":
            after = None
            self.configmaps.pop(key, None)
        else:
            after = {"metadata": {"labels": dict(labels)}, "data": dict(body.get("data") or {})}
            self.configmaps[key] = after
        if event_type is None or before == after or not self.leading.is_set():
            return  # the start-up listing: the instance loop's first pass reads what it holds
        readers = sorted(self.configmap_readers.get(key, ()))
        await self.gather(self.reconcile.reconcile_now(k) for k in readers)

    async def reconcile_now(self, key: ObjKey) -> None:
        """Observe and reconcile one resource immediately."""
        await self.reconcile.reconcile_now(key)

    def _load_spec(self, record: PipelineRecord, body: Mapping[str, Any], generation: int) -> None:
        record.generation = generation
        record.spec_error = None
        name = body["metadata"]["name"]
        try:
            spec = _parse_spec(body.get("spec") or {})
        except pydantic.ValidationError as e:
            record.spec = None
            record.spec_error = validation_message(e)
            return
        pipeline_name = spec.pipelineName or name
        try:
            _parse_spec({"pipelineName": pipeline_name})
        except pydantic.ValidationError:
            record.spec = None
            record.spec_error = (
                f"metadata.name {name!r} is not a valid Feldera pipeline name (letters, digits, "
                f"'-' and '_', at most {PIPELINE_NAME_MAX}); set spec.pipelineName"
            )
            return
        record.spec = spec
        record.pipeline_name = pipeline_name
        ns = record.key[0]
        record.instance = (ns, spec.instanceRef.name) if spec.instanceRef else DEFAULT_INSTANCE

    def forget(self, record: PipelineRecord) -> None:
        """The resource is gone: no more follow-ups, retries or actions for it."""
        if self.pipelines.get(record.key) is record:
            del self.pipelines[record.key]
            self._by_instance.get(record.instance, {}).pop(record.key, None)
            self._update_claim(record, record.claim, gone=True)
            self._update_reader(record, record.sql_source, gone=True)
        if record.followup is not None:
            record.followup.cancel()
            record.followup = None
        self.deletion.cancel_retry(record)

    # ------------------------------------------------------------------ claims

    def owner(self, record: PipelineRecord) -> PipelineRecord | None:
        """The resource that acts on the pipeline `record` declares: the oldest of those that
        declare it (creationTimestamp, then namespace/name)."""
        claim = record.claim
        if claim is None:
            return None
        claimants = [self.pipelines[k] for k in self.claims.get(claim, ()) if k in self.pipelines]
        return min(claimants, key=lambda r: r.seniority, default=None)

    def other_claimants(self, record: PipelineRecord) -> list[PipelineRecord]:
        claim = record.claim
        keys = self.claims.get(claim, set()) if claim is not None else set()
        return [self.pipelines[k] for k in sorted(keys) if k != record.key and k in self.pipelines]

    def _update_claim(
        self, record: PipelineRecord, before: Claim | None, gone: bool = False
    ) -> None:
        after = None if gone else record.claim
        if before == after:
            return
        if before is not None:
            keys = self.claims.get(before, set())
            keys.discard(record.key)
            if not keys:
                self.claims.pop(before, None)
            for key in keys:
                # Whoever waited on this resource may act now: look at once.
                self.spawn(self.reconcile.reconcile_now(key))
        if after is not None:
            self.claims.setdefault(after, set()).add(record.key)

    def _update_reader(
        self, record: PipelineRecord, before: ObjKey | None, gone: bool = False
    ) -> None:
        """Keep the index from a ConfigMap to the resources reading their SQL from it."""
        after = None if gone else record.sql_source
        if before == after:
            return
        if before is not None:
            readers = self.configmap_readers.get(before, set())
            readers.discard(record.key)
            if not readers:
                self.configmap_readers.pop(before, None)
        if after is not None:
            self.configmap_readers.setdefault(after, set()).add(record.key)

    # ------------------------------------------------------------------ instances

    def instance_state(self, key: ObjKey) -> InstanceState:
        """The instance's state, its observation loop started if it is not running."""
        state = self.instances.get(key)
        if state is None:
            state = InstanceState(key=key)
            self.instances[key] = state
        if self.run_loops and (state.task is None or state.task.done()) and not self.closing:
            state.task = asyncio.create_task(self.observer.run(state), name=f"observe {key}")
        return state

    def connection(self, key: ObjKey) -> InstanceConnection:
        connection = self.connections.get(key)
        if connection is None:
            connection = InstanceConnection(
                key,
                "default instance" if key == DEFAULT_INSTANCE else "/".join(key),
                config=self.config,
                kube=self.kube,
                instance_body=lambda: self.instance_objects.get(key),
                client_factory=self.client_factory,
            )
            self.connections[key] = connection
        return connection

    def feldera_failed(
        self, record: PipelineRecord, error: FelderaError, *, instance: str, url: str = ""
    ) -> d.Problem:
        """A Feldera call made for `record` failed: the instance's connection backs off, the
        record's next try honours Retry-After, and the problem is named (problem_from_error's
        `instance` and `url`)."""
        self.connection(record.instance).failed(error)
        record.retry_after = max(record.retry_after, error.retry_after or 0.0)
        return problem_from_error(error, instance=instance, url=url)

    def drop_instance(self, state: InstanceState) -> bool:
        """End an instance's loop if nothing refers to it any more (True: ended)."""
        key = state.key
        if self.records_of(key) or key in self.instance_objects:
            return False
        if self.instances.get(key) is state:
            del self.instances[key]
        return True

    def records_of(self, key: ObjKey) -> list[PipelineRecord]:
        return list(self._by_instance.get(key, {}).values())

    def _index(self, record: PipelineRecord) -> None:
        self._by_instance.setdefault(record.instance, {})[record.key] = record

    async def settle(self) -> None:
        """At start-up, let the initial listing register every resource before the first pass."""
        deadline = time.monotonic() + self.settle_seconds
        seen = -1
        while len(self.pipelines) != seen and time.monotonic() < deadline:
            seen = len(self.pipelines)
            await asyncio.sleep(min(0.3, self.settle_seconds))

    # ------------------------------------------------------------------ plumbing

    async def gather(self, coros: Iterable[Awaitable[None]]) -> None:
        results = await asyncio.gather(*coros, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("reconcile failed", exc_info=result)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` aside; a failure is logged (a bug must not go unseen, nor spread)."""
        task = asyncio.create_task(interactive(coro))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("reconcile failed", exc_info=task.exception())

    async def close(self) -> None:
        self.closing = True
        for record in self.pipelines.values():
            if record.followup:
                record.followup.cancel()
            self.deletion.cancel_retry(record)
        tasks = [s.task for s in self.instances.values() if s.task] + list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.events.close()
        for connection in self.connections.values():
            await connection.close()


def _ref(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid")},
    }


def _ready_for(status: Mapping[str, Any], generation: int) -> bool:
    ready = d.ready_condition(status)
    return (
        status.get("observedGeneration") == generation
        and ready.get("status") == "True"
        and ready.get("observedGeneration") == generation
    )
