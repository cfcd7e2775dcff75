"""The operator's own Kubernetes calls (kube.py) against a canned API server on 127.0.0.1: every
call is bounded in time, and Events never hold up status writes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import kubernetes
import pytest
from aiohttp import web

from feldera_operator.kube import KubeApi, KubeError


class Server:
    def __init__(self) -> None:
        self.url = ""
        self.hang_events = asyncio.Event()  # set: Events are answered
        self.hang_all = False
        self.seen: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(f"{request.method} {request.path}")
        if self.hang_all:
            await asyncio.sleep(3600)
        if request.path.endswith("/events"):
            await self.hang_events.wait()
            return web.json_response({"kind": "Event"}, status=201)
        if request.method == "PATCH":
            body = json.loads(await request.read())
            return web.json_response({"metadata": {"resourceVersion": "7"}, **body})
        if request.path == "/api/v1/namespaces/team-a/configmaps/orders-sql":
            meta = {"name": "orders-sql", "namespace": "team-a", "labels": {"a": "b"}}
            body = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": meta}
            return web.json_response({**body, "data": {"program.sql": "CREATE TABLE t (x INT);"}})
        return web.json_response({"kind": "Status", "code": 404, "message": "nope"}, status=404)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    srv.url = f"http://127.0.0.1:{port}"
    yield srv
    srv.hang_events.set()
    await runner.cleanup()


def kube_api(url: str, timeout: float) -> KubeApi:
    config = kubernetes.client.Configuration()
    config.host = url
    return KubeApi(kubernetes.client.ApiClient(configuration=config), timeout=timeout)


REF: dict[str, Any] = {
    "apiVersion": "feldera.dev/v1alpha1",
    "kind": "FelderaPipeline",
    "metadata": {"name": "orders", "namespace": "default", "uid": "u1"},
}


async def test_a_call_to_an_api_server_that_never_answers_fails_within_its_timeout(
    server: Server,
) -> None:
    server.hang_all = True
    kube = kube_api(server.url, timeout=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(KubeError):
        await asyncio.wait_for(
            kube.patch_status("felderapipelines", "default", "orders", {"x": 1}), 10
        )
    assert loop.time() - started < 2.0
    kube.close()


async def test_events_the_api_server_is_slow_to_take_never_hold_up_a_status_write(
    server: Server,
) -> None:
    kube = kube_api(server.url, timeout=5.0)
    posts = [
        asyncio.create_task(kube.post_event(REF, reason="PipelineStarted", message="m"))
        for _ in range(12)
    ]
    await asyncio.sleep(0.2)  # every Event is in flight, stuck at the server
    result = await asyncio.wait_for(
        kube.patch_status("felderapipelines", "default", "orders", {"state": "Running"}), 2
    )
    assert result["status"] == {"state": "Running"}
    server.hang_events.set()
    await asyncio.gather(*posts)
    kube.close()


async def test_a_configmap_is_read_with_its_labels_and_data_and_a_missing_one_is_none(
    server: Server,
) -> None:
    kube = kube_api(server.url, timeout=2.0)
    configmap = await kube.get_configmap("team-a", "orders-sql")
    assert configmap is not None
    assert configmap["metadata"]["labels"] == {"a": "b"}
    assert configmap["metadata"]["namespace"] == "team-a"
    assert configmap["data"] == {"program.sql": "CREATE TABLE t (x INT);"}
    assert await kube.get_configmap("team-a", "other") is None
    kube.close()
