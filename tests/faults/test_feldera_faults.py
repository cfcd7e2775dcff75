"""Feldera misbehaving under a running operator: error bursts, slow answers, dropped connections,
a pipeline deleted behind its back, a connector gone when acted on, a stop refused while a
resource is deleted. (Kubernetes misbehaving: test_kubernetes.py.)

Each time: the operator neither crashes nor logs a traceback, says what is wrong while it lasts,
and converges on the spec once the fault is gone (checked against Feldera itself).
"""

from __future__ import annotations

import pytest
from e2e.conftest import connector_entry, unique
from e2e.test_operator import standard

from feldera_sandbox.feldera_emulator import (
    ROUTE_INPUT_CONNECTOR_ACTION,
    ROUTE_PIPELINE,
    ROUTE_PIPELINES,
    ROUTE_START,
    ROUTE_STATS,
    ROUTE_STOP,
)

from .conftest import PERIOD, REQUEST_TIMEOUT, Faults, cond_message, cond_status

pytestmark = pytest.mark.faults


def ready_pipeline(f: Faults, prefix: str, **spec: object) -> str:
    name = unique(prefix)
    f.create_pipeline(name)
    f.apply(standard(name, **spec))
    f.wait_ready(name)
    return name


@pytest.mark.parametrize("status", [500, 503])
def test_error_burst_is_named_then_a_spec_change_made_during_it_converges(
    faults: Faults, status: int
) -> None:
    name = ready_pipeline(faults, f"burst{status}")
    # Every list, single GET and connector action fails for a while.
    for route in (ROUTE_PIPELINES, ROUTE_PIPELINE, ROUTE_INPUT_CONNECTOR_ACTION):
        faults.fault(route, status=status, count=0)
    faults.patch(name, [{"op": "replace", "path": "/spec/inputs/1/paused", "value": False}], "json")
    obj = faults.wait_reason(name, "FelderaError", ctype="Synced")
    assert cond_status(obj, "Ready") == "False"
    assert f"HTTP {status}" in cond_message(obj, "Synced")
    assert faults.flags(name)["orders.live"] is True  # nothing got through

    faults.sb.feldera("DELETE", "/_emulator/faults")
    faults.wait(lambda: faults.flags(name)["orders.live"] is False, "live started after the burst")
    obj = faults.wait_ready(name)
    assert cond_status(obj, "Synced") == "True"


def test_answers_slower_than_the_request_timeout_read_as_unreachable_then_recover(
    faults: Faults,
) -> None:
    name = ready_pipeline(faults, "slow")
    slow = REQUEST_TIMEOUT + 1.0
    for route in (ROUTE_PIPELINES, ROUTE_PIPELINE):
        faults.fault(route, method="GET", latency=slow, count=0)
    faults.patch(name, {"spec": {"paused": True}})
    obj = faults.wait_reason(name, "FelderaUnreachable", ctype="Synced")
    assert "timed out" in cond_message(obj, "Synced")
    faults.sb.feldera("DELETE", "/_emulator/faults")
    faults.wait(lambda: faults.pipeline(name)["deployment_status"] == "Paused", "paused")
    faults.wait_ready(name)


def test_slow_stats_and_actions_still_converge(faults: Faults) -> None:
    """A slow answer to an action may still have been carried out: the operator looks again
    rather than assuming either way."""
    name = ready_pipeline(faults, "slowact")
    slow = REQUEST_TIMEOUT + 0.5
    faults.fault(ROUTE_INPUT_CONNECTOR_ACTION, latency=slow, count=2)
    faults.fault(ROUTE_STATS, latency=slow, count=2)
    faults.patch(name, [{"op": "replace", "path": "/spec/inputs/1/paused", "value": False}], "json")
    faults.wait(lambda: faults.flags(name)["orders.live"] is False, "live started")
    faults.wait_ready(name)


