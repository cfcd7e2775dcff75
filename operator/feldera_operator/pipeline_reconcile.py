"""The reconcile of one FelderaPipeline: observe its pipeline, decide, issue the actions, write the
status, and come back soon while Feldera follows an action.

Two callers: a spec change reconciles one resource at once (`reconcile_now`: one `GET` of its
pipeline and its `/stats`); the instance's loop reconciles every resource from one listing
(`reconcile_from`). A resource reconciled by the first after the listing was taken is skipped by
the second: the listing is older than what that reconcile saw. Each resource has a lock, so the
two never act on one resource at the same time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from feldera_operator import decision as d
from feldera_operator import metrics
from feldera_operator.events import (
    action_failed,
    action_object,
    action_reason,
    actions_done,
)
from feldera_operator.feldera_client import FelderaClientClosed, FelderaError, FelderaNotDeployed
from feldera_operator.instance_connection import FelderaApi, Unobservable
from feldera_operator.kube import KubeError
from feldera_operator.models import FelderaPipeline
from feldera_operator.observation import (
    after_connector_actions,
    observed_pipeline,
    problem_from_error,
)
from feldera_operator.program_reconcile import ProgramRound
from feldera_operator.records import FOLLOWUP_FIRST, ObjKey, PipelineRecord, instance_label
from feldera_operator.status_writer import Written

if TYPE_CHECKING:
    from feldera_operator.reconciler import Reconciler

# Program inputs that cannot be compared (see PipelineReconciler._program_inputs).
_UNSETTLED: Any = object()


def _digest(value: Any) -> int | None:
    """A JSON value's digest for equality within this process (None for None)."""
    return None if value is None else hash(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


log = logging.getLogger(__name__)


class PipelineReconciler:
    def __init__(self, hub: Reconciler) -> None:
        self._hub = hub

    # ------------------------------------------------------------------ entry points

    async def reconcile_now(self, key: ObjKey) -> None:
        """Observe and reconcile one resource immediately (spec change, or a follow-up)."""
        hub = self._hub
        record = hub.pipelines.get(key)
        if record is None or record.deleting is not None or not hub.leading.is_set():
            return
        if record.spec is None:
            await self.apply_invalid(record)
            return
        # Observed under the lock: a reconcile that waited for it (the instance's pass acting on
        # this resource) must not act on what it saw before; Feldera has moved since.
        async with record.lock:
            client: FelderaApi | None = None
            entry: Mapping[str, Any] | None = None
            observation: d.Observation
            try:
                if hub.owner(record) is not record:
                    observation = not_found(record)  # not observed: not this resource's to act on
                else:
                    try:
                        client = await hub.connection(record.instance).client()
                        entry, observation = await self.read(record, client)
                    except Unobservable as e:
                        observation = e.problem
                await self._apply_locked(record, observation, client, None, entry)
            except FelderaClientClosed:
                # The client was replaced (a rotated key, an edited instance) and closed under
                # this reconcile: nothing was sent; look again at once with the new one.
                self.schedule_followup(record, FOLLOWUP_FIRST)

    async def reconcile_from(
        self,
        record: PipelineRecord,
        pipeline: Mapping[str, Any] | None,
        client: FelderaApi,
        snapshot: float,
    ) -> None:
        """Reconcile from the instance's listing taken at `snapshot` (its entry, or None)."""
        if record.last_reconciled > snapshot:
            return
        if record.spec is None:
            await self.apply_invalid(record)
            return
        if self._hub.owner(record) is not record:
            pipeline = None  # not observed: it is not this resource's to act on
        observation: d.Observation
        try:
            if pipeline is None:
                observation = not_found(record)
            else:
                observation = await self.with_stats(client, record.pipeline_name, pipeline)
            await self.apply(record, observation, client, snapshot, pipeline)
        except FelderaClientClosed:
            self.schedule_followup(record, FOLLOWUP_FIRST)  # as in reconcile_now

    async def unobservable(
        self, record: PipelineRecord, problem: d.Problem, snapshot: float
    ) -> None:
        """The instance could not be observed: say why on a resource the operator could act on;
        a resource it could not act on anyway says that instead."""
        if record.spec is None:
            if record.last_reconciled <= snapshot:
                await self.apply_invalid(record)
            return
        await self.apply(record, problem, None, snapshot)

    # ------------------------------------------------------------------ observing

    async def observe(self, record: PipelineRecord, client: FelderaApi) -> d.Observation:
        """One pipeline's status and stats, or the problem that kept them from being read."""
        return (await self.read(record, client))[1]

    async def read(
        self, record: PipelineRecord, client: FelderaApi
    ) -> tuple[Mapping[str, Any] | None, d.Observation]:
        """As `observe`, with the status entry it came from (None when there is none)."""
        try:
            pipeline = await client.get_pipeline(record.pipeline_name, "status")
            return pipeline, await self.with_stats(client, record.pipeline_name, pipeline)
        except FelderaClientClosed:
            raise
        except FelderaError as e:
            label = self._hub.instance_state(record.instance).label
            problem = self._hub.feldera_failed(record, e, instance=label, url=client.base_url)
            return None, not_found(record) if problem.reason == d.PIPELINE_NOT_FOUND else problem

    async def with_stats(
        self, client: FelderaApi, name: str, pipeline: Mapping[str, Any]
    ) -> d.ObservedPipeline:
        if pipeline.get("deployment_status") not in d.DEPLOYED:
            return observed_pipeline(pipeline)
        try:
            stats = await client.stats(name)  # in flight at once: bounded by the client
        except FelderaNotDeployed:
            return observed_pipeline(pipeline)  # it left Running/Paused since the list call
        except FelderaClientClosed:
            raise
        except FelderaError as e:
            return observed_pipeline(
                pipeline, stats_problem=problem_from_error(e, instance=client.base_url)
            )
        return observed_pipeline(pipeline, dict(stats))

    # ------------------------------------------------------------------ deciding and acting

    async def apply(
        self,
        record: PipelineRecord,
        observation: d.Observation,
        client: FelderaApi | None,
        snapshot: float | None,
        entry: Mapping[str, Any] | None = None,
    ) -> None:
        async with record.lock:
            await self._apply_locked(record, observation, client, snapshot, entry)

    async def _apply_locked(
        self,
        record: PipelineRecord,
        observation: d.Observation,
        client: FelderaApi | None,
        snapshot: float | None,
        entry: Mapping[str, Any] | None = None,
    ) -> None:
        """Decide from `observation` (built from the status `entry`, when there is one), act,
        write the status, and follow up."""
        hub = self._hub
        if hub.pipelines.get(record.key) is not record or record.spec is None:
            return
        if record.deleting is not None:
            return  # being deleted: only the finalizer acts on it now
        owner = hub.owner(record)
        if owner is not None and owner is not record:
            await self._claimed(record, owner)
            return
        if snapshot is not None and record.last_reconciled > snapshot:
            return
        started = time.monotonic()
        held = self.start_hold(record, observation)
        inputs = self._program_inputs(record, entry)
        if self._settled(record, observation, held, inputs):
            return
        program = await self._program(record, observation, client, entry)
        outcome = program.outcome if program is not None else None
        decision = d.decide(
            record.spec,
            generation=record.generation,
            pipeline_name=record.pipeline_name,
            observed=observation,
            previous_status=record.status,
            now=self._hub.clock(),
            program=outcome,
            start_held_for=held,
        )
        status = decision.status
        drift = d.is_drift(
            decision, ready_generation=record.ready_generation, generation=record.generation
        )
        failure = program.problem if program is not None else None
        step = program.step if program is not None else None
        ready = (decision.ready_reason, decision.ready_message)
        written: Written | None = None
        # A program step on a resource already Ready at this generation: Feldera was changed
        # behind the operator's back, as for drift.
        again = drift or (step is not None and record.ready_generation == record.generation)
        acting = bool(decision.actions) or step is not None
        if again and acting and client is not None and not await self.exists(record):
            return  # deleted while its watch was down: forgotten, never acted on
        if step is not None and client is not None:
            # The status names the step before it is taken, so that a preview's diff is on the
            # resource before anything stops; a step whose status cannot be written waits.
            written = await self.write(record, status, ready)
            if written is Written.GONE:
                return
            if written is not Written.FAILED:
                assert program is not None
                failure = await self._hub.program.execute(record, client, step, program.hash)
        elif decision.actions and client is not None:
            applied: list[d.Action] = []
            failure = await self.issue(record, client, decision.actions, drift, applied=applied)
            if (
                failure is None
                and applied_at_once(decision.actions)
                and len(applied) == len(decision.actions)
                and isinstance(observation, d.ObservedPipeline)
            ):
                # Feldera sets connector flags before answering: its answers confirm them, so
                # a flip costs one status write (Ready) and no second read.
                confirmed = d.decide(
                    record.spec,
                    generation=record.generation,
                    pipeline_name=record.pipeline_name,
                    observed=after_connector_actions(
                        observation, [a for a in applied if isinstance(a, d.ConnectorAction)]
                    ),
                    previous_status=record.status,
                    now=self._hub.clock(),
                    program=outcome,
                )
                if not confirmed.actions:
                    decision, status = confirmed, confirmed.status
        if failure is not None:
            status = d.with_problem(
                status,
                failure,
                generation=record.generation,
                now=self._hub.clock(),
                previous_status=record.status,
            )
        record.last_reconciled = time.monotonic()
        record.reconciled_generation = record.generation
        if decision.ready and failure is None:
            record.ready_generation = record.generation
        if written is not Written.FAILED:  # failed: its follow-up is scheduled already
            written = await self.write(record, status, ready)
        if decision.ready_reason == d.EXTERNAL_STOP_GRACE and held is not None:
            self.schedule_followup(record, held + 0.05)  # at the grace's end, not before
        elif decision.in_progress or failure is not None or written is Written.FAILED:
            self.schedule_followup(record)  # a growing delay: not reset while writes fail
        else:
            record.followup_delay = FOLLOWUP_FIRST
            record.retry_after = 0.0
        result = result_label(decision, failure)
        record.settled = None
        if (
            not decision.actions
            and not decision.in_progress
            and failure is None
            and written in (Written.UNCHANGED, Written.WRITTEN)
            # A declared program: only once it is applied and running as declared.
            and (program is None or (step is None and decision.ready))
        ):
            record.settled = (record.generation, observation, result, record.status, inputs)
        metrics.RECONCILES.labels(kind=FelderaPipeline.KIND, result=result).inc()
        metrics.RECONCILE_SECONDS.labels(kind=FelderaPipeline.KIND).observe(
            time.monotonic() - started
        )

    async def _program(
        self,
        record: PipelineRecord,
        observation: d.Observation,
        client: FelderaApi | None,
        entry: Mapping[str, Any] | None,
    ) -> ProgramRound | None:
        """The program flow's round, for a resource that declares its program (else None)."""
        spec = record.spec
        if spec is None or spec.program is None:
            record.program_copy = record.program_copy_hash = None  # no longer declared
            return None
        unreadable = isinstance(observation, d.Problem) and (
            observation.reason != d.PIPELINE_NOT_FOUND
        )
        if client is None or unreadable:
            return self._hub.program.unobservable(record)
        return await self._hub.program.decide(record, client, entry)

    def _program_inputs(self, record: PipelineRecord, entry: Mapping[str, Any] | None) -> Any:
        """What a declared program's flow decides from besides the spec, the status and the
        observation: the ConfigMap it reads (sqlFrom: its labels and data, as the watch holds
        them), the listing's entry for the pipeline (its version, program and storage fields),
        each as a digest, and the instance's edition. None for a
        resource that declares no program; _UNSETTLED when the flow must run (no entry, or a
        ConfigMap the watch does not hold)."""
        spec = record.spec
        if spec is None or spec.program is None:
            return None
        if entry is None:
            return _UNSETTLED
        configmap: Any = None
        if record.sql_source is not None:
            configmap = self._hub.configmaps.get(record.sql_source)
            if configmap is None:
                return _UNSETTLED
        edition = self._hub.instance_state(record.instance).server.get("edition")
        return (_digest(configmap), _digest(entry), edition)

    def _settled(
        self, record: PipelineRecord, observation: d.Observation, held: float | None, inputs: Any
    ) -> bool:
        """The same spec, status, observation and program inputs as the last reconcile, which
        acted on nothing, had nothing in flight and left the status as it is (a declared
        program: applied and Ready): deciding again would decide the same (the decisions are
        pure). Most of a steady pass's CPU went to deciding that again and comparing statuses
        (docs/performance.md)."""
        settled = record.settled
        if settled is None or held is not None or record.spec is None or inputs is _UNSETTLED:
            return False
        generation, last, result, status, last_inputs = settled
        if (
            generation != record.generation
            or status is not record.status
            or last != observation
            or last_inputs != inputs
        ):
            return False
        record.last_reconciled = time.monotonic()
        record.reconciled_generation = record.generation
        metrics.RECONCILES.labels(kind=FelderaPipeline.KIND, result=result).inc()
        return True

    def start_hold(self, record: PipelineRecord, observation: d.Observation) -> float | None:
        """Seconds a start is still held back because someone else stopped the pipeline, or None.

        Tools that deploy SQL their own way stop the pipeline, wait for Stopped, then PATCH the
        program; started again within a second, their PATCH gets UpdateRestrictedToStopped. So
        for a pipeline whose program this resource does not manage, a stop the operator did not
        make (seen as Feldera's desired status turning Stopped while the spec wants it running)
        holds the start for --external-stop-grace, or until a new program version compiled.
        """
        spec = record.spec
        if not isinstance(observation, d.ObservedPipeline) or spec is None:
            return None
        before, record.last_desired = record.last_desired, observation.desired_status
        grace = self._hub.config.external_stop_grace
        if d.manages_program(spec) or spec.stopped or grace <= 0:
            record.external_stop = None
            return None
        if observation.desired_status != "Stopped":
            record.external_stop = None  # started again, by whoever
            if observation.desired_status in d.DEPLOYED:
                record.stop_issued = False
            return None
        if record.external_stop is None:
            if before is None or before == "Stopped" or record.stop_issued:
                return None  # never seen running, or stopped by the operator itself
            record.external_stop = (time.monotonic(), observation.program_version)
            log.info(
                "%s: the pipeline was stopped outside the operator; it is started again after "
                "%g s, or once a new program version compiled",
                record.label,
                grace,
            )
        since, version = record.external_stop
        left = since + grace - time.monotonic()
        recompiled = (
            observation.program_version is not None
            and observation.program_version != version
            and observation.program_status == d.PROGRAM_READY
        )
        if left <= 0 or recompiled:
            record.external_stop = None
            return None
        return left

    async def _claimed(self, record: PipelineRecord, owner: PipelineRecord) -> None:
        """Another (older) resource declares the same Feldera pipeline: acting on both would
        have them fight every period. This one waits, and says for what."""
        message = (
            f"FelderaPipeline {owner.label} (the older) already declares Feldera pipeline "
            f"{record.pipeline_name!r} on this instance; this resource is not acted on, nor its "
            "deletionPolicy, until that one is deleted or this one names another pipeline"
        )
        status = d.not_acted_on_status(
            d.PIPELINE_CLAIMED,
            message,
            generation=record.generation,
            previous_status=record.status,
            now=self._hub.clock(),
        )
        record.last_reconciled = time.monotonic()
        record.reconciled_generation = record.generation
        await self.write(record, status, (d.PIPELINE_CLAIMED, message))

    async def apply_invalid(self, record: PipelineRecord) -> None:
        async with record.lock:
            status = d.invalid_spec_status(
                record.spec_error or "invalid spec",
                generation=record.generation,
                previous_status=record.status,
                now=self._hub.clock(),
            )
            record.last_reconciled = time.monotonic()
            record.reconciled_generation = record.generation
            if d.status_changed(record.status, status):
                await self._hub.events.post(
                    record.ref, reason=d.INVALID_SPEC, message=record.spec_error or "", warning=True
                )
            await self.write(record, status, None)

    async def exists(self, record: PipelineRecord) -> bool:
        """Before correcting drift, confirm the resource still exists (one GET, only when Feldera
        was changed behind the operator's back). A spec change comes with a fresh watch event;
        drift may concern a resource deleted while the watch was down: kopf lists again after a
        410 and tells handlers nothing of what the listing no longer has. Gone (or recreated
        under another uid): forget it. Kubernetes unreachable: act, as the spec last seen says."""
        try:
            body = await self._hub.kube.get_object(FelderaPipeline.PLURAL, *record.key)
        except KubeError:
            return True
        uid = record.ref["metadata"].get("uid")
        if body is not None and (body.get("metadata") or {}).get("uid") == uid:
            return True
        log.info("%s: the resource is gone; forgetting it", record.label)
        self._hub.forget(record)
        return False

    async def write(
        self, record: PipelineRecord, status: dict[str, Any], ready: tuple[str, str] | None
    ) -> Written:
        written = await self._hub.status.write_pipeline(record, status, ready=ready)
        if written is Written.FAILED:
            self.schedule_followup(record)
        elif written is Written.GONE:
            # Deleted while its watch event was lost (kopf re-lists after a 410 and tells event
            # handlers nothing of what the listing no longer has): forget it, act on it no more.
            log.info("%s: the resource is gone; forgetting it", record.label)
            self._hub.forget(record)
        return written

    async def issue(
        self,
        record: PipelineRecord,
        client: FelderaApi,
        actions: Iterable[d.Action],
        drift: bool,
        *,
        applied: list[d.Action] | None = None,
    ) -> d.Problem | None:
        """Issue the actions in order, each whatever became of the others (one connector's
        failure must not keep the rest as they were); the first failure, as a Problem. Those
        Feldera took go to `applied`; one Event says them all."""
        hub = self._hub
        name = record.pipeline_name
        first_failure: d.Problem | None = None
        failures: list[str] = []
        done: list[d.Action] = []
        for action in actions:
            try:
                await call_action(client, name, action)
            except FelderaNotDeployed:
                # It left Running/Paused since it was observed: the follow-up will see it.
                log.info(
                    "%s: %s deferred: the pipeline is not deployed",
                    record.label,
                    action_object(action),
                )
                continue
            except FelderaClientClosed:
                raise
            except FelderaError as e:
                problem = hub.feldera_failed(record, e, instance=client.base_url)
                log.warning("%s: %s", record.label, action_failed(action, problem.message))
                # Retried every period while it lasts (a read-only key, Feldera down): one Event
                # says so; one per retry would be a storm of Events on every such resource.
                failure = f"{action.describe()}: {problem.reason}"
                failures.append(failure)
                if failure not in (record.failure_reported or "").split("\n"):
                    await hub.events.post(
                        record.ref,
                        reason="ActionFailed",
                        message=action_failed(action, problem.message),
                        warning=True,
                    )
                first_failure = first_failure or problem
                continue
            if isinstance(action, d.PipelineAction) and action.verb == "stop":
                record.stop_issued = True
            instance = instance_label(record.instance)
            metrics.ACTIONS.labels(instance=instance, action=action_reason(action)).inc()
            if drift:
                target = "pipeline" if isinstance(action, d.PipelineAction) else "connector"
                metrics.DRIFT_CORRECTIONS.labels(
                    namespace=record.key[0], instance=instance, target=target
                ).inc()
            done.append(action)
        if done:
            # One Event (and one log line) for the reconcile: a Kubernetes write per action
            # was most of a cold start's writes. Posted aside: the status need not wait for it.
            reason, message = actions_done(done, drift=drift)
            log.info("%s: %s", record.label, message)
            hub.events.post_aside(record.ref, reason=reason, message=message)
        if applied is not None:
            applied.extend(done)
        record.failure_reported = "\n".join(failures) or None
        return first_failure

    # ------------------------------------------------------------------ follow-ups

    def schedule_followup(self, record: PipelineRecord, delay: float | None = None) -> None:
        """Reconcile the resource again after a growing delay (or after `delay`)."""
        hub = self._hub
        if record.followup is not None or hub.closing:
            return
        if delay is None:
            delay = record.followup_delay
            record.followup_delay = min(delay * 2, hub.config.period)
        if record.retry_after:
            # Feldera said when to come back (429, 503): not sooner, and not after a period.
            delay = max(delay, min(record.retry_after, hub.config.period))
            record.retry_after = 0.0

        def fire() -> None:
            record.followup = None
            hub.spawn(self.reconcile_now(record.key))

        record.followup = asyncio.get_running_loop().call_later(delay, fire)


async def call_action(client: FelderaApi, name: str, action: d.Action) -> None:
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
        await client.input_connector_action(name, action.relation, action.connector, action.verb)
    else:
        await client.output_connector_action(name, action.relation, action.connector, action.verb)


def not_found(record: PipelineRecord) -> d.Problem:
    return d.Problem(
        d.PIPELINE_NOT_FOUND, f"Feldera has no pipeline named {record.pipeline_name!r}"
    )


def result_label(decision: d.Decision, failure: d.Problem | None) -> str:
    reason = failure.reason if failure else decision.ready_reason
    if reason in d.SYNC_FAILURE_REASONS:
        return "error"
    if reason in d.STALLED_REASONS:
        return "stalled"
    return "converged" if decision.ready and failure is None else "progressing"


def applied_at_once(actions: Iterable[d.Action]) -> bool:
    """Connector actions take effect before Feldera answers; pipeline actions are asynchronous."""
    return all(isinstance(a, d.ConnectorAction) for a in actions)
