"""Writing what the operator saw: the status of FelderaPipelines and FelderaInstances, written
only when something in it changed, and a Warning Event when a resource becomes Stalled."""

from __future__ import annotations

import datetime as dt
import enum
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from feldera_operator import decision as d
from feldera_operator.events import EventRecorder
from feldera_operator.kube import KubeClient, KubeError
from feldera_operator.models import FelderaInstance, FelderaPipeline
from feldera_operator.records import InstanceState, PipelineRecord

log = logging.getLogger(__name__)

# A status that only says an action is in flight (Reconciling) is written once it has lasted
# this long: Feldera applies most actions within it, and the next status (Ready) then is the
# only write. A cold start's writes per pipeline went from 2 statuses to 1 (docs/performance.md).
TRANSIENT_GRACE = 1.0


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Written(enum.Enum):
    WRITTEN = "written"
    UNCHANGED = "unchanged"  # nothing to write
    DEFERRED = "deferred"  # only an action in flight to say, for less than TRANSIENT_GRACE
    GONE = "gone"  # 404: the resource no longer exists
    FAILED = "failed"  # worth retrying


class StatusWriter:
    def __init__(
        self, kube: KubeClient, events: EventRecorder, clock: Callable[[], str] = now_iso
    ) -> None:
        self._kube = kube
        self._events = events
        self._clock = clock

    async def write_pipeline(
        self,
        record: PipelineRecord,
        status: dict[str, Any],
        *,
        ready: tuple[str, str] | None = None,
    ) -> Written:
        """Write a FelderaPipeline's status if it changed. `ready` is the decided (reason,
        message): a Warning Event says so when that reason is new and Stalled."""
        if not d.status_changed(record.status, status):
            record.transient_since = None
            return Written.UNCHANGED
        if _only_in_flight(status):
            now = time.monotonic()
            if record.transient_since is None:
                record.transient_since = now
            if now - record.transient_since < TRANSIENT_GRACE:
                return Written.DEFERRED
        record.transient_since = None
        old_reason = ready_reason(record.status)
        try:
            obj = await self._kube.patch_status(
                FelderaPipeline.PLURAL, record.key[0], record.key[1], status
            )
        except KubeError as e:
            if e.status == 404:
                return Written.GONE
            if str(e) != record.write_problem:  # once per cause: it is retried with backoff
                record.write_problem = str(e)
                log.warning("%s: status write failed, will retry: %s", record.label, e)
            return Written.FAILED
        if record.write_problem is not None:
            log.info("%s: status written again", record.label)
            record.write_problem = None
        record.status = dict(obj.get("status") or status)
        record.resource_version = max(
            record.resource_version, as_int((obj.get("metadata") or {}).get("resourceVersion"))
        )
        if ready is not None and ready[0] != old_reason and ready[0] in d.STALLED_REASONS:
            # Once when it becomes so: a person must act, and may read the log before Events.
            log.warning("%s: %s: %s", record.label, ready[0], ready[1])
            await self._events.post(record.ref, reason=ready[0], message=ready[1], warning=True)
        return Written.WRITTEN

    async def write_instance(
        self,
        state: InstanceState,
        body: Mapping[str, Any] | None,
        problem: d.Problem | None,
        pipelines: int | None,
    ) -> Written:
        if body is None:
            return Written.UNCHANGED
        status = d.instance_status(
            problem,
            generation=as_int((body.get("metadata") or {}).get("generation")) or 1,
            server=state.server,
            pipelines=pipelines,
            previous_status=state.status,
            now=self._clock(),
        )
        if not d.status_changed(state.status, status):
            return Written.UNCHANGED
        try:
            obj = await self._kube.patch_status(FelderaInstance.PLURAL, *state.key, status)
        except KubeError as e:
            if e.status == 404:
                return Written.GONE
            if str(e) != state.write_problem:  # once per cause
                state.write_problem = str(e)
                log.warning("%s: status write failed, will retry: %s", state.label, e)
            return Written.FAILED
        state.write_problem = None
        state.status = dict(obj.get("status") or status)
        return Written.WRITTEN


# What Feldera reaches by itself right after the operator's action, typically within the grace.
# (Not ExternalStopGrace, Compiling or the program's steps: those last, and say why.)
_FOLLOWING_AN_ACTION = frozenset(
    {d.STARTING, d.STOPPING, d.PAUSING, d.RESUMING, d.TRANSITIONING, d.CONNECTORS_PENDING}
)


def _only_in_flight(status: Mapping[str, Any]) -> bool:
    """Feldera follows an action, and nothing is wrong: Synced, not Stalled."""
    by_type = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, Mapping)}
    ready = by_type.get("Ready") or {}
    return (
        ready.get("reason") in _FOLLOWING_AN_ACTION
        and (by_type.get("Synced") or {}).get("status") == "True"
        and (by_type.get("Stalled") or {}).get("status") != "True"
    )


def ready_reason(status: Mapping[str, Any]) -> str | None:
    reason = d.ready_condition(status).get("reason")
    return reason if isinstance(reason, str) else None


def as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
