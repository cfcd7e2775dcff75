"""The operator's own Kubernetes calls: status patches, finalizers, Secret and ConfigMap reads and
Events.

kopf watches the resources; these few direct calls go through the official `kubernetes` client
(its one job in the runtime), run in worker threads because that client is synchronous. Every call
here is one the Helm chart's RBAC grants: custom resources `get` and `patch` and their status
`patch`, Secrets `get`, ConfigMaps `get`, Events `create`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import functools
import logging
import os
import socket
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import kubernetes
from kubernetes.client.exceptions import ApiException

from feldera_operator.models import GROUP, VERSION

log = logging.getLogger(__name__)

COMPONENT = "feldera-operator"
# The name managedFields give the operator's writes (status, finalizer), so that `kubectl get -o
# yaml --show-managed-fields` and GitOps tools tell them apart from people's and tools' changes.
FIELD_MANAGER = "feldera-operator"
MERGE_PATCH = "application/merge-patch+json"
EVENT_MESSAGE_LIMIT = 1024


class KubeError(Exception):
    """A Kubernetes API call failed; `status` is the HTTP status (None when no response came)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SecretMissing(KubeError):
    """The Secret, or the key in it, does not exist."""


@dataclass(frozen=True)
class SecretData:
    """A Secret's labels and its data (base64, as the API serves it). `repr` shows no data."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    data: Mapping[str, str] = field(repr=False)

    def value(self, key: str) -> str:
        """The decoded value of one key. Never logged, never put in an error."""
        if key not in self.data:
            raise SecretMissing(f"Secret {self.namespace}/{self.name} has no key {key!r}", 404)
        try:
            return base64.b64decode(self.data[key], validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError):
            raise KubeError(
                f"Secret {self.namespace}/{self.name} key {key!r} is not valid base64 text"
            ) from None


class KubeClient(Protocol):
    """The operator's own Kubernetes calls (`KubeApi`; a fake in the reconciler's unit tests)."""

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    async def patch_object(
        self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    async def read_secret(self, namespace: str, name: str) -> SecretData: ...

    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def post_event(
        self, involved: Mapping[str, Any], *, reason: str, message: str, warning: bool = False
    ) -> None: ...


def load_api_client() -> kubernetes.client.ApiClient:
    """In-cluster service account if there is one, else the kubeconfig (KUBECONFIG)."""
    config = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=config)  # type: ignore[no-untyped-call]
    # Status writes of many objects at once come from several threads (16, and reads and Events
    # have threads of their own).
    config.connection_pool_maxsize = 24
    # The client's leader election builds its own API objects from the default configuration.
    kubernetes.client.Configuration.set_default(config)
    return kubernetes.client.ApiClient(configuration=config)


class KubeApi:
    """Async façade over the synchronous client; one instance per operator process."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        *,
        timeout: float = 15.0,
        threads: int = 16,
        event_threads: int = 2,
    ) -> None:
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._instance = f"{socket.gethostname()}-{os.getpid()}"
        # Every call is bounded: a half-open connection must not hold a status write (and the
        # resource's lock) forever. (connect, read) seconds, as urllib3 takes them.
        self._timeout = timeout
        # Status and finalizer writes and Secret reads in one pool, Events in another: a flood
        # of Events (or an API server slow to take them) never delays a status write.
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="kube")
        self._event_pool = ThreadPoolExecutor(event_threads, thread_name_prefix="kube-events")
        # Whether the last Event failed, and with which HTTP status (None: no answer), as logged.
        self._events_failing = False
        self._event_failure: int | None = None
        # Reads (a Secret at each pass, a resource before a drift correction) in a pool of their
        # own: behind a cold start's thousands of status writes, an instance's pass waited for
        # its Secret for minutes.
        self._read_pool = ThreadPoolExecutor(2, thread_name_prefix="kube-reads")
        # Calls wait for a thread here, not in the pool's queue, so that the time limit counts
        # from the moment a call runs: 5,000 status writes at once (a cold start) queued in the
        # pool timed out there before they were sent (docs/performance.md).
        self._slots = {
            id(self._pool): asyncio.Semaphore(threads),
            id(self._event_pool): asyncio.Semaphore(event_threads),
            id(self._read_pool): asyncio.Semaphore(2),
        }

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the status subresource; null values remove fields, lists are replaced."""
        body = {"status": dict(status)}
        return await self._call(
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            body,
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
        )

    async def patch_object(
        self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the main resource (used for the finalizer only)."""
        return await self._call(
            self._custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            name,
            dict(patch),
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
        )

    async def get_object(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One custom resource as it is now; None when it does not exist."""
        try:
            return await self._call(
                self._custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                pool=self._read_pool,
            )
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        """One ConfigMap (metadata and data); None when it does not exist. Read only for one
        that spec.program.sqlFrom names and the labelled watch does not hold (missing, or
        unlabelled: the status says which)."""
        try:
            return await self._call(self._core.read_namespaced_config_map, name, namespace)
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    async def read_secret(self, namespace: str, name: str) -> SecretData:
        """A Secret's labels and data. Its values are never logged, never put in an error."""
        try:
            secret = await self._call(
                self._core.read_namespaced_secret, name, namespace, pool=self._read_pool
            )
        except KubeError as e:
            if e.status == 404:
                raise SecretMissing(f"Secret {namespace}/{name} not found", 404) from None
            raise
        meta = secret.get("metadata") or {}
        return SecretData(
            namespace=namespace,
            name=name,
            labels=dict(meta.get("labels") or {}),
            data=dict(secret.get("data") or {}),
        )

    async def post_event(
        self,
        involved: Mapping[str, Any],
        *,
        reason: str,
        message: str,
        warning: bool = False,
    ) -> None:
        """Record a core/v1 Event on the object (what `kubectl describe` and dashboards show)."""
        meta = involved.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        now = dt.datetime.now(dt.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:EVENT_MESSAGE_LIMIT],
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self._call(
                self._core.create_namespaced_event, namespace, body, pool=self._event_pool
            )
        except KubeError as e:
            # An Event is a courtesy: never let its failure disturb reconciling. Logged when the
            # failure's kind changes (an admission policy refusing Events refuses every one).
            if not self._events_failing or e.status != self._event_failure:
                self._events_failing, self._event_failure = True, e.status
                log.warning(
                    "could not post Event %s on %s/%s (said once until Events are posted "
                    "again): %s",
                    reason,
                    namespace,
                    meta.get("name"),
                    e,
                )
            return
        if self._events_failing:
            self._events_failing = False
            log.info("Events are posted again")

    async def _call(
        self, fn: Any, *args: Any, pool: ThreadPoolExecutor | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        call = functools.partial(fn, *args, _request_timeout=self._timeout, **kwargs)
        pool = pool or self._pool
        try:
            async with self._slots[id(pool)]:
                future = asyncio.get_running_loop().run_in_executor(pool, call)
                # urllib3's timeout bounds each socket operation; this bounds the whole call (a
                # server trickling bytes), on top. The thread ends with urllib3's timeout.
                result = await asyncio.wait_for(future, 2 * self._timeout + 1)
        except ApiException as e:
            raise KubeError(api_error_text(e), e.status) from None
        except TimeoutError:
            raise KubeError(f"Kubernetes API timed out ({self._timeout:g} s)") from None
        except Exception as e:  # urllib3/socket errors: no response
            raise KubeError(f"Kubernetes API unreachable: {type(e).__name__}") from None
        if hasattr(result, "to_dict"):
            return dict(result.to_dict())
        return dict(result) if isinstance(result, Mapping) else {}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._event_pool.shutdown(wait=False, cancel_futures=True)
        self._read_pool.shutdown(wait=False, cancel_futures=True)


def api_error_text(e: ApiException) -> str:
    # The body is a Status object whose message names the problem; headers are never included.
    body = getattr(e, "body", None)
    if isinstance(body, bytes | str):
        import json

        try:
            parsed = json.loads(body)
            if isinstance(parsed, Mapping) and isinstance(parsed.get("message"), str):
                return f"{e.status} {parsed.get('reason', '')}: {parsed['message']}"
        except ValueError:
            pass
    return f"{e.status} {e.reason}"
