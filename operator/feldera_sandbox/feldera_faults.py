"""Injected faults of the Feldera emulator: how a server, or a proxy in front of it, misbehaves.

A `Fault` applies to the next `count` requests matching its route template (a `ROUTE_*` constant
of the emulator, or `ANY_ROUTE` for every API route) and method. In the order they apply:
- `latency`: wait that long before anything else;
- `hang`: accept the connection and never answer (until the client gives up);
- `drop`: close the connection without a byte of response;
- `status` (with `error_code`, default "EmulatedFault"): a Feldera error body with that status;
  `html` answers with a proxy's HTML error page instead (502 unless `status` says otherwise);
  `retry_after` adds a `Retry-After` header (503 unless `status` says otherwise);
- `slow_body`: send the response (the real one, or the fault's) one byte every `slow_body`
  seconds, headers first, so the client sees a response that starts and then crawls.
"""

from __future__ import annotations

import asyncio
import http
from dataclasses import dataclass
from typing import NoReturn

from aiohttp import web

__all__ = ["ANY_ROUTE", "Fault", "drop", "hang", "html_page", "trickle"]

ANY_ROUTE = "*"


@dataclass
class Fault:
    """An injected fault: `count` more matching requests get it (`count <= 0`: every one)."""

    endpoint: str
    method: str | None = None
    status: int | None = None
    error_code: str | None = None
    latency: float = 0.0
    drop: bool = False
    count: int = 1
    hang: bool = False
    slow_body: float = 0.0
    html: bool = False
    retry_after: str | None = None

    def __post_init__(self) -> None:
        if self.latency < 0:
            raise ValueError("latency must be >= 0")
        if self.slow_body < 0:
            raise ValueError("slow_body must be >= 0")
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status code")
        if self.status is None and self.html:
            self.status = 502
        if self.status is None and self.retry_after is not None:
            self.status = 503

    def matches(self, route: str, method: str) -> bool:
        return (self.endpoint == ANY_ROUTE or self.endpoint == route) and (
            self.method is None or self.method.upper() == method.upper()
        )


def html_page(status: int) -> web.Response:
    """The error page a reverse proxy (nginx) puts in place of an unreachable upstream's answer."""
    try:
        title = f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        title = str(status)
    body = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return web.Response(status=status, text=body, content_type="text/html")


def drop(request: web.Request) -> NoReturn:
    """Abort the socket so that no byte of a response goes out: the client sees a disconnect.
    Ending the handler with CancelledError is how aiohttp treats a vanished client anyway."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise asyncio.CancelledError


async def hang(request: web.Request) -> NoReturn:
    """Hold the connection open and never answer; end quietly once the client is gone."""
    # aiohttp tells a handler nothing when its client goes away: polling the transport is the
    # only way to notice.
    while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    raise asyncio.CancelledError


async def trickle(
    request: web.Request, response: web.StreamResponse, interval: float
) -> web.StreamResponse:
    """Send `response` again, its body one byte every `interval` seconds."""
    body = response.body if isinstance(response, web.Response) else b""
    data = body if isinstance(body, bytes) else b""
    slow = web.StreamResponse(status=response.status, reason=response.reason)
    for name, value in response.headers.items():
        if name.lower() not in ("content-length", "transfer-encoding"):
            slow.headers[name] = value
    slow.content_length = len(data)
    await slow.prepare(request)
    try:
        for index in range(len(data)):
            await slow.write(data[index : index + 1])
            if index + 1 < len(data):
                await asyncio.sleep(interval)
        await slow.write_eof()
    except (ConnectionResetError, ConnectionError):
        raise asyncio.CancelledError from None
    return slow
