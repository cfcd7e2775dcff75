"""The Feldera client against the project's Feldera emulator, in process, over real HTTP.

Where test_feldera_client.py pins the client's own wire behaviour, this pins that the client and
the emulator agree on the API as feldera-api.md describes it: the lifecycle a reconcile drives,
connector actions on a quoted table, and the typed error each documented failure becomes.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from feldera_operator.feldera_client import (
    FelderaAuthError,
    FelderaBadRequest,
    FelderaClient,
    FelderaError,
    FelderaForbidden,
    FelderaNotDeployed,
    FelderaNotFound,
    FelderaServerError,
    FelderaUnreachable,
    Pipeline,
)
from feldera_sandbox.feldera_emulator import (
    ROUTE_CONFIG,
    ROUTE_PIPELINES,
    ROUTE_START,
    ROUTE_STATS,
    FelderaEmulator,
    count_key,
)

WRITE_KEY = "apikey:" + "W" * 64 + "riteKeyMark" + "w" * 53
READ_KEY = "apikey:" + "R" * 64 + "eadKeyMark" + "r" * 54
KEY_MARKS = ("riteKeyMark", "eadKeyMark")

PIPELINE = "orders_main"
SQL = """
CREATE TABLE orders (id INT) WITH ('connectors' = '[
  {"name": "live", "paused": true, "transport": {"name": "datagen", "config": {}}},
  {"name": "backfill", "transport": {"name": "datagen", "config": {}}}]');
CREATE TABLE "MyTable" (x INT) WITH ('connectors' = '[
  {"name": "feed", "paused": true, "transport": {"name": "datagen", "config": {}}}]');
CREATE VIEW big_orders WITH ('connectors' = '[
  {"name": "sink", "transport": {"name": "file_output", "config": {"path": "/dev/null"}},
   "format": {"name": "json"}}]') AS SELECT * FROM orders WHERE id > 100;
