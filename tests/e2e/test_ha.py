"""Several replicas: exactly one acts; when it dies another takes over. And its metrics."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from feldera_sandbox.processes import Process

from .conftest import E2E, operator_defaults, start_sandbox
from .test_operator import INPUT_ACTION, PIPELINE_ACTIONS, standard

pytestmark = pytest.mark.e2e

# Two replicas as the chart runs them: its leader-election flags and its Lease grant.
HA_VALUES = {"replicas": 2, "leaderElection": {"leaseDuration": 3}}


def second_replica(e2e: E2E, *extra: str) -> tuple[Process, Process]:
    """Start a second operator (with `extra` flags) beside the sandbox's; (the leader, the
    standby) once one leads."""
    first = e2e.sb.operators[0]
    second = e2e.sb.start_operator(*operator_defaults(e2e.sb), *extra, name="operator-2")
    leader: Process = e2e.wait(
        lambda: next((p for p in (first, second) if "leading (lease" in p.log_text()), None),
        "a leader",
    )
    return leader, (second if leader is first else first)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
        return text


def test_two_replicas_act_once_and_the_standby_takes_over(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    sb = start_sandbox(
        tmp_path, "--metrics-port", str(ports[0]), examples=False, chart_values=HA_VALUES
    )
    try:
        e2e = E2E(sb)
        leader, standby = second_replica(e2e, "--metrics-port", str(ports[1]))
        first = sb.operators[0]
        leader_port, standby_port = (ports[0], ports[1]) if leader is first else ports[::-1]

        names = [f"ha-{i}" for i in range(3)]
        for name in names:
            e2e.create_pipeline(name)
            e2e.apply(standard(name, live=False))  # needs: start, then start `live`
        for name in names:
            e2e.wait_ready(name)
        counts = sb.feldera_counts()
        # Each pipeline needed exactly one start and one connector start: nobody acted twice.
        assert counts.get("POST /v0/pipelines/{pipeline}/start") == len(names)
        assert counts.get(INPUT_ACTION) == len(names)
        assert sum(counts.get(k, 0) for k in PIPELINE_ACTIONS) == len(names)
        assert "leading (lease" not in standby.log_text()

        leader_metrics = scrape(leader_port)
        assert "feldera_operator_leader 1.0" in leader_metrics
        assert (
            'feldera_operator_actions_total{action="PipelineStarted",instance="default"} 3.0'
            in leader_metrics
        )
        assert 'feldera_operator_reconciles_total{kind="FelderaPipeline",result="converged"}' in (
            leader_metrics
        )
        assert 'code="200",endpoint="GET /v0/pipelines/{pipeline}"' in leader_metrics
        assert (
            'feldera_operator_resources{instance="default",kind="FelderaPipeline",'
            'namespace="default",ready="True",reason="Converged",state="Running"} 3.0'
        ) in leader_metrics
        e2e.wait(  # once the instance's loop made its first pass
            lambda: 'feldera_operator_instance_up{instance="default"} 1.0' in scrape(leader_port),
            "instance_up",
        )
        standby_metrics = scrape(standby_port)
        assert "feldera_operator_leader 0.0" in standby_metrics
        # What a standby sees is a cache, not what is acted on: it exports none of it.
        assert "feldera_operator_resources" not in standby_metrics
        assert "feldera_operator_instance_up" not in standby_metrics

        # The active replica dies without a word; the standby takes the lease and converges a
        # change made after the death.
        leader.kill()
        e2e.patch(names[0], {"spec": {"paused": True}})
        e2e.wait(
            lambda: e2e.pipeline(names[0])["deployment_status"] == "Paused",
            "the standby pauses the pipeline",
            timeout=30,
        )
        e2e.wait_ready(names[0])
        assert "leading (lease" in standby.log_text()
    finally:
        sb.stop()


def test_a_leader_shut_down_gracefully_hands_over_at_once(tmp_path: Path) -> None:
    """SIGTERM (a rolling update, a drain): the leader releases the Lease, and the standby takes
    it at its next try, not after the 15 s lease expired."""
    values = {"replicas": 2, "leaderElection": {"leaseDuration": 15}}
    sb = start_sandbox(tmp_path, examples=False, chart_values=values)
    try:
        e2e = E2E(sb)
        first = sb.operators[0]
        e2e.wait(lambda: "leading (lease" in first.log_text(), "the first leads")
        second = sb.start_operator(*operator_defaults(sb), name="operator-2")
        first.stop()  # SIGTERM
        assert "released the lease" in first.log_text()
        e2e.wait(
            lambda: "leading (lease" in second.log_text(),
            "the standby leads within a retry period (2 s) or so",
            timeout=5,
        )
    finally:
        sb.stop()
