"""Editions, checkpoints, bootstrapping and storage on the Feldera emulator, as feldera-api.md
describes them ("Editions and state across a restart", "Storage and deletion")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from feldera_sandbox.feldera_emulator import FelderaEmulator

from .feldera_http import (
    Call,
    deployment_log,
    error,
    input_flags,
    put,
    status_of,
    wait_for,
)

SQL = """
CREATE TABLE orders (id BIGINT, amount INT) WITH ('materialized' = 'true', 'connectors' = '[
  {"name": "live", "paused": true, "transport": {"name": "kafka_input", "config": {"t": "a"}}},
  {"name": "backfill", "transport": {"name": "datagen", "config": {}}}]');
CREATE TABLE events (x INT) WITH ('connectors' = '[{"name": "feed"}]');
CREATE MATERIALIZED VIEW big AS SELECT * FROM orders WHERE amount > 10;
"""
# A new view on the materialized table: can be bootstrapped.
NEW_VIEW = SQL + "CREATE VIEW small AS SELECT * FROM orders WHERE amount < 10;\n"
# A new view on the non-materialized table: cannot.
UNBOOTSTRAPPABLE = SQL + "CREATE VIEW seen AS SELECT * FROM events;\n"
FT = {"runtime_config": {"fault_tolerance": {"model": "at_least_once"}}}


@pytest.fixture
async def emulator() -> AsyncIterator[FelderaEmulator]:
    emu = FelderaEmulator(edition="enterprise")
    yield emu
    await emu.stop()


async def start(call: Call, name: str, query: str = "", until: str = "Running") -> dict[str, Any]:
    code, body = await call("POST", f"/v0/pipelines/{name}/start{query}")
    assert code == 202, body
    return await wait_for(call, name, "deployment_status", until)


async def running(call: Call, name: str, sql: str = SQL, **extra: Any) -> None:
    assert (await put(call, name, sql, **extra))[0] in (200, 201)
    await start(call, name)


async def stop(call: Call, name: str, force: bool) -> dict[str, Any]:
    code, body = await call("POST", f"/v0/pipelines/{name}/stop?force={str(force).lower()}")
    assert code == 202, body
    return await wait_for(call, name, "deployment_status", "Stopped")


async def flip(call: Call, name: str, connector: str, action: str) -> None:
    path = f"/v0/pipelines/{name}/tables/orders/connectors/{connector}/{action}"
    assert (await call("POST", path))[0] == 200


async def records(call: Call, name: str) -> int:
    code, body = await call("GET", f"/v0/pipelines/{name}/stats")
    assert code == 200
    return int(body["global_metrics"]["total_input_records"])


# ------------------------------------------------------------------------------- editions


async def test_config_reports_the_edition_and_the_settings_hook_switches_it(
    emulator: FelderaEmulator, call: Call
) -> None:
    assert (await call("GET", "/v0/config"))[1]["edition"] == "Enterprise"
    code, body = await call("PATCH", "/_emulator/settings", json={"edition": "open-source"})
    assert code == 200 and body["edition"] == "open-source"
    assert (await call("GET", "/v0/config"))[1]["edition"] == "Open source"


async def test_open_source_refuses_stop_without_force_and_restarts_from_the_sql_and_empty(
    emulator: FelderaEmulator, call: Call
) -> None:
    emulator.edition = "open-source"
    await running(call, "p1")
    await flip(call, "p1", "live", "start")
    await flip(call, "p1", "backfill", "pause")
    _, stats = await call("GET", "/v0/pipelines/p1/stats")
    assert stats["inputs"][0]["metrics"]["total_records"] > 0
    body = error(*await call("POST", "/v0/pipelines/p1/stop?force=false"), 501, "EnterpriseFeature")
    assert body["details"] == {"feature": "stop?force=false"}
    error(*await call("POST", "/v0/pipelines/p1/stop"), 501, "EnterpriseFeature")
    await stop(call, "p1", force=True)
    await start(call, "p1")
    flags = await input_flags(call, "p1")
    assert (flags["orders.live"], flags["orders.backfill"]) == (True, False)
    # State starts empty: `live`, paused since the restart, has read nothing in this life.
    _, stats = await call("GET", "/v0/pipelines/p1/stats")
    live = next(i for i in stats["inputs"] if i["endpoint_name"] == "orders.live")
    assert live["metrics"]["total_records"] == 0


async def test_suspend_checkpoints_and_the_restart_resumes_flags_and_state(
    emulator: FelderaEmulator, call: Call
) -> None:
    await running(call, "p1")
    await flip(call, "p1", "live", "start")
    await flip(call, "p1", "backfill", "pause")
    seen = await records(call, "p1")
    emulator.delay = 0.02
    code, body = await call("POST", "/v0/pipelines/p1/stop?force=false")
    assert code == 202 and body == "Pipeline is suspending"
    assert (await status_of(call, "p1"))["deployment_desired_status"] == "Suspended"
    await wait_for(call, "p1", "deployment_status", "Suspended")
    await wait_for(call, "p1", "deployment_status", "Stopped")
    emulator.delay = 0.0
    await start(call, "p1")
    assert await input_flags(call, "p1") == {
        "orders.live": False,
        "orders.backfill": True,
        "events.feed": False,
    }
    assert await records(call, "p1") >= seen
    # Nothing changed in the program: no approval asked.
    assert "AwaitingApproval" not in await deployment_log(call, "p1")


async def test_suspend_without_storage_fails_and_stops_with_the_error(call: Call) -> None:
    await running(call, "p1", runtime_config={"storage": False})
    assert (await call("POST", "/v0/pipelines/p1/stop?force=false"))[0] == 202
    body = await wait_for(call, "p1", "deployment_status", "Stopped")
    assert body["deployment_error"]["error_code"] == "SuspendError"
    assert "Storage must be configured" in body["deployment_error"]["message"]


async def test_forced_stop_keeps_the_last_checkpoint_or_with_fault_tolerance_a_new_one(
    call: Call,
) -> None:
    # Without fault tolerance: the suspend's checkpoint is what a later forced stop leaves.
    await running(call, "p1")
    await flip(call, "p1", "live", "start")
    await stop(call, "p1", force=False)
    await start(call, "p1")
    await flip(call, "p1", "live", "pause")
    await stop(call, "p1", force=True)
    await start(call, "p1")
    assert (await input_flags(call, "p1"))["orders.live"] is False
    # With fault tolerance, the periodic checkpoint holds the flags of the moment.
    await running(call, "p2", **FT)
    await flip(call, "p2", "live", "start")
    await stop(call, "p2", force=True)
    await start(call, "p2")
    assert (await input_flags(call, "p2"))["orders.live"] is False


async def test_a_crash_with_fault_tolerance_resumes_from_its_checkpoint(
    emulator: FelderaEmulator, call: Call
) -> None:
    await running(call, "p1", **FT)
    await flip(call, "p1", "live", "start")
    emulator.fail_pipeline("p1", "out of memory")
    body = await wait_for(call, "p1", "deployment_status", "Stopped")
    assert body["deployment_error"]["message"] == "out of memory"
    await start(call, "p1")
    assert (await input_flags(call, "p1"))["orders.live"] is False


async def test_restore_sql_drops_the_checkpoint_at_a_forced_stop(
    emulator: FelderaEmulator, call: Call
) -> None:
    await running(call, "p1", **FT)
    await flip(call, "p1", "live", "start")
    emulator.restore = "sql"
    await stop(call, "p1", force=True)
    await start(call, "p1")
    assert (await input_flags(call, "p1"))["orders.live"] is True


# --------------------------------------------------------------------------- bootstrapping


async def suspended_then_changed(call: Call, name: str, sql: str) -> None:
    await running(call, name)
    await flip(call, name, "live", "start")
    await stop(call, name, force=False)
    assert (await call("PATCH", f"/v0/pipelines/{name}", json={"program_code": sql}))[0] == 200


async def test_changed_program_awaits_approval_then_bootstraps(
    emulator: FelderaEmulator, session: aiohttp.ClientSession, call: Call
) -> None:
    await running(call, "p1")
    await flip(call, "p1", "live", "start")
    await stop(call, "p1", force=False)
    # The preview before the change and the approval after it show the same diff.
    _, preview = await call("POST", "/v0/pipelines/p1/diff", json={"program_code": NEW_VIEW})
    assert (await call("PATCH", "/v0/pipelines/p1", json={"program_code": NEW_VIEW}))[0] == 200
    body = await start(call, "p1", until="AwaitingApproval")
    assert body["bootstrap_policy"] == "await_approval"
    assert body["deployment_runtime_status_details"] == {"approval_diff": preview}
    assert body["deployment_runtime_status_details"]["approval_diff"]["program_diff"][
        "added_views"
    ] == ["small"]
    # The pipeline answers for itself while it waits: 503 without the manager's Retry-After.
    for method, path in [
        ("GET", "/v0/pipelines/p1/stats"),
        ("POST", "/v0/pipelines/p1/tables/orders/connectors/live/pause"),
    ]:
        async with session.request(method, path) as resp:
            assert resp.status == 503 and "Retry-After" not in resp.headers
            assert (await resp.json())["error_code"] == "AwaitingApproval"
    emulator.delay = 0.05
    code, body = await call("POST", "/v0/pipelines/p1/approve")
    assert (code, body) == (200, "Bootstrap approved")
    # The answer comes once the pipeline left AwaitingApproval.
    assert (await status_of(call, "p1"))["deployment_status"] == "Bootstrapping"
    body = await wait_for(call, "p1", "deployment_status", "Running")
    assert body["deployment_runtime_status_details"] == {}
    # The unchanged table's connectors come back from the checkpoint.
    assert (await input_flags(call, "p1"))["orders.live"] is False


async def test_allow_bootstraps_without_asking_and_resets_connectors_of_modified_tables(
    call: Call,
) -> None:
    modified = NEW_VIEW.replace("amount INT)", "amount BIGINT)")
    await suspended_then_changed(call, "p1", modified)
    await start(call, "p1", "?bootstrap_policy=allow")
    log = await deployment_log(call, "p1")
    assert log[-2:] == ["Bootstrapping", "Running"] and "AwaitingApproval" not in log
    # `orders` was modified: it restarts empty, its connectors as the SQL declares them.
    assert (await input_flags(call, "p1"))["orders.live"] is True


async def test_reject_stops_with_an_initialization_error_and_keeps_the_checkpoint(
    call: Call,
) -> None:
    await suspended_then_changed(call, "p1", NEW_VIEW)
    body = await start(call, "p1", "?bootstrap_policy=reject", until="Stopped")
    assert body["deployment_desired_status"] == "Stopped"
    error_ = body["deployment_error"]
    assert error_["error_code"] == "InitializationError"
    assert "Bootstrapping of the modified pipeline was rejected by the user." in error_["message"]
    assert body["storage_status"] == "InUse"
    # The checkpoint is still there: the next start with another policy bootstraps from it.
    await start(call, "p1", "?bootstrap_policy=allow")
    assert (await input_flags(call, "p1"))["orders.live"] is False
    assert "Bootstrapping" in await deployment_log(call, "p1")


async def test_a_change_that_cannot_be_bootstrapped_fails_whatever_the_policy_until_clear(
    call: Call,
) -> None:
    await suspended_then_changed(call, "p1", UNBOOTSTRAPPABLE)
    for policy in ("allow", "await_approval"):
        body = await start(call, "p1", f"?bootstrap_policy={policy}", until="Stopped")
        error_ = body["deployment_error"]
        assert error_["error_code"] == "InitializationError"
        assert "cannot be bootstrapped" in error_["message"] and "'events'" in error_["message"]
    # The way out: clear the storage, and start from scratch.
    assert (await call("POST", "/v0/pipelines/p1/clear"))[0] == 202
    await wait_for(call, "p1", "storage_status", "Cleared")
    await start(call, "p1")
    assert (await input_flags(call, "p1"))["orders.live"] is True
    assert "AwaitingApproval" not in (await deployment_log(call, "p1"))[-4:]


async def test_connector_only_change_also_needs_approval_and_resets_that_connector(
    call: Call,
) -> None:
    changed = SQL.replace('{"t": "a"}', '{"t": "b"}')
    await running(call, "p1")
    await flip(call, "p1", "live", "start")
    await flip(call, "p1", "backfill", "pause")
    await stop(call, "p1", force=False)
    assert (await call("PATCH", "/v0/pipelines/p1", json={"program_code": changed}))[0] == 200
    body = await start(call, "p1", until="AwaitingApproval")
    diff = body["deployment_runtime_status_details"]["approval_diff"]
    assert diff["modified_input_connectors"] == ["orders.live"]
    assert not any(diff["program_diff"].values())
    assert (await call("POST", "/v0/pipelines/p1/approve"))[0] == 200
    await wait_for(call, "p1", "deployment_status", "Running")
    flags = await input_flags(call, "p1")
    assert (flags["orders.live"], flags["orders.backfill"]) == (True, True)


async def test_bootstrap_policy_cannot_change_until_stopped(
    emulator: FelderaEmulator, call: Call
) -> None:
    await running(call, "p1")
    body = error(
        *await call("POST", "/v0/pipelines/p1/start?bootstrap_policy=allow"),
        400,
        "BootstrapPolicyImmutableUnlessStopped",
    )
    assert body["details"] is None
    # The same policy (here the default) is an idempotent start.
    assert (await call("POST", "/v0/pipelines/p1/start?bootstrap_policy=await_approval"))[0] == 202
    code, text = await call("POST", "/v0/pipelines/p1/start?bootstrap_policy=sometimes")
    assert code == 400 and "unknown variant `sometimes`" in text  # actix's plain-text answer


async def test_approve_needs_a_deployed_pipeline(call: Call) -> None:
    await put(call, "p1", SQL)
    error(*await call("POST", "/v0/pipelines/p1/approve"), 503, "PipelineInteractionNotDeployed")
    error(*await call("POST", "/v0/pipelines/nope/approve"), 404, "UnknownPipelineName")


# ---------------------------------------------------------------------------------- storage


@pytest.mark.parametrize("edition", ["open-source", "enterprise"])
async def test_storage_is_in_use_from_the_first_start_until_cleared(
    emulator: FelderaEmulator, call: Call, edition: str
) -> None:
    emulator.edition = edition  # type: ignore[assignment]
    await put(call, "p1", SQL)
    assert (await status_of(call, "p1"))["storage_status"] == "Cleared"
    assert (await call("POST", "/v0/pipelines/p1/clear"))[0] == 202  # no-op when Cleared
    await start(call, "p1")
    body = await status_of(call, "p1")
    assert body["storage_status"] == "InUse"
    body = error(
        *await call("POST", "/v0/pipelines/p1/clear"), 400, "StorageStatusImmutableUnlessStopped"
    )
    assert body["details"] == {
        "resources_status": "Provisioned",
        "resources_desired_status": "Provisioned",
        "current_status": "InUse",
        "new_status": "Clearing",
    }
    await stop(call, "p1", force=True)
    error(*await call("DELETE", "/v0/pipelines/p1"), 400, "DeleteRestrictedToClearedStorage")
    emulator.delay = 0.05
    assert await call("POST", "/v0/pipelines/p1/clear") == (
        202,
        "Pipeline storage is being cleared",
    )
    assert (await status_of(call, "p1"))["storage_status"] == "Clearing"
    error(*await call("POST", "/v0/pipelines/p1/start"), 400, "CannotStartWhileClearingStorage")
    await wait_for(call, "p1", "storage_status", "Cleared")
    assert (await call("DELETE", "/v0/pipelines/p1"))[0] == 200


async def test_delete_needs_current_and_desired_stopped(
    emulator: FelderaEmulator, call: Call
) -> None:
    await running(call, "p1")
    await stop(call, "p1", force=True)
    emulator.delay = 10.0
    assert (await call("POST", "/v0/pipelines/p1/start"))[0] == 202
    # Still Stopped, but desired Running: not fully stopped.
    error(*await call("DELETE", "/v0/pipelines/p1"), 400, "DeleteRestrictedToFullyStopped")
    error(*await call("POST", "/v0/pipelines/p1/clear"), 400, "StorageStatusImmutableUnlessStopped")


async def test_dismiss_error_needs_a_fully_stopped_pipeline_when_there_is_one(
    emulator: FelderaEmulator, call: Call
) -> None:
    await running(call, "p1")
    # No error to dismiss: accepted in any state (the SDK dismisses before every start).
    assert await call("POST", "/v0/pipelines/p1/dismiss_error") == (
        200,
        "Pipeline deployment error has been dismissed",
    )
    emulator.delay = 10.0
    emulator.fail_pipeline("p1", "boom")
    error(
        *await call("POST", "/v0/pipelines/p1/dismiss_error"),
        400,
        "DismissErrorRestrictedToFullyStopped",
    )
    emulator.delay = 0.0
    await call("POST", "/v0/pipelines/p1/stop?force=true")
    await wait_for(call, "p1", "deployment_status", "Stopped")
    error(
        *await call("POST", "/v0/pipelines/p1/start?dismiss_error=false"),
        400,
        "CannotStartWithUndismissedError",
    )
    assert (await call("POST", "/v0/pipelines/p1/dismiss_error"))[0] == 200
    assert (await status_of(call, "p1"))["deployment_error"] is None


async def test_manager_503s_carry_retry_after(session: aiohttp.ClientSession, call: Call) -> None:
    await put(call, "p1", SQL)
    async with session.get("/v0/pipelines/p1/stats") as resp:
        assert resp.status == 503 and resp.headers["Retry-After"] == "5"
        assert (await resp.json())["error_code"] == "PipelineInteractionNotDeployed"


async def test_unknown_initial_is_an_unsupported_action(call: Call) -> None:
    await put(call, "p1", SQL)
    error(
        *await call("POST", "/v0/pipelines/p1/start?initial=fast"), 405, "UnsupportedPipelineAction"
    )
    error(
        *await call("POST", "/v0/pipelines/p1/start?initial=standby"),
        400,
        "InitialStandbyNotAllowed",
    )
