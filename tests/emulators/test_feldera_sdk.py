"""Feldera's own Python SDK works against the emulator unchanged: the proof of its fidelity.

The SDK is synchronous (requests), so the emulator runs on an event loop in a thread of its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from feldera import FelderaClient, PipelineBuilder  # type: ignore[import-untyped]
from feldera.enums import (  # type: ignore[import-untyped]
    BootstrapPolicy,
    PipelineFieldSelector,
    PipelineStatus,
    ProgramStatus,
    StorageStatus,
)
from feldera.rest.errors import FelderaAPIError  # type: ignore[import-untyped]
from feldera.stats import PipelineStatistics  # type: ignore[import-untyped]

from feldera_sandbox.feldera_emulator import (
    ROUTE_CLUSTER_HEALTHZ,
    ROUTE_INPUT_CONNECTOR_ACTION,
    ROUTE_PIPELINE,
    FelderaEmulator,
    count_key,
)

SQL = """
CREATE TABLE orders (id BIGINT NOT NULL, amount INT) WITH ('connectors' = '[
  {"name": "backfill", "transport": {"name": "datagen", "config": {"plan": [{"limit": 10}]}}},
  {"name": "live", "paused": true, "transport": {"name": "kafka_input", "config": {}}}]');
CREATE MATERIALIZED VIEW big_orders WITH ('connectors' = '[{"name": "sink"}]')
AS SELECT * FROM orders WHERE amount > 10;
"""


@dataclass
class Served:
    emulator: FelderaEmulator
    url: str
    loop: asyncio.AbstractEventLoop


def _serve(emulator: FelderaEmulator) -> Iterator[Served]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="feldera-emulator", daemon=True)
    thread.start()
    try:
        url = asyncio.run_coroutine_threadsafe(emulator.start(), loop).result(timeout=10)
        yield Served(emulator, url, loop)
    finally:
        asyncio.run_coroutine_threadsafe(emulator.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def served() -> Iterator[Served]:
    yield from _serve(FelderaEmulator())


@pytest.fixture
def served_with_keys() -> Iterator[Served]:
    yield from _serve(FelderaEmulator(api_keys={"apikey:w": "write", "apikey:r": "read"}))


def _flags(stats: PipelineStatistics) -> dict[str, bool | None]:
    return {i.endpoint_name or "": i.paused for i in stats.inputs}


def test_sdk_creates_starts_reads_stats_toggles_connectors_and_stops(served: Served) -> None:
    client = FelderaClient(served.url)
    assert client.get_config().edition.value == "Open source"

    pipeline = PipelineBuilder(client, "sdk_orders", sql=SQL).create_or_replace()
    assert sorted(t.name for t in pipeline.tables()) == ["orders"]
    assert [v.name for v in pipeline.views()] == ["big_orders"]
    assert "orders.live" in pipeline.program_info()["input_connectors"]

    pipeline.start()
    assert pipeline.status() == PipelineStatus.RUNNING
    stats = pipeline.stats()
    assert stats.global_metrics.state == PipelineStatus.RUNNING
    assert _flags(stats) == {"orders.backfill": False, "orders.live": True}
    assert [o.endpoint_name for o in stats.outputs] == ["big_orders.sink"]

    pipeline.start_input_connector("orders", "live")
    assert pipeline.input_connector_stats("orders", "live").paused is False
    pipeline.pause_input_connector("orders", "backfill")
    assert pipeline.input_connector_stats("orders", "backfill").paused is True
    pipeline.pause_output_connector("big_orders", "sink")
    assert pipeline.output_connector_stats("big_orders", "sink").paused is True

    pipeline.pause()
    assert pipeline.status() == PipelineStatus.PAUSED
    pipeline.resume()
    assert pipeline.status() == PipelineStatus.RUNNING

    pipeline.stop(force=True)
    assert pipeline.status() == PipelineStatus.STOPPED
    pipeline.clear_storage()
    pipeline.delete()
    assert pipeline.status() == PipelineStatus.NOT_FOUND

    counts = served.emulator.request_counts()
    assert counts[count_key("POST", ROUTE_INPUT_CONNECTOR_ACTION)] == 2


def test_sdk_restart_in_open_source_takes_connector_flags_from_the_sql(served: Served) -> None:
    client = FelderaClient(served.url)
    pipeline = PipelineBuilder(client, "sdk_restart", sql=SQL).create_or_replace()
    pipeline.start_paused()
    assert pipeline.status() == PipelineStatus.PAUSED
    pipeline.start_input_connector("orders", "live")
    assert _flags(pipeline.stats())["orders.live"] is False
    pipeline.restart()  # stop(force=True) then start(): open source keeps no checkpoint
    assert pipeline.status() == PipelineStatus.RUNNING
    assert _flags(pipeline.stats())["orders.live"] is True


def test_sdk_sees_feldera_errors(served: Served) -> None:
    client = FelderaClient(served.url)
    with pytest.raises(FelderaAPIError) as info:
        client.get_pipeline_stats("missing")
    assert info.value.status_code == 404 and info.value.error_code == "UnknownPipelineName"

    pipeline = PipelineBuilder(client, "sdk_errors", sql=SQL).create_or_replace()
    pipeline.start()
    with pytest.raises(FelderaAPIError) as info:
        pipeline.pause_input_connector("orders", "nope")
    assert info.value.error_code == "UnknownInputEndpoint"
    assert info.value.details == {"endpoint_name": "orders.nope"}
    with pytest.raises(FelderaAPIError) as info:
        pipeline.stop(force=False)
    assert info.value.status_code == 501 and info.value.error_code == "EnterpriseFeature"

    with pytest.raises(RuntimeError, match="failed to compile"):
        PipelineBuilder(client, "sdk_bad", sql="CREATE TABLE t (x INT").create_or_replace()


def test_sdk_with_api_keys(served_with_keys: Served) -> None:
    writer = FelderaClient(served_with_keys.url, api_key="apikey:w")
    PipelineBuilder(writer, "sdk_auth", sql=SQL).create_or_replace()
    reader = FelderaClient(served_with_keys.url, api_key="apikey:r")
    assert [p.name for p in reader.pipelines()] == ["sdk_auth"]
    with pytest.raises(FelderaAPIError) as info:
        reader.start_pipeline("sdk_auth")
    assert info.value.status_code == 403 and info.value.error_code == "InsufficientPermissions"
    with pytest.raises(FelderaAPIError) as info:
        FelderaClient(served_with_keys.url, api_key="apikey:nope")
    assert info.value.status_code == 401


# ------------------------------------------------------------------ program management


MORE = SQL + "CREATE VIEW small_orders AS SELECT * FROM orders WHERE amount < 10;\n"
# Bootstrapping new views needs the state of the tables they read: materialized ones.
MATERIALIZED = SQL.replace("WITH ('connectors'", "WITH ('materialized' = 'true', 'connectors'")
MATERIALIZED_MORE = MATERIALIZED + "CREATE VIEW small_orders AS SELECT * FROM orders;\n"


@pytest.fixture
def served_enterprise() -> Iterator[Served]:
    yield from _serve(FelderaEmulator(edition="enterprise"))


def test_sdk_waits_for_compilation_and_raises_sql_errors_with_their_message(
    served: Served,
) -> None:
    served.emulator.compile_delay = 0.05
    client = FelderaClient(served.url)
    pipeline = PipelineBuilder(client, "sdk_compile", sql=SQL).create_or_replace()
    assert pipeline.program_status() == ProgramStatus.Success
    assert "orders.live" in pipeline.program_info()["input_connectors"]

    served.emulator.compile_delay = 0.0  # the SDK polls once a second: spare the test one
    bad = SQL + "CREATE VIEW broken AS SELECT * FROM nowhere;"
    with pytest.raises(RuntimeError) as info:
        PipelineBuilder(client, "sdk_bad_sql", sql=bad).create_or_replace()
    message = str(info.value)
    assert "Error in SQL statement" in message and "Object 'nowhere' not found" in message
    assert "^^^^^^^" in message  # the snippet, underlined


def test_sdk_previews_a_change_with_diff(served: Served) -> None:
    client = FelderaClient(served.url)
    pipeline = PipelineBuilder(client, "sdk_diff", sql=SQL).create_or_replace()
    diff = pipeline.diff(program_code=MORE)
    assert diff["program_diff"]["added_views"] == ["small_orders"]
    # Without a program the SDK sends a JSON `null`, which Feldera's JSON extractor refuses
    # with a plain-text 400 before the handler could default to the current program.
    with pytest.raises(FelderaAPIError) as info:
        client.pipeline_diff("sdk_diff")
    assert info.value.status_code == 400 and "Json deserialize error" in str(info.value)
    assert pipeline.diff(program_code=SQL)["program_diff"]["added_views"] == []
    with pytest.raises(FelderaAPIError) as info:
        pipeline.diff(program_code="CREATE TABLE t (x INT,);")
    assert info.value.status_code == 400 and info.value.error_code == "InvalidNewProgramSql"
    result = client.validate_program("CREATE TABLE t (x INT,);")
    assert result["SqlError"]["info"]["messages"][0]["start_column"] == 23


def test_sdk_modified_pipeline_awaits_approval_and_runs_once_approved(
    served_enterprise: Served,
) -> None:
    client = FelderaClient(served_enterprise.url)
    assert client.get_config().edition.value == "Enterprise"
    pipeline = PipelineBuilder(client, "sdk_approve", sql=MATERIALIZED).create_or_replace()
    pipeline.start()
    pipeline.start_input_connector("orders", "live")
    pipeline.stop(force=False)  # suspend: checkpoint, then stop
    assert pipeline.storage_status() == StorageStatus.INUSE
    pipeline.modify(sql=MATERIALIZED_MORE)
    pipeline.start()  # returns once Running or AwaitingApproval
    assert pipeline.status() == PipelineStatus.AWAITINGAPPROVAL
    approval = pipeline.deployment_runtime_status_details()["approval_diff"]
    assert approval["program_diff"]["added_views"] == ["small_orders"]
    pipeline.approve()
    pipeline.wait_for_status(PipelineStatus.RUNNING, timeout=10)
    assert _flags(pipeline.stats())["orders.live"] is False  # from the checkpoint


def test_sdk_reloadable_tables_approve_a_table_reload(served_enterprise: Served) -> None:
    client = FelderaClient(served_enterprise.url)
    pipeline = PipelineBuilder(client, "sdk_reload", sql=MATERIALIZED).create_or_replace()
    pipeline.start()
    pipeline.stop(force=False)
    pipeline.modify(sql=MATERIALIZED.replace("amount INT)", "amount BIGINT)"))
    # The SDK starts with await_approval, checks the diff's modified tables, then approves.
    pipeline.start(bootstrap_policy=BootstrapPolicy.ALLOW, reloadable_tables=["orders"])
    assert pipeline.status() == PipelineStatus.RUNNING
    actions = [a.action for a in served_enterprise.emulator.actions() if a.pipeline == "sdk_reload"]
    assert actions[-2:] == ["start", "approve"]


def test_sdk_clears_storage_only_when_stopped(served: Served) -> None:
    client = FelderaClient(served.url)
    pipeline = PipelineBuilder(client, "sdk_clear", sql=SQL).create_or_replace()
    assert pipeline.storage_status() == StorageStatus.CLEARED
    pipeline.start()
    with pytest.raises(FelderaAPIError) as info:
        pipeline.clear_storage()
    assert info.value.error_code == "StorageStatusImmutableUnlessStopped"
    pipeline.stop(force=True)
    pipeline.clear_storage()
    assert pipeline.storage_status() == StorageStatus.CLEARED
    pipeline.delete()


def test_sdk_retries_past_a_proxys_html_502(served: Served) -> None:
    client = FelderaClient(served.url)
    PipelineBuilder(client, "sdk_proxy", sql=SQL).create_or_replace()
    served.emulator.inject_fault(ROUTE_PIPELINE, method="GET", html=True)
    assert client.get_pipeline("sdk_proxy", PipelineFieldSelector.STATUS).name == "sdk_proxy"
    assert served.emulator.request_counts()[count_key("GET", ROUTE_CLUSTER_HEALTHZ)] >= 1
