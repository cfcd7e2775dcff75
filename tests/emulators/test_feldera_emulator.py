"""The Feldera emulator behaves like feldera-api.md: status codes, bodies, state machine, hooks."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from feldera_sandbox import feldera_emulator as emu_module
from feldera_sandbox.feldera_emulator import (
    ROUTE_INPUT_CONNECTOR_ACTION,
    ROUTE_PIPELINE,
    ROUTE_PIPELINES,
    ROUTE_START,
    ROUTE_STATS,
    FelderaEmulator,
    count_key,
)
from feldera_sandbox.feldera_sql import SqlParseError, parse_program

from .feldera_http import Call, status_of

SQL = """
CREATE TABLE orders (id BIGINT NOT NULL, amount INT) WITH ('connectors' = '[
  {"name": "backfill", "transport": {"name": "datagen", "config": {"plan": [{"limit": 1000}]}}},
  {"name": "live", "paused": true,
   "transport": {"name": "kafka_input", "config": {"topic": "it''s orders"}},
   "format": {"name": "json"}}]');
CREATE TABLE "MyTable" (x INT) WITH ('connectors' = '[{"name": "c1"}]');
CREATE TABLE anon (x INT) WITH ('connectors' = '[{"paused": true}, {"transport": {}}]');
CREATE MATERIALIZED VIEW big_orders WITH ('connectors' = '[{"name": "sink"}]')
AS SELECT * FROM orders WHERE amount > 10;
"""


async def put(call: Call, name: str, sql: str = SQL, **extra: Any) -> tuple[int, Any]:
    return await call(
        "PUT", f"/v0/pipelines/{name}", json={"name": name, "program_code": sql, **extra}
    )


async def wait_for(call: Call, name: str, field: str, value: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while True:
        body = await status_of(call, name)
        if body[field] == value:
            return
        assert time.monotonic() < deadline, f"{field} stayed {body[field]!r}, wanted {value!r}"
        await asyncio.sleep(0.01)


async def running(call: Call, name: str, initial: str = "running") -> None:
    assert (await put(call, name))[0] in (200, 201)
    code, _ = await call("POST", f"/v0/pipelines/{name}/start?initial={initial}")
    assert code == 202
    await wait_for(call, name, "deployment_status", initial.capitalize())


def error(code: int, body: Any, status: int, error_code: str) -> dict[str, Any]:
    assert code == status, body
    assert isinstance(body, dict)
    assert set(body) == {"message", "error_code", "details"}
    assert body["error_code"] == error_code
    assert isinstance(body["message"], str) and body["message"]
    return body


async def input_flags(call: Call, name: str) -> dict[str, bool]:
    code, body = await call("GET", f"/v0/pipelines/{name}/stats")
    assert code == 200, body
    return {i["endpoint_name"]: i["paused"] for i in body["inputs"]}


# --------------------------------------------------------------------------- the SQL reader


def test_sql_reader_names_connectors_and_folds_unquoted_names() -> None:
    program = parse_program(SQL)
    assert [t.name for t in program.tables] == ["orders", "MyTable", "anon"]
    orders = program.table("orders")
    assert orders is not None
    assert [(c.name, c.paused) for c in orders.connectors] == [("backfill", False), ("live", True)]
    assert orders.connectors[1].config["transport"]["config"]["topic"] == "it's orders"
    anon = program.table("anon")
    assert anon is not None
    assert [(c.name, c.paused) for c in anon.connectors] == [
        ("unnamed-0", True),
        ("unnamed-1", False),
    ]
    view = program.view("big_orders")
    assert view is not None and view.materialized
    assert [c.name for c in view.connectors] == ["sink"]


def test_sql_reader_skips_what_it_does_not_need() -> None:
    program = parse_program(
        """
        /* a comment with CREATE TABLE fake (x INT) inside */
        CREATE TYPE address AS (street VARCHAR, city VARCHAR);
        CREATE FUNCTION plus_one(x INT) RETURNS INT AS x + 1;
        create table Items (id INT, note VARCHAR DEFAULT 'it''s (not) a paren') with (
            'materialized' = 'true',
            'connectors' = '[{"name": "src", "transport": {"name": "url_input"}}]'
        );
        CREATE OR REPLACE VIEW "V1" (id) AS SELECT id FROM items; -- trailing ; comment
        CREATE LOCAL VIEW helper AS SELECT 1;
        CREATE INDEX idx ON "V1"(id);
        """
    )
    assert [t.name for t in program.tables] == ["items"]
    items = program.table("items")
    assert items is not None and [c.name for c in items.connectors] == ["src"]
    assert [f["name"] for f in items.fields] == ["id", "note"]
    assert [(v.name, v.case_sensitive) for v in program.views] == [("V1", True), ("helper", False)]


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE t (x INT",
        "CREATE TABLE t (x INT))",
        "CREATE TABLE t (x INT) WITH ('connectors' = '[{')",
        "CREATE TABLE t (x INT) WITH ('connectors' = '{\"name\": \"c\"}')",
        "CREATE TABLE t (x INT) WITH ('connectors' = '[]",
        "CREATE TABLE t (x INT); CREATE TABLE T (y INT);",
    ],
)
def test_sql_reader_rejects_unreadable_programs(sql: str) -> None:
    with pytest.raises(SqlParseError):
        parse_program(sql)


# ------------------------------------------------------------------------- general endpoints


async def test_health_config_and_cluster_health(call: Call) -> None:
    assert await call("GET", "/healthz") == (200, {"status": "healthy"})
    code, config = await call("GET", "/v0/config")
    assert code == 200
    assert config["edition"] == "Open source" and config["version"] == "0.369.0"
    code, health = await call("GET", "/v0/cluster_healthz")
    assert code == 200 and health["all_healthy"] is True


async def test_unknown_pipeline_is_404_with_feldera_body(call: Call) -> None:
    for method, path in [
        ("GET", "/v0/pipelines/nope"),
        ("PATCH", "/v0/pipelines/nope"),
        ("DELETE", "/v0/pipelines/nope"),
        ("POST", "/v0/pipelines/nope/start"),
        ("POST", "/v0/pipelines/nope/stop?force=true"),
        ("GET", "/v0/pipelines/nope/stats"),
        ("POST", "/v0/pipelines/nope/tables/t/connectors/c/start"),
    ]:
        code, body = await call(method, path, json={} if method == "PATCH" else None)
        assert error(code, body, 404, "UnknownPipelineName")["details"] == {"pipeline_name": "nope"}


# ---------------------------------------------------------------------------------- CRUD


async def test_put_creates_then_updates_and_noop_update_keeps_version(call: Call) -> None:
    code, created = await put(call, "p1")
    assert code == 201
    assert created["program_status"] == "Success" and created["version"] == 1
    code, same = await put(call, "p1")
    assert code == 200 and same["version"] == 1 and same["program_version"] == 1
    code, changed = await put(call, "p1", SQL + "\nCREATE TABLE extra (x INT);")
    assert code == 200 and changed["version"] == 2 and changed["program_version"] == 2


async def test_post_create_rejects_duplicates_and_bad_names(call: Call) -> None:
    body = {"name": "p1", "program_code": SQL}
    assert (await call("POST", "/v0/pipelines", json=body))[0] == 201
    error(*await call("POST", "/v0/pipelines", json=body), 409, "DuplicateName")
    bad = {"name": "has.dot", "program_code": ""}
    error(*await call("POST", "/v0/pipelines", json=bad), 400, "NameDoesNotMatchPattern")


async def test_selectors_choose_fields(call: Call) -> None:
    await put(call, "p1")
    code, listed = await call("GET", "/v0/pipelines?selector=status")
    assert code == 200 and [p["name"] for p in listed] == ["p1"]
    assert "program_code" not in listed[0] and "program_info" not in listed[0]
    for field in ("deployment_status", "deployment_desired_status", "program_status", "version"):
        assert field in listed[0]
    _, full = await call("GET", "/v0/pipelines/p1")
    assert full["program_code"] == SQL
    info = full["program_info"]
    assert sorted(info["input_connectors"]) == [
        "MyTable.c1",
        "anon.unnamed-0",
        "anon.unnamed-1",
        "orders.backfill",
        "orders.live",
    ]
    assert info["input_connectors"]["orders.live"]["paused"] is True
    assert info["input_connectors"]["orders.live"]["stream"] == "orders"
    assert sorted(info["output_connectors"]) == ["big_orders.sink"]
    _, with_connectors = await call("GET", "/v0/pipelines/p1?selector=status_with_connectors")
    assert "connectors" in with_connectors
    error(*await call("GET", "/v0/pipelines?selector=bogus"), 400, "InvalidQueryParameter")


async def test_program_info_stays_while_stopped(call: Call) -> None:
    await running(call, "p1")
    assert (await call("POST", "/v0/pipelines/p1/stop?force=true"))[0] == 202
    _, full = await call("GET", "/v0/pipelines/p1")
    assert full["deployment_status"] == "Stopped"
    assert "orders.live" in full["program_info"]["input_connectors"]


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE t (x INT",
        "CREATE TABLE t (x INT) WITH ('connectors' = '[{\"name\": ')",
    ],
)
async def test_unreadable_sql_is_sql_error_and_cannot_start(call: Call, sql: str) -> None:
    code, body = await put(call, "bad", sql)
    assert code == 201 and body["program_status"] == "SqlError"
    messages = body["program_error"]["sql_compilation"]["messages"]
    assert messages and messages[0]["message"]
    assert body["program_info"] is None
    error(*await call("POST", "/v0/pipelines/bad/start"), 400, "CannotStartWithCompilationError")


async def test_program_change_while_deployed_is_refused_but_metadata_change_is_not(
    call: Call,
) -> None:
    await running(call, "p1")
    code, body = await put(call, "p1", SQL + "\nCREATE TABLE x (y INT);")
    error(code, body, 400, "UpdateRestrictedToStopped")
    before = await status_of(call, "p1")
    code, body = await call("PATCH", "/v0/pipelines/p1", json={"description": "hello"})
    # Description and tags are client metadata: editable anytime, and they bump nothing.
    assert code == 200 and body["description"] == "hello" and body["version"] == 1
    assert body["refresh_version"] == before["refresh_version"]
    # The same program again changes nothing, so it is accepted while running.
    assert (await put(call, "p1", description="hello"))[0] == 200


async def test_delete_needs_fully_stopped_and_cleared_storage(call: Call) -> None:
    await running(call, "p1")
    error(*await call("DELETE", "/v0/pipelines/p1"), 400, "DeleteRestrictedToFullyStopped")
    error(*await call("POST", "/v0/pipelines/p1/clear"), 400, "StorageStatusImmutableUnlessStopped")
    assert (await call("POST", "/v0/pipelines/p1/stop?force=true"))[0] == 202
    assert (await status_of(call, "p1"))["storage_status"] == "InUse"
    error(*await call("DELETE", "/v0/pipelines/p1"), 400, "DeleteRestrictedToClearedStorage")
    assert (await call("POST", "/v0/pipelines/p1/clear"))[0] == 202
    assert (await status_of(call, "p1"))["storage_status"] == "Cleared"
    assert (await call("DELETE", "/v0/pipelines/p1"))[0] == 200
    error(*await call("GET", "/v0/pipelines/p1"), 404, "UnknownPipelineName")


# ------------------------------------------------------------------------- state machine


async def test_start_paused_then_resume_and_pause(call: Call) -> None:
    await running(call, "p1", initial="paused")
    body = await status_of(call, "p1")
    assert body["deployment_desired_status"] == "Paused"
    assert body["deployment_initial"] == "Paused"
    assert (await call("POST", "/v0/pipelines/p1/resume"))[0] == 202
    assert (await status_of(call, "p1"))["deployment_status"] == "Running"
    assert (await call("POST", "/v0/pipelines/p1/pause"))[0] == 202
    assert (await call("POST", "/v0/pipelines/p1/pause"))[0] == 202
    assert (await status_of(call, "p1"))["deployment_status"] == "Paused"


async def test_start_while_deployed_is_idempotent_but_initial_is_immutable(call: Call) -> None:
    await running(call, "p1")
    assert (await call("POST", "/v0/pipelines/p1/start?initial=running"))[0] == 202
    code, body = await call("POST", "/v0/pipelines/p1/start?initial=paused")
    error(code, body, 400, "InitialImmutableUnlessStopped")


async def test_stop_needs_force_in_open_source(call: Call) -> None:
    await running(call, "p1")
    for path in ("/v0/pipelines/p1/stop", "/v0/pipelines/p1/stop?force=false"):
        error(*await call("POST", path), 501, "EnterpriseFeature")
    assert (await status_of(call, "p1"))["deployment_status"] == "Running"
    assert (await call("POST", "/v0/pipelines/p1/stop?force=true"))[0] == 202
    body = await status_of(call, "p1")
    assert body["deployment_status"] == "Stopped" and body["deployment_desired_status"] == "Stopped"
    # Stopping a stopped pipeline is fine too.
    assert (await call("POST", "/v0/pipelines/p1/stop?force=true"))[0] == 202


async def test_pause_and_resume_need_a_deployed_pipeline(call: Call) -> None:
    await put(call, "p1")
    for action in ("pause", "resume"):
        body = error(
            *await call("POST", f"/v0/pipelines/p1/{action}"), 503, "PipelineInteractionNotDeployed"
        )
        assert body["details"] == {
            "pipeline_name": "p1",
            "status": "Stopped",
            "desired_status": "Stopped",
        }
    error(*await call("GET", "/v0/pipelines/p1/stats"), 503, "PipelineInteractionNotDeployed")


async def test_transitions_are_asynchronous_with_a_delay(
    emulator: FelderaEmulator, call: Call
) -> None:
    emulator.delay = 0.02
    emulator.compile_delay = 0.02
    code, body = await put(call, "p1")
    assert code == 201 and body["program_status"] == "Pending"
    await wait_for(call, "p1", "program_status", "Success")
    seen: list[str] = []
    assert (await call("POST", "/v0/pipelines/p1/start"))[0] == 202
    body = await status_of(call, "p1")
    # The 202 records the wish; the status follows later.
    assert (body["deployment_status"], body["deployment_desired_status"]) == ("Stopped", "Running")
    deadline = time.monotonic() + 5
    while (status := (await status_of(call, "p1"))["deployment_status"]) != "Running":
        if not seen or seen[-1] != status:
            seen.append(status)
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    assert set(seen) <= {"Stopped", "Provisioning", "Initializing"}
    assert (await call("POST", "/v0/pipelines/p1/stop?force=true"))[0] == 202
    # Still on its way down: a start now is refused.
    error(*await call("POST", "/v0/pipelines/p1/start"), 400, "IllegalPipelineAction")
    await wait_for(call, "p1", "deployment_status", "Stopped")
    assert (await call("POST", "/v0/pipelines/p1/start"))[0] == 202


async def test_clearing_storage_takes_a_step_with_a_delay(
    emulator: FelderaEmulator, call: Call
) -> None:
    await running(call, "p1")
    await call("POST", "/v0/pipelines/p1/stop?force=true")
    emulator.delay = 0.02
    assert (await call("POST", "/v0/pipelines/p1/clear"))[0] == 202
    assert (await status_of(call, "p1"))["storage_status"] == "Clearing"
    await wait_for(call, "p1", "storage_status", "Cleared")


async def test_fatal_error_stops_the_pipeline_and_start_dismisses_it(
    emulator: FelderaEmulator, call: Call
) -> None:
    await running(call, "p1")
    emulator.fail_pipeline("p1", "disk full")
    body = await status_of(call, "p1")
    assert body["deployment_status"] == "Stopped"
    assert body["deployment_error"]["message"] == "disk full"
    assert (await call("POST", "/v0/pipelines/p1/start"))[0] == 202
    assert (await status_of(call, "p1"))["deployment_error"] is None


# ------------------------------------------------------------------------------ connectors


async def test_connector_errors(call: Call) -> None:
    # The action is checked before the pipeline is looked up.
    body = error(
        *await call("POST", "/v0/pipelines/nope/tables/orders/connectors/live/resume"),
        400,
        "InvalidConnectorAction",
    )
    assert body["details"] == {"action": "resume"}
    await put(call, "p1")
    body = error(
        *await call("POST", "/v0/pipelines/p1/tables/orders/connectors/live/start"),
        503,
        "PipelineInteractionNotDeployed",
    )
    assert body["details"] == {
        "pipeline_name": "p1",
        "status": "Stopped",
        "desired_status": "Stopped",
    }
    code, _ = await call("POST", "/v0/pipelines/p1/start")
    assert code == 202
    body = error(
        *await call("POST", "/v0/pipelines/p1/tables/orders/connectors/nope/start"),
        404,
        "UnknownInputEndpoint",
    )
    assert body["details"] == {"endpoint_name": "orders.nope"}
    body = error(
        *await call("GET", "/v0/pipelines/p1/tables/nope/connectors/live/stats"),
        404,
        "UnknownInputEndpoint",
    )
    assert body["details"] == {"endpoint_name": "nope.live"}
    error(
        *await call("POST", "/v0/pipelines/p1/views/big_orders/connectors/nope/pause"),
        404,
        "UnknownOutputEndpoint",
    )


async def test_connector_actions_are_idempotent_with_empty_200(call: Call) -> None:
    await running(call, "p1")
    for _ in range(2):
        assert await call("POST", "/v0/pipelines/p1/tables/orders/connectors/backfill/pause") == (
            200,
            None,
        )
    assert (await input_flags(call, "p1"))["orders.backfill"] is True
    code, stats = await call("GET", "/v0/pipelines/p1/tables/orders/connectors/backfill/stats")
    assert code == 200 and stats["endpoint_name"] == "orders.backfill" and stats["paused"] is True
    assert stats["config"] == {"stream": "orders"}


async def test_sql_paused_flag_and_unnamed_connectors_after_start(call: Call) -> None:
    await running(call, "p1")
    assert await input_flags(call, "p1") == {
        "orders.backfill": False,
        "orders.live": True,
        "MyTable.c1": False,
        "anon.unnamed-0": True,
        "anon.unnamed-1": False,
    }


@pytest.mark.parametrize(
    "segment",
    [quote('"MyTable"', safe=""), "%22MyTable%22"],
)
async def test_quoted_table_is_written_quoted_in_the_path(call: Call, segment: str) -> None:
    await running(call, "p1")
    path = f"/v0/pipelines/p1/tables/{segment}/connectors/c1/pause"
    assert (await call("POST", path))[0] == 200
    assert (await input_flags(call, "p1"))["MyTable.c1"] is True


@pytest.mark.parametrize("segment", ["MyTable", "mytable", "%22mytable%22"])
async def test_quoted_table_does_not_match_unquoted_or_other_case(call: Call, segment: str) -> None:
    await running(call, "p1")
    path = f"/v0/pipelines/p1/tables/{segment}/connectors/c1/pause"
    error(*await call("POST", path), 404, "UnknownInputEndpoint")


@pytest.mark.parametrize("segment", ["orders", "ORDERS", "Orders", "%22orders%22"])
async def test_unquoted_table_matches_any_case(call: Call, segment: str) -> None:
    await running(call, "p1")
    path = f"/v0/pipelines/p1/tables/{segment}/connectors/backfill/pause"
    assert (await call("POST", path))[0] == 200
    assert (await input_flags(call, "p1"))["orders.backfill"] is True


@pytest.mark.parametrize(
    ("pipeline_paused", "connector_paused", "active"),
    [(True, True, False), (True, False, False), (False, True, False), (False, False, True)],
)
async def test_connector_is_active_only_when_pipeline_and_connector_run(
    call: Call, pipeline_paused: bool, connector_paused: bool, active: bool
) -> None:
    await running(call, "p1", initial="paused" if pipeline_paused else "running")
    base = "/v0/pipelines/p1/tables/orders/connectors/live"
    action = "pause" if connector_paused else "start"
    assert (await call("POST", f"{base}/{action}"))[0] == 200
    path = f"{base}/stats"
    _, first = await call("GET", path)
    _, second = await call("GET", path)
    assert second["paused"] is connector_paused
    moved = second["metrics"]["total_records"] > first["metrics"]["total_records"]
    assert moved is active
    _, stats = await call("GET", "/v0/pipelines/p1/stats")
    assert stats["global_metrics"]["state"] == ("Paused" if pipeline_paused else "Running")


async def test_output_connector_pause_shows_in_stats(call: Call) -> None:
    await running(call, "p1")
    path = "/v0/pipelines/p1/views/big_orders/connectors/sink/pause"
    assert (await call("POST", path))[0] == 200
    _, stats = await call("GET", "/v0/pipelines/p1/stats")
    assert stats["outputs"] == [stats["outputs"][0]]
    assert stats["outputs"][0]["endpoint_name"] == "big_orders.sink"
    assert stats["outputs"][0]["paused"] is True
    _, one = await call("GET", "/v0/pipelines/p1/views/big_orders/connectors/sink/stats")
    assert one["paused"] is True


# --------------------------------------------------------------------------- restarts


async def restart(call: Call, name: str) -> None:
    assert (await call("POST", f"/v0/pipelines/{name}/stop?force=true"))[0] == 202
    await wait_for(call, name, "deployment_status", "Stopped")
    assert (await call("POST", f"/v0/pipelines/{name}/start"))[0] == 202
    await wait_for(call, name, "deployment_status", "Running")


async def test_restart_restores_flags_from_checkpoint_when_restore_is_checkpoint(
    emulator: FelderaEmulator, call: Call
) -> None:
    emulator.restore = "checkpoint"
    await running(call, "p1")
    await call("POST", "/v0/pipelines/p1/tables/orders/connectors/live/start")
    await call("POST", "/v0/pipelines/p1/tables/orders/connectors/backfill/pause")
    await call("POST", "/v0/pipelines/p1/stop?force=true")
    # Retained but unreadable while stopped.
    error(
        *await call("GET", "/v0/pipelines/p1/tables/orders/connectors/live/stats"),
        503,
        "PipelineInteractionNotDeployed",
    )
    await call("POST", "/v0/pipelines/p1/start")
    flags = await input_flags(call, "p1")
    assert flags["orders.live"] is False and flags["orders.backfill"] is True


async def test_restart_resets_flags_to_sql_when_restore_is_sql(
    emulator: FelderaEmulator, call: Call
) -> None:
    emulator.restore = "sql"
    await running(call, "p1")
    await call("POST", "/v0/pipelines/p1/tables/orders/connectors/live/start")
    await call("POST", "/v0/pipelines/p1/tables/orders/connectors/backfill/pause")
    await restart(call, "p1")
    flags = await input_flags(call, "p1")
    assert flags["orders.live"] is True and flags["orders.backfill"] is False


async def test_restore_mode_is_switchable_over_http(emulator: FelderaEmulator, call: Call) -> None:
    assert await call("GET", "/_emulator/settings") == (
        200,
        {
            "restore": "auto",
            "delay": 0.0,
            "compile_delay": 0.0,
            "edition": "open-source",
            "platform_version": "0.369.0",
        },
    )
    code, body = await call("PATCH", "/_emulator/settings", json={"restore": "sql"})
    assert code == 200 and body["restore"] == "sql" and emulator.restore == "sql"
    assert (await call("PATCH", "/_emulator/settings", json={"restore": "nope"}))[0] == 400
    # A refused PATCH changes nothing, not even the settings it got right.
    bad = {"delay": 1.0, "edition": "community"}
    assert (await call("PATCH", "/_emulator/settings", json=bad))[0] == 400
    assert emulator.delay == 0.0 and emulator.edition == "open-source"


async def test_cleared_storage_or_changed_connector_forgets_the_checkpoint(
    emulator: FelderaEmulator, call: Call
) -> None:
    emulator.restore = "checkpoint"
    await running(call, "p1")
    await call("POST", "/v0/pipelines/p1/tables/orders/connectors/live/start")
    await call("POST", "/v0/pipelines/p1/tables/MyTable/connectors/c1/pause")  # 404: quoted
    await call("POST", "/v0/pipelines/p1/tables/%22MyTable%22/connectors/c1/pause")
    await call("POST", "/v0/pipelines/p1/stop?force=true")
    # A changed config for orders.live drops its checkpointed flag; MyTable.c1 keeps its own.
    changed = SQL.replace('"topic": "it\'\'s orders"', '"topic": "other"')
    assert changed != SQL
    assert (await put(call, "p1", changed))[0] == 200
    await call("POST", "/v0/pipelines/p1/start")
    flags = await input_flags(call, "p1")
    assert flags["orders.live"] is True and flags["MyTable.c1"] is True
    await call("POST", "/v0/pipelines/p1/stop?force=true")
    await call("POST", "/v0/pipelines/p1/clear")
    await call("POST", "/v0/pipelines/p1/start")
    assert (await input_flags(call, "p1"))["MyTable.c1"] is False


async def test_drift_hook_flips_a_flag_behind_the_clients_back(
    emulator: FelderaEmulator, call: Call
) -> None:
    await running(call, "p1")
    emulator.reset_counts()
    emulator.set_connector_paused("p1", "orders", "backfill", True)
    assert (await input_flags(call, "p1"))["orders.backfill"] is True
    body = {"pipeline": "p1", "table": "ORDERS", "connector": "backfill", "paused": False}
    assert (await call("POST", "/_emulator/connector", json=body))[0] == 200
    assert (await input_flags(call, "p1"))["orders.backfill"] is False
    assert emulator.request_counts() == {count_key("GET", ROUTE_STATS): 2}


async def test_flag_planted_while_stopped_comes_back_on_restart(
    emulator: FelderaEmulator, call: Call
) -> None:
    await put(call, "p1")
    emulator.set_connector_paused("p1", "orders", "backfill", True)
    assert (await call("POST", "/v0/pipelines/p1/start"))[0] == 202
    assert (await input_flags(call, "p1"))["orders.backfill"] is True


# ------------------------------------------------------------------------------- auth


async def test_api_key_roles() -> None:
    emulator = FelderaEmulator(api_keys={"apikey:w": "write", "apikey:r": "read"})
    url = await emulator.start()
    try:
        async with aiohttp.ClientSession(url) as s:

            async def call(method: str, path: str, key: str | None = None) -> tuple[int, Any]:
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                body = {"name": "p1", "program_code": SQL} if method == "PUT" else None
                async with s.request(method, path, headers=headers, json=body) as resp:
                    text = await resp.text()
                    return resp.status, (await resp.json()) if text else None

            assert (await call("GET", "/healthz"))[0] == 200
            error(*await call("GET", "/v0/pipelines"), 401, "AuthenticationFailed")
            error(*await call("GET", "/v0/pipelines", "apikey:x"), 401, "AuthenticationFailed")
            error(
                *await call("PUT", "/v0/pipelines/p1", "apikey:r"), 403, "InsufficientPermissions"
            )
            assert (await call("PUT", "/v0/pipelines/p1", "apikey:w"))[0] == 201
            assert (await call("GET", "/v0/pipelines/p1", "apikey:r"))[0] == 200
            code, body = await call("POST", "/v0/pipelines/p1/start", "apikey:r")
            error(code, body, 403, "InsufficientPermissions")
            assert (await call("POST", "/v0/pipelines/p1/start", "apikey:w"))[0] == 202
            assert (await call("GET", "/v0/pipelines/p1/stats", "apikey:r"))[0] == 200
            path = "/v0/pipelines/p1/tables/orders/connectors/live/start"
            error(*await call("POST", path, "apikey:r"), 403, "InsufficientPermissions")
            assert (await call("POST", path, "apikey:w"))[0] == 200
            # The control endpoints need no key.
            assert (await call("GET", "/_emulator/requests"))[0] == 200
    finally:
        await emulator.stop()


# ------------------------------------------------------------------ faults and counts


async def test_status_fault_answers_with_feldera_error_until_its_count_runs_out(
    emulator: FelderaEmulator, call: Call
) -> None:
    await put(call, "p1")
    emulator.inject_fault(
        ROUTE_PIPELINE, method="GET", status=503, error_code="PipelineUnavailable", count=2
    )
    for _ in range(2):
        error(*await call("GET", "/v0/pipelines/p1"), 503, "PipelineUnavailable")
    # Other methods on the same route are untouched by a GET fault.
    assert (await call("PATCH", "/v0/pipelines/p1", json={}))[0] == 200
    assert (await call("GET", "/v0/pipelines/p1"))[0] == 200


async def test_fault_without_count_limit_until_cleared(
    emulator: FelderaEmulator, call: Call
) -> None:
    emulator.inject_fault(ROUTE_PIPELINES, status=500, error_code="Boom", count=0)
    for _ in range(3):
        error(*await call("GET", "/v0/pipelines"), 500, "Boom")
    emulator.clear_faults()
    assert (await call("GET", "/v0/pipelines"))[0] == 200


async def test_latency_fault_delays_the_answer(emulator: FelderaEmulator, call: Call) -> None:
    emulator.inject_fault(ROUTE_PIPELINES, latency=0.2)
    started = time.monotonic()
    assert (await call("GET", "/v0/pipelines"))[0] == 200
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    assert (await call("GET", "/v0/pipelines"))[0] == 200
    assert time.monotonic() - started < 0.2


async def test_drop_fault_closes_the_connection(emulator: FelderaEmulator, call: Call) -> None:
    await running(call, "p1")
    # aiohttp retries an idempotent request once after a disconnect: two drops make it visible.
    emulator.inject_fault(ROUTE_STATS, drop=True, count=2)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call("GET", "/v0/pipelines/p1/stats")
    emulator.inject_fault(ROUTE_START, drop=True)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call("POST", "/v0/pipelines/p1/start")
    assert (await call("GET", "/v0/pipelines/p1/stats"))[0] == 200


async def test_faults_and_counts_over_http(emulator: FelderaEmulator, call: Call) -> None:
    await running(call, "p1")
    fault = {
        "endpoint": ROUTE_INPUT_CONNECTOR_ACTION,
        "status": 503,
        "error_code": "PipelineUnavailable",
    }
    assert (await call("POST", "/_emulator/faults", json=fault))[0] == 201
    path = "/v0/pipelines/p1/tables/orders/connectors/live/start"
    error(*await call("POST", path), 503, "PipelineUnavailable")
    assert (await call("POST", path))[0] == 200
    assert (await call("POST", "/_emulator/faults", json={**fault, "count": 5}))[0] == 201
    assert (await call("DELETE", "/_emulator/faults"))[0] == 200
    assert (await call("POST", path))[0] == 200
    bad = {"endpoint": "/v0/pipelines/{name}"}
    assert (await call("POST", "/_emulator/faults", json=bad))[0] == 400
    code, body = await call("GET", "/_emulator/requests")
    assert code == 200
    assert body["counts"] == {
        "PUT /v0/pipelines/{pipeline}": 1,
        "POST /v0/pipelines/{pipeline}/start": 1,
        "GET /v0/pipelines/{pipeline}": 1,
        "POST /v0/pipelines/{pipeline}/tables/{table}/connectors/{connector}/{action}": 3,
    }
    # Every counted request in the second it arrived (these 6 within a few).
    assert sum(body["per_second"].values()) == 6
    assert body["list_marks"] == []  # no status list was made
    assert (await call("DELETE", "/_emulator/requests"))[0] == 200
    empty = {"counts": {}, "per_second": {}, "list_marks": []}
    assert (await call("GET", "/_emulator/requests")) == (200, empty)
    assert emulator.request_counts() == {}


async def test_every_status_list_marks_the_counts_before_it() -> None:
    emulator = FelderaEmulator()
    url = await emulator.start()
    try:
        async with aiohttp.ClientSession() as session:
            for path in ("/v0/pipelines", "/v0/config", "/v0/pipelines"):
                async with session.get(url + path) as response:
                    assert response.status == 200
        marks = emulator.list_marks()
        assert [counts for _, counts in marks] == [
            {},
            {"GET /v0/pipelines": 1, "GET /v0/config": 1},
        ]
        assert marks[0][0] <= marks[1][0]
        assert sum(emulator.per_second().values()) == 3
    finally:
        await emulator.stop()


async def test_action_log_records_each_action_with_its_arrival_time(
    emulator: FelderaEmulator, call: Call
) -> None:
    await running(call, "p1")
    before = time.time()
    assert (await call("POST", "/v0/pipelines/p1/tables/Orders/connectors/live/start"))[0] == 200
    assert (await call("POST", "/v0/pipelines/p1/views/big_orders/connectors/sink/pause"))[0] == 200
    assert (await call("POST", "/v0/pipelines/p1/tables/orders/connectors/nope/pause"))[0] == 404
    await call("GET", "/v0/pipelines/p1/stats")  # reads are not actions
    after = time.time()
    put_, start, *connectors = emulator.actions()
    assert (put_.pipeline, put_.action, put_.route, put_.status) == (
        "p1",
        "put",
        ROUTE_PIPELINE,
        201,
    )
    assert (start.pipeline, start.action, start.route, start.status) == (
        "p1",
        "start",
        ROUTE_START,
        202,
    )
    assert [(a.relation, a.connector, a.action, a.status) for a in connectors] == [
        ("Orders", "live", "start", 200),
        ("big_orders", "sink", "pause", 200),
        ("orders", "nope", "pause", 404),
    ]
    assert all(before <= a.wall <= after for a in connectors)
    assert [a.monotonic for a in connectors] == sorted(a.monotonic for a in connectors)
    code, body = await call("GET", "/_emulator/actions")
    assert code == 200 and len(body["actions"]) == 5
    assert body["actions"][2]["connector"] == "live" and body["actions"][2]["wall"] >= before
    assert (await call("DELETE", "/_emulator/actions"))[0] == 200
    assert emulator.actions() == []
    assert (await call("GET", "/_emulator/actions")) == (200, {"actions": []})


def test_unknown_fault_template_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown endpoint template"):
        FelderaEmulator().inject_fault("/v0/pipelines/{name}/stats")


def test_route_constants_are_the_count_key_templates() -> None:
    assert count_key("get", emu_module.ROUTE_PIPELINE) == "GET /v0/pipelines/{pipeline}"
    assert emu_module.ROUTE_INPUT_CONNECTOR_ACTION == (
        "/v0/pipelines/{pipeline}/tables/{table}/connectors/{connector}/{action}"
    )
    assert emu_module.ROUTE_STATS in emu_module.ROUTES


# ------------------------------------------------------------------------- scale


async def test_status_list_of_a_thousand_pipelines_is_cheap(
    emulator: FelderaEmulator, session: aiohttp.ClientSession, call: Call
) -> None:
    small = "CREATE TABLE t (x INT) WITH ('connectors' = '[{\"name\": \"c\"}]');"

    async def create(i: int) -> None:
        async with session.put(
            f"/v0/pipelines/p{i}", json={"name": f"p{i}", "program_code": small}
        ) as resp:
            assert resp.status == 201

    for start in range(0, 1000, 100):
        await asyncio.gather(*(create(i) for i in range(start, start + 100)))
    started = time.monotonic()
    for _ in range(3):
        code, body = await call("GET", "/v0/pipelines?selector=status")
        assert code == 200 and len(body) == 1000
    assert (time.monotonic() - started) / 3 < 0.5


# ----------------------------------------------------------------------- as a process


def _spawn(argv: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ}
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # Blocks until the line or EOF; the pytest timeout bounds it.
    if not line.startswith("feldera emulator listening on "):
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"unexpected first line {line!r}; stderr: {err}")
    return proc, line.rsplit(" ", 1)[1].strip()


@pytest.mark.parametrize(
    ("argv", "stop_signal"),
    [
        pytest.param(
            [sys.executable, "-m", "feldera_operator.cli", "emulator", "feldera"],
            signal.SIGTERM,
            id="cli",
        ),
        pytest.param(
            [sys.executable, "-m", "feldera_sandbox.feldera_emulator"],
            signal.SIGINT,
            id="module",
        ),
    ],
)
async def test_runs_as_a_separate_process(argv: list[str], stop_signal: signal.Signals) -> None:
    proc, url = _spawn([*argv, "--port", "0", "--api-key", "k1", "--read-api-key", "k2"])
    try:
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        async with aiohttp.ClientSession(url) as s:
            async with s.get("/healthz") as resp:
                assert resp.status == 200
            async with s.get("/v0/pipelines") as resp:
                assert resp.status == 401
            async with s.get("/v0/pipelines", headers={"Authorization": "Bearer k2"}) as resp:
                assert resp.status == 200 and await resp.json() == []
    finally:
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=10) == 0