"""


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[FelderaEmulator, str]]:
    emu = FelderaEmulator(api_keys={WRITE_KEY: "write", READ_KEY: "read"})
    url = await emu.start()
    yield emu, url
    await emu.stop()


@pytest.fixture
async def client(emulator: tuple[FelderaEmulator, str]) -> AsyncIterator[FelderaClient]:
    async with FelderaClient(emulator[1], api_key=WRITE_KEY, timeout=2.0) as c:
        yield c


async def _eventually(
    check: Callable[[], Awaitable[bool]], what: str, deadline: float = 5.0
) -> None:
    """Actions are asynchronous (202): poll until the state follows, within a deadline."""
    until = time.monotonic() + deadline
    while not await check():
        if time.monotonic() > until:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _status_is(client: FelderaClient, status: str) -> None:
    async def check() -> bool:
        return (await client.get_pipeline(PIPELINE)).get("deployment_status") == status

    await _eventually(check, f"deployment_status {status}")


async def _compiled(client: FelderaClient) -> Pipeline:
    created = await client.put_pipeline(PIPELINE, {"name": PIPELINE, "program_code": SQL})
    assert created["name"] == PIPELINE

    async def check() -> bool:
        return (await client.get_pipeline(PIPELINE)).get("program_status") == "Success"

    await _eventually(check, "compilation")
    return created


def _paused_flags(stats: Any, side: str = "inputs") -> dict[str, bool]:
    return {e["endpoint_name"]: e["paused"] for e in stats[side]}


async def test_server_identity_and_health(client: FelderaClient) -> None:
    config = await client.config()
    assert config["edition"] == "Open source"
    assert config["version"]
    assert (await client.healthz())["status"] == "healthy"


async def test_healthz_needs_no_key(emulator: tuple[FelderaEmulator, str]) -> None:
    async with FelderaClient(emulator[1]) as anonymous:
        assert (await anonymous.healthz())["status"] == "healthy"


async def test_lifecycle_with_connector_actions_on_a_quoted_table(client: FelderaClient) -> None:
    await _compiled(client)
    assert [p["name"] for p in await client.list_pipelines()] == [PIPELINE]
    info = (await client.get_pipeline(PIPELINE, selector="all"))["program_info"]
    assert set(info["input_connectors"]) == {"orders.live", "orders.backfill", "MyTable.feed"}

    await client.start(PIPELINE, "paused")
    await _status_is(client, "Paused")
    stats = await client.stats(PIPELINE)
    assert stats["global_metrics"]["state"] == "Paused"
    assert _paused_flags(stats) == {
        "orders.live": True,
        "orders.backfill": False,
        "MyTable.feed": True,
    }

    # The quoted table, written as in SQL: the client sends %22MyTable%22.
    await client.input_connector_action(PIPELINE, '"MyTable"', "feed", "start")
    await client.input_connector_action(PIPELINE, "orders", "live", "start")
    await client.input_connector_action(PIPELINE, "orders", "backfill", "pause")
    assert _paused_flags(await client.stats(PIPELINE)) == {
        "orders.live": False,
        "orders.backfill": True,
        "MyTable.feed": False,
    }
    # Idempotent: the same action again is accepted and changes nothing.
    await client.input_connector_action(PIPELINE, '"MyTable"', "feed", "start")

    await client.resume(PIPELINE)
    await _status_is(client, "Running")
    await client.output_connector_action(PIPELINE, "big_orders", "sink", "pause")
    assert _paused_flags(await client.stats(PIPELINE), "outputs") == {"big_orders.sink": True}
    await client.output_connector_action(PIPELINE, "big_orders", "sink", "start")
    assert _paused_flags(await client.stats(PIPELINE), "outputs") == {"big_orders.sink": False}

    await client.pause(PIPELINE)
    await _status_is(client, "Paused")
    await client.stop(PIPELINE)
    await _status_is(client, "Stopped")


async def test_unknown_pipeline_is_not_found_for_the_pipeline(client: FelderaClient) -> None:
    with pytest.raises(FelderaNotFound) as info:
        await client.get_pipeline("nope")
    assert info.value.is_pipeline and info.value.status == 404
    with pytest.raises(FelderaNotFound) as info:
        await client.input_connector_action("nope", "orders", "live", "start")
    assert info.value.is_pipeline


async def test_unknown_connector_names_the_endpoint(client: FelderaClient) -> None:
    await _compiled(client)
    await client.start(PIPELINE, "running")
    await _status_is(client, "Running")
    with pytest.raises(FelderaNotFound) as info:
        await client.input_connector_action(PIPELINE, "orders", "nope", "pause")
    assert info.value.is_connector and info.value.endpoint_name == "orders.nope"
    # Unquoted, the name folds to lower case: a quoted table must be addressed with its quotes.
    with pytest.raises(FelderaNotFound) as info:
        await client.input_connector_action(PIPELINE, "MyTable", "feed", "pause")
    assert info.value.endpoint_name == "mytable.feed"
    with pytest.raises(FelderaNotFound) as info:
        await client.output_connector_action(PIPELINE, "big_orders", "nope", "pause")
    assert info.value.error_code == "UnknownOutputEndpoint"
    assert info.value.endpoint_name == "big_orders.nope"


async def test_stopped_pipeline_is_not_deployed(client: FelderaClient) -> None:
    await _compiled(client)
    for call in (
        lambda: client.stats(PIPELINE),
        lambda: client.pause(PIPELINE),
        lambda: client.input_connector_action(PIPELINE, "orders", "live", "start"),
    ):
        with pytest.raises(FelderaNotDeployed) as info:
            await call()
        assert info.value.error_code == "PipelineInteractionNotDeployed"
        assert info.value.deployment_status == "Stopped"
        assert info.value.retryable


async def test_graceful_stop_is_an_enterprise_feature(client: FelderaClient) -> None:
    await _compiled(client)
    with pytest.raises(FelderaServerError) as info:
        await client.stop(PIPELINE, force=False)
    assert (info.value.status, info.value.error_code) == (501, "EnterpriseFeature")
    assert not info.value.retryable


async def test_a_program_is_previewed_updated_cleared_and_deleted(client: FelderaClient) -> None:
    await _compiled(client)
    diff = await client.diff(PIPELINE, SQL + "CREATE VIEW v2 AS SELECT * FROM orders;")
    assert diff["program_diff"]["added_views"] == ["v2"]
    with pytest.raises(FelderaBadRequest) as info:
        await client.diff(PIPELINE, "CREATE TABLE t (x INT);\nCREATE VIEW v AS SELECT x FROM nope;")
    assert info.value.error_code == "InvalidNewProgramSql"
    assert isinstance(info.value.details, dict) and "error" in info.value.details
    patched = await client.patch_pipeline(PIPELINE, {"runtime_config": {"workers": 2}})
    assert patched["runtime_config"]["workers"] == 2
    await client.start(PIPELINE, "running")
    await _status_is(client, "Running")
    await client.stop(PIPELINE)
    await _status_is(client, "Stopped")
    assert (await client.get_pipeline(PIPELINE))["storage_status"] == "InUse"
    await client.clear(PIPELINE)

    async def cleared() -> bool:
        return (await client.get_pipeline(PIPELINE)).get("storage_status") == "Cleared"

    await _eventually(cleared, "storage cleared")
    await client.delete_pipeline(PIPELINE)
    with pytest.raises(FelderaNotFound):
        await client.get_pipeline(PIPELINE)


async def test_a_bootstrap_awaits_approval_and_is_approved_enterprise() -> None:
    emu = FelderaEmulator(api_keys={WRITE_KEY: "write"}, edition="enterprise")
    url = await emu.start()
    try:
        async with FelderaClient(url, api_key=WRITE_KEY, timeout=2.0) as client:

            async def compiled() -> bool:
                return (await client.get_pipeline(PIPELINE)).get("program_status") == "Success"

            # A materialized table: a new view over it can be bootstrapped from a checkpoint.
            old = "CREATE TABLE t (x INT) WITH ('materialized' = 'true');\n"
            await client.put_pipeline(PIPELINE, {"name": PIPELINE, "program_code": old})
            await _eventually(compiled, "compilation")
            await client.start(PIPELINE, "running")
            await _status_is(client, "Running")
            await client.stop(PIPELINE, force=False)  # suspends with a checkpoint
            await _status_is(client, "Stopped")
            new = old + "CREATE VIEW v2 AS SELECT * FROM t;"
            await client.patch_pipeline(PIPELINE, {"program_code": new})
            await _eventually(compiled, "compilation")
            await client.start(PIPELINE, "running", bootstrap_policy="await_approval")
            await _status_is(client, "AwaitingApproval")
            await client.approve(PIPELINE)
            await _status_is(client, "Running")
    finally:
        await emu.stop()


async def test_other_initial_while_deployed_is_a_bad_request(client: FelderaClient) -> None:
    await _compiled(client)
    await client.start(PIPELINE, "running")
    with pytest.raises(FelderaBadRequest) as info:
        await client.start(PIPELINE, "paused")
    assert info.value.error_code == "InitialImmutableUnlessStopped"


async def test_missing_or_wrong_key_is_an_auth_error(
    emulator: tuple[FelderaEmulator, str],
) -> None:
    for key in (None, "apikey:" + "x" * 128):
        async with FelderaClient(emulator[1], api_key=key) as c:
            with pytest.raises(FelderaAuthError) as info:
                await c.list_pipelines()
        assert info.value.error_code == "AuthenticationFailed"
        assert not info.value.retryable


async def test_read_key_may_look_but_not_act(
    emulator: tuple[FelderaEmulator, str], client: FelderaClient
) -> None:
    await _compiled(client)
    async with FelderaClient(emulator[1], api_key=READ_KEY) as reader:
        assert [p["name"] for p in await reader.list_pipelines()] == [PIPELINE]
        with pytest.raises(FelderaForbidden) as info:
            await reader.start(PIPELINE, "running")
    assert info.value.error_code == "InsufficientPermissions"


@pytest.mark.parametrize(
    ("status", "code", "cls", "retryable"),
    [
        (503, "PipelineUnavailable", FelderaNotDeployed, True),
        (503, "PipelineInteractionUnreachable", FelderaNotDeployed, True),
        (500, "UnknownInternalError", FelderaServerError, True),
        (502, None, FelderaServerError, True),
        (429, None, FelderaBadRequest, True),
    ],
)
async def test_injected_status_becomes_its_typed_error(
    emulator: tuple[FelderaEmulator, str],
    client: FelderaClient,
    status: int,
    code: str | None,
    cls: type[FelderaError],
    retryable: bool,
) -> None:
    emulator[0].inject_fault(ROUTE_STATS, status=status, error_code=code)
    with pytest.raises(FelderaError) as info:
        await client.stats(PIPELINE)
    assert type(info.value) is cls
    assert info.value.status == status
    assert info.value.retryable is retryable


async def test_dropped_connection_is_unreachable(
    emulator: tuple[FelderaEmulator, str], client: FelderaClient
) -> None:
    emu = emulator[0]
    # A GET is resent once by aiohttp on a closed connection: two drops make it unreachable.
    emu.inject_fault(ROUTE_PIPELINES, drop=True, count=2)
    with pytest.raises(FelderaUnreachable) as info:
        await client.list_pipelines()
    assert not info.value.timeout and info.value.status is None
    assert await client.list_pipelines() == []


async def test_a_get_survives_one_closed_connection(
    emulator: tuple[FelderaEmulator, str], client: FelderaClient
) -> None:
    emu = emulator[0]
    emu.inject_fault(ROUTE_PIPELINES, drop=True)
    assert await client.list_pipelines() == []
    assert emu.request_counts()[count_key("GET", ROUTE_PIPELINES)] == 2


async def test_an_action_is_never_resent(
    emulator: tuple[FelderaEmulator, str], client: FelderaClient
) -> None:
    emu = emulator[0]
    await _compiled(client)
    emu.inject_fault(ROUTE_START, drop=True)
    with pytest.raises(FelderaUnreachable):
        await client.start(PIPELINE, "running")
    assert emu.request_counts()[count_key("POST", ROUTE_START)] == 1


async def test_slow_answer_is_an_unreachable_timeout(
    emulator: tuple[FelderaEmulator, str],
) -> None:
    emulator[0].inject_fault(ROUTE_CONFIG, latency=1.0)
    async with FelderaClient(emulator[1], api_key=WRITE_KEY, timeout=0.2) as c:
        with pytest.raises(FelderaUnreachable) as info:
            await c.config()
    assert info.value.timeout and info.value.retryable


async def test_hook_templates_are_the_emulators_route_templates(
    emulator: tuple[FelderaEmulator, str],
) -> None:
    seen: list[tuple[str, int | None]] = []
    async with FelderaClient(
        emulator[1], api_key=WRITE_KEY, on_response=lambda t, s, _: seen.append((t, s))
    ) as c:
        await c.config()
        await c.list_pipelines()
        with pytest.raises(FelderaNotFound):
            await c.start("nope", "running")
    assert seen == [
        (count_key("GET", ROUTE_CONFIG), 200),
        (count_key("GET", ROUTE_PIPELINES), 200),
        (count_key("POST", ROUTE_START), 404),
    ]
    assert set(emulator[0].request_counts()) == {t for t, _ in seen}


async def test_no_error_from_the_emulator_shows_a_key(
    emulator: tuple[FelderaEmulator, str], client: FelderaClient
) -> None:
    emu, url = emulator
    await _compiled(client)
    errors: list[FelderaError] = []

    async def collect(call: Awaitable[object]) -> None:
        with pytest.raises(FelderaError) as info:
            await call
        errors.append(info.value)

    await collect(client.stats(PIPELINE))
    await collect(client.get_pipeline("nope"))
    await collect(client.stop(PIPELINE, force=False))
    emu.inject_fault(ROUTE_STATS, drop=True)
    await collect(client.stats(PIPELINE))
    async with FelderaClient(url, api_key=READ_KEY) as reader:
        await collect(reader.pause(PIPELINE))
    async with FelderaClient(url, api_key=WRITE_KEY.replace("W", "V")) as wrong:
        await collect(wrong.list_pipelines())
    for err in errors:
        rendered = "".join(traceback.format_exception(err)) + repr(err) + repr(vars(err))
        assert not any(mark in rendered for mark in KEY_MARKS), rendered
