"""Deletion: the finalizer that `deletionPolicy: Stop` needs, and the stop it guards.

A finalizer costs a write per object, so it is held only while the policy is Stop (and kept while
the spec is one the operator cannot read: dropping it then would drop the user's Stop). A resource
being deleted is no longer reconciled. Its stop is retried with a growing delay (1 s, 2 s, 4 s ...
up to a period) while it cannot be made, and the resource says why (reason `DeletionBlocked`).
When the stop can never be made, the finalizer is released with a Warning Event (`StopSkipped`):
the FelderaInstance was deleted (deleting a namespace or a directory of manifests removes it
first), or the resource names no pipeline.
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
from feldera_operator.feldera_client import FelderaClientClosed, FelderaError, FelderaNotFound
from feldera_operator.instance_connection import Unobservable
from feldera_operator.kube import KubeError
from feldera_operator.models import PIPELINE_NAME_MAX, PIPELINE_NAME_PATTERN, FelderaPipeline
from feldera_operator.observation import problem_from_error
from feldera_operator.records import BACKOFF_FIRST, DEFAULT_INSTANCE, ObjKey, PipelineRecord

if TYPE_CHECKING:
    from feldera_operator.reconciler import Reconciler

log = logging.getLogger(__name__)

FINALIZER = "feldera.dev/stop-pipeline"


@dataclass(frozen=True)
class StopTarget:
    pipeline: str
    instance: ObjKey


class Finalizer:
    def __init__(self, hub: Reconciler) -> None:
        self._hub = hub

    async def sync(self, record: PipelineRecord, body: Mapping[str, Any]) -> None:
        """Hold the finalizer exactly while deletionPolicy is Stop."""
        if record.spec is None:
            return  # a spec the operator cannot read: keep what the last one asked for
        finalizers = list((body.get("metadata") or {}).get("finalizers") or [])
        want = record.spec.deletionPolicy == "Stop"
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
                if blocked is not None:
                    await self._blocked(record, blocked)
                    return
            elif why_not is not None:
                await self._skip(record, why_not)
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
            if record.spec.deletionPolicy != "Stop":
                return None, None
            return StopTarget(record.pipeline_name, record.instance), None
        # A spec the operator cannot act on: its Stop is still the user's wish.
        spec = body.get("spec") if isinstance(body.get("spec"), Mapping) else {}
        assert isinstance(spec, Mapping)
        if spec.get("deletionPolicy") != "Stop":
            return None, None
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
        return StopTarget(str(name), instance), None

    async def _stop(self, record: PipelineRecord, target: StopTarget) -> d.Problem | None:
        """Stop the pipeline; None when done (or nothing to do), else why it waits."""
        hub = self._hub
        connection = hub.connection(target.instance)
        try:
            # A retry reads the settings again: what blocked the last attempt may be fixed.
            client = await connection.client(refresh=record.deletion_cause is not None)
            await client.stop(target.pipeline, force=True)
        except Unobservable as e:
            if e.problem.reason == d.INSTANCE_NOT_FOUND and self._instance_gone(target.instance):
                await self._skip(record, e.problem.message)
                return None
            return e.problem
        except FelderaClientClosed:
            return d.Problem(d.FELDERA_UNREACHABLE, "the instance's client was being replaced")
        except FelderaNotFound as e:
            if not e.is_pipeline:  # a wrong path prefix answers 404 too: nothing was stopped
                connection.failed(e)
                return problem_from_error(e, instance=connection.label)
            log.info("%s: pipeline %s already gone in Feldera", record.label, target.pipeline)
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

    def _instance_gone(self, instance: ObjKey) -> bool:
        """Permanently: the default instance is not configured, or the FelderaInstance is not
        there once the start-up listing had its time to arrive."""
        hub = self._hub
        if instance == DEFAULT_INSTANCE:
            return True  # settings of the operator's own, fixed for its lifetime
        listed = time.monotonic() - hub.started > hub.settle_seconds
        return listed and instance not in hub.instance_objects

    async def _skip(self, record: PipelineRecord, why: str) -> None:
        message = (
            f"Released the resource without stopping its pipeline (deletionPolicy: Stop): {why}"
        )
        log.warning("%s: %s", record.label, message)
        await self._hub.events.post(record.ref, reason="StopSkipped", message=message, warning=True)

    async def _blocked(self, record: PipelineRecord, problem: d.Problem) -> None:
        hub = self._hub
        if problem.reason != record.deletion_cause:
            # Once per cause, not at every retry: the status says it all along.
            record.deletion_cause = problem.reason
            log.warning(
                "%s: stop on deletion waits, retried with backoff: %s: %s",
                record.label,
                problem.reason,
                problem.message,
            )
            await hub.events.post(
                record.ref,
                reason=d.DELETION_BLOCKED,
                message=f"Deletion waits for the pipeline to stop: {problem.message}",
                warning=True,
            )
        status = d.deletion_blocked_status(
            problem, generation=record.generation, previous_status=record.status, now=hub.clock()
        )
        await hub.status.write_pipeline(record, status)
        self._retry(record)

    def _retry(self, record: PipelineRecord) -> None:
        hub = self._hub
        if record.deletion_retry is not None or hub.closing:
            return
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
