"""The Feldera emulator misbehaving on purpose: connections that hang, bodies that crawl, a proxy's
HTML page, 429/503 with Retry-After, per route or everywhere; and https whose certificate is
good, expired, or for another host."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from feldera_sandbox.feldera_emulator import (
    ANY_ROUTE,
    ROUTE_CONFIG,
    ROUTE_HEALTHZ,
    ROUTE_PIPELINES,
    ROUTE_STATS,
    FelderaEmulator,
)
from feldera_sandbox.feldera_tls import TlsMode, server_tls

HEALTHY = b'{"status": "healthy"}'


async def test_hang_accepts_the_connection_and_never_answers(
    emulator: FelderaEmulator, session: aiohttp.ClientSession
) -> None:
    emulator.inject_fault(ROUTE_HEALTHZ, hang=True)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with session.get("/healthz", timeout=aiohttp.ClientTimeout(total=0.3)) as resp:
            await resp.read()
    assert time.monotonic() - started >= 0.3
    async with session.get("/healthz") as resp:  # one request only
        assert resp.status == 200


async def test_slow_body_sends_the_headers_then_one_byte_per_interval(
    emulator: FelderaEmulator, session: aiohttp.ClientSession
) -> None:
    emulator.inject_fault(ROUTE_HEALTHZ, slow_body=0.02)
    started = time.monotonic()
    async with session.get("/healthz") as resp:
        headers_after = time.monotonic() - started
        assert resp.status == 200 and resp.headers["Content-Length"] == str(len(HEALTHY))
        assert await resp.read() == HEALTHY
    body_after = time.monotonic() - started
    assert headers_after < body_after
    assert body_after >= (len(HEALTHY) - 1) * 0.02
    # A slow error body is the same.
    emulator.inject_fault(ROUTE_PIPELINES, status=503, slow_body=0.001)
    async with session.get("/v0/pipelines") as resp:
        assert resp.status == 503 and (await resp.json())["error_code"] == "EmulatedFault"


@pytest.mark.parametrize(("status", "title"), [(None, "502 Bad Gateway"), (504, "504 Gateway")])
async def test_html_answers_like_a_proxy_with_no_json_body(
    emulator: FelderaEmulator, session: aiohttp.ClientSession, status: int | None, title: str
) -> None:
    emulator.inject_fault(ROUTE_PIPELINES, html=True, status=status)
    async with session.get("/v0/pipelines") as resp:
        assert resp.status == (status or 502)
        assert resp.content_type == "text/html"
        text = await resp.text()
    assert title in text and "nginx" in text
    with pytest.raises(ValueError):
        json.loads(text)


@pytest.mark.parametrize(("status", "code"), [(429, "TooManyRequests"), (None, None)])
async def test_retry_after_comes_with_429_or_503(
    emulator: FelderaEmulator, session: aiohttp.ClientSession, status: int | None, code: str | None
) -> None:
    emulator.inject_fault(ROUTE_PIPELINES, status=status, error_code=code, retry_after="2")
    async with session.get("/v0/pipelines") as resp:
        assert resp.status == (status or 503) and resp.headers["Retry-After"] == "2"
        assert (await resp.json())["error_code"] == (code or "EmulatedFault")


async def test_any_route_fault_hits_every_api_route_but_not_the_hooks(
    emulator: FelderaEmulator, session: aiohttp.ClientSession
) -> None:
    emulator.inject_fault(ANY_ROUTE, status=500, count=2)
    async with session.get("/_emulator/settings") as resp:
        assert resp.status == 200
    for path in ("/v0/config", "/v0/pipelines"):
        async with session.get(path) as resp:
            assert resp.status == 500
    async with session.get("/v0/config") as resp:
        assert resp.status == 200
    # A method narrows it.
    emulator.inject_fault(ANY_ROUTE, method="POST", status=500, count=0)
    async with session.get("/v0/pipelines") as resp:
        assert resp.status == 200
    async with session.post("/v0/pipelines", json={}) as resp:
        assert resp.status == 500


async def test_broken_modes_over_http(
    emulator: FelderaEmulator, session: aiohttp.ClientSession
) -> None:
    fault = {"endpoint": "*", "html": True, "count": 1}
    async with session.post("/_emulator/faults", json=fault) as resp:
        assert resp.status == 201
        echoed = await resp.json()
    assert echoed["status"] == 502 and echoed["html"] is True and echoed["hang"] is False
    async with session.get("/v0/config") as resp:
        assert resp.status == 502 and resp.content_type == "text/html"
    for fault in (
        {"endpoint": ROUTE_CONFIG, "retry_after": 7, "status": 429},
        {"endpoint": ROUTE_STATS, "slow_body": 1.0},
        {"endpoint": ROUTE_STATS, "hang": True, "method": "GET"},
    ):
        async with session.post("/_emulator/faults", json=fault) as resp:
            assert resp.status == 201, await resp.text()
    async with session.get("/v0/config") as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "7"
    bad = {"endpoint": "*", "explode": True}
    async with session.post("/_emulator/faults", json=bad) as resp:
        assert resp.status == 400
    async with session.delete("/_emulator/faults") as resp:
        assert resp.status == 200


# ------------------------------------------------------------------------------------ https


async def serve_tls(mode: TlsMode) -> tuple[FelderaEmulator, str]:
    emulator = FelderaEmulator(tls=server_tls(mode))
    return emulator, await emulator.start()


def trusting(ca_pem: bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca_pem.decode())


async def test_https_with_the_emulators_ca() -> None:
    emulator, url = await serve_tls("valid")
    try:
        assert url.startswith("https://127.0.0.1:")
        assert emulator.ca_pem is not None and b"BEGIN CERTIFICATE" in emulator.ca_pem
        async with aiohttp.ClientSession(url) as s:
            async with s.get("/v0/config", ssl=trusting(emulator.ca_pem)) as resp:
                assert resp.status == 200
            # Without the CA the certificate is unknown.
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with s.get("/v0/config"):
                    pass
            # The CA is also served, for clients that can reach the hooks.
            async with s.get("/_emulator/ca", ssl=False) as resp:
                assert await resp.read() == emulator.ca_pem
    finally:
        await emulator.stop()


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("expired", "certificate has expired"), ("wrong-host", "mismatch")],
)
async def test_bad_certificates_fail_for_their_own_reason(mode: TlsMode, reason: str) -> None:
    emulator, url = await serve_tls(mode)
    try:
        assert emulator.ca_pem is not None
        async with aiohttp.ClientSession(url) as s:
            with pytest.raises(aiohttp.ClientConnectorCertificateError) as info:
                async with s.get("/v0/config", ssl=trusting(emulator.ca_pem)):
                    pass
            assert reason in str(info.value.certificate_error)
    finally:
        await emulator.stop()


async def test_cli_serves_https_and_writes_its_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "feldera_sandbox.feldera_emulator",
        "--tls",
        "--ca-out",
        str(ca),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        url = line.rsplit(" ", 1)[1].strip()
        assert url.startswith("https://127.0.0.1:")
        async with aiohttp.ClientSession(url) as s:
            async with s.get("/healthz", ssl=trusting(ca.read_bytes())) as resp:
                assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
