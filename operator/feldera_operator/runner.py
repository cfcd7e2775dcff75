"""`feldera-operator run`: the container's command. Runs the kopf operator with our handlers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
from collections.abc import Callable

from feldera_operator.config import (
    DEFAULT_FELDERA_RPS,
    OperatorConfig,
    SecretRef,
    check_rps,
    check_seconds,
)
from feldera_operator.leader import LeaderElectionConfig


def _number(
    flag: str, variable: str, unit: str, check: Callable[[float], str | None]
) -> Callable[[str], float]:
    """An argparse type: a number `check` accepts, or an error naming the flag and the
    environment variable (a bad value may come from either)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} / {variable}: expected {unit}, got {text!r}"
            ) from None
        problem = check(value)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"{flag} / {variable}: {problem}")
        return value

    return parse


def _seconds(name: str, flag: str, variable: str) -> Callable[[str], float]:
    """Seconds within config.LIMITS[name]."""
    return _number(flag, variable, "a number of seconds", lambda v: check_seconds(name, v))


_rps = _number("--feldera-rps", "FELDERA_RPS", "requests per second", check_rps)


def _lease_duration(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 3 <= value <= 3600:
        raise argparse.ArgumentTypeError(
            "--leader-election-lease-duration / LEADER_ELECTION_LEASE_DURATION: expected whole "
            f"seconds between 3 and 3600, got {text!r}"
        )
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--default-url",
        default=env("FELDERA_URL"),
        help="Feldera API URL for pipelines without spec.instanceRef (env FELDERA_URL).",
    )
    parser.add_argument(
        "--default-api-key-secret",
        default=env("FELDERA_API_KEY_SECRET"),
        metavar="NAMESPACE/NAME[:KEY]",
        help="Secret holding the default instance's API key (env FELDERA_API_KEY_SECRET; "
        "key defaults to apiKey).",
    )
    parser.add_argument(
        "--default-tenant",
        default=env("FELDERA_TENANT"),
        help="Feldera tenant (env FELDERA_TENANT).",
    )
    parser.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[n for n in (env("WATCH_NAMESPACES") or "").split(",") if n],
        help="Watch only this namespace (repeatable; env WATCH_NAMESPACES, comma-separated). "
        "Default: all namespaces.",
    )
    # String defaults go through `type` too, so a bad environment value is refused alike.
    parser.add_argument(
        "--period",
        type=_seconds("period", "--period", "FELDERA_OPERATOR_PERIOD"),
        default=env("FELDERA_OPERATOR_PERIOD", "10"),
        help="Seconds between observations of each Feldera instance (default 10; env "
        "FELDERA_OPERATOR_PERIOD).",
    )
    parser.add_argument(
        "--request-timeout",
        type=_seconds("request_timeout", "--request-timeout", "FELDERA_REQUEST_TIMEOUT"),
        default=env("FELDERA_REQUEST_TIMEOUT", "10"),
        help="Timeout of one request to Feldera, body included, in seconds (default 10; env "
        "FELDERA_REQUEST_TIMEOUT).",
    )
    parser.add_argument(
        "--kube-request-timeout",
        type=_seconds("kube_request_timeout", "--kube-request-timeout", "KUBE_REQUEST_TIMEOUT"),
        default=env("KUBE_REQUEST_TIMEOUT", "15"),
        help="Timeout of one call of the operator's own to the Kubernetes API, in seconds "
        "(default 15; env KUBE_REQUEST_TIMEOUT).",
    )
    parser.add_argument(
        "--external-stop-grace",
        type=_seconds(
            "external_stop_grace", "--external-stop-grace", "FELDERA_EXTERNAL_STOP_GRACE"
        ),
        default=env("FELDERA_EXTERNAL_STOP_GRACE", "60"),
        help="Seconds a pipeline stopped by someone else stays stopped before it is started "
        "again, unless a new program version compiled meanwhile (default 60; 0: at once; env "
        "FELDERA_EXTERNAL_STOP_GRACE).",
    )
    parser.add_argument(
        "--feldera-rps",
        type=_rps,
        default=env("FELDERA_RPS", f"{DEFAULT_FELDERA_RPS:g}"),
        help="Requests per second the operator may send to one Feldera instance, actions "
        f"included (default {DEFAULT_FELDERA_RPS:g}; env FELDERA_RPS). Observation is spread "
        "over the period within it; an instance with more pipelines than it allows is observed "
        "more slowly, and the operator says so.",
    )
    parser.add_argument(
        "--selector",
        default=env("WATCH_SELECTOR"),
        metavar="LABEL_SELECTOR",
        help="Serve only the FelderaPipelines and FelderaInstances with these labels (a "
        "Kubernetes label selector, e.g. feldera.dev/shard=a; env WATCH_SELECTOR), so several "
        "operators split a fleet. Default: all.",
    )
    parser.add_argument(
        "--liveness",
        default=env("LIVENESS_ENDPOINT", "http://0.0.0.0:8080/healthz"),
        help="Liveness endpoint URL to serve ('' to disable).",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(env("METRICS_PORT", "9090")),
        help="Serve Prometheus metrics at :PORT/metrics (env METRICS_PORT; 0 disables).",
    )
    parser.add_argument(
        "--leader-election-namespace",
        default=env("LEADER_ELECTION_NAMESPACE"),
        help="Namespace of the Lease replicas compete for; set it to run several replicas "
        "(env LEADER_ELECTION_NAMESPACE). Unset: act at once, alone.",
    )
    parser.add_argument(
        "--leader-election-name",
        default=env("LEADER_ELECTION_NAME", "feldera-operator"),
        help="Name of that Lease (env LEADER_ELECTION_NAME).",
    )
    parser.add_argument(
        "--leader-election-lease-duration",
        type=_lease_duration,
        default=env("LEADER_ELECTION_LEASE_DURATION", "15"),
        help="Seconds a lease is valid; a standby takes over this long after the leader dies.",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=env("LOG_FORMAT", "text"),
        help="Log format (json for log collectors).",
    )
    parser.add_argument("--verbose", action="store_true", help="Debug logging.")


