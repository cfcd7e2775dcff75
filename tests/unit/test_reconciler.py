"""The real Reconciler, driven against fakes of its two edges (reconciler_fakes.py): what it
calls in Feldera and what it writes to Kubernetes for each watch event and observation pass."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from feldera_operator import decision as d
from feldera_operator.config import SecretRef
from feldera_operator.events import EventRecorder, actions_done
from feldera_operator.feldera_client import (
    FelderaAuthError,
    FelderaBadRequest,
    FelderaForbidden,
    FelderaNotFound,
    FelderaServerError,
    FelderaUnreachable,
)
from feldera_operator.reconciler import Reconciler

from .reconciler_fakes import (
    FakeClock,
    FakeFeldera,
    FakeKube,
    add_pipeline,
    close_all,
    condition,
    deliver,
    instance_body,
    make_reconciler,
    observe_pass,
    pipeline_body,
    ready,
    until,
)

PLURAL = "felderapipelines"


@pytest.fixture(autouse=True)
async def close_reconcilers() -> AsyncIterator[None]:
    yield
    await close_all()


async def test_a_new_resource_starts_its_stopped_pipeline_and_reports_ready() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", inputs={"orders.live": True})
    r = make_reconciler(kube, feldera)
    await add_pipeline(
        r, kube, pipeline_body("orders", inputs=[{"table": "orders", "connector": "live"}])
    )
    assert ("start", "orders", "running") in feldera.calls
    await observe_pass(r)
    assert ("input", "orders", "orders.live", "start") in feldera.calls
    status = kube.status_of(PLURAL, "orders")
    assert ready(status)["status"] == "True", status
    assert [e.reason for e in kube.events_of("orders")] == ["PipelineStarted", "ConnectorStarted"]
    await r.close()


async def test_a_converged_pipeline_costs_no_action_and_no_write() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders"))
    writes = kube.status_writes("orders")
    assert writes == 1
    for _ in range(3):
        await observe_pass(r)
    assert feldera.actions() == []
    assert kube.status_writes("orders") == writes
    await r.close()


# ----------------------------------------------------------------------------- conditions


async def test_a_failing_action_retried_keeps_its_last_transition_time_and_writes_once() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running", inputs={"orders.live": True})
    forbidden = FelderaForbidden(
        "read-only key", endpoint="POST .../start", status=403, error_code="InsufficientPermissions"
    )
    feldera.fail("input", forbidden, count=10)
    clock = FakeClock()
    r = make_reconciler(kube, feldera, clock=clock)
    spec = {"inputs": [{"table": "orders", "connector": "live"}]}
    await add_pipeline(r, kube, pipeline_body("orders", **spec))
    first = kube.status_of(PLURAL, "orders")
    assert condition(first, "Stalled")["reason"] == "PermissionDenied"
    writes = kube.status_writes("orders")
    for _ in range(3):
        clock.tick(5)
        await r.reconcile_now(("default", "orders"))
    assert feldera.count("input") == 4  # retried each time
    assert kube.status_writes("orders") == writes
    after = kube.status_of(PLURAL, "orders")
    for ctype in ("Ready", "Synced", "Reconciling", "Stalled"):
        assert (
            condition(after, ctype)["lastTransitionTime"]
            == condition(first, ctype)["lastTransitionTime"]
        ), ctype
    await r.close()


# ----------------------------------------------------------------------------- the instance loop


def unreachable() -> FelderaUnreachable:
    return FelderaUnreachable("connection refused", endpoint="GET /v0/config")


async def test_an_invalid_spec_while_feldera_is_unreachable_is_reported_and_backs_off() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.fail("config", unreachable(), count=1000)
    r = make_reconciler(kube, feldera, loops=True)
    await add_pipeline(r, kube, pipeline_body("orders.v2"), event=None)  # no pipelineName
    await until(lambda: feldera.count("config") >= 2, within=3, what="a second pass")
    first, second = feldera.times_of("config")[:2]
    assert second - first >= 0.9  # the backoff's first step (1 s), not a re-pass after 0.2 s
    status = kube.status_of(PLURAL, "orders.v2")
    assert ready(status)["reason"] == "InvalidSpec"
    assert condition(status, "Stalled")["status"] == "True"
    await r.close()


async def test_a_wake_during_a_pass_is_not_lost() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera, loops=True)
    await add_pipeline(r, kube, pipeline_body("orders"), event=None)
    await until(lambda: feldera.count("list") == 1, what="the first pass")
    hang = feldera.hang["list"] = asyncio.Event()
    r.instance_state(("", "")).wake.set()
    await until(lambda: feldera.count("list") == 2, what="the woken pass")
    r.instance_state(("", "")).wake.set()  # while that pass waits on Feldera
    hang.set()
    del feldera.hang["list"]
    await until(lambda: feldera.count("list") == 3, within=2, what="a pass for the second wake")
    await r.close()


async def test_a_pass_spreads_its_stats_reads_over_the_period() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    for i in range(4):
        feldera.add(f"p{i}", status="Running", desired="Running")
    r = make_reconciler(kube, feldera, period=1.0, spread=0.9)
    for i in range(4):
        await add_pipeline(r, kube, pipeline_body(f"p{i}"), event=None)
    await asyncio.sleep(0.01)  # the start-up wake of every instance
    r.instance_state(("", "")).wake.clear()  # as the loop does before a pass
    started = asyncio.get_running_loop().time()
    await observe_pass(r)
    took = asyncio.get_running_loop().time() - started
    reads = feldera.times_of("stats")
    assert len(reads) == 4
    # One read every 0.18 s (0.9 s over 5 slots), not four at once.
    assert min(b - a for a, b in itertools.pairwise(reads)) > 0.12
    assert 0.6 < took < 1.0
    await r.close()


async def test_a_pass_longer_than_the_period_is_said_once_and_shown_in_a_metric(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="feldera_operator")
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera, period=0.2, loops=True)
    await add_pipeline(r, kube, pipeline_body("orders"), event=None)
    await until(lambda: feldera.count("list") >= 1, what="a first pass")
    feldera.hang["stats"] = asyncio.Event()  # a slow Feldera: each pass waits
    loop = asyncio.get_running_loop()
    loop.call_later(0.5, feldera.hang["stats"].set)
    await until(lambda: any("longer than the period" in m for m in caplog.messages), what="it")
    del feldera.hang["stats"]
    await until(lambda: any("keeps up" in m for m in caplog.messages), what="keeping up")
    assert sum("longer than the period" in m for m in caplog.messages) == 1
    value = REGISTRY.get_sample_value(
        "feldera_operator_observation_pass_seconds", {"instance": "default"}
    )
    assert value is not None and value < 0.2
    await r.close()


# ----------------------------------------------------------------------------- connectors


async def test_a_case_sensitive_table_next_to_an_unquoted_entry_is_written_without_duplicates() -> (
    None
):
    kube, feldera = FakeKube(), FakeFeldera()
    # CREATE TABLE "Orders": Feldera reports Orders.live; the spec's `Orders` means `orders`.
    feldera.add("orders", status="Running", desired="Running", inputs={"Orders.live": True})
    r = make_reconciler(kube, feldera)
    spec = {"inputs": [{"table": "Orders", "connector": "live"}]}
    await add_pipeline(r, kube, pipeline_body("orders", **spec))
    status = kube.status_of(PLURAL, "orders")  # the fake refuses duplicate keys with 422
    assert ready(status)["reason"] == "ConnectorNotFound"
    assert [(e["table"], e["declared"]) for e in status["inputs"]] == [
        ("Orders", True),
        ('"Orders"', False),
    ]
    await r.close()


async def test_one_connector_declared_twice_is_reported_and_the_rest_reconciled() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add(
        "orders",
        status="Running",
        desired="Running",
        inputs={"orders.live": True, "orders.backfill": True},
    )
    r = make_reconciler(kube, feldera)
    inputs = [
        {"table": "orders", "connector": "live", "paused": False},
        {"table": '"orders"', "connector": "live", "paused": True},
        {"table": "orders", "connector": "backfill", "paused": False},
    ]
    await add_pipeline(r, kube, pipeline_body("orders", inputs=inputs))
    assert feldera.actions() == [("input", "orders", "orders.backfill", "start")]
    status = kube.status_of(PLURAL, "orders")
    assert ready(status)["reason"] == "DuplicateConnector"
    assert "spec.inputs[0]" in ready(status)["message"]
    assert condition(status, "Stalled")["status"] == "True"
    reasons = {(e["table"], e["connector"]): e.get("reason") for e in status["inputs"]}
    assert reasons == {
        ("orders", "live"): "DuplicateConnector",
        ('"orders"', "live"): "DuplicateConnector",
        ("orders", "backfill"): None,
    }
    await r.close()


# ----------------------------------------------------------------------------- one resource


async def test_a_spec_change_waiting_for_the_lock_acts_on_a_fresh_observation() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders")  # Stopped
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders"), event=None)
    hang = feldera.hang["start"] = asyncio.Event()
    passing = asyncio.create_task(observe_pass(r))  # starts it running, and holds the lock
    await until(lambda: feldera.count("start") == 1, what="the pass's start")
    stored = kube.objects[(PLURAL, "default", "orders")]
    stored["metadata"]["generation"] = 2
    stored["spec"]["paused"] = True
    changing = asyncio.create_task(deliver(r, kube, "orders"))
    for _ in range(50):  # let the spec change go as far as it can: up to the record's lock
        await asyncio.sleep(0)
    hang.set()
    await asyncio.gather(passing, changing)
    # Not start?initial=paused from the Stopped it saw before the lock (Feldera: 400); pause.
    assert feldera.actions() == [("start", "orders", "running"), ("pause", "orders")]
    await r.close()


# ----------------------------------------------------------------------------- the connection

KEY = "apikey:" + "k" * 128
NEW_KEY = "apikey:" + "n" * 128
CREDENTIALS = {"feldera.dev/credentials": "true"}


def with_instance(kube: FakeKube, labels: dict[str, str] | None = CREDENTIALS) -> dict[str, Any]:
    kube.add_secret("default", "feldera-key", {"apiKey": KEY}, labels=labels)
    body = instance_body(
        "prod", url="http://prod.test", apiKeySecretRef={"name": "feldera-key", "key": "apiKey"}
    )
    return kube.add("felderainstances", body)


async def test_concurrent_callers_share_one_rebuilt_client_and_the_old_closes_after_a_grace() -> (
    None
):
    kube, feldera = FakeKube(), FakeFeldera()
    r = make_reconciler(kube, feldera, request_timeout=0.2)
    await r.on_instance_event("ADDED", with_instance(kube))
    connection = r.connection(("default", "prod"))
    old = await connection.client()
    kube.add_secret("default", "feldera-key", {"apiKey": NEW_KEY}, labels=CREDENTIALS)
    connection.invalidate()  # a key rotation seen by a pass or a 401
    clients = await asyncio.gather(*(connection.client() for _ in range(5)))
    assert len({id(c) for c in clients}) == 1
    assert clients[0] is not old and clients[0].settings.api_key == NEW_KEY
    assert len(feldera.clients) == 2  # one per key, none orphaned
    assert not old.closed  # requests in flight on it may finish...
    await until(lambda: old.closed, within=2, what="the old client closed")  # ...then it closes
    await r.close()
    assert all(c.closed for c in feldera.clients)


async def test_a_reconcile_whose_client_is_closed_under_it_retries_with_the_new_one() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running", inputs={"orders.live": True})
    r = make_reconciler(kube, feldera)
    await r.on_instance_event("ADDED", with_instance(kube))
    connection = r.connection(("default", "prod"))
    spec = {"instanceRef": {"name": "prod"}, "inputs": [{"table": "orders", "connector": "live"}]}
    await add_pipeline(r, kube, pipeline_body("orders", **spec), event=None)
    first = await connection.client()  # a pass begins with it...
    kube.add_secret("default", "feldera-key", {"apiKey": NEW_KEY}, labels=CREDENTIALS)
    connection.invalidate()
    second = await connection.client()  # ...the key is rotated meanwhile...
    first.closed = True  # ...and the pass is still at work when the old client's grace is over
    await r.reconcile.reconcile_from(
        r.pipelines[("default", "orders")], feldera.pipelines["orders"].render(), first, 0.0
    )
    await until(
        lambda: ready(kube.status_of(PLURAL, "orders")).get("status") == "True",
        what="Ready through the new client",
    )
    assert ("input", "orders", "orders.live", "start") in feldera.calls
    assert len(feldera.clients) == 2 and feldera.clients[1] is second
    await r.close()


async def test_the_api_key_secret_is_read_once_per_period_not_per_reconcile() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    await r.on_instance_event("ADDED", with_instance(kube))
    spec = {"instanceRef": {"name": "prod"}}
    await add_pipeline(r, kube, pipeline_body("orders", **spec))
    for _ in range(5):
        await r.reconcile_now(("default", "orders"))
    assert kube.count("read_secret") == 1
    await observe_pass(r, ("default", "prod"))  # a period: read again (a rotated key is seen)
    assert kube.count("read_secret") == 2
    await r.close()


async def test_a_rejected_key_is_read_again_at_once() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    await r.on_instance_event("ADDED", with_instance(kube))
    await add_pipeline(r, kube, pipeline_body("orders", instanceRef={"name": "prod"}))
    reads = kube.count("read_secret")
    feldera.fail(
        "get", FelderaAuthError("bad key", endpoint="GET /v0/pipelines/orders", status=401)
    )
    await r.reconcile_now(("default", "orders"))
    assert ready(kube.status_of(PLURAL, "orders"))["reason"] == "CredentialsRejected"
    await r.reconcile_now(("default", "orders"))
    assert kube.count("read_secret") == reads + 1
    assert ready(kube.status_of(PLURAL, "orders"))["status"] == "True"
    await r.close()


async def test_a_secret_without_the_credentials_label_is_never_used() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    await r.on_instance_event("ADDED", with_instance(kube, labels={}))
    await add_pipeline(r, kube, pipeline_body("orders", instanceRef={"name": "prod"}))
    status = kube.status_of(PLURAL, "orders")
    assert ready(status)["reason"] == "SecretNotLabelled"
    message = ready(status)["message"]
    assert "feldera.dev/credentials=true" in message and "kubectl label secret" in message
    assert condition(status, "Stalled")["status"] == "True"
    assert feldera.clients == []  # the key never left for the instance's URL
    await observe_pass(r, ("default", "prod"))
    instance_status = kube.status_of("felderainstances", "prod")
    assert ready(instance_status)["reason"] == "SecretNotLabelled"
    assert KEY not in repr(kube.objects) + repr(kube.events)
    await r.close()


async def test_the_default_instance_secret_needs_no_label() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    kube.add_secret("feldera-system", "feldera-key", {"apiKey": KEY})  # no label
    r = make_reconciler(
        kube, feldera, default_api_key=SecretRef("feldera-system", "feldera-key", "apiKey")
    )
    await add_pipeline(r, kube, pipeline_body("orders"))
    assert ready(kube.status_of(PLURAL, "orders"))["status"] == "True"
    assert feldera.clients[0].settings.api_key == KEY
    await r.close()


# ----------------------------------------------------------------------------- deletion

FINALIZER = "feldera.dev/stop-pipeline"


async def delete(r: Reconciler, kube: FakeKube, name: str) -> None:
    """What `kubectl delete` does to a resource with a finalizer, and the watch event."""
    kube.objects[(PLURAL, "default", name)]["metadata"]["deletionTimestamp"] = (
        "2026-01-01T01:00:00Z"
    )
    await deliver(r, kube, name)


def finalizers(kube: FakeKube, name: str) -> list[str] | None:
    obj = kube.objects.get((PLURAL, "default", name))
    return None if obj is None else list(obj["metadata"].get("finalizers") or [])


async def test_deletion_with_stop_policy_stops_the_pipeline_then_releases_the_resource() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders", deletionPolicy="Stop"))
    assert finalizers(kube, "orders") == [FINALIZER]
    await delete(r, kube, "orders")
    assert feldera.actions() == [("stop", "orders")]
    assert finalizers(kube, "orders") is None  # gone
    assert ("PipelineStopped", False) in [(e.reason, e.warning) for e in kube.events_of("orders")]
    await r.close()


async def test_deletion_after_the_felderainstance_was_deleted_releases_with_a_warning() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    instance = with_instance(kube)
    await r.on_instance_event("ADDED", instance)
    spec = {"instanceRef": {"name": "prod"}, "deletionPolicy": "Stop"}
    await add_pipeline(r, kube, pipeline_body("orders", **spec))
    # Deleting a namespace (or a directory of manifests) removes the instance first.
    await r.on_instance_event("DELETED", instance)
    await delete(r, kube, "orders")
    assert finalizers(kube, "orders") is None
    warnings = [e for e in kube.events_of("orders") if e.warning]
    assert [e.reason for e in warnings] == ["StopSkipped"]
    assert "FelderaInstance" in warnings[0].message and "prod" in warnings[0].message
    assert feldera.actions() == []
    await r.close()


async def test_deletion_blocked_by_a_missing_secret_says_so_and_retries_until_it_is_back() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    await r.on_instance_event("ADDED", with_instance(kube))
    spec = {"instanceRef": {"name": "prod"}, "deletionPolicy": "Stop"}
    await add_pipeline(r, kube, pipeline_body("orders", **spec))
    del kube.secrets[("default", "feldera-key")]
    r.connection(("default", "prod")).invalidate()
    await delete(r, kube, "orders")
    status = kube.status_of(PLURAL, "orders")
    assert ready(status)["reason"] == "DeletionBlocked"
    assert "Secret default/feldera-key not found" in ready(status)["message"]
    assert finalizers(kube, "orders") == [FINALIZER]
    with_instance(kube)  # the Secret is back
    await until(lambda: finalizers(kube, "orders") is None, within=3, what="released")
    assert feldera.actions() == [("stop", "orders")]
    await r.close()


async def test_a_stop_on_deletion_failing_backs_off_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera, period=10.0)
    await add_pipeline(r, kube, pipeline_body("orders", deletionPolicy="Stop"))
    feldera.fail("stop", unreachable(), count=2)
    await delete(r, kube, "orders")
    await until(lambda: finalizers(kube, "orders") is None, within=6, what="released")
    gaps = [b - a for a, b in itertools.pairwise(feldera.times_of("stop"))]
    assert len(gaps) == 2
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9  # 1 s, 2 s: growing, not reset by each pass
    blocked = [m for m in caplog.messages if "stop on deletion" in m]
    assert len(blocked) == 1, blocked  # once per cause, not once per retry
    await r.close()


async def test_only_unknown_pipeline_name_means_the_pipeline_is_gone_on_deletion() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders", deletionPolicy="Stop"))
    # A wrong path prefix answers 404 too, without Feldera's error code: nothing was stopped.
    feldera.fail("stop", FelderaNotFound("Not Found", endpoint="POST .../stop", status=404))
    await delete(r, kube, "orders")
    assert finalizers(kube, "orders") == [FINALIZER]
    assert ready(kube.status_of(PLURAL, "orders"))["reason"] == "DeletionBlocked"
    await until(lambda: finalizers(kube, "orders") is None, within=3, what="released")
    assert feldera.count("stop") == 2
    await r.close()


async def test_a_resource_being_deleted_is_not_reconciled_while_its_stop_waits() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders", deletionPolicy="Stop"))
    feldera.pipelines["orders"].status = feldera.pipelines["orders"].desired = "Stopped"
    feldera.fail("stop", unreachable())
    await delete(r, kube, "orders")
    await observe_pass(r)  # would start it again: the spec says running
    assert ("start", "orders", "running") not in feldera.calls
    await r.close()


async def test_a_standby_that_becomes_leader_finalizes_what_was_deleted_meanwhile() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    r.leading.clear()
    body = pipeline_body("orders", deletionPolicy="Stop", finalizers=[FINALIZER], deleting=True)
    await add_pipeline(r, kube, body)
    assert feldera.calls == []  # a standby acts on nothing
    r.leading.set()
    await until(lambda: finalizers(kube, "orders") is None, what="released by the new leader")
    assert feldera.actions() == [("stop", "orders")]
    await r.close()


async def test_an_invalid_spec_keeps_the_stop_finalizer_and_deletion_still_stops() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders", deletionPolicy="Stop"))
    stored = kube.objects[(PLURAL, "default", "orders")]
    stored["metadata"]["generation"] = 2
    stored["spec"]["inputs"] = [{"table": "orders"}]  # no connector: invalid for the operator
    await deliver(r, kube, "orders")
    assert ready(kube.status_of(PLURAL, "orders"))["reason"] == "InvalidSpec"
    assert finalizers(kube, "orders") == [FINALIZER]
    await delete(r, kube, "orders")
    assert feldera.actions() == [("stop", "orders")]
    assert finalizers(kube, "orders") is None
    await r.close()


async def test_a_resource_deleted_while_the_watch_was_down_gets_no_drift_correction() -> None:
    """kopf re-lists after a 410 and tells nobody what the listing lacks: before correcting
    drift the operator confirms the resource exists, and forgets it when it does not."""
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders"))
    await observe_pass(r)
    del kube.objects[(PLURAL, "default", "orders")]  # its DELETED event lost (410, relist)
    feldera.calls.clear()
    feldera.pipelines["orders"].status = feldera.pipelines["orders"].desired = "Paused"
    await observe_pass(r)  # drift: confirmed against Kubernetes first
    assert kube.count("get_object") == 1
    assert feldera.actions() == []
    assert ("default", "orders") not in r.pipelines
    await observe_pass(r)
    assert feldera.actions() == []  # no more actions for a resource that is gone
    await r.close()


async def test_a_resource_deleted_while_the_watch_was_down_is_forgotten_at_its_first_404() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders"))
    del kube.objects[(PLURAL, "default", "orders")]  # its DELETED event lost (410, relist)
    feldera.pipelines["orders"].status = "Stopping"  # a status change, no action to decide
    await observe_pass(r)
    # Only "in flight" to say: written after the transient grace, by a follow-up; it answers 404.
    await until(lambda: ("default", "orders") not in r.pipelines, what="the resource forgotten")
    await r.close()


async def test_drift_on_a_resource_that_exists_is_corrected_after_one_get() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders"))
    await observe_pass(r)
    feldera.pipelines["orders"].status = feldera.pipelines["orders"].desired = "Paused"
    await observe_pass(r)
    assert kube.count("get_object") == 1
    assert [a for a in feldera.actions() if "resume" in str(a)]
    await r.close()


async def test_a_deleted_felderainstance_closes_its_client_and_its_loop_ends() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera, loops=True)
    instance = with_instance(kube)
    await r.on_instance_event("ADDED", instance)
    await until(lambda: feldera.count("list") == 1, what="the instance's first pass")
    state = r.instance_state(("default", "prod"))
    client = feldera.clients[0]
    await r.on_instance_event("DELETED", instance)
    assert client.closed
    await until(lambda: state.task is not None and state.task.done(), what="its loop ended")
    assert ("default", "prod") not in r.instances
    await r.close()


async def test_pipelines_of_a_deleted_felderainstance_say_instance_not_found() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    instance = with_instance(kube)
    await r.on_instance_event("ADDED", instance)
    await add_pipeline(r, kube, pipeline_body("orders", instanceRef={"name": "prod"}))
    await r.on_instance_event("DELETED", instance)
    assert feldera.clients[0].closed
    await observe_pass(r, ("default", "prod"))
    assert ready(kube.status_of(PLURAL, "orders"))["reason"] == "InstanceNotFound"
    await r.close()


# ------------------------------------------------------------------ two resources, one pipeline


async def test_the_younger_of_two_resources_naming_one_pipeline_is_stalled_and_never_acted_on() -> (
    None
):
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    older = pipeline_body("a", pipelineName="orders", created="2026-01-01T00:00:00Z")
    younger = pipeline_body("b", pipelineName="orders", paused=True, created="2026-01-02T00:00:00Z")
    await add_pipeline(r, kube, older)
    gets = feldera.count("get")
    await add_pipeline(r, kube, younger)
    assert feldera.count("get") == gets  # not even observed: not its pipeline to act on
    for _ in range(3):
        await observe_pass(r)
    assert feldera.actions() == []  # no fight: b's paused is never applied
    status = kube.status_of(PLURAL, "b")
    assert ready(status)["reason"] == "PipelineClaimed"
    assert "default/a" in ready(status)["message"]
    assert condition(status, "Stalled")["status"] == "True"
    assert ready(kube.status_of(PLURAL, "a"))["status"] == "True"
    assert [e.reason for e in kube.events_of("b")] == ["PipelineClaimed"]
    await r.close()


async def test_deleting_the_younger_claimant_with_stop_policy_does_not_stop_the_pipeline() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("a", pipelineName="orders"))
    younger = pipeline_body(
        "b", pipelineName="orders", deletionPolicy="Stop", created="2026-01-02T00:00:00Z"
    )
    await add_pipeline(r, kube, younger)
    await delete(r, kube, "b")
    assert feldera.actions() == []
    assert finalizers(kube, "b") is None
    await r.close()


async def test_when_the_older_claimant_goes_the_younger_takes_over() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("a", pipelineName="orders"))
    younger = pipeline_body("b", pipelineName="orders", paused=True, created="2026-01-02T00:00:00Z")
    await add_pipeline(r, kube, younger)
    await r.on_pipeline_event("DELETED", kube.objects.pop((PLURAL, "default", "a")))
    await until(lambda: ("pause", "orders") in feldera.calls, what="b acted on")
    await r.close()


async def test_claims_tie_on_creation_time_go_to_the_first_name() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("b", pipelineName="orders", paused=True))
    await add_pipeline(r, kube, pipeline_body("a", pipelineName="orders"))
    await observe_pass(r)
    assert ready(kube.status_of(PLURAL, "b"))["reason"] == "PipelineClaimed"
    await r.close()


async def test_one_connector_action_failing_does_not_keep_the_others_from_being_issued() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add(
        "orders",
        status="Running",
        desired="Running",
        inputs={"orders.live": True, "orders.backfill": True},
        outputs={"big.sink": True},
    )
    feldera.fail(
        "input",
        FelderaServerError("boom", endpoint="POST .../live/start", status=500),
    )
    r = make_reconciler(kube, feldera)
    spec = {
        "inputs": [
            {"table": "orders", "connector": "live"},
            {"table": "orders", "connector": "backfill"},
        ],
        "outputs": [{"view": "big", "connector": "sink"}],
    }
    await add_pipeline(r, kube, pipeline_body("orders", **spec))
    assert feldera.actions() == [
        ("input", "orders", "orders.live", "start"),
        ("input", "orders", "orders.backfill", "start"),
        ("output", "orders", "big.sink", "start"),
    ]
    assert feldera.pipelines["orders"].inputs == {"orders.live": True, "orders.backfill": False}
    assert ready(kube.status_of(PLURAL, "orders"))["reason"] == "FelderaError"
    await r.close()


# ----------------------------------------------------------------------------- Events


async def test_events_beyond_the_bound_are_dropped_and_counted() -> None:
    kube = FakeKube()
    kube.hang["post_event"] = hang = asyncio.Event()
    events = EventRecorder(kube, limit=10)
    before = REGISTRY.get_sample_value("feldera_operator_events_dropped_total") or 0.0
    ref = pipeline_body("orders")
    for _ in range(15):
        events.post_aside(ref, reason="PipelineStarted", message="Started the pipeline")
    await events.post(ref, reason="PipelineStarted", message="Started the pipeline")
    await until(lambda: kube.count("post_event") == 10, what="ten in flight")
    after = REGISTRY.get_sample_value("feldera_operator_events_dropped_total")
    assert after == before + 6
    hang.set()
    await until(lambda: len(kube.events) == 10, what="the ten posted")
    await events.close()


# ----------------------------------------------------------------------------- what is reported


async def test_a_url_with_a_wrong_path_prefix_is_invalid_url_not_a_feldera_error() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    r = make_reconciler(kube, feldera, default_url="http://feldera.test/wrong")
    await add_pipeline(r, kube, pipeline_body("orders"), event=None)
    feldera.fail("config", FelderaNotFound("Not Found", endpoint="GET /v0/config", status=404))
    await observe_pass(r)
    status = kube.status_of(PLURAL, "orders")
    assert ready(status)["reason"] == "InvalidURL"
    assert (
        "GET http://feldera.test/wrong/v0/config answered 404: is the URL Feldera's API root?"
        in ready(status)["message"]
    )
    assert condition(status, "Stalled")["status"] == "True"
    await r.close()


async def test_an_instance_whose_url_went_dead_no_longer_shows_a_version() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    r = make_reconciler(kube, feldera)
    await r.on_instance_event("ADDED", with_instance(kube))
    await observe_pass(r, ("default", "prod"))
    assert kube.status_of("felderainstances", "prod")["version"] == "0.369.0"
    feldera.fail("list", unreachable())
    await observe_pass(r, ("default", "prod"))
    status = kube.status_of("felderainstances", "prod")
    assert "version" not in status and status["reachable"] is False
    await r.close()


async def test_a_resource_turning_stalled_is_logged_once_with_its_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders"))  # Feldera has no such pipeline
    await observe_pass(r)
    lines = [m for m in caplog.messages if "PipelineNotFound" in m]
    assert len(lines) == 1 and "default/orders" in lines[0]
    assert [e.reason for e in kube.events_of("orders")] == ["PipelineNotFound"]
    await r.close()


async def test_the_concurrency_limit_is_per_instance() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    r = make_reconciler(kube, feldera, concurrency=3)
    await r.on_instance_event("ADDED", with_instance(kube))
    await r.connection(("default", "prod")).client()
    await r.connection(("", "")).client()
    # Each instance's client bounds its own requests; nothing is shared between instances.
    assert [c.settings.max_in_flight for c in feldera.clients] == [3, 3]
    assert not hasattr(r, "semaphore")
    await r.close()


# ----------------------------------------------------------------------------- Retry-After


def busy(seconds: float, status: int = 503) -> FelderaServerError | FelderaBadRequest:
    cls = FelderaServerError if status >= 500 else FelderaBadRequest
    return cls("busy", endpoint="GET /v0/pipelines", status=status, retry_after=seconds)


async def test_the_instance_loop_honours_retry_after() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera, loops=True)
    await add_pipeline(r, kube, pipeline_body("orders"), event=None)
    feldera.fail("list", busy(2.0))
    await until(lambda: feldera.count("list") >= 2, within=4, what="the retry")
    first, second = feldera.times_of("list")[:2]
    assert second - first >= 1.9  # not the backoff's 1 s
    await r.close()


async def test_retry_after_is_capped_at_the_period() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    r = make_reconciler(kube, feldera, loops=True, period=1.5)
    await add_pipeline(r, kube, pipeline_body("orders"), event=None)
    feldera.fail("list", busy(3600, status=429))
    await until(lambda: feldera.count("list") >= 2, within=3, what="the retry within a period")
    await r.close()


async def test_an_action_refused_with_retry_after_is_not_retried_sooner() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders")  # Stopped: the spec wants it running
    feldera.fail("start", busy(1.5, status=429))
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders"))
    await until(lambda: feldera.count("start") == 2, within=3, what="the retried start")
    first, second = feldera.times_of("start")
    assert second - first >= 1.4  # not the follow-up's 0.1 s
    await r.close()


# ------------------------------------------------------------------ Events read as sentences


async def test_events_say_what_was_done_in_sentences() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", inputs={"orders.live": False}, outputs={"big.sink": False})
    r = make_reconciler(kube, feldera)
    spec = {
        "paused": True,
        "inputs": [{"table": "orders", "connector": "live", "paused": True}],
        "outputs": [{"view": "big", "connector": "sink", "paused": True}],
    }
    await add_pipeline(r, kube, pipeline_body("orders", **spec))
    await observe_pass(r)
    feldera.pipelines["orders"].status = feldera.pipelines["orders"].desired = "Running"
    await observe_pass(r)  # someone resumed it behind the operator's back
    await until(lambda: len(kube.events) == 3, what="three Events")
    assert [(e.reason, e.message) for e in kube.events] == [
        ("PipelineStarted", "Started the pipeline (paused)"),
        # One Event for the actions of one reconcile.
        (
            "ConnectorPaused",
            "Paused input connector orders.live; paused output connector big.sink",
        ),
        ("DriftCorrected", "Feldera no longer matched the spec: paused the pipeline"),
    ]
    await r.close()


def test_one_event_says_every_action_of_a_reconcile() -> None:
    pause = [d.ConnectorAction("input", "t", f"c{j}", "pause") for j in range(3)]
    assert actions_done(pause) == ("ConnectorPaused", "Paused input connectors t.c0, t.c1 and t.c2")
    many = [d.ConnectorAction("input", "t", f"c{j}", "start") for j in range(12)]
    reason, message = actions_done(many, drift=True)
    assert reason == "DriftCorrected"
    assert message == (
        "Feldera no longer matched the spec: started input connectors "
        "t.c0, t.c1, t.c2, t.c3, t.c4, t.c5, t.c6, t.c7, t.c8 and 3 more"
    )


async def test_a_failed_action_event_says_what_could_not_be_done() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders")
    feldera.fail("start", FelderaServerError("boom", endpoint="POST .../start", status=500))
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders"))
    (event,) = kube.events_of("orders")
    assert event.reason == "ActionFailed" and event.warning
    assert event.message.startswith("Could not start the pipeline (running): ")
    await r.close()


# ------------------------------------------------------------------ a stop made by someone else


def stop_behind(feldera: FakeFeldera, name: str = "orders") -> None:
    """A deploy tool stops the pipeline (to PATCH its program), as Feldera's dbt adapter does."""
    feldera.pipelines[name].status = feldera.pipelines[name].desired = "Stopped"


