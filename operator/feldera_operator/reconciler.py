"""The imperative shell: observe Feldera, call `decide()`, issue its actions, write the status.

Two paths lead to the same `_apply()`:
- A spec change (a watch event whose generation was not reconciled yet) reconciles that one
  resource at once: `GET` its pipeline and stats, decide, act.
- One loop per Feldera instance observes all of its pipelines every period with one list of
  pipeline statuses and one `/stats` per deployed pipeline, and reconciles each resource from that
  snapshot. This is what catches drift, with no per-object timers (which cost CPU and latency at
  thousands of objects, see design.md).

A resource reconciled by the first path after a snapshot was taken is skipped by the second:
the snapshot is older than what that reconcile saw. Each resource has a lock, so the two paths never
act on one resource at the same time. While Feldera follows an action the resource is re-observed
after a short, growing delay rather than a whole period.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic

from feldera_operator import decision as d
from feldera_operator import metrics
from feldera_operator.config import OperatorConfig
from feldera_operator.feldera_client import FelderaClient, FelderaError, FelderaNotDeployed
from feldera_operator.kube import KubeApi, KubeError, SecretMissing
from feldera_operator.models import (
    PIPELINE_NAME_MAX,
    FelderaInstance,
    FelderaInstanceSpec,
    FelderaPipeline,
    FelderaPipelineSpec,
)
from feldera_operator.observation import observed_pipeline, problem_from_error

log = logging.getLogger(__name__)

ObjKey = tuple[str, str]  # (namespace, name)
DEFAULT_INSTANCE: ObjKey = ("", "")
FINALIZER = "feldera.dev/stop-pipeline"
FOLLOWUP_FIRST = 0.1  # seconds before re-observing a resource after an action
BACKOFF_FIRST = 1.0  # seconds before retrying an instance that failed

_parse_spec = pydantic.TypeAdapter(FelderaPipelineSpec).validate_python


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Unobservable(Exception):
    def __init__(self, problem: d.Problem, *, transient: bool = False) -> None:
        super().__init__(problem.message)
        self.problem = problem
        self.transient = transient  # the API server failed to answer; asking again will do


@dataclass
class PipelineRecord:
    """What the operator knows of one FelderaPipeline between watch events."""

    key: ObjKey
    ref: dict[str, Any]  # apiVersion, kind, metadata{name, namespace, uid}: for Events
    generation: int = 0
    spec: FelderaPipelineSpec | None = None
    spec_error: str | None = None
    pipeline_name: str = ""
    instance: ObjKey = DEFAULT_INSTANCE
    status: dict[str, Any] = field(default_factory=dict)
    resource_version: int = 0
    reconciled_generation: int | None = None
    ready_generation: int | None = None
    last_reconciled: float = 0.0  # monotonic; 0 = never
    followup: asyncio.TimerHandle | None = None
    followup_delay: float = FOLLOWUP_FIRST
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The last body seen with a deletionTimestamp: a follow-up then retries the finalizer.
    deleting: Mapping[str, Any] | None = None
    # The action and reason of the last ActionFailed Event: not posted again while it recurs.
    failure_reported: str | None = None

    @property
    def label(self) -> str:
        return f"{self.key[0]}/{self.key[1]}"


@dataclass
class InstanceState:
    key: ObjKey
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    client: FelderaClient | None = None
    fingerprint: str = ""
    connected: bool = False
    backoff: float = BACKOFF_FIRST
    server: dict[str, Any] = field(default_factory=dict)  # version, edition
    status: dict[str, Any] = field(default_factory=dict)  # last written FelderaInstance status
    problem_logged: str | None = None  # the reason last logged for the whole instance

    @property
    def label(self) -> str:
        return "default instance" if self.key == DEFAULT_INSTANCE else "/".join(self.key)


class Reconciler:
    def __init__(self, config: OperatorConfig, kube: KubeApi) -> None:
        self.config = config
        self.kube = kube
        self.pipelines: dict[ObjKey, PipelineRecord] = {}
        self.instance_objects: dict[ObjKey, dict[str, Any]] = {}
        self.instances: dict[ObjKey, InstanceState] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._semaphore = asyncio.Semaphore(config.concurrency)
        # Set while this replica may act (always, without leader election).
        self.leading = asyncio.Event()
        self._spawn(self._lead())

    async def _lead(self) -> None:
        await self.leading.wait()
        metrics.LEADER.set(1)
        for state in self.instances.values():
            state.wake.set()

    def status_snapshot(self) -> list[tuple[str, Mapping[str, Any]]]:
        """(kind, status) of every resource, for the metrics gauge."""
        pipelines = [(FelderaPipeline.KIND, r.status) for r in list(self.pipelines.values())]
        instances = [(FelderaInstance.KIND, s.status) for s in list(self.instances.values())]
        return pipelines + [i for i in instances if i[1]]

    # ------------------------------------------------------------------ watch events (kopf)

    async def on_pipeline_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key: ObjKey = (meta.get("namespace") or "default", meta["name"])
        if event_type == "DELETED":
            record = self.pipelines.pop(key, None)
            if record and record.followup:
                record.followup.cancel()
            return

        record = self.pipelines.get(key)
        if record is None or record.ref["metadata"].get("uid") != meta.get("uid"):
            record = PipelineRecord(key=key, ref=_ref(body))
            self.pipelines[key] = record
        rv = _int(meta.get("resourceVersion"))
        if rv >= record.resource_version:
            record.resource_version = rv
            record.status = dict(body.get("status") or {})
        generation = _int(meta.get("generation")) or 1
        if generation != record.generation or (record.spec is None and not record.spec_error):
            self._load_spec(record, body, generation)
        if record.ready_generation is None and _ready_for(record.status, generation):
            # Ready before this process started: a difference found now is drift, not a change.
            record.ready_generation = generation
        instance = self._ensure_instance(record.instance)

        if not self.leading.is_set():
            return  # a standby replica only keeps its cache warm
        if meta.get("deletionTimestamp"):
            record.deleting = body
            await self._finalize(record, body)
            return
        await self._sync_finalizer(record, body)

        if event_type is None:
            # The initial listing at start-up: the instance loop's first pass covers everyone
            # with one list call instead of a GET per resource.
            instance.wake.set()
            return
        if record.reconciled_generation != record.generation:
            await self.reconcile_now(key)

    async def on_instance_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key: ObjKey = (meta.get("namespace") or "default", meta["name"])
        if event_type == "DELETED":
            self.instance_objects.pop(key, None)
        else:
            old = self.instance_objects.get(key)
            self.instance_objects[key] = dict(body)
            if old is not None and old.get("spec") == body.get("spec"):
                self._ensure_instance(key).status = dict(body.get("status") or {})
                return
        state = self._ensure_instance(key)
        state.status = dict(body.get("status") or {})
        state.fingerprint = ""  # re-read the spec and Secret on the next pass
        state.wake.set()

    def _load_spec(self, record: PipelineRecord, body: Mapping[str, Any], generation: int) -> None:
        record.generation = generation
        record.spec_error = None
        name = body["metadata"]["name"]
        try:
            spec = _parse_spec(body.get("spec") or {})
        except pydantic.ValidationError as e:
            record.spec = None
            record.spec_error = _validation_message(e)
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
        duplicate = _same_connector_twice(spec)
        if duplicate is not None:
            record.spec = None
            record.spec_error = duplicate
            return
        record.spec = spec
        record.pipeline_name = pipeline_name
        ns = record.key[0]
        record.instance = (ns, spec.instanceRef.name) if spec.instanceRef else DEFAULT_INSTANCE

    # ------------------------------------------------------------------ the per-instance loop

    def _ensure_instance(self, key: ObjKey) -> InstanceState:
        state = self.instances.get(key)
        if state is None:
            state = InstanceState(key=key)
            self.instances[key] = state
        if (state.task is None or state.task.done()) and not self._closing:
            state.task = asyncio.create_task(self._instance_loop(state), name=f"observe {key}")
        return state

    async def _instance_loop(self, state: InstanceState) -> None:
        await self._settle()
        while not self._closing:
            await self.leading.wait()
            try:
                healthy = await self._observe_instance(state)
            except Exception:  # a bug must not end observation of a whole instance
                log.exception("observing %s failed", state.label)
                healthy = False
            if healthy:
                state.backoff = BACKOFF_FIRST
                delay = self.config.period
            else:
                delay = state.backoff
                state.backoff = min(state.backoff * 2, self.config.period)
            if any(r.last_reconciled == 0 for r in self._records_of(state.key)):
                delay = min(delay, 0.2)  # resources registered during the pass
            state.wake.clear()
            try:
                await asyncio.wait_for(state.wake.wait(), delay)
            except TimeoutError:
                pass

    async def _settle(self) -> None:
        """At start-up, let the initial listing register every resource before the first pass."""
        deadline = time.monotonic() + 10.0
        seen = -1
        while len(self.pipelines) != seen and time.monotonic() < deadline:
            seen = len(self.pipelines)
            await asyncio.sleep(0.3)

    def _records_of(self, key: ObjKey) -> list[PipelineRecord]:
        return [r for r in self.pipelines.values() if r.instance == key]

    async def _observe_instance(self, state: InstanceState) -> bool:
        """One pass over an instance. False when Feldera could not be reached (back off)."""
        records = self._records_of(state.key)
        if not records and state.key not in self.instance_objects:
            return True
        snapshot = time.monotonic()
        problem: d.Problem | None = None
        listing: list[Any] = []
        client: FelderaClient | None = None
        try:
            client = await self._client(state)
            if not state.connected:
                state.server = dict(await client.config())
            listing = list(await client.list_pipelines("status"))
            state.connected = True
        except _Unobservable as e:
            problem = e.problem
        except FelderaError as e:
            problem = problem_from_error(e, instance=state.label)
        if problem is not None:
            state.connected = False
            if problem.reason != state.problem_logged:
                # Once when it starts, not at every retry: the status says it at every pass.
                log.warning("%s: %s: %s", state.label, problem.reason, problem.message)
                state.problem_logged = problem.reason
            await self._gather(self._apply(r, problem, None, snapshot) for r in records)
            await self._write_instance_status(state, problem, None)
            return problem.reason not in (d.FELDERA_UNREACHABLE, d.FELDERA_ERROR)
        assert client is not None
        if state.problem_logged is not None:
            log.info("%s: Feldera answers again", state.label)
            state.problem_logged = None
        by_name = {p.get("name"): p for p in listing}
        await self._gather(
            self._reconcile_from(r, by_name.get(r.pipeline_name), client, snapshot) for r in records
        )
        await self._write_instance_status(state, None, len(listing))
        return True

    async def _reconcile_from(
        self,
        record: PipelineRecord,
        pipeline: Mapping[str, Any] | None,
        client: FelderaClient,
        snapshot: float,
    ) -> None:
        if record.last_reconciled > snapshot:
            return
        if record.spec is None:
            await self._apply_invalid(record)
            return
        observation: d.Observation
        if pipeline is None:
            observation = _not_found(record)
        else:
            observation = await self._with_stats(client, record.pipeline_name, pipeline)
        await self._apply(record, observation, client, snapshot)

    # ------------------------------------------------------------------ one resource, now

    async def reconcile_now(self, key: ObjKey) -> None:
        """Observe and reconcile one resource immediately (spec change, or a follow-up)."""
        record = self.pipelines.get(key)
        if record is None or not self.leading.is_set():
            return
        if record.spec is None:
            await self._apply_invalid(record)
            return
        client: FelderaClient | None = None
        observation: d.Observation
        try:
            client = await self._client(self._ensure_instance(record.instance))
            observation = await self._observe(record, client)
        except _Unobservable as e:
            observation = e.problem
        await self._apply(record, observation, client, None)

    async def _observe(self, record: PipelineRecord, client: FelderaClient) -> d.Observation:
        """One pipeline's status and stats, or the problem that kept them from being read."""
        try:
            pipeline = await client.get_pipeline(record.pipeline_name, "status")
            return await self._with_stats(client, record.pipeline_name, pipeline)
        except FelderaError as e:
            problem = problem_from_error(e, instance=self.instances[record.instance].label)
            return _not_found(record) if problem.reason == d.PIPELINE_NOT_FOUND else problem

    async def _with_stats(
        self, client: FelderaClient, name: str, pipeline: Mapping[str, Any]
    ) -> d.ObservedPipeline:
        if pipeline.get("deployment_status") not in d.DEPLOYED:
            return observed_pipeline(pipeline)
        try:
            async with self._semaphore:
                stats = await client.stats(name)
        except FelderaNotDeployed:
            return observed_pipeline(pipeline)  # it left Running/Paused since the list call
        except FelderaError as e:
            return observed_pipeline(
                pipeline, stats_problem=problem_from_error(e, instance=client.base_url)
            )
        return observed_pipeline(pipeline, dict(stats))

    async def _apply(
        self,
        record: PipelineRecord,
        observation: d.Observation,
        client: FelderaClient | None,
        snapshot: float | None,
    ) -> None:
        async with record.lock:
            if self.pipelines.get(record.key) is not record or record.spec is None:
                return
            if snapshot is not None and record.last_reconciled > snapshot:
                return
            started = time.monotonic()
            decision = d.decide(
                record.spec,
                generation=record.generation,
                pipeline_name=record.pipeline_name,
                observed=observation,
                previous_status=record.status,
                now=now_iso(),
            )
            status = decision.status
            drift = d.is_drift(
                decision, ready_generation=record.ready_generation, generation=record.generation
            )
            failure: d.Problem | None = None
            if decision.actions and client is not None:
                failure = await self._issue(record, client, decision.actions, drift)
                if failure is None and _applied_at_once(decision.actions):
                    # Feldera sets connector flags before answering: look once more now, so a
                    # flip costs one status write (Ready) instead of a pending one and a follow-up.
                    confirmed = d.decide(
                        record.spec,
                        generation=record.generation,
                        pipeline_name=record.pipeline_name,
                        observed=await self._observe(record, client),
                        previous_status=record.status,
                        now=now_iso(),
                    )
                    if not confirmed.actions:
                        decision, status = confirmed, confirmed.status
            if failure is not None:
                status = d.with_problem(
                    status, failure, generation=record.generation, now=now_iso()
                )
            record.last_reconciled = time.monotonic()
            record.reconciled_generation = record.generation
            if decision.ready and failure is None:
                record.ready_generation = record.generation
            await self._write_status(record, status, decision)
            if decision.in_progress or failure is not None:
                self._schedule_followup(record)
            else:
                record.followup_delay = FOLLOWUP_FIRST
            metrics.RECONCILES.labels(
                kind=FelderaPipeline.KIND, result=_result(decision, failure)
            ).inc()
            metrics.RECONCILE_SECONDS.labels(kind=FelderaPipeline.KIND).observe(
                time.monotonic() - started
            )

    async def _apply_invalid(self, record: PipelineRecord) -> None:
        async with record.lock:
            status = d.invalid_spec_status(
                record.spec_error or "invalid spec",
                generation=record.generation,
                previous_status=record.status,
                now=now_iso(),
            )
            record.last_reconciled = time.monotonic()
            record.reconciled_generation = record.generation
            if d.status_changed(record.status, status):
                await self.kube.post_event(
                    record.ref, reason=d.INVALID_SPEC, message=record.spec_error or "", warning=True
                )
            await self._write_status(record, status, None)

    async def _issue(
        self,
        record: PipelineRecord,
        client: FelderaClient,
        actions: Iterable[d.Action],
        drift: bool,
    ) -> d.Problem | None:
        """Issue actions in order; stop at the first failure and return it as a Problem."""
        name = record.pipeline_name
        for action in actions:
            try:
                async with self._semaphore:
                    if isinstance(action, d.PipelineAction):
                        if action.verb == "start":
                            await client.start(name, action.initial or "running")
                        elif action.verb == "pause":
                            await client.pause(name)
                        elif action.verb == "resume":
                            await client.resume(name)
                        elif action.verb == "dismiss_error":
                            await client.dismiss_error(name)
                        else:
                            await client.stop(name, force=True)
                    elif action.direction == "input":
                        await client.input_connector_action(
                            name, action.relation, action.connector, action.verb
                        )
                    else:
                        await client.output_connector_action(
                            name, action.relation, action.connector, action.verb
                        )
            except FelderaNotDeployed:
                # It left Running/Paused since it was observed: the follow-up will see it.
                log.info("%s: %s deferred: pipeline not deployed", record.label, action.describe())
                continue
            except FelderaError as e:
                problem = problem_from_error(e, instance=client.base_url)
                log.warning("%s: %s failed: %s", record.label, action.describe(), problem.message)
                # Retried every period while it lasts (a read-only key, Feldera down): one Event
                # says so; one per retry would be a storm of Events on every such resource.
                failure = f"{action.describe()}: {problem.reason}"
                if failure != record.failure_reported:
                    record.failure_reported = failure
                    await self.kube.post_event(
                        record.ref,
                        reason="ActionFailed",
                        message=f"{action.describe()}: {problem.message}",
                        warning=True,
                    )
                return problem
            reason = "DriftCorrected" if drift else _action_reason(action)
            metrics.ACTIONS.labels(action=_action_reason(action)).inc()
            if drift:
                target = "pipeline" if isinstance(action, d.PipelineAction) else "connector"
                metrics.DRIFT_CORRECTIONS.labels(target=target).inc()
            message = action.describe()
            if drift:
                message = f"Feldera no longer matched the spec; {message}"
            log.info("%s: %s", record.label, message)
            # Posted aside: the next action (or the status) need not wait on the Kubernetes API.
            self._spawn(self.kube.post_event(record.ref, reason=reason, message=message))
        record.failure_reported = None
        return None

    async def _write_status(
        self, record: PipelineRecord, status: dict[str, Any], decision: d.Decision | None
    ) -> None:
        if not d.status_changed(record.status, status):
            return
        old_reason = _ready_reason(record.status)
        try:
            obj = await self.kube.patch_status(
                FelderaPipeline.PLURAL, record.key[0], record.key[1], status
            )
        except KubeError as e:
            if e.status == 404:
                return  # deleted meanwhile
            log.warning("%s: status write failed: %s", record.label, e)
            self._schedule_followup(record)
            return
        record.status = dict(obj.get("status") or status)
        record.resource_version = max(
            record.resource_version, _int((obj.get("metadata") or {}).get("resourceVersion"))
        )
        if decision is not None and decision.ready_reason != old_reason:
            if decision.ready_reason in d.STALLED_REASONS:
                await self.kube.post_event(
                    record.ref,
                    reason=decision.ready_reason,
                    message=decision.ready_message,
                    warning=True,
                )

    def _schedule_followup(self, record: PipelineRecord) -> None:
        if record.followup is not None or self._closing:
            return
        delay = record.followup_delay
        record.followup_delay = min(delay * 2, self.config.period)

        def fire() -> None:
            record.followup = None
            if record.deleting is not None:
                # A stop on deletion that failed: retry it. A reconcile would not, and no watch
                # event may come to retry it either: the resource would stay Terminating.
                self._spawn(self._finalize(record, record.deleting))
            else:
                self._spawn(self.reconcile_now(record.key))

        record.followup = asyncio.get_running_loop().call_later(delay, fire)

    # ------------------------------------------------------------------ Feldera clients

    async def _client(self, state: InstanceState) -> FelderaClient:
        """The client for an instance, rebuilt when its URL, key, CA or tenant changed."""
        try:
            url, api_key, tenant, ca = await self._instance_settings(state.key)
        except _Unobservable as e:
            if e.transient and state.client is not None:
                return state.client  # the Secret could not be read just now: keep the last key
            raise
        fingerprint = hashlib.sha256(
            "\0".join([url, api_key or "", tenant or "", ca or ""]).encode()
        ).hexdigest()
        if state.client is None or fingerprint != state.fingerprint:
            if state.client is not None:
                await state.client.close()
            try:
                state.client = FelderaClient(
                    url,
                    api_key=api_key,
                    tenant=tenant,
                    ca_pem=ca,
                    timeout=self.config.request_timeout,
                    on_response=metrics.observe_feldera,
                )
            except ValueError as e:  # its messages never repeat the key or the CA
                raise _Unobservable(d.Problem(d.INVALID_SPEC, f"{state.label}: {e}")) from None
            state.fingerprint = fingerprint
            state.connected = False
        return state.client

    async def _instance_settings(
        self, key: ObjKey
    ) -> tuple[str, str | None, str | None, str | None]:
        if key == DEFAULT_INSTANCE:
            if not self.config.default_url:
                raise _Unobservable(
                    d.Problem(
                        d.INSTANCE_NOT_FOUND,
                        "spec.instanceRef is not set and the operator has no default instance "
                        "(--default-url / FELDERA_URL)",
                    )
                )
            api_key = None
            ref = self.config.default_api_key
            if ref is not None:
                api_key = await self._secret(ref.namespace, ref.name, ref.key)
            return self.config.default_url, api_key, self.config.default_tenant, None
        body = self.instance_objects.get(key)
        if body is None:
            raise _Unobservable(
                d.Problem(
                    d.INSTANCE_NOT_FOUND,
                    f"FelderaInstance {key[1]!r} not found in namespace {key[0]!r}",
                )
            )
        try:
            spec = FelderaInstanceSpec.model_validate(body.get("spec") or {})
        except pydantic.ValidationError as e:
            raise _Unobservable(
                d.Problem(d.INVALID_SPEC, f"FelderaInstance {key[1]}: {_validation_message(e)}")
            ) from None
        api_key = ca = None
        if spec.apiKeySecretRef is not None:
            api_key = await self._secret(
                key[0], spec.apiKeySecretRef.name, spec.apiKeySecretRef.key
            )
        if spec.caSecretRef is not None:
            ca = await self._secret(key[0], spec.caSecretRef.name, spec.caSecretRef.key)
        return spec.url, api_key, spec.tenant, ca

    async def _secret(self, namespace: str, name: str, key: str) -> str:
        try:
            return await self.kube.read_secret_key(namespace, name, key)
        except SecretMissing as e:
            raise _Unobservable(d.Problem(d.SECRET_NOT_FOUND, str(e))) from None
        except KubeError as e:
            raise _Unobservable(
                d.Problem(d.SECRET_NOT_FOUND, f"cannot read Secret {namespace}/{name}: {e}"),
                transient=e.status is not None and (e.status >= 500 or e.status == 429),
            ) from None

    async def _write_instance_status(
        self, state: InstanceState, problem: d.Problem | None, pipelines: int | None
    ) -> None:
        body = self.instance_objects.get(state.key)
        if body is None:
            return
        status = d.instance_status(
            problem,
            generation=_int((body.get("metadata") or {}).get("generation")) or 1,
            server=state.server,
            pipelines=pipelines,
            previous_status=state.status,
            now=now_iso(),
        )
        if not d.status_changed(state.status, status):
            return
        try:
            obj = await self.kube.patch_status(FelderaInstance.PLURAL, *state.key, status)
        except KubeError as e:
            log.warning("%s: status write failed: %s", state.label, e)
            return
        state.status = dict(obj.get("status") or status)

    # ------------------------------------------------------------------ deletion

    async def _sync_finalizer(self, record: PipelineRecord, body: Mapping[str, Any]) -> None:
        """Hold a finalizer only while deletionPolicy is Stop: it costs a write per object."""
        finalizers = list((body.get("metadata") or {}).get("finalizers") or [])
        want = record.spec is not None and record.spec.deletionPolicy == "Stop"
        if want == (FINALIZER in finalizers):
            return
        new = [*finalizers, FINALIZER] if want else [f for f in finalizers if f != FINALIZER]
        await self._patch_finalizers(record, body, new)

    async def _finalize(self, record: PipelineRecord, body: Mapping[str, Any]) -> None:
        finalizers = list((body.get("metadata") or {}).get("finalizers") or [])
        if FINALIZER not in finalizers:
            return
        if record.spec is not None and record.spec.deletionPolicy == "Stop":
            try:
                client = await self._client(self._ensure_instance(record.instance))
                await client.stop(record.pipeline_name, force=True)
                await self.kube.post_event(
                    record.ref, reason="PipelineStopped", message="stop (deletionPolicy: Stop)"
                )
            except FelderaError as e:
                if not (getattr(e, "status", None) == 404):
                    log.warning("%s: stop on deletion failed, will retry: %s", record.label, e)
                    self._schedule_followup(record)
                    return
            except _Unobservable as e:
                log.warning("%s: stop on deletion impossible: %s", record.label, e.problem.message)
                return
        await self._patch_finalizers(record, body, [f for f in finalizers if f != FINALIZER])

    async def _patch_finalizers(
        self, record: PipelineRecord, body: Mapping[str, Any], finalizers: list[str]
    ) -> None:
        meta = body.get("metadata") or {}
        patch = {
            "metadata": {"finalizers": finalizers, "resourceVersion": meta.get("resourceVersion")}
        }
        try:
            await self.kube.patch_object(FelderaPipeline.PLURAL, *record.key, patch)
        except KubeError as e:
            # 409: the object moved on; the next watch event brings the new version to retry.
            log.info("%s: finalizer update deferred: %s", record.label, e)

    # ------------------------------------------------------------------ plumbing

    async def _gather(self, coros: Iterable[Awaitable[None]]) -> None:
        results = await asyncio.gather(*coros, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("reconcile failed", exc_info=result)

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except Exception:
                log.exception("reconcile failed")

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closing = True
        for record in self.pipelines.values():
            if record.followup:
                record.followup.cancel()
        tasks = [s.task for s in self.instances.values() if s.task] + list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for state in self.instances.values():
            if state.client is not None:
                await state.client.close()


def _not_found(record: PipelineRecord) -> d.Problem:
    return d.Problem(
        d.PIPELINE_NOT_FOUND, f"Feldera has no pipeline named {record.pipeline_name!r}"
    )


def _ref(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid")},
    }


def _ready_reason(status: Mapping[str, Any]) -> str | None:
    reason = d.ready_condition(status).get("reason")
    return reason if isinstance(reason, str) else None


def _result(decision: d.Decision, failure: d.Problem | None) -> str:
    reason = failure.reason if failure else decision.ready_reason
    if reason in d.SYNC_FAILURE_REASONS:
        return "error"
    if reason in d.STALLED_REASONS:
        return "stalled"
    return "converged" if decision.ready and failure is None else "progressing"


def _applied_at_once(actions: Iterable[d.Action]) -> bool:
    """Connector actions take effect before Feldera answers; pipeline actions are asynchronous."""
    return all(isinstance(a, d.ConnectorAction) for a in actions)


def _ready_for(status: Mapping[str, Any], generation: int) -> bool:
    ready = d.ready_condition(status)
    return (
        status.get("observedGeneration") == generation
        and ready.get("status") == "True"
        and ready.get("observedGeneration") == generation
    )


def _action_reason(action: d.Action) -> str:
    if isinstance(action, d.PipelineAction):
        return {
            "start": "PipelineStarted",
            "pause": "PipelinePaused",
            "resume": "PipelineResumed",
            "stop": "PipelineStopped",
            "dismiss_error": "DeploymentErrorDismissed",
        }[action.verb]
    return "ConnectorStarted" if action.verb == "start" else "ConnectorPaused"


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _same_connector_twice(spec: FelderaPipelineSpec) -> str | None:
    """Two entries the list-map keys tell apart but Feldera does not (`Orders` and `orders` are
    one table: unquoted SQL names are case-insensitive). They contradict each other, and acting
    on whichever came last would silently ignore the other."""
    lists = (
        ("inputs", [(c.table, c.connector) for c in spec.inputs]),
        ("outputs", [(c.view, c.connector) for c in spec.outputs]),
    )
    for field_name, entries in lists:
        seen: dict[tuple[str, str], int] = {}
        for i, (relation, connector) in enumerate(entries):
            key = (d.canonical_spec_relation(relation), connector)
            if key in seen:
                return (
                    f"spec.{field_name}[{i}] ({relation}.{connector}) names the same connector as "
                    f"spec.{field_name}[{seen[key]}]: unquoted SQL names are case-insensitive"
                )
            seen[key] = i
    return None


def _validation_message(error: pydantic.ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"spec.{where}: {item.get('msg')}" if where else str(item.get("msg")))
    return "; ".join(parts)
