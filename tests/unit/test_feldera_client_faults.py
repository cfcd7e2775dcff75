"""The Feldera client against servers that misbehave: TLS that fails in each of its ways, servers
that never answer or answer a byte a second, a proxy's HTML page, a redirect to plain http, a body
without end, more requests at once than it may send. Each gives a bounded failure that says what
is wrong, and the API key never leaves for anywhere but the URL given."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from feldera_operator import decision as d
from feldera_operator.feldera_client import (
    FelderaClient,
    FelderaError,
    FelderaServerError,
    FelderaTLSError,
    FelderaUnreachable,
)
from feldera_operator.observation import problem_from_error
from feldera_sandbox.certs import CertificateAuthority

API_KEY = "apikey:" + "T" * 128
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(
    handler: Handler, context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"{'https' if context else 'http'}://127.0.0.1:{port}"


@pytest.fixture
async def servers() -> AsyncIterator[list[web.AppRunner]]:
    runners: list[web.AppRunner] = []
    yield runners
    for runner in runners:
        await runner.cleanup()


async def config_ok(request: web.Request) -> web.Response:
    return web.json_response({"version": "0.369.0", "edition": "Open source"})


# ----------------------------------------------------------------------------- TLS


def tls_context(tmp: Path, ca: CertificateAuthority, **issue: object) -> ssl.SSLContext:
    leaf = ca.issue("feldera", server=True, **issue)  # type: ignore[arg-type]
    crt, key = leaf.write(tmp, "server")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(crt, key)
    return context


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("unknown-ca", "unable to get local issuer certificate"),
        ("expired", "certificate has expired"),
        ("wrong-host", "address mismatch, certificate is not valid for"),
    ],
)
async def test_each_tls_failure_names_tls_and_what_is_wrong(
    case: str, says: str, tmp_path: Path, servers: list[web.AppRunner]
) -> None:
    ca, other = CertificateAuthority("test-ca"), CertificateAuthority("other-ca")
    now = dt.datetime.now(dt.UTC)
    issue: dict[str, object] = {"ips": ("127.0.0.1",)}
    if case == "expired":
        issue["not_before"] = now - dt.timedelta(days=3)
        issue["not_after"] = now - dt.timedelta(days=1)
    if case == "wrong-host":
        issue = {"dns": ("feldera.example",)}
    context = tls_context(tmp_path, other if case == "unknown-ca" else ca, **issue)
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        return await config_ok(request)

    runner, url = await serve(handler, context)
    servers.append(runner)
    async with FelderaClient(url, api_key=API_KEY, ca_pem=ca.cert_pem.decode()) as client:
        with pytest.raises(FelderaTLSError) as info:
            await client.config()
    assert says in str(info.value)
    assert "_ssl.c" not in str(info.value)  # no C source positions for people to read
    problem = problem_from_error(info.value, instance="default/prod")
    assert problem.reason == d.TLS_ERROR
    assert says in problem.message and "TLS" in problem.message
    assert problem.reason in d.STALLED_REASONS and problem.reason in d.SYNC_FAILURE_REASONS
    assert seen == []  # the request (and its key) never left


async def test_plain_http_served_where_https_is_declared_is_a_tls_error(
    servers: list[web.AppRunner],
) -> None:
    runner, url = await serve(config_ok)
    servers.append(runner)
    async with FelderaClient(url.replace("http://", "https://"), api_key=API_KEY) as client:
        with pytest.raises(FelderaTLSError) as info:
            await client.config()
    assert problem_from_error(info.value, instance="x").reason == d.TLS_ERROR


async def test_a_redirect_to_plain_http_is_not_followed_and_the_key_never_goes_there(
    tmp_path: Path, servers: list[web.AppRunner]
) -> None:
    received: list[str | None] = []

    async def elsewhere(request: web.Request) -> web.Response:
        received.append(request.headers.get("Authorization"))
        return await config_ok(request)

    plain_runner, plain_url = await serve(elsewhere)
    servers.append(plain_runner)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"{plain_url}{request.path_qs}")

    ca = CertificateAuthority("test-ca")
    runner, url = await serve(redirect, tls_context(tmp_path, ca, ips=("127.0.0.1",)))
    servers.append(runner)
    async with FelderaClient(url, api_key=API_KEY, ca_pem=ca.cert_pem.decode()) as client:
        with pytest.raises(FelderaError) as info:
            await client.config()
    assert received == []
    problem = problem_from_error(info.value, instance="default/prod")
    assert problem.reason == d.INVALID_URL
    assert "307" in problem.message and plain_url in problem.message
    assert API_KEY not in problem.message


# ----------------------------------------------------------------------------- slow and broken


async def test_a_server_that_accepts_and_never_answers_fails_within_the_timeout() -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    server = await asyncio.start_server(never, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    try:
        async with FelderaClient(f"http://127.0.0.1:{port}", timeout=0.5) as client:
            started = loop.time()
            with pytest.raises(FelderaUnreachable) as info:
                await client.config()
        assert loop.time() - started < 1.5
        assert info.value.timeout
    finally:
        server.close()


async def test_a_body_trickling_a_byte_a_second_fails_within_the_timeout() -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 1000\r\n\r\n")
        try:
            for _ in range(1000):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.2)
        except (ConnectionError, asyncio.CancelledError):
            pass

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    try:
        async with FelderaClient(f"http://127.0.0.1:{port}", timeout=0.6) as client:
            started = loop.time()
            with pytest.raises(FelderaUnreachable) as info:
                await client.config()
        assert loop.time() - started < 1.5  # the whole exchange, not each read, is bounded
        assert info.value.timeout
    finally:
        server.close()


async def test_a_proxys_html_502_says_a_proxy_answered(servers: list[web.AppRunner]) -> None:
    page = (
        "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
        "</h1></center><hr><center>nginx</center></body></html>"
    )

    async def proxy(request: web.Request) -> web.Response:
        return web.Response(status=502, text=page, content_type="text/html")

    runner, url = await serve(proxy)
    servers.append(runner)
    async with FelderaClient(url) as client:
        with pytest.raises(FelderaServerError) as info:
            await client.list_pipelines()
    message = str(info.value)
    assert "502 Bad Gateway" in message and "<" not in message
    assert "not Feldera's" in message
    problem = problem_from_error(info.value, instance="default/prod")
    assert problem.reason == d.FELDERA_ERROR and "502" in problem.message


async def test_a_body_beyond_the_limit_is_refused_without_reading_it_all(
    servers: list[web.AppRunner],
) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b" " * 65536
        for _ in range(1000):  # 64 MB, more than the limit below
            await response.write(chunk)
        return response

    runner, url = await serve(endless)
    servers.append(runner)
    async with FelderaClient(url, timeout=5, max_body=1 << 20) as client:
        with pytest.raises(FelderaError) as info:
            await client.list_pipelines()
    assert "larger than" in str(info.value)


async def test_requests_in_flight_to_one_server_are_bounded(
    servers: list[web.AppRunner],
) -> None:
    in_flight = 0
    most = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return web.json_response({})

    runner, url = await serve(slow)
    servers.append(runner)
    async with FelderaClient(url, max_in_flight=4) as client:
        await asyncio.gather(*(client.stats(f"p{i}") for i in range(20)))
    assert most == 4
