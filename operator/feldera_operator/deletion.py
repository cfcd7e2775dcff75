"""Deletion: the finalizer that `deletionPolicy: Stop` needs, and the stop it guards.

A finalizer costs a write per object, so it is held only while the policy is Stop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from feldera_operator.feldera_client import FelderaError
from feldera_operator.instance_connection import Unobservable
from feldera_operator.kube import KubeError
from feldera_operator.models import FelderaPipeline
from feldera_operator.records import PipelineRecord

if TYPE_CHECKING:
    from feldera_operator.reconciler import Reconciler

log = logging.getLogger(__name__)

FINALIZER = "feldera.dev/stop-pipeline"


class Finalizer:
    def __init__(self, hub: Reconciler) -> None:
        self._hub = hub

    async def sync(self, record: PipelineRecord, body: Mapping[str, Any]) -> None:
        """Hold the finalizer exactly while deletionPolicy is Stop."""
        finalizers = list((body.get("metadata") or {}).get("finalizers") or [])
        want = record.spec is not None and record.spec.deletionPolicy == "Stop"
        if want == (FINALIZER in finalizers):
            return
        new = [*finalizers, FINALIZER] if want else [f for f in finalizers if f != FINALIZER]
        await self._patch(record, body, new)

    async def finalize(self, record: PipelineRecord, body: Mapping[str, Any]) -> None:
        hub = self._hub
        finalizers = list((body.get("metadata") or {}).get("finalizers") or [])
        if FINALIZER not in finalizers:
            return
        if record.spec is not None and record.spec.deletionPolicy == "Stop":
            try:
                client = await hub.connection(record.instance).client()
                await client.stop(record.pipeline_name, force=True)
                await hub.events.post(
                    record.ref, reason="PipelineStopped", message="stop (deletionPolicy: Stop)"
                )
            except FelderaError as e:
                if not (getattr(e, "status", None) == 404):
                    log.warning("%s: stop on deletion failed, will retry: %s", record.label, e)
                    hub.reconcile.schedule_followup(record)
                    return
            except Unobservable as e:
                log.warning("%s: stop on deletion impossible: %s", record.label, e.problem.message)
                return
        await self._patch(record, body, [f for f in finalizers if f != FINALIZER])

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
            # 409: the object moved on; the next watch event brings the new version to retry.
            log.info("%s: finalizer update deferred: %s", record.label, e)