def test_connections_dropped_mid_request_are_retried(faults: Faults) -> None:
    name = ready_pipeline(faults, "drop")
    # aiohttp resends a GET once when its connection drops: two drops make one failed GET.
    faults.fault(ROUTE_PIPELINE, method="GET", drop=True, count=4)
    faults.fault(ROUTE_PIPELINES, method="GET", drop=True, count=4)
    faults.fault(ROUTE_STATS, drop=True, count=4)
    # Dropped after the server took its time: the client is mid-request when the line goes.
    faults.fault(ROUTE_INPUT_CONNECTOR_ACTION, latency=0.3, drop=True, count=2)
    faults.patch(name, [{"op": "replace", "path": "/spec/inputs/1/paused", "value": False}], "json")
    faults.wait(lambda: faults.flags(name)["orders.live"] is False, "live started")
    faults.wait_ready(name)
    counts = faults.sb.feldera_counts()
    assert counts.get(f"POST {ROUTE_INPUT_CONNECTOR_ACTION}", 0) >= 1


def test_pipeline_deleted_behind_the_operator_is_named_and_recovers_when_recreated(
    faults: Faults,
) -> None:
    name = ready_pipeline(faults, "deleted")
    # Keep the operator from restarting it while it is taken down (Feldera refuses to delete a
    # pipeline that is not fully stopped).
    faults.fault(ROUTE_START, status=503, count=0)
    faults.feldera("POST", f"/v0/pipelines/{name}/stop?force=true")
    faults.wait(lambda: faults.pipeline(name)["deployment_status"] == "Stopped", "stopped")
    faults.feldera("POST", f"/v0/pipelines/{name}/clear")
    faults.wait(lambda: faults.pipeline(name)["storage_status"] == "Cleared", "cleared")
    faults.feldera("DELETE", f"/v0/pipelines/{name}")
    faults.sb.feldera("DELETE", "/_emulator/faults")

    obj = faults.wait_reason(name, "PipelineNotFound", timeout=3 * PERIOD + 10)
    assert cond_status(obj, "Stalled") == "True"
    assert obj["status"].get("state") is None
    live = connector_entry(obj, "orders", "live")
    assert live is not None and live["reason"] == "PipelineNotFound"

    faults.create_pipeline(name)
    faults.wait(lambda: faults.pipeline(name)["deployment_status"] == "Running", "started again")
    faults.wait(lambda: faults.flags(name)["orders.live"] is True, "live paused as declared")
    faults.wait_ready(name)


def test_deletion_with_stop_policy_is_retried_when_feldera_refuses_the_stop(
    faults: Faults,
) -> None:
    name = ready_pipeline(faults, "delstop", deletionPolicy="Stop")
    faults.fault(ROUTE_STOP, status=503, count=2)
    faults.sb.kubectl("delete", "fpl", name, "--wait=false")
    # While it waits, the resource says on what (not a silent Terminating).
    faults.wait(lambda: faults.reason(name) == "DeletionBlocked", "DeletionBlocked")
    assert "503" in cond_message(faults.get(name), "Ready")
    faults.wait(
        lambda: faults.pipeline(name)["deployment_status"] == "Stopped",
        "the pipeline stopped despite the refusals",
        timeout=5 * PERIOD + 5,
    )
    faults.wait(
        lambda: name not in faults.sb.kubectl("get", "fpl", "-o", "name").stdout,
        "the resource gone (finalizer removed)",
        timeout=5 * PERIOD + 5,
    )


def test_connector_gone_when_acted_on_is_connector_not_found_then_recovers(
    faults: Faults,
) -> None:
    """The SQL changed between the observation and the action: Feldera answers the action with
    404 UnknownInputEndpoint. That names the connector, not a Feldera error."""
    name = ready_pipeline(faults, "gone")
    faults.fault(
        ROUTE_INPUT_CONNECTOR_ACTION, status=404, error_code="UnknownInputEndpoint", count=0
    )
    faults.patch(name, [{"op": "replace", "path": "/spec/inputs/1/paused", "value": False}], "json")
    obj = faults.wait_reason(name, "ConnectorNotFound")
    assert cond_status(obj, "Synced") == "True" and cond_status(obj, "Stalled") == "True"
    # Real Feldera names it in details.endpoint_name; the emulated fault leaves only the path.
    assert "/tables/orders/connectors/live/start" in cond_message(obj, "Ready")
    faults.sb.feldera("DELETE", "/_emulator/faults")
    faults.wait(lambda: faults.flags(name)["orders.live"] is False, "live started")
    faults.wait_ready(name)
