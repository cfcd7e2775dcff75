"""Leader election over a coordination.k8s.io Lease, so that with several replicas one acts.

Every replica watches and keeps its cache warm; only the leader observes Feldera, acts and writes
status. The election itself is the official client's `kubernetes.leaderelection` (a Lease lock,
renewed from a thread). Losing the lease ends the process, as controller-runtime does: a replica
that cannot prove it leads must not act, and a fresh process competes again cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass

from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaderElectionConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: int = 15  # whole seconds, as Lease.spec.leaseDurationSeconds
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def start(config: LeaderElectionConfig, leading: asyncio.Event) -> LeaseLock:
    """Compete for the lease in a daemon thread; set `leading` (in its loop) once acquired."""
    loop = asyncio.get_running_loop()
    lock = LeaseLock(config.name, config.namespace, config.identity)  # type: ignore[no-untyped-call]

    def started() -> None:
        log.info("leading (lease %s/%s as %s)", config.namespace, config.name, config.identity)
        loop.call_soon_threadsafe(leading.set)

    def stopped() -> None:
        log.error("lost the lease %s/%s: exiting", config.namespace, config.name)
        logging.shutdown()
        os._exit(1)

    election = leaderelection.LeaderElection(  # type: ignore[no-untyped-call]
        electionconfig.Config(  # type: ignore[no-untyped-call]
            lock,
            lease_duration=config.lease_duration,
            renew_deadline=config.renew_deadline,
            retry_period=config.retry_period,
            onstarted_leading=started,
            onstopped_leading=stopped,
        )
    )
    log.info("waiting to lead (lease %s/%s as %s)", config.namespace, config.name, config.identity)

    def compete() -> None:
        try:
            election.run()  # type: ignore[no-untyped-call]
        except Exception:
            # Without a working election this replica can never prove it leads.
            log.exception("leader election failed: exiting")
            logging.shutdown()
            os._exit(1)

    threading.Thread(target=compete, name="leader-election", daemon=True).start()
    return lock
