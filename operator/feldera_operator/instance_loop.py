"""One observation loop per Feldera instance: every period, one list of pipeline statuses and one
`/stats` per deployed pipeline serve every resource of the instance. This is what catches drift,
with no per-object timers (which cost CPU and latency at thousands of objects, see design.md).
An instance that cannot be reached is retried after 1 s, 2 s, 4 s ... up to a period.

The `/stats` reads are spread evenly over the period (they end by 90 % of it, `spread`, so the
last decisions and writes fit before the next pass), not sent as a burst, and they are
background requests of the instance's budget (`budget.py`): they yield to spec changes and
actions. A pass that needs more reads than the budget allows in a period takes
longer than the period; the loop then starts the next pass at once, says so in one log line
(and one when it keeps up again), and `feldera_operator_observation_pass_seconds` shows by how
much. A pipeline's listing entry is as old as its pass when its `/stats` is read (up to a period):
what changed since shows in `/stats` at the next pass at the latest, and every pipeline action
is idempotent in Feldera.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from feldera_operator import decision as d
from feldera_operator import metrics
from feldera_operator.budget import background_reads
from feldera_operator.feldera_client import FelderaClientClosed, FelderaError
from feldera_operator.instance_connection import FelderaApi, Unobservable
from feldera_operator.observation import problem_from_error
from feldera_operator.records import BACKOFF_FIRST, InstanceState, PipelineRecord, instance_label
from feldera_operator.status_writer import Written

if TYPE_CHECKING:
    from feldera_operator.reconciler import Reconciler

log = logging.getLogger(__name__)

# Reconciles of one pass in flight at once (each waits for its /stats).
PASS_CONCURRENCY = 8
# A pass this much longer than the period is "behind" (said once); back within the period, it
# keeps up again.
BEHIND = 1.1


class InstanceObserver:
    def __init__(self, hub: Reconciler) -> None:
        self._hub = hub

    async def run(self, state: InstanceState) -> None:
        hub = self._hub
        await hub.settle()
        while not hub.closing:
            await hub.leading.wait()
            started = time.monotonic()
            # Cleared before the pass, not after: a wake that comes during the pass (a new
            # resource, an instance edit) then calls for the next one at once.
            state.wake.clear()
            try:
                healthy = await self.observe(state)
            except Exception:  # a bug must not end observation of a whole instance
                log.exception("observing %s failed", state.label)
                healthy = False
            if hub.drop_instance(state):
                await hub.connection(state.key).close()
                hub.connections.pop(state.key, None)
                return  # nothing refers to it: started again when something does
            if healthy:
                state.backoff = BACKOFF_FIRST
                took = time.monotonic() - started
                self._pace(state, took)
                # Every period from the start of the last pass (its reads took most of it).
                delay = max(hub.config.period - took, 0.0)
            else:
                delay = state.backoff
                state.backoff = min(state.backoff * 2, hub.config.period)
            if state.retry_after:
                # Feldera (or a proxy) said when to come back (429, 503): not sooner, and not
                # later than a period.
                delay = max(delay, min(state.retry_after, hub.config.period))
                state.retry_after = 0.0
            if any(r.registered > started for r in hub.records_of(state.key)):
                delay = min(delay, 0.2)  # resources registered during the pass
            try:
                await asyncio.wait_for(state.wake.wait(), delay)
            except TimeoutError:
                pass

    def _pace(self, state: InstanceState, took: float) -> None:
        """Say when passes start taking longer than the period, and when they keep up again."""
        period = self._hub.config.period
        metrics.OBSERVATION_PASS_SECONDS.labels(instance=instance_label(state.key)).set(took)
        if not state.behind and took > period * BEHIND:
            state.behind = True
            log.warning(
                "%s: an observation pass took %.1f s, longer than the period (%g s): its %d "
                "reads, with the actions and spec changes of the time, share %g requests/s "
                "(--feldera-rps); drift is caught more slowly until passes keep up",
                state.label,
                took,
                period,
                state.observed + 1,
                self._hub.config.feldera_rps,
            )
        elif state.behind and took <= period:
            state.behind = False
            log.info(
                "%s: observation keeps up with the period again (%.1f s per pass)",
                state.label,
                took,
            )

    async def observe(self, state: InstanceState) -> bool:
        """One pass over an instance. False when Feldera could not be reached (back off)."""
        with background_reads():
            return await self._observe(state)

    async def _observe(self, state: InstanceState) -> bool:
        hub = self._hub
        records = hub.records_of(state.key)
        if not records and state.key not in hub.instance_objects:
            return True  # nothing to observe
        snapshot = time.monotonic()
        problem: d.Problem | None = None
        listing: list[Any] = []
        client: FelderaApi | None = None
        connection = hub.connection(state.key)
        try:
            client = await connection.client(refresh=True)  # the Secrets are read once a period
            if connection.fresh:
                connection.fresh = False
                state.connected = False
            if not state.connected:
                state.server = dict(await client.config())
            listing = list(await client.list_pipelines("status"))
            state.connected = True
        except Unobservable as e:
            problem = e.problem
        except FelderaClientClosed:
            return False  # replaced while this pass began: the next pass uses the new one
        except FelderaError as e:
            connection.failed(e)
            state.retry_after = e.retry_after or 0.0
            url = client.base_url if client is not None else ""
            problem = problem_from_error(e, instance=state.label, url=url)
        body = hub.instance_objects.get(state.key)
        state.up = problem is None
        state.problem = problem.reason if problem is not None else None
        if problem is not None:
            state.connected = False
            if problem.reason != state.problem_logged:
                # Once when it starts, not at every retry: the status says it at every pass.
                log.warning("%s: %s: %s", state.label, problem.reason, problem.message)
                state.problem_logged = problem.reason
            await hub.gather(hub.reconcile.unobservable(r, problem, snapshot) for r in records)
            await self._write_status(state, body, problem, None)
            return problem.reason not in (d.FELDERA_UNREACHABLE, d.FELDERA_ERROR, d.TLS_ERROR)
        assert client is not None
        if state.problem_logged is not None:
            log.info("%s: Feldera answers again", state.label)
            state.problem_logged = None
        by_name = {p.get("name"): p for p in listing}
        # The instance's status first: it need not wait for the spread reads.
        if await self._write_status(state, body, None, len(listing)) is not Written.GONE:
            await self._reconcile_spread(records, by_name, client, snapshot, state)
        return True

    async def _reconcile_spread(
        self,
        records: list[PipelineRecord],
        by_name: Mapping[Any, Mapping[str, Any]],
        client: FelderaApi,
        snapshot: float,
        state: InstanceState,
    ) -> None:
        """Reconcile every resource from the listing: those that need no `/stats` at once, the
        others one `/stats` each, evenly over the period."""
        hub = self._hub
        reconcile = hub.reconcile.reconcile_from
        paced: list[PipelineRecord] = []
        at_once: list[PipelineRecord] = []
        for r in records:
            entry = by_name.get(r.pipeline_name)
            needs_stats = (
                entry is not None
                and r.spec is not None
                and entry.get("deployment_status") in d.DEPLOYED
                and hub.owner(r) is r
            )
            (paced if needs_stats else at_once).append(r)
        state.observed = len(paced)
        await hub.gather(
            reconcile(r, by_name.get(r.pipeline_name), client, snapshot) for r in at_once
        )
        if not paced:
            return
        interval = hub.config.period * hub.config.spread / (len(paced) + 1)
        slots = asyncio.Semaphore(PASS_CONCURRENCY)
        tasks: list[asyncio.Task[None]] = []

        async def one(record: PipelineRecord) -> None:
            try:
                await reconcile(record, by_name.get(record.pipeline_name), client, snapshot)
            finally:
                slots.release()

        next_at = snapshot + interval
        for record in paced:
            # Woken (an instance edited, resources registered): the rest of the pass goes as
            # fast as the budget allows, and the next pass comes at once.
            if not state.wake.is_set():
                wait = next_at - time.monotonic()
                if wait > 0:
                    await _sleep_unless(state.wake, wait)
                # Behind (the budget is taken): on at the same pace, never catch up in a burst.
                next_at = max(next_at, time.monotonic()) + interval
            await slots.acquire()
            tasks.append(asyncio.create_task(one(record)))
        await hub.gather(tasks)

    async def _write_status(
        self,
        state: InstanceState,
        body: Mapping[str, Any] | None,
        problem: d.Problem | None,
        pipelines: int | None,
    ) -> Written:
        hub = self._hub
        written = await hub.status.write_instance(state, body, problem, pipelines)
        if written is Written.GONE:
            # Deleted while its watch event was lost: as if the event had come.
            log.info("%s: the FelderaInstance is gone", state.label)
            hub.instance_objects.pop(state.key, None)
            await hub.connection(state.key).close()
        return written


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    """Sleep, unless `event` is set meanwhile (checked at once for sleeps under half a second:
    those of a busy pass, where a task per sleep would cost more than the wait)."""
    if seconds < 0.5:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
