"""Leader election over a coordination.k8s.io Lease, so that with several replicas one acts.

Every replica watches and keeps its cache warm; only the leader observes Feldera, acts and writes
status. The election follows client-go's leaderelection (what controller-runtime uses):

- A candidate takes the Lease when it is free (no holder), or when its record has not changed
  for a whole lease duration as this candidate observed it (clocks of replicas are not compared).
- The leader renews every retry period. Losing the lease ends the process, as controller-runtime
  does: a replica that cannot prove it leads must not act, and a fresh process competes again.
- Every Lease call is bounded (`_request_timeout`), and a watchdog thread that depends on no
  call ends the process when no renewal succeeded within the renew deadline: a renewal hung on a
  half-open connection must not leave two leaders (the lease expires for the others meanwhile).
- On a graceful shutdown the leader releases the Lease (holder cleared, duration 1 s, as
  client-go's ReleaseOnCancel), so a standby takes over at its next retry instead of waiting for
  the lease to expire.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import kubernetes
from kubernetes.client.exceptions import ApiException

from feldera_operator.kube import api_error_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaderElectionConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: int = 15  # whole seconds, as Lease.spec.leaseDurationSeconds
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class LeaseApi(Protocol):
    """The three calls of CoordinationV1Api the election makes."""

    def read_namespaced_lease(
        self, name: str, namespace: str, *, _request_timeout: float
    ) -> Any: ...
    def create_namespaced_lease(
        self, namespace: str, body: Any, *, _request_timeout: float
    ) -> Any: ...
    def replace_namespaced_lease(
        self, name: str, namespace: str, body: Any, *, _request_timeout: float
    ) -> Any: ...


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaderElector:
    """Competes for the Lease in a thread; a watchdog thread guards the renew deadline."""

    def __init__(
        self,
        config: LeaderElectionConfig,
        api: LeaseApi,
        *,
        on_started: Callable[[], None],
        on_lost: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.config = config
        self._api = api
        self._on_started = on_started
        self._on_lost = on_lost
        self._clock = clock
        self._wall = wall
        # Each call is bounded well within the renew deadline.
        self._call_timeout = max(0.5, min(config.retry_period, config.renew_deadline / 2))
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._lock = threading.Lock()  # the Lease is written by one thread at a time
        self.leading = False
        self.last_renew = 0.0  # clock() of the last successful acquire or renewal
        self._observed: tuple[Any, ...] | None = None  # the other holder's record, as last seen
        self._observed_at = 0.0
        self._last_problem: str | None = None  # logged once per cause
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ threads

    def start(self) -> None:
        for target, name in ((self.run, "leader-election"), (self.watchdog, "lease-watchdog")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def run(self) -> None:
        """Acquire, then renew until told to stop or the lease is lost."""
        cfg = self.config
        log.info("waiting to lead (lease %s/%s as %s)", cfg.namespace, cfg.name, cfg.identity)
        while not self._stop.is_set():
            if self._try_acquire_or_renew():
                break
            self._stop.wait(cfg.retry_period)
        if self._stop.is_set():
            return
        log.info("leading (lease %s/%s as %s)", cfg.namespace, cfg.name, cfg.identity)
        self._on_started()
        while not self._stop.wait(cfg.retry_period):
            if self._try_acquire_or_renew():
                continue
            if self._clock() - self.last_renew > cfg.renew_deadline:
                self._lose(f"could not renew the lease within {cfg.renew_deadline:g} s")
                return

    def watchdog(self) -> None:
        """Ends leadership when no renewal succeeded within the renew deadline, whatever the
        renewing thread is stuck in."""
        cfg = self.config
        interval = min(0.5, cfg.retry_period / 2)
        while not self._stop.wait(interval):
            if self.leading and self._clock() - self.last_renew > cfg.renew_deadline:
                self._lose(
                    f"no renewal of the lease succeeded within {cfg.renew_deadline:g} s "
                    "(a call to the API server hangs)"
                )
                return

    def _lose(self, why: str) -> None:
        if self._lost.is_set():
            return
        self._lost.set()
        self.leading = False
        self._on_lost(why)

    # ------------------------------------------------------------------ release

    def release(self) -> bool:
        """Stop competing; if this replica holds the Lease, give it up for a standby to take at
        once. Call it once this replica no longer acts. True when the Lease was released."""
        self._stop.set()
        was_leading, self.leading = self.leading, False
        if not was_leading or self._lost.is_set():
            return False
        with self._lock:
            try:
                lease = self._call(self._api.read_namespaced_lease)
                spec = lease.spec
                if spec is None or spec.holder_identity != self.config.identity:
                    return False
                now = self._wall()
                spec.holder_identity = None
                spec.lease_duration_seconds = 1
                spec.renew_time = now
                spec.acquire_time = now
                self._call(self._api.replace_namespaced_lease, body=lease)
            except Exception as e:  # the lease then expires by itself
                log.warning("could not release the lease: %s", _describe(e))
                return False
        log.info("released the lease %s/%s", self.config.namespace, self.config.name)
        return True

    # ------------------------------------------------------------------ one attempt

    def _try_acquire_or_renew(self) -> bool:
        cfg = self.config
        with self._lock:
            if self._stop.is_set() or self._lost.is_set():
                return False
            now = self._wall()
            try:
                lease = self._call(self._api.read_namespaced_lease)
            except ApiException as e:
                if e.status != 404:
                    self._problem("cannot read the lease", e)
                    return False
                return self._create(now)
            except Exception as e:
                self._problem("cannot read the lease", e)
                return False
            spec = lease.spec or kubernetes.client.V1LeaseSpec()
            holder = spec.holder_identity or None
            ours = holder == cfg.identity
            if holder is not None and not ours:
                record = (
                    holder,
                    spec.renew_time,
                    spec.acquire_time,
                    spec.lease_duration_seconds,
                    spec.lease_transitions,
                )
                if record != self._observed:
                    self._observed, self._observed_at = record, self._clock()
                duration = spec.lease_duration_seconds or cfg.lease_duration
                if self._observed_at + duration > self._clock():
                    return False  # held, and renewed within a lease duration as seen here
            if not ours:
                spec.acquire_time = now
                spec.lease_transitions = (spec.lease_transitions or 0) + (1 if holder else 0)
            spec.holder_identity = cfg.identity
            spec.lease_duration_seconds = cfg.lease_duration
            spec.renew_time = now
            lease.spec = spec
            try:
                self._call(self._api.replace_namespaced_lease, body=lease)
            except Exception as e:  # 409: someone else wrote it first
                self._problem("cannot update the lease", e)
                return False
            self._held()
            return True

    def _create(self, now: dt.datetime) -> bool:
        cfg = self.config
        body = kubernetes.client.V1Lease(
            metadata=kubernetes.client.V1ObjectMeta(name=cfg.name, namespace=cfg.namespace),
            spec=kubernetes.client.V1LeaseSpec(
                holder_identity=cfg.identity,
                lease_duration_seconds=cfg.lease_duration,
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            self._api.create_namespaced_lease(
                cfg.namespace, body, _request_timeout=self._call_timeout
            )
        except Exception as e:
            self._problem("cannot create the lease", e)
            return False
        self._held()
        return True

    def _problem(self, what: str, e: BaseException) -> None:
        """Log a failure once per cause: a standby retries every retry period. A conflict (409:
        another replica wrote first) is the election working, not a problem."""
        text = f"{what}: {_describe(e)}"
        if text != self._last_problem:
            self._last_problem = text
            level = logging.INFO if getattr(e, "status", None) == 409 else logging.WARNING
            log.log(level, text)

    def _held(self) -> None:
        self._last_problem = None
        self.last_renew = self._clock()
        self.leading = True

    def _call(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        cfg = self.config
        return fn(
            name=cfg.name,
            namespace=cfg.namespace,
            _request_timeout=self._call_timeout,
            **kwargs,
        )


def _describe(e: BaseException) -> str:
    if isinstance(e, ApiException):
        # Kubernetes' own message: a refusal names the verb and the resource.
        return api_error_text(e)
    return type(e).__name__


def exit_process(why: str) -> None:
    log.error("lost the lease (%s): exiting", why)
    logging.shutdown()
    os._exit(1)


def start(config: LeaderElectionConfig, leading: asyncio.Event) -> LeaderElector:
    """Compete for the lease; set `leading` (in its loop) once acquired; exit when lost."""
    loop = asyncio.get_running_loop()

    def started() -> None:
        loop.call_soon_threadsafe(leading.set)

    elector = LeaderElector(
        config, kubernetes.client.CoordinationV1Api(), on_started=started, on_lost=exit_process
    )
    elector.start()
    return elector
