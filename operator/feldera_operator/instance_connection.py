"""An instance's connection: where its Feldera API is (the default instance's flags or a
FelderaInstance's spec), the API key and CA read from Secrets, and the Feldera client built from
them, rebuilt when any of them changes."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import pydantic

from feldera_operator import decision as d
from feldera_operator import metrics
from feldera_operator.budget import RequestBudget
from feldera_operator.config import OperatorConfig
from feldera_operator.feldera_client import (
    BootstrapPolicy,
    ConnectorAction,
    FelderaAuthError,
    FelderaClient,
    FelderaConfig,
    FelderaError,
    InitialState,
    Pipeline,
    PipelineStats,
    Selector,
)
from feldera_operator.kube import KubeClient, KubeError, SecretMissing
from feldera_operator.models import FelderaInstanceSpec
from feldera_operator.records import DEFAULT_INSTANCE, ObjKey, instance_label

log = logging.getLogger(__name__)


class FelderaApi(Protocol):
    """What the reconciler asks of a Feldera client (`FelderaClient` in the operator, a fake in
    the reconciler's unit tests)."""

    @property
    def base_url(self) -> str: ...

    async def config(self) -> FelderaConfig: ...
    async def list_pipelines(self, selector: Selector = "status") -> list[Pipeline]: ...
    async def get_pipeline(self, name: str, selector: Selector = "status") -> Pipeline: ...
    async def stats(self, name: str) -> PipelineStats: ...
    async def start(
        self, name: str, initial: InitialState, bootstrap_policy: BootstrapPolicy | None = None
    ) -> None: ...
    async def pause(self, name: str) -> None: ...
    async def resume(self, name: str) -> None: ...
    async def stop(self, name: str, force: bool = True) -> None: ...
    async def dismiss_error(self, name: str) -> None: ...
    async def input_connector_action(
        self, pipeline: str, table: str, connector: str, action: ConnectorAction
    ) -> None: ...
    async def output_connector_action(
        self, pipeline: str, view: str, connector: str, action: ConnectorAction
    ) -> None: ...
    # The declared program (spec.program).
    async def put_pipeline(self, name: str, body: Mapping[str, Any]) -> Pipeline: ...
    async def patch_pipeline(self, name: str, body: Mapping[str, Any]) -> Pipeline: ...
    async def delete_pipeline(self, name: str) -> None: ...
    async def diff(
        self, name: str, program_code: str, runtime_version: str | None = None
    ) -> dict[str, Any]: ...
    async def clear(self, name: str) -> None: ...
    async def approve(self, name: str) -> None: ...
    async def close(self) -> None: ...


@dataclass(frozen=True)
class ClientSettings:
    """Everything a client is built from. `repr` never shows the key or the CA."""

    url: str
    api_key: str | None
    tenant: str | None
    ca_pem: str | None
    timeout: float
    instance: str  # the metrics label: `<namespace>/<name>` or `default`
    max_in_flight: int = 32  # requests to this instance at once
    # Requests per second to this instance; the same object across its clients.
    budget: RequestBudget | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        return f"ClientSettings(url={self.url!r}, tenant={self.tenant!r})"

    def fingerprint(self) -> str:
        parts = [self.url, self.api_key or "", self.tenant or "", self.ca_pem or ""]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()


ClientFactory = Callable[[ClientSettings], FelderaApi]


def feldera_client(settings: ClientSettings) -> FelderaApi:
    """The operator's real client factory. Raises ValueError (never quoting the key or the CA)
    for settings it cannot use."""
    return FelderaClient(
        settings.url,
        api_key=settings.api_key,
        tenant=settings.tenant,
        ca_pem=settings.ca_pem,
        timeout=settings.timeout,
        on_response=functools.partial(metrics.observe_feldera, settings.instance),
        max_in_flight=settings.max_in_flight,
        budget=settings.budget,
    )


class Unobservable(Exception):
    """An instance cannot be talked to: no such instance, no readable Secret, unusable settings."""

    def __init__(self, problem: d.Problem, *, transient: bool = False) -> None:
        super().__init__(problem.message)
        self.problem = problem
        self.transient = transient  # the API server failed to answer; asking again will do


CREDENTIALS_LABEL = "feldera.dev/credentials"
"""The label a Secret must carry (value "true") before a FelderaInstance may use it.

Anyone who may create a FelderaInstance chooses its URL; without this opt-in they could name any
Secret of the namespace and receive it as a bearer token at their own server. The default
instance's Secret is named by the operator's own flags (its admin's choice) and needs no label.
"""


class InstanceConnection:
    """The Feldera client of one instance, rebuilt when its URL, key, CA or tenant changed.

    The settings (and so the Secrets) are read once per period, when the instance's loop asks for
    a `refresh`, and again after `invalidate()` (an edit of the FelderaInstance, a rejected key);
    other callers get the client as it is. One client at a time, built under a lock; a replaced
    client is closed after a grace, so requests in flight on it finish.
    """

    def __init__(
        self,
        key: ObjKey,
        label: str,
        *,
        config: OperatorConfig,
        kube: KubeClient,
        instance_body: Callable[[], Mapping[str, Any] | None],
        client_factory: ClientFactory,
    ) -> None:
        self.key = key
        self.label = label
        self._config = config
        self._kube = kube
        self._instance_body = instance_body
        self._factory = client_factory
        self._lock = asyncio.Lock()
        self._client: FelderaApi | None = None
        self._fingerprint = ""
        self._stale = True  # the settings are to be read before the next call
        self._problem: tuple[d.Problem, bool] | None = None  # why they are unusable, until read
        self._kept_logged: str | None = None  # the transient problem last logged, once
        self._retiring: set[asyncio.Task[None]] = set()
        # Outlives the clients: a rebuilt client must not start with a fresh allowance.
        self.budget = RequestBudget(config.feldera_rps)
        # Whether the current client has just been built (the server's identity is read anew).
        self.fresh = False

    @property
    def current(self) -> FelderaApi | None:
        return self._client

    @property
    def grace(self) -> float:
        """How long a replaced client stays open: its requests in flight are bounded by this."""
        return self._config.request_timeout + 1.0

    def invalidate(self) -> None:
        """Read the settings and the Secrets again before the next call."""
        self._stale = True

    def failed(self, error: FelderaError) -> None:
        """A call failed: a rejected key may have been rotated since it was read."""
        if isinstance(error, FelderaAuthError):
            self._stale = True

    async def client(self, *, refresh: bool = False) -> FelderaApi:
        """The instance's client; raises Unobservable when it has none that may be used."""
        async with self._lock:
            if refresh:
                self._stale = True
            if not self._stale:
                if self._problem is not None:
                    problem, transient = self._problem
                    raise Unobservable(problem, transient=transient)
                if self._client is not None:
                    return self._client
            try:
                settings = await self._settings()
            except Unobservable as e:
                self._stale = False
                if e.transient and self._client is not None:
                    # The Secret could not be read just now: keep the last key, and say so once.
                    if e.problem.message != self._kept_logged:
                        self._kept_logged = e.problem.message
                        log.warning(
                            "%s: %s; using the key read before", self.label, e.problem.message
                        )
                    return self._client
                self._problem = (e.problem, e.transient)
                if not e.transient:
                    self._retire(self._client)  # gone, unlabelled or invalid: stop using the key
                    self._client, self._fingerprint = None, ""
                raise
            self._stale = False
            self._problem = None
            self._kept_logged = None
            fingerprint = settings.fingerprint()
            if self._client is None or fingerprint != self._fingerprint:
                try:
                    client = self._factory(settings)
                except ValueError as e:  # its messages never repeat the key or the CA
                    problem = d.Problem(d.INVALID_SPEC, f"{self.label}: {e}")
                    self._problem = (problem, False)
                    self._retire(self._client)
                    self._client, self._fingerprint = None, ""
                    raise Unobservable(problem) from None
                self._retire(self._client)
                self._client, self._fingerprint = client, fingerprint
                self.fresh = True
            return self._client

    def _retire(self, client: FelderaApi | None) -> None:
        if client is None:
            return

        async def close_later() -> None:
            try:
                await asyncio.sleep(self.grace)
            finally:
                await client.close()

        task = asyncio.create_task(close_later(), name=f"close a replaced client of {self.label}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        """Close every client of this instance now (the instance is gone, or the operator stops)."""
        tasks = list(self._retiring)
        for task in tasks:
            task.cancel()  # closes its client at once
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
            self._client, self._fingerprint = None, ""
        self._stale = True

    async def _settings(self) -> ClientSettings:
        url, api_key, tenant, ca = await self._instance_settings()
        return ClientSettings(
            url=url,
            api_key=api_key,
            tenant=tenant,
            ca_pem=ca,
            timeout=self._config.request_timeout,
            instance=instance_label(self.key),
            max_in_flight=self._config.concurrency,
            budget=self.budget,
        )

    async def _instance_settings(self) -> tuple[str, str | None, str | None, str | None]:
        key = self.key
        if key == DEFAULT_INSTANCE:
            if not self._config.default_url:
                raise Unobservable(
                    d.Problem(
                        d.INSTANCE_NOT_FOUND,
                        "spec.instanceRef is not set and the operator has no default instance "
                        "(--default-url / FELDERA_URL)",
                    )
                )
            api_key = None
            ref = self._config.default_api_key
            if ref is not None:
                # Named by the operator's own flags: trusted without the label.
                api_key = await self._secret(ref.namespace, ref.name, ref.key, labelled=False)
            return self._config.default_url, api_key, self._config.default_tenant, None
        body = self._instance_body()
        if body is None:
            raise Unobservable(
                d.Problem(
                    d.INSTANCE_NOT_FOUND,
                    f"FelderaInstance {key[1]!r} not found in namespace {key[0]!r}",
                )
            )
        try:
            spec = FelderaInstanceSpec.model_validate(body.get("spec") or {})
        except pydantic.ValidationError as e:
            raise Unobservable(
                d.Problem(d.INVALID_SPEC, f"FelderaInstance {key[1]}: {validation_message(e)}")
            ) from None
        api_key = ca = None
        if spec.apiKeySecretRef is not None:
            ref_key = spec.apiKeySecretRef
            api_key = await self._secret(key[0], ref_key.name, ref_key.key, labelled=True)
        if spec.caSecretRef is not None:
            ref_ca = spec.caSecretRef
            ca = await self._secret(key[0], ref_ca.name, ref_ca.key, labelled=True)
        return spec.url, api_key, spec.tenant, ca

    async def _secret(self, namespace: str, name: str, key: str, *, labelled: bool) -> str:
        try:
            secret = await self._kube.read_secret(namespace, name)
            if labelled and secret.labels.get(CREDENTIALS_LABEL) != "true":
                raise Unobservable(
                    d.Problem(
                        d.SECRET_NOT_LABELLED,
                        f"Secret {namespace}/{name} is not labelled {CREDENTIALS_LABEL}=true, so "
                        "the operator does not read it (a FelderaInstance chooses where its key "
                        f"is sent): kubectl label secret {name} -n {namespace} "
                        f"{CREDENTIALS_LABEL}=true",
                    )
                )
            return secret.value(key)
        except SecretMissing as e:
            raise Unobservable(d.Problem(d.SECRET_NOT_FOUND, str(e))) from None
        except KubeError as e:
            # No answer, a 5xx or 429: the API server is down or busy, asking again will do. A
            # 403 with a key already in use is the same while the API server restarts (it
            # answers before its authorizer has synced): the key read before stays in use and
            # the Secret is read again at the next period; a 403 before any key is a problem.
            transient = (
                e.status is None
                or e.status >= 500
                or e.status == 429
                or (e.status == 403 and self._client is not None)
            )
            raise Unobservable(
                d.Problem(d.SECRET_NOT_FOUND, f"cannot read Secret {namespace}/{name}: {e}"),
                transient=transient,
            ) from None


def validation_message(error: pydantic.ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"spec.{where}: {item.get('msg')}" if where else str(item.get("msg")))
    return "; ".join(parts)
