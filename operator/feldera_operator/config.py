"""The operator's own settings: flags of `feldera-operator run`, or their environment variables."""

from __future__ import annotations

import math
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


# Accepted ranges, in seconds: (low, high). Beyond them a value is a mistake (0 would spin, a
# day-long period would never notice drift), refused at start rather than acted on.
LIMITS: dict[str, tuple[float, float]] = {
    "period": (0.1, 86400.0),
    "request_timeout": (0.1, 600.0),
    "kube_request_timeout": (0.5, 600.0),
    "external_stop_grace": (0.0, 86400.0),
}


def check_seconds(name: str, value: float) -> str | None:
    """Why `value` is no acceptable `name` (a LIMITS key), or None."""
    low, high = LIMITS[name]
    if not math.isfinite(value):
        return f"must be a finite number of seconds, got {value}"
    if not low <= value <= high:
        return f"must be between {low:g} and {high:g} seconds, got {value:g}"
    return None


# Requests per second to one Feldera instance (docs/performance.md, "The request budget"): a
# period's observation of 450 pipelines in 90 % of 10 s, with room left for actions.
DEFAULT_FELDERA_RPS = 50.0
FELDERA_RPS_LIMITS = (1.0, 100000.0)


def check_rps(value: float) -> str | None:
    """Why `value` is no acceptable --feldera-rps, or None."""
    low, high = FELDERA_RPS_LIMITS
    if not math.isfinite(value) or not low <= value <= high:
        return f"must be between {low:g} and {high:g} requests per second, got {value:g}"
    return None


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
    # How long a pipeline stopped by someone else stays stopped before the operator starts it
    # again (unless a new program version compiled meanwhile); 0: start it again at once.
    external_stop_grace: float = 60.0
    # How many requests to one Feldera instance are in flight at once.
    concurrency: int = 32
    # How many requests to one Feldera instance start in any second (actions included).
    feldera_rps: float = DEFAULT_FELDERA_RPS
    # A label selector: only the FelderaPipelines and FelderaInstances it matches are served.
    selector: str | None = None
    # The share of the period a pass spreads its reads over (0: at once, as fast as the budget
    # lets them go; the reconciler's unit tests drive passes so).
    spread: float = 0.9
    namespaces: tuple[str, ...] = field(default=())
    # Serve Prometheus metrics on this port (0: off).
    metrics_port: int = 0
    # Compete for a Lease before acting (several replicas); None: act at once.
    leader_election: LeaderElectionConfig | None = None

    def __post_init__(self) -> None:
        for name in LIMITS:
            problem = check_seconds(name, float(getattr(self, name)))
            if problem is not None:
                raise ValueError(f"{name} {problem}")
        problem = check_rps(float(self.feldera_rps))
        if problem is not None:
            raise ValueError(f"feldera_rps {problem}")
        if not 0.0 <= self.spread <= 1.0:
            raise ValueError(f"spread must be between 0 and 1, got {self.spread}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")

    @classmethod
    def from_env(cls) -> OperatorConfig:
        secret = os.environ.get("FELDERA_API_KEY_SECRET")
        return cls(
            period=float(os.environ.get("FELDERA_OPERATOR_PERIOD", "10")),
            default_url=os.environ.get("FELDERA_URL") or None,
            default_api_key=SecretRef.parse(secret) if secret else None,
            default_tenant=os.environ.get("FELDERA_TENANT") or None,
            request_timeout=float(os.environ.get("FELDERA_REQUEST_TIMEOUT", "10")),
            kube_request_timeout=float(os.environ.get("KUBE_REQUEST_TIMEOUT", "15")),
            external_stop_grace=float(os.environ.get("FELDERA_EXTERNAL_STOP_GRACE", "60")),
            feldera_rps=float(os.environ.get("FELDERA_RPS", str(DEFAULT_FELDERA_RPS))),
            selector=os.environ.get("WATCH_SELECTOR") or None,
        )
