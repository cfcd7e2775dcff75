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
from feldera.enums import PipelineStatus  # type: ignore[import-untyped]
from feldera.rest.errors import FelderaAPIError  # type: ignore[import-untyped]
from feldera.stats import PipelineStatistics  # type: ignore[import-untyped]

from feldera_sandbox.feldera_emulator import (
    ROUTE_INPUT_CONNECTOR_ACTION,
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
