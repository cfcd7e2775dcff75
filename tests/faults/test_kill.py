"""The operator killed with SIGKILL while its actions are in flight, then started again.

Six resources each need exactly one action of a different kind (pipeline start, pause, resume,
stop; input connector start; output connector pause), so Feldera's request count per action
route is the count per resource. Feldera answers every action slowly and carries out its
transitions slowly: the operator is killed once every action has reached Feldera and before any
has been answered. The new process must converge everything, repeating at most one
(idempotent) action per resource. It starts before Feldera has carried out the killed process's
actions, so it does repeat each one, once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from e2e.test_operator import standard

from feldera_sandbox.feldera_emulator import (
    ROUTE_INPUT_CONNECTOR_ACTION,
    ROUTE_OUTPUT_CONNECTOR_ACTION,
    ROUTE_PAUSE,
    ROUTE_RESUME,
    ROUTE_START,
    ROUTE_STOP,
    count_key,
)
from feldera_sandbox.sandbox import is_ready

from .conftest import Faults, finish, start_fault_sandbox

pytestmark = pytest.mark.faults

# Answered late, but before the operator gives up on it: the window in which to kill it.
TIMEOUT = 5.0
LATENCY = 2.5

# resource → (spec before, spec after, the one action route that takes it there)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "k-start": ({"stopped": True}, {}, ROUTE_START),
    "k-pause": ({}, {"paused": True}, ROUTE_PAUSE),
    "k-resume": ({"paused": True}, {}, ROUTE_RESUME),
    "k-stop": ({}, {"stopped": True}, ROUTE_STOP),
    "k-input": ({}, {"live": False}, ROUTE_INPUT_CONNECTOR_ACTION),
    "k-output": ({}, {"sink_paused": True}, ROUTE_OUTPUT_CONNECTOR_ACTION),
}


def manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    spec = dict(spec)
    sink_paused = spec.pop("sink_paused", False)
    result = standard(name, **spec)
    result["spec"]["outputs"][0]["paused"] = sink_paused  # type: ignore[index]
    return result


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    sb = start_fault_sandbox(tmp_path_factory.mktemp("kill"), "--request-timeout", str(TIMEOUT))
    yield Faults(sb)
    finish(sb)


def test_sigkill_mid_reconcile_then_restart_converges_repeating_at_most_one_action_each(
    fresh: Faults,
) -> None:
    f = fresh
    for name, (before, _, _) in CASES.items():
        f.create_pipeline(name)
        f.apply(manifest(name, before))
    for name in CASES:
        f.wait_ready(name)

    f.sb.feldera("DELETE", "/_emulator/requests")
    f.settings(delay=0.3)  # transitions take a while: the new process finds them under way
    routes = {count_key("POST", route) for _, _, route in CASES.values()}
    for route in routes:
        f.fault(route.split(" ", 1)[1], method="POST", latency=LATENCY, count=0)
    reported = len(action_events(f))
    # Every change in one request, so that every action is in flight at once.
    changes = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [manifest(name, after) for name, (_, after, _) in CASES.items()],
    }
    f.sb.kubectl("apply", "-f", "-", input=json.dumps(changes))

    f.wait(lambda: all(f.count(r) >= 1 for r in routes), "every action reached Feldera", 10)
    f.operator.kill()
    f.sb.feldera("DELETE", "/_emulator/faults")
    # Killed before any answer came back: no Event says that any of the actions was done.
    assert len(action_events(f)) == reported
    f.restart_operator()

    for name in CASES:
        f.wait_ready(name, timeout=30)
    counts = f.sb.feldera_counts()
    per_resource = {name: counts.get(count_key("POST", r), 0) for name, (_, _, r) in CASES.items()}
    print("action calls per resource:", per_resource)
    assert all(1 <= n <= 2 for n in per_resource.values()), per_resource
    # Feldera really is as declared.
    assert f.pipeline("k-start")["deployment_status"] == "Running"
    assert f.pipeline("k-pause")["deployment_status"] == "Paused"
    assert f.pipeline("k-resume")["deployment_status"] == "Running"
    assert f.pipeline("k-stop")["deployment_status"] == "Stopped"
    assert f.flags("k-input")["orders.live"] is False
    assert f.flags("k-output", "outputs")["big_orders.sink"] is True
    assert all(is_ready(f.get(name)) for name in CASES)


def action_events(f: Faults) -> list[dict[str, Any]]:
    items = f.sb.kubectl_json("get", "events")["items"]
    return [
        e
        for e in items
        if e.get("involvedObject", {}).get("name") in CASES and e.get("type") == "Normal"
    ]
