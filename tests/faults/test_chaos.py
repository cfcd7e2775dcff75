"""A bounded chaos run: seeded random spec changes and random faults, then calm.

Each step either changes a spec (a connector paused or not, the pipeline paused or not, stopped or
not) or makes Feldera misbehave (500/503 bursts, answers slower than the request timeout, dropped
connections, slow transitions, a restart behind the operator's back restoring connector flags
from a checkpoint or from the SQL, a connector paused behind its back, the operator itself
killed with SIGKILL and started again). The sequence of steps is a function of the seed alone
(printed; FAULTS_SEED picks one). Once the faults stop, every resource must be Ready within a few
periods and Feldera, asked directly, must match every spec.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from e2e.test_operator import standard

from feldera_sandbox.feldera_emulator import (
    ROUTE_INPUT_CONNECTOR_ACTION,
    ROUTE_OUTPUT_CONNECTOR_ACTION,
    ROUTE_PAUSE,
    ROUTE_PIPELINE,
    ROUTE_PIPELINES,
    ROUTE_RESUME,
    ROUTE_START,
    ROUTE_STATS,
)
from feldera_sandbox.sandbox import is_ready

from .conftest import PERIOD, REQUEST_TIMEOUT, Faults

pytestmark = pytest.mark.faults

STEPS = 30
PIPELINES = 4
# A fixed seed by default, so that `pytest -m faults` runs the same steps every time;
# FAULTS_SEED=<n> replays run n, FAULTS_SEED=random explores a new one.
_seed = os.environ.get("FAULTS_SEED", "20261126")
SEED = random.SystemRandom().randrange(1_000_000) if _seed == "random" else int(_seed)
ROUTES = [
    ROUTE_PIPELINES,
    ROUTE_PIPELINE,
    ROUTE_STATS,
    ROUTE_START,
    ROUTE_PAUSE,
    ROUTE_RESUME,
    ROUTE_INPUT_CONNECTOR_ACTION,
    ROUTE_OUTPUT_CONNECTOR_ACTION,
]
# (direction, relation, connector) of the connectors each resource declares (see standard()).
CONNECTORS = [
    ("inputs", "orders", "backfill"),
    ("inputs", "orders", "live"),
    ("outputs", "big_orders", "sink"),
]


@dataclass
class Desired:
    """What one resource's spec says, as the chaos run has left it."""

    name: str
    paused: bool = False
    stopped: bool = False
    connectors: dict[str, bool] = field(
        default_factory=lambda: {"backfill": False, "live": True, "sink": False}
    )


def step(f: Faults, rng: random.Random, desired: list[Desired]) -> str:
    """One random step; returns what it did, for the log of the run."""
    target = rng.choice(desired)
    kind = rng.choice(
        [
            "connector",
            "connector",
            "paused",
            "stopped",
            "burst",
            "slow",
            "drop",
            "delay",
            "restart",
            "drift",
            "operator",
        ]
    )
    if kind == "connector":
        index = rng.randrange(len(CONNECTORS))
        direction, _, connector = CONNECTORS[index]
        position = index if direction == "inputs" else 0
        value = not target.connectors[connector]
        target.connectors[connector] = value
        f.patch(
            target.name,
            [{"op": "replace", "path": f"/spec/{direction}/{position}/paused", "value": value}],
            "json",
        )
        return f"{target.name}: {connector} paused={value}"
    if kind in ("paused", "stopped"):
        value = not getattr(target, kind)
        setattr(target, kind, value)
        f.patch(target.name, {"spec": {kind: value}})
        return f"{target.name}: {kind}={value}"
    if kind == "operator":
        f.restart_operator()
        return "operator killed (SIGKILL) and started again"
    route = rng.choice(ROUTES)
    if kind == "burst":
        status, count = rng.choice([500, 503]), rng.randint(1, 4)
        f.fault(route, status=status, count=count)
        return f"{count} x {status} on {route}"
    if kind == "slow":
        latency = rng.choice([0.2, 0.5, REQUEST_TIMEOUT + 0.3])
        f.fault(route, latency=latency, count=rng.randint(1, 3))
        return f"latency {latency}s on {route}"
    if kind == "drop":
        count = rng.randint(1, 4)
        f.fault(route, drop=True, count=count)
        return f"{count} dropped connections on {route}"
    if kind == "delay":
        delay = rng.choice([0.0, 0.1, 0.3])
        f.settings(delay=delay)
        return f"transitions take {delay}s"
    if kind == "restart":
        restore = rng.choice(["checkpoint", "sql"])
        f.settings(restore=restore)
        f.feldera("POST", f"/v0/pipelines/{target.name}/stop?force=true")
        return f"{target.name}: stopped behind the operator's back, restore from {restore}"
    direction, relation, connector = rng.choice(CONNECTORS)
    body: dict[str, Any] = {"pipeline": target.name, "connector": connector}
    body["view" if direction == "outputs" else "table"] = relation
    body["paused"] = rng.choice([True, False])
    f.sb.feldera("POST", "/_emulator/connector", body)
    return f"{target.name}: {relation}.{connector} paused={body['paused']} behind the operator"


def matches(f: Faults, want: Desired) -> bool:
    status = f.pipeline(want.name)["deployment_status"]
    if want.stopped:
        return bool(status == "Stopped")
    if status != ("Paused" if want.paused else "Running"):
        return False
    flags = {**f.flags(want.name), **f.flags(want.name, "outputs")}
    return all(
        flags.get(f"{relation}.{connector}") == want.connectors[connector]
        for _, relation, connector in CONNECTORS
    )


def test_seeded_chaos_then_calm_converges_and_feldera_matches_every_spec(faults: Faults) -> None:
    print(f"chaos seed {SEED} (replay: FAULTS_SEED={SEED})")
    rng = random.Random(SEED)
    desired = [Desired(f"chaos-{SEED}-{i}") for i in range(PIPELINES)]
    for want in desired:
        faults.create_pipeline(want.name)
        faults.apply(standard(want.name))
    for want in desired:
        faults.wait_ready(want.name)

    started = time.monotonic()
    for number in range(STEPS):
        print(f"step {number}: {step(faults, rng, desired)}")
        # Let the operator take a turn: a few more requests reach Feldera.
        total = sum(faults.sb.feldera_counts().values())
        faults.wait(
            lambda total=total: sum(faults.sb.feldera_counts().values()) >= total + 3,
            "the operator at work",
            timeout=3 * PERIOD + 5,
        )

    print(f"{STEPS} steps in {time.monotonic() - started:.1f}s")
    calm = time.monotonic()
    faults.reset()  # calm: no faults, instant transitions
    deadline = 5 * PERIOD + 10  # a few periods, and kubectl's own time
    for want in desired:
        faults.wait(lambda want=want: matches(faults, want), f"Feldera as {want}", deadline)
        faults.wait(lambda want=want: is_ready(faults.get(want.name)), f"{want.name} Ready", 10)
    for want in desired:
        spec = faults.get(want.name)["spec"]
        assert (
            spec.get("paused", False) == want.paused and spec.get("stopped", False) == want.stopped
        )
        assert matches(faults, want), want
    took = time.monotonic() - calm
    print(f"converged {took:.1f}s after the faults stopped")
    assert took < 5 * PERIOD + 5
