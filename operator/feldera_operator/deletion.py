"""Deletion: the finalizer that `deletionPolicy: Stop` and `Delete` need, and what it guards.

A finalizer costs a write per object, so it is held only while the policy is Stop or Delete (and
kept while the spec is one the operator cannot read: dropping it then would drop the user's
wish). A resource being deleted is no longer reconciled. Stop stops the pipeline; Delete takes
`program.decide_deletion()`'s steps (stop, clear storage, delete), one per round, a round again
soon after each until it says done, and only then releases the resource. A step that cannot be
made is retried with a growing delay (1 s, 2 s, 4 s ... up to a period), and the resource says why
(reason `DeletionBlocked`). When it can never be made, the finalizer is released with a Warning
Event (`StopSkipped`): the FelderaInstance was deleted (deleting a namespace or a directory of
manifests removes it first), or the resource names no pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from feldera_operator import decision as d
from feldera_operator import program as p
from feldera_operator.events import deletion_step_done
from feldera_operator.feldera_client import FelderaClientClosed, FelderaError, FelderaNotFound
from feldera_operator.instance_connection import FelderaApi, Unobservable
from feldera_operator.kube import KubeError
from feldera_operator.models import (
    PIPELINE_NAME_MAX,
    PIPELINE_NAME_PATTERN,
    FelderaPipeline,
    FelderaPipelineSpec,
)
from feldera_operator.observation import problem_from_error
from feldera_operator.program_reconcile import call_step
from feldera_operator.records import (
    BACKOFF_FIRST,
    DEFAULT_INSTANCE,
    FOLLOWUP_FIRST,
    ObjKey,
    PipelineRecord,
)

if TYPE_CHECKING:
    from feldera_operator.reconciler import Reconciler

log = logging.getLogger(__name__)

FINALIZER = "feldera.dev/stop-pipeline"


POLICIES = ("Stop", "Delete")  # the deletion policies that hold the finalizer


@dataclass(frozen=True)
class StopTarget:
    pipeline: str
    instance: ObjKey
    # deletionPolicy Delete: the spec decide_deletion() reads (None: Stop).
    delete: FelderaPipelineSpec | None = None

    @property
    def policy(self) -> str:
        return "Delete" if self.delete is not None else "Stop"


class InProgress:
    """A Delete that took its step, or waits for Feldera to follow the last: a round again soon."""


IN_PROGRESS = InProgress()


class Finalizer:
    def __init__(self, hub: Reconciler) -> None:
        self._hub = hub

    async def sync(self, record: PipelineRecord, body: Mapping[str, Any]) -> None:
        """Hold the finalizer exactly while deletionPolicy is Stop or Delete."""
        if record.spec is None:
            return  # a spec the operator cannot read: keep what the last one asked for
        finalizers = list((body.get("metadata") or {}).get("finalizers") or [])
        want = record.spec.deletionPolicy in POLICIES
        if want == (FINALIZER in finalizers):
            return
        new = [*finalizers, FINALIZER] if want else [f for f in finalizers if f != FINALIZER]
        await self._patch(record, body, new)

    async def finalize(self, record: PipelineRecord) -> None:
        """Stop the pipeline if the resource asks for it, then release the resource."""
        hub = self._hub
        async with record.lock:
            body = record.deleting
            if body is None or hub.pipelines.get(record.key) is not record:
                return
            finalizers = list((body.get("metadata") or {}).get("finalizers") or [])
            if FINALIZER not in finalizers:
                return
            target, why_not = self._target(record, body)
            others = hub.other_claimants(record)
            if target is not None and others:
                # Stopping it would stop what another resource declares running.
                why_not = (
                    f"FelderaPipeline {others[0].label} also declares pipeline {target.pipeline!r}"
                )
                target = None
            if target is not None:
                blocked = await self._stop(record, target)
                if isinstance(blocked, InProgress):
                    self._retry(record, progress=True)
                    return
                if blocked is not None:
                    await self._blocked(record, blocked, target.policy)
                    return
            elif why_not is not None:
                await self._skip(record, why_not, self._policy(record, body))
            await self._patch(record, body, [f for f in finalizers if f != FINALIZER])

    def cancel_retry(self, record: PipelineRecord) -> None:
        if record.deletion_retry is not None:
            record.deletion_retry.cancel()
            record.deletion_retry = None

    # ------------------------------------------------------------------ the stop

    def _target(
        self, record: PipelineRecord, body: Mapping[str, Any]
    ) -> tuple[StopTarget | None, str | None]:
        """What to stop (None: nothing), or why a Stop cannot be honoured."""
        if record.spec is not None:
            if record.spec.deletionPolicy not in POLICIES:
                return None, None
            delete = record.spec if record.spec.deletionPolicy == "Delete" else None
            return StopTarget(record.pipeline_name, record.instance, delete), None
        # A spec the operator cannot act on: its Stop or Delete is still the user's wish, and
        # ObserveOnly (or a policy it cannot read) still forbids a Delete.
        spec = body.get("spec") if isinstance(body.get("spec"), Mapping) else {}
        assert isinstance(spec, Mapping)
        policy = spec.get("deletionPolicy")
        if policy not in POLICIES:
            return None, None
        delete = None
        if policy == "Delete":
            if spec.get("managementPolicy", "Full") != "Full":
                return None, None
            delete = FelderaPipelineSpec(deletionPolicy="Delete")
        name = spec.get("pipelineName") or (body.get("metadata") or {}).get("name")
        if not (
            isinstance(name, str)
            and len(name) <= PIPELINE_NAME_MAX
            and re.fullmatch(PIPELINE_NAME_PATTERN, name)
        ):
            return None, f"the spec names no valid pipeline ({name!r})"
        ref = spec.get("instanceRef")
        instance = DEFAULT_INSTANCE
        if isinstance(ref, Mapping) and isinstance(ref.get("name"), str):
            instance = (record.key[0], ref["name"])
        return StopTarget(str(name), instance, delete), None

    async def _stop(
        self, record: PipelineRecord, target: StopTarget
    ) -> d.Problem | InProgress | None:
        """Stop the pipeline (Delete: take the next step); None when done (or nothing to do),
        else why it waits."""
        hub = self._hub
        connection = hub.connection(target.instance)
        try:
            # A retry reads the settings again: what blocked the last attempt may be fixed.
            client = await connection.client(refresh=record.deletion_cause is not None)
            if target.delete is not None:
                progress = await self._delete_step(record, client, target, target.delete)
                if progress is not None:
                    return progress
                record.deletion_cause = None
                return None
            await client.stop(target.pipeline, force=True)
        except Unobservable as e:
            if e.problem.reason == d.INSTANCE_NOT_FOUND and self._instance_gone(target.instance):
                await self._skip(record, e.problem.message, target.policy)
                return None
            return e.problem
        except FelderaClientClosed:
            return d.Problem(d.FELDERA_UNREACHABLE, "the instance's client was being replaced")
        except FelderaNotFound as e:
            if not e.is_pipeline:  # a wrong path prefix answers 404 too: nothing was stopped
                connection.failed(e)
                return problem_from_error(e, instance=connection.label)
            log.info("%s: pipeline %s is gone from Feldera", record.label, target.pipeline)
            return None
        except FelderaError as e:
            connection.failed(e)
            return problem_from_error(e, instance=connection.label)
        log.info("%s: stopped pipeline %s (deletionPolicy: Stop)", record.label, target.pipeline)
        await hub.events.post(
            record.ref,
            reason="PipelineStopped",
            message="Stopped the pipeline (deletionPolicy: Stop)",
        )
        return None

    async def _delete_step(
        self,
        record: PipelineRecord,
        client: FelderaApi,
        target: StopTarget,
        spec: FelderaPipelineSpec,
    ) -> InProgress | None:
        """deletionPolicy Delete: one round of decide_deletion() (None: done). Feldera's errors
        propagate to `_stop`, which says why the deletion waits."""
        status = await client.get_pipeline(target.pipeline, "status")  # 404: gone, done
        decision = p.decide_deletion(spec, p.observed_program(status))
        if decision.done:
            return None
        step = decision.step
        if step is not None:
            await call_step(client, target.pipeline, step)
            message = f"{deletion_step_done(step)} (deletionPolicy: Delete)"
            log.info("%s: %s", record.label, message)
            self._hub.events.post_aside(record.ref, reason=step.event, message=message)
            # It moved on: the next step may be possible at once, and a new block is news.
            record.followup_delay = FOLLOWUP_FIRST
            record.deletion_backoff = BACKOFF_FIRST
            record.deletion_cause = None
        return IN_PROGRESS

    def _instance_gone(self, instance: ObjKey) -> bool:
        """Permanently: the default instance is not configured, or the FelderaInstance is not
        there once the start-up listing had its time to arrive."""
        hub = self._hub
        if instance == DEFAULT_INSTANCE:
            return True  # settings of the operator's own, fixed for its lifetime
        listed = time.monotonic() - hub.started > hub.settle_seconds
        return listed and instance not in hub.instance_objects

    @staticmethod
    def _policy(record: PipelineRecord, body: Mapping[str, Any]) -> str:
        if record.spec is not None:
            return record.spec.deletionPolicy
        spec = body.get("spec")
        return str(spec.get("deletionPolicy")) if isinstance(spec, Mapping) else "Stop"

    async def _skip(self, record: PipelineRecord, why: str, policy: str) -> None:
        what = "deleting" if policy == "Delete" else "stopping"
        message = (
            f"Released the resource without {what} its pipeline (deletionPolicy: {policy}): {why}"
        )
        log.warning("%s: %s", record.label, message)
        await self._hub.events.post(record.ref, reason="StopSkipped", message=message, warning=True)

    async def _blocked(self, record: PipelineRecord, problem: d.Problem, policy: str) -> None:
        hub = self._hub
        what = "be deleted" if policy == "Delete" else "stop"
        if problem.reason != record.deletion_cause:
            # Once per cause, not at every retry: the status says it all along.
            record.deletion_cause = problem.reason
            log.warning(
                "%s: %s on deletion waits, retried with backoff: %s: %s",
                record.label,
                policy.lower(),
                problem.reason,
                problem.message,
            )
            await hub.events.post(
                record.ref,
                reason=d.DELETION_BLOCKED,
                message=f"Deletion waits for the pipeline to {what}: {problem.message}",
                warning=True,
            )
        status = d.deletion_blocked_status(
            problem,
            generation=record.generation,
            previous_status=record.status,
            now=hub.clock(),
            policy=policy,
        )
        await hub.status.write_pipeline(record, status)
        self._retry(record)

    def _retry(self, record: PipelineRecord, *, progress: bool = False) -> None:
        """Finalize again: after a growing backoff while blocked; after a short, growing delay
        while a Delete progresses (Feldera follows its last step)."""
        hub = self._hub
        if record.deletion_retry is not None or hub.closing:
            return
        if progress:
            delay = record.followup_delay
            record.followup_delay = min(delay * 2, hub.config.period)
        else:
            delay = record.deletion_backoff
            record.deletion_backoff = min(delay * 2, max(hub.config.period, BACKOFF_FIRST))

        def fire() -> None:
            record.deletion_retry = None
            hub.spawn(self.finalize(record))

        record.deletion_retry = asyncio.get_running_loop().call_later(delay, fire)

    # ------------------------------------------------------------------ the finalizer

    async def _patch(
        self, record: PipelineRecord, body: Mapping[str, Any], finalizers: list[str]
    ) -> None:
        meta = body.get("metadata") or {}
        patch = {
            "metadata": {"finalizers": finalizers, "resourceVersion": meta.get("resourceVersion")}
        }
        try:
            await self._hub.kube.patch_object(FelderaPipeline.PLURAL, *record.key, patch)
        except KubeError as e:
            if e.status == 404:
                self._hub.forget(record)  # deleted meanwhile (a watch event missed)
                return
            # 409: the object moved on; the next watch event brings the new version to retry.
            log.info("%s: finalizer update deferred: %s", record.label, e)