async def test_a_pipeline_stopped_by_someone_else_is_started_again_after_the_grace() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera, external_stop_grace=1.0)
    await add_pipeline(r, kube, pipeline_body("orders"))
    stop_behind(feldera)
    await observe_pass(r)  # within a second: the tool is still at work
    assert feldera.actions() == []
    status = kube.status_of(PLURAL, "orders")
    assert ready(status)["reason"] == "ExternalStopGrace"
    assert "started again in 1 s" in ready(status)["message"]
    stopped_at = asyncio.get_running_loop().time()
    await until(lambda: feldera.count("start") == 1, within=3, what="started after the grace")
    assert feldera.times_of("start")[0] - stopped_at >= 0.8
    await r.close()


async def test_a_new_program_version_compiled_ends_the_grace_at_once() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera, external_stop_grace=3600.0)
    await add_pipeline(r, kube, pipeline_body("orders"))
    stop_behind(feldera)
    await observe_pass(r)
    pipeline = feldera.pipelines["orders"]
    pipeline.program_version, pipeline.program_status = 2, "CompilingRust"  # the tool's PATCH
    await observe_pass(r)
    assert feldera.actions() == []  # not compiled yet: the start waits for it
    pipeline.program_status = "Success"
    await observe_pass(r)
    assert feldera.actions() == [("start", "orders", "running")]
    await r.close()


