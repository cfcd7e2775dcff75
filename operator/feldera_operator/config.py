"""The operator's own settings: flags of `feldera-operator run`, or their environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from feldera_operator.leader import LeaderElectionConfig


@dataclass(frozen=True)
class SecretRef:
    namespace: str
    name: str
    key: str = "apiKey"

    @classmethod
    def parse(cls, text: str) -> SecretRef:
        """`namespace/name[:key]` → SecretRef."""
        ref, _, key = text.partition(":")
        namespace, sep, name = ref.partition("/")
        if not sep or not namespace or not name:
            raise ValueError(f"expected NAMESPACE/NAME[:KEY], got {text!r}")
        return cls(namespace, name, key or "apiKey")


@dataclass(frozen=True)
class OperatorConfig:
    # How often each Feldera instance is observed to catch drift made behind the operator's back.
    period: float = 10.0
    # The instance used by pipelines without spec.instanceRef (none: such pipelines say so).
    default_url: str | None = None
    default_api_key: SecretRef | None = None
    default_tenant: str | None = None
    # Per-request timeout towards Feldera.
    request_timeout: float = 10.0
    # Per-call timeout of the operator's own Kubernetes calls (status, finalizer, Secret, Event).
    kube_request_timeout: float = 15.0
    # How many /stats or action calls run at once per instance.
    concurrency: int = 32
    namespaces: tuple[str, ...] = field(default=())
    # Serve Prometheus metrics on this port (0: off).
    metrics_port: int = 0
    # Compete for a Lease before acting (several replicas); None: act at once.
    leader_election: LeaderElectionConfig | None = None

    @classmethod
    def from_env(cls) -> OperatorConfig:
        secret = os.environ.get("FELDERA_API_KEY_SECRET")
        return cls(
            period=float(os.environ.get("FELDERA_OPERATOR_PERIOD", "10")),
            default_url=os.environ.get("FELDERA_URL") or None,
            default_api_key=SecretRef.parse(secret) if secret else None,
            default_tenant=os.environ.get("FELDERA_TENANT") or None,
            request_timeout=float(os.environ.get("FELDERA_REQUEST_TIMEOUT", "10")),
        )