def config_from_args(args: argparse.Namespace) -> OperatorConfig:
    return OperatorConfig(
        period=args.period,
        default_url=args.default_url or None,
        default_api_key=(
            SecretRef.parse(args.default_api_key_secret) if args.default_api_key_secret else None
        ),
        default_tenant=args.default_tenant or None,
        request_timeout=args.request_timeout,
        kube_request_timeout=args.kube_request_timeout,
        external_stop_grace=args.external_stop_grace,
        feldera_rps=args.feldera_rps,
        selector=args.selector or None,
        namespaces=tuple(args.namespace),
        metrics_port=args.metrics_port,
        leader_election=_leader_election(args),
    )


def _leader_election(args: argparse.Namespace) -> LeaderElectionConfig | None:
    if not args.leader_election_namespace:
        return None
    duration = max(round(args.leader_election_lease_duration), 3)
    # The client library wants lease > renew deadline > 1.2 x retry period, retry >= 1 s.
    retry = max(1.0, duration / 7.5)
    return LeaderElectionConfig(
        namespace=args.leader_election_namespace,
        name=args.leader_election_name,
        identity=os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
        lease_duration=duration,
        renew_deadline=max(duration * 2 / 3, 1.3 * retry),
        retry_period=retry,
    )


def main(args: argparse.Namespace) -> int:
    import kopf
    import uvloop

    import feldera_operator.handlers  # noqa: F401  (registers the handlers)

    config = config_from_args(args)
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger("feldera_operator").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        # kopf logs "Handler 'pipeline_event' succeeded." for every watch event, the operator's
        # own status writes included: noise, and CPU at a burst of changes. Failures still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # uvloop: the loop kopf's own CLI picks when it is installed; kopf.run() leaves it to us.
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    kopf.run(
        loop=loop,
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        liveness_endpoint=args.liveness or None,
        memo=kopf.Memo(config=config),
    )
    loop.close()
    return 0