async def test_a_stop_the_operator_made_itself_is_no_reason_to_wait() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera, external_stop_grace=3600.0)
    await add_pipeline(r, kube, pipeline_body("orders"))
    stored = kube.objects[(PLURAL, "default", "orders")]
    stored["metadata"]["generation"], stored["spec"]["stopped"] = 2, True
    await deliver(r, kube, "orders")
    assert feldera.pipelines["orders"].status == "Stopped"
    stored["metadata"]["generation"], stored["spec"]["stopped"] = 3, False
    await deliver(r, kube, "orders")
    assert feldera.actions() == [("stop", "orders"), ("start", "orders", "running")]
    await r.close()


async def test_a_pipeline_found_stopped_by_a_new_resource_or_process_is_started_at_once() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders")  # Stopped before the operator ever saw it run
    r = make_reconciler(kube, feldera, external_stop_grace=3600.0)
    await add_pipeline(r, kube, pipeline_body("orders"))
    assert feldera.actions() == [("start", "orders", "running")]
    await r.close()


async def test_declaring_it_stopped_during_the_grace_keeps_it_stopped() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.add("orders", status="Running", desired="Running")
    r = make_reconciler(kube, feldera, external_stop_grace=0.5)
    await add_pipeline(r, kube, pipeline_body("orders"))
    stop_behind(feldera)
    await observe_pass(r)
    stored = kube.objects[(PLURAL, "default", "orders")]
    stored["metadata"]["generation"], stored["spec"]["stopped"] = 2, True
    await deliver(r, kube, "orders")
    await asyncio.sleep(0.7)  # past the grace
    await observe_pass(r)
    assert feldera.actions() == []
    assert ready(kube.status_of(PLURAL, "orders"))["status"] == "True"
    await r.close()
