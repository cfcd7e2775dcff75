"""One observation loop per Feldera instance: every period, one list of pipeline statuses and one
`/stats` per deployed pipeline serve every resource of the instance. This is what catches drift,
with no per-object timers (which cost CPU and latency at thousands of objects, see design.md).
An instance that cannot be reached is retried after 1 s, 2 s, 4 s ... up to a period.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from feldera_operator import decision as d
from feldera_operator.feldera_client import FelderaClientClosed, FelderaError
from feldera_operator.instance_connection import FelderaApi, Unobservable
from feldera_operator.observation import problem_from_error
from feldera_operator.records import BACKOFF_FIRST, InstanceState
from feldera_operator.status_writer import Written

if TYPE_CHECKING:
    from feldera_operator.reconciler import Reconciler

log = logging.getLogger(__name__)


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
                delay = hub.config.period
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

    async def observe(self, state: InstanceState) -> bool:
        """One pass over an instance. False when Feldera could not be reached (back off)."""
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
        await hub.gather(
            hub.reconcile.reconcile_from(r, by_name.get(r.pipeline_name), client, snapshot)
            for r in records
        )
        await self._write_status(state, body, None, len(listing))
        return True

    async def _write_status(
        self,
        state: InstanceState,
        body: Mapping[str, Any] | None,
        problem: d.Problem | None,
        pipelines: int | None,
    ) -> None:
        hub = self._hub
        if await hub.status.write_instance(state, body, problem, pipelines) is Written.GONE:
            # Deleted while its watch event was lost: as if the event had come.
            log.info("%s: the FelderaInstance is gone", state.label)
            hub.instance_objects.pop(state.key, None)
            await hub.connection(state.key).close()
