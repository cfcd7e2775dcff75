"""The few verbs the Feldera emulator's HTTP tests speak in: one call, polling with a deadline,
and the check of a Feldera error body."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

Call = Callable[..., Awaitable[tuple[int, Any]]]


def make_call(session: aiohttp.ClientSession) -> Call:
    """(status, parsed body) of one request; an empty body reads as None, non-JSON as text."""

    async def call(method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with session.request(method, path, **kwargs) as resp:
            text = await resp.text()
            if not text:
                return resp.status, None
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, text

    return call


async def put(call: Call, name: str, sql: str, **extra: Any) -> tuple[int, Any]:
    return await call(
        "PUT", f"/v0/pipelines/{name}", json={"name": name, "program_code": sql, **extra}
    )


async def status_of(call: Call, name: str) -> dict[str, Any]:
    code, body = await call("GET", f"/v0/pipelines/{name}?selector=status")
    assert code == 200, body
    assert isinstance(body, dict)
    return body


async def everything(call: Call, name: str) -> dict[str, Any]:
    code, body = await call("GET", f"/v0/pipelines/{name}")
    assert code == 200, body
    assert isinstance(body, dict)
    return body


async def wait_for(
    call: Call, name: str, field: str, value: Any, within: float = 5.0
) -> dict[str, Any]:
    """Poll the status until `field` is `value`; the status that had it."""
    deadline = time.monotonic() + within
    while True:
        body = await status_of(call, name)
        if body[field] == value:
            return body
        assert time.monotonic() < deadline, f"{field} stayed {body[field]!r}, wanted {value!r}"
        await asyncio.sleep(0.005)


def error(code: int, body: Any, status: int, error_code: str) -> dict[str, Any]:
    """Check a Feldera error body; returns it."""
    assert code == status, body
    assert isinstance(body, dict)
    assert set(body) == {"message", "error_code", "details"}
    assert body["error_code"] == error_code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


async def input_flags(call: Call, name: str) -> dict[str, bool]:
    code, body = await call("GET", f"/v0/pipelines/{name}/stats")
    assert code == 200, body
    return {i["endpoint_name"]: i["paused"] for i in body["inputs"]}


async def deployment_log(call: Call, name: str) -> list[str]:
    """The deployment statuses the pipeline went through, from its lifecycle log."""
    code, text = await call("GET", f"/v0/pipelines/{name}/logs")
    assert code == 200
    return [line.rsplit(": ", 1)[1] for line in text.splitlines() if "deployment status" in line]
