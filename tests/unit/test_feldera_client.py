"""The Feldera client against a protocol-level fake: canned HTTP answers on 127.0.0.1.

What is pinned here is the client's own behaviour on the wire and in its errors: which request goes
out (method, exact encoded path, headers), how each kind of answer or failure becomes a typed
error, and that the API key never shows in one. The behaviour of Feldera itself is the emulator's
business (see test_feldera_client_emulator.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import shutil
import ssl
import subprocess
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from feldera_operator.feldera_client import (
    FelderaAuthError,
    FelderaBadRequest,
    FelderaClient,
    FelderaClientClosed,
    FelderaError,
    FelderaForbidden,
    FelderaNotDeployed,
    FelderaNotFound,
    FelderaServerError,
    FelderaTLSError,
    FelderaUnreachable,
)

# Recognisable, and shaped like a real key: "apikey:" and 128 alphanumerics.
SECRET = "S3CR3TzKEY"
API_KEY = "apikey:" + (SECRET * 13)[:128]


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Canned:
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay: float = 0.0


class FakeFeldera:
    """Answers every request with the canned response and records what arrived."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.canned = Canned()
        self.url = ""
        # Set at teardown so that a handler told to be slow does not hold the shutdown up.
        self.released = asyncio.Event()

    def reply(
        self,
        status: int = 200,
        *,
        json_body: Any = None,
        text: str | None = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        if text is not None:
            body = text.encode()
            hdrs = {"Content-Type": "text/html"}
        else:
            body = json.dumps({} if json_body is None else json_body).encode()
            hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        self.canned = Canned(status, body, hdrs, delay)

    def reply_error(
        self, status: int, error_code: str, message: str = "boom", details: Any = None
    ) -> None:
        self.reply(
            status, json_body={"message": message, "error_code": error_code, "details": details}
        )

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(
            Seen(request.method, request.raw_path, dict(request.headers), await request.read())
        )
        canned = self.canned
        if canned.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), canned.delay)
        return web.Response(status=canned.status, body=canned.body, headers=canned.headers)

    @property
    def last(self) -> Seen:
        return self.seen[-1]


async def _serve(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


def _fake_app(fake: FakeFeldera) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    return app


@pytest.fixture
async def fake() -> AsyncIterator[FakeFeldera]:
    server = FakeFeldera()
    runner, port = await _serve(_fake_app(server))
    server.url = f"http://127.0.0.1:{port}"
    yield server
    server.released.set()
    await runner.cleanup()


@pytest.fixture
async def client(fake: FakeFeldera) -> AsyncIterator[FelderaClient]:
    async with FelderaClient(fake.url, api_key=API_KEY, tenant="team-a", timeout=2.0) as c:
        yield c


# ----------------------------------------------------------------------------- requests on the wire


async def test_sends_bearer_key_tenant_and_json_accept(
    fake: FakeFeldera, client: FelderaClient
) -> None:
    await client.config()
    headers = fake.last.headers
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert headers["Feldera-Tenant"] == "team-a"
    assert headers["Accept"] == "application/json"


async def test_sends_no_auth_or_tenant_header_when_not_configured(fake: FakeFeldera) -> None:
    async with FelderaClient(fake.url) as c:
        await c.healthz()
    assert "Authorization" not in fake.last.headers
    assert "Feldera-Tenant" not in fake.last.headers


async def test_quoted_table_goes_out_as_percent_22_on_the_wire(
    fake: FakeFeldera, client: FelderaClient
) -> None:
    await client.input_connector_action("orders_main", '"MyTable"', "live", "start")
    assert fake.last.method == "POST"
    assert (
        fake.last.raw_path == "/v0/pipelines/orders_main/tables/%22MyTable%22/connectors/live/start"
    )


async def test_every_segment_is_encoded_once_and_never_decoded(
    fake: FakeFeldera, client: FelderaClient
) -> None:
    # "/" must not split a segment, "%2F" must not be decoded back, "%" must not be left bare.
    await client.output_connector_action("p", 'a/b "c"', "x%2Fy", "pause")
    assert fake.last.raw_path == "/v0/pipelines/p/views/a%2Fb%20%22c%22/connectors/x%252Fy/pause"
    await client.stats("q?x=1#f")
    assert fake.last.raw_path == "/v0/pipelines/q%3Fx%3D1%23f/stats"


async def test_base_url_path_prefix_is_kept(fake: FakeFeldera) -> None:
    async with FelderaClient(fake.url + "/feldera/") as c:
        await c.config()
    assert fake.last.raw_path == "/feldera/v0/config"


Call = Callable[[FelderaClient], Awaitable[object]]

ENDPOINTS: list[tuple[str, Call, str, str]] = [
    ("config", lambda c: c.config(), "GET", "/v0/config"),
    ("healthz", lambda c: c.healthz(), "GET", "/healthz"),
    ("get", lambda c: c.get_pipeline("p1"), "GET", "/v0/pipelines/p1?selector=status"),
    (
        "get-all",
        lambda c: c.get_pipeline("p1", selector="all"),
        "GET",
        "/v0/pipelines/p1?selector=all",
    ),
    ("stats", lambda c: c.stats("p1"), "GET", "/v0/pipelines/p1/stats"),
    (
        "start-running",
        lambda c: c.start("p1", "running"),
        "POST",
        "/v0/pipelines/p1/start?initial=running",
    ),
    (
        "start-paused",
        lambda c: c.start("p1", "paused"),
        "POST",
        "/v0/pipelines/p1/start?initial=paused",
    ),
    ("pause", lambda c: c.pause("p1"), "POST", "/v0/pipelines/p1/pause"),
    ("resume", lambda c: c.resume("p1"), "POST", "/v0/pipelines/p1/resume"),
    ("stop", lambda c: c.stop("p1"), "POST", "/v0/pipelines/p1/stop?force=true"),
    (
        "stop-graceful",
        lambda c: c.stop("p1", force=False),
        "POST",
        "/v0/pipelines/p1/stop?force=false",
    ),
    (
        "input-pause",
        lambda c: c.input_connector_action("p1", "orders", "live", "pause"),
        "POST",
        "/v0/pipelines/p1/tables/orders/connectors/live/pause",
    ),
    (
        "output-start",
        lambda c: c.output_connector_action("p1", "big", "sink", "start"),
        "POST",
        "/v0/pipelines/p1/views/big/connectors/sink/start",
    ),
]


@pytest.mark.parametrize(
    ("call", "method", "raw_path"),
    [pytest.param(call, m, p, id=name) for name, call, m, p in ENDPOINTS],
)
async def test_each_method_calls_its_endpoint(
    fake: FakeFeldera, client: FelderaClient, call: Call, method: str, raw_path: str
) -> None:
    await call(client)
    assert (fake.last.method, fake.last.raw_path) == (method, raw_path)


async def test_list_pipelines_asks_for_status_and_returns_the_list(
    fake: FakeFeldera, client: FelderaClient
) -> None:
    fake.reply(json_body=[{"name": "a", "deployment_status": "Running"}, {"name": "b"}])
    pipelines = await client.list_pipelines()
    assert fake.last.raw_path == "/v0/pipelines?selector=status"
    assert [p["name"] for p in pipelines] == ["a", "b"]
    assert pipelines[0]["deployment_status"] == "Running"


async def test_actions_accept_an_empty_202_or_200(fake: FakeFeldera, client: FelderaClient) -> None:
    fake.canned = Canned(status=202, body=b"")
    await client.pause("p")
    fake.canned = Canned(status=200, body=b"", headers={})
    await client.input_connector_action("p", "t", "c", "start")
    assert [r.raw_path for r in fake.seen] == [
        "/v0/pipelines/p/pause",
        "/v0/pipelines/p/tables/t/connectors/c/start",
    ]


async def test_put_pipeline_sends_the_body_as_json(
    fake: FakeFeldera, client: FelderaClient
) -> None:
    fake.reply(201, json_body={"name": "p", "version": 1})
    body = {"name": "p", "program_code": "CREATE TABLE t (x INT);"}
    result = await client.put_pipeline("p", body)
    assert (fake.last.method, fake.last.raw_path) == ("PUT", "/v0/pipelines/p")
    assert json.loads(fake.last.body) == body
    assert fake.last.headers["Content-Type"].startswith("application/json")
    assert result["version"] == 1


async def test_empty_name_is_refused_before_any_request(
    fake: FakeFeldera, client: FelderaClient
) -> None:
    with pytest.raises(ValueError):
        await client.stats("")
    with pytest.raises(ValueError):
        await client.input_connector_action("p", "", "c", "start")
    assert fake.seen == []


async def test_unknown_connector_action_is_refused(client: FelderaClient) -> None:
    with pytest.raises(ValueError):
        await client.input_connector_action("p", "t", "c", "stop")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- error bodies


@pytest.mark.parametrize(
    ("status", "code", "details", "cls", "retryable"),
    [
        (401, "AuthenticationFailed", None, FelderaAuthError, False),
        (403, "InsufficientPermissions", None, FelderaForbidden, False),
        (404, "UnknownPipelineName", {"pipeline_name": "p"}, FelderaNotFound, False),
        (400, "InvalidConnectorAction", None, FelderaBadRequest, False),
        (400, "UpdateRestrictedToStopped", None, FelderaBadRequest, False),
        (409, "DuplicateName", None, FelderaBadRequest, False),
        (408, "RequestTimeout", None, FelderaBadRequest, True),
        (429, "TooManyRequests", None, FelderaBadRequest, True),
        (503, "PipelineInteractionNotDeployed", None, FelderaNotDeployed, True),
        (503, "PipelineUnavailable", None, FelderaNotDeployed, True),
        (503, "PipelineInteractionUnreachable", None, FelderaNotDeployed, True),
        (503, "Initializing", None, FelderaNotDeployed, True),
        (410, "Terminating", None, FelderaNotDeployed, True),
        (500, "UnknownInternalError", None, FelderaServerError, True),
        (501, "EnterpriseFeature", None, FelderaServerError, False),
        (502, "BadGateway", None, FelderaServerError, True),
        (503, "SomethingElse", None, FelderaServerError, True),
        (504, "GatewayTimeout", None, FelderaServerError, True),
    ],
)
async def test_error_body_becomes_a_typed_error(
    fake: FakeFeldera,
    client: FelderaClient,
    status: int,
    code: str,
    details: Any,
    cls: type[FelderaError],
    retryable: bool,
) -> None:
    fake.reply_error(status, code, message="it went wrong", details=details)
    with pytest.raises(FelderaError) as info:
        await client.pause("p")
    err = info.value
    assert type(err) is cls
    assert (err.status, err.error_code, err.message, err.details) == (
        status,
        code,
        "it went wrong",
        details,
    )
    assert err.endpoint == "POST /v0/pipelines/p/pause"
    assert err.retryable is retryable
    assert str(err) == f"POST /v0/pipelines/p/pause: HTTP {status} {code}: it went wrong"


async def test_auth_failure_without_details_field(fake: FakeFeldera, client: FelderaClient) -> None:
    fake.reply(401, json_body={"message": "no", "error_code": "AuthenticationFailed"})
    with pytest.raises(FelderaAuthError) as info:
        await client.list_pipelines()
    assert info.value.details is None


async def test_not_found_says_whether_pipeline_or_connector(
    fake: FakeFeldera, client: FelderaClient
) -> None:
    fake.reply_error(404, "UnknownPipelineName", details={"pipeline_name": "p"})
    with pytest.raises(FelderaNotFound) as info:
        await client.input_connector_action("p", "t", "c", "start")
    assert info.value.is_pipeline and not info.value.is_connector
    assert info.value.endpoint_name is None

    fake.reply_error(404, "UnknownInputEndpoint", details={"endpoint_name": "t.c"})
    with pytest.raises(FelderaNotFound) as info:
        await client.input_connector_action("p", "t", "c", "start")
    assert info.value.is_connector and not info.value.is_pipeline
    assert info.value.endpoint_name == "t.c"

    fake.reply_error(404, "UnknownOutputEndpoint", details={"endpoint_name": "v.s"})
    with pytest.raises(FelderaNotFound) as info:
        await client.output_connector_action("p", "v", "s", "pause")
    assert info.value.endpoint_name == "v.s"


async def test_not_deployed_carries_the_reported_status(
    fake: FakeFeldera, client: FelderaClient
) -> None:
    fake.reply_error(
        503,
        "PipelineInteractionNotDeployed",
        details={"pipeline_name": "p", "status": "Stopped", "desired_status": "Stopped"},
    )
    with pytest.raises(FelderaNotDeployed) as info:
        await client.stats("p")
    assert info.value.deployment_status == "Stopped"


async def test_html_error_page_gives_a_truncated_message_and_no_code(
    fake: FakeFeldera, client: FelderaClient
) -> None:
    page = "<html><body><h1>502 Bad Gateway</h1>\n" + "x" * 5000 + "</body></html>"
    fake.reply(502, text=page)
    with pytest.raises(FelderaServerError) as info:
        await client.list_pipelines()
    err = info.value
    assert err.error_code is None
    # The page's words, not its markup, and said to be a page: a proxy answered, not Feldera.
    assert err.message.startswith("502 Bad Gateway xxx")
    assert err.message.endswith("(an HTML page, not Feldera's error: a proxy?)")
    assert len(err.message) <= 201 + 50
    assert err.retryable


async def test_plain_text_error_is_kept_as_the_message(
    fake: FakeFeldera, client: FelderaClient
) -> None:
    fake.reply(403, text="forbidden by policy")
    with pytest.raises(FelderaForbidden) as info:
        await client.pause("p")
    assert (info.value.message, info.value.error_code) == ("forbidden by policy", None)


async def test_empty_error_body_falls_back_to_the_reason_phrase(
    fake: FakeFeldera, client: FelderaClient
) -> None:
    fake.canned = Canned(status=504, body=b"", headers={})
    with pytest.raises(FelderaServerError) as info:
        await client.stats("p")
    assert info.value.message == "Gateway Timeout"


async def test_json_error_of_another_shape_is_kept_as_details(
    fake: FakeFeldera, client: FelderaClient
) -> None:
    fake.reply(400, json_body={"error": "nope"})
    with pytest.raises(FelderaBadRequest) as info:
        await client.pause("p")
    assert info.value.error_code is None
    assert info.value.details == {"error": "nope"}
    assert "nope" in info.value.message


async def test_success_that_is_not_json_is_an_error(
    fake: FakeFeldera, client: FelderaClient
) -> None:
    fake.reply(200, text="<html>Please log in</html>")
    with pytest.raises(FelderaError) as info:
        await client.list_pipelines()
    assert type(info.value) is FelderaError
    assert info.value.status == 200
    assert "Please log in" in info.value.message
    assert not info.value.retryable


async def test_success_of_the_wrong_shape_is_an_error(
    fake: FakeFeldera, client: FelderaClient
) -> None:
    fake.reply(200, json_body={"pipelines": []})
    with pytest.raises(FelderaError, match="expected a JSON list"):
        await client.list_pipelines()
    fake.reply(200, json_body=[1, 2])
    with pytest.raises(FelderaError, match="expected a JSON dict"):
        await client.stats("p")


async def test_redirect_is_not_followed(fake: FakeFeldera, client: FelderaClient) -> None:
    # Following it could carry the key to another host.
    fake.reply(302, text="", headers={"Location": "http://elsewhere.invalid/"})
    with pytest.raises(FelderaError) as info:
        await client.config()
    assert info.value.status == 302
    assert len(fake.seen) == 1


# ----------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None), ("nan", None), (None, None)],
)
async def test_retry_after_seconds(
    fake: FakeFeldera, client: FelderaClient, header: str | None, expected: float | None
) -> None:
    fake.reply_error(503, "PipelineUnavailable")
    if header is not None:
        fake.canned.headers["Retry-After"] = header
    with pytest.raises(FelderaNotDeployed) as info:
        await client.pause("p")
    assert info.value.retry_after == expected


async def test_retry_after_http_date(fake: FakeFeldera, client: FelderaClient) -> None:
    fake.reply(
        429,
        text="slow down",
        headers={"Retry-After": email.utils.formatdate(time.time() + 30, usegmt=True)},
    )
    with pytest.raises(FelderaBadRequest) as info:
        await client.pause("p")
    assert info.value.retryable
    assert info.value.retry_after is not None
    assert 25 <= info.value.retry_after <= 31


# ----------------------------------------------------------------------------- no response


async def test_timeout_is_unreachable_with_timeout_flag(fake: FakeFeldera) -> None:
    fake.reply(delay=5.0)
    async with FelderaClient(fake.url, timeout=0.2) as c:
        started = time.monotonic()
        with pytest.raises(FelderaUnreachable) as info:
            await c.stats("p")
    assert time.monotonic() - started < 2.0
    err = info.value
    assert err.timeout and err.status is None and err.retryable
    assert err.endpoint == "GET /v0/pipelines/p/stats"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_connection_refused_is_unreachable() -> None:
    async with FelderaClient(f"http://127.0.0.1:{_free_port()}") as c:
        with pytest.raises(FelderaUnreachable) as info:
            await c.config()
    assert not info.value.timeout
    assert info.value.status is None and info.value.retryable


async def test_unresolvable_host_is_unreachable() -> None:
    async with FelderaClient("http://feldera.invalid", timeout=3.0) as c:
        with pytest.raises(FelderaUnreachable):
            await c.config()


@pytest.fixture
async def dropping_server() -> AsyncIterator[Callable[[bytes], Awaitable[str]]]:
    """Starts raw TCP servers that read a request, write the given bytes and hang up."""
    servers: list[asyncio.Server] = []

    async def start(answer: bytes) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"", id="before-status-line"),
        pytest.param(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"a"', id="mid-body"),
        pytest.param(b"NOT HTTP AT ALL\r\n\r\n", id="garbage"),
    ],
)
async def test_dropped_connection_is_unreachable(
    dropping_server: Callable[[bytes], Awaitable[str]], answer: bytes
) -> None:
    url = await dropping_server(answer)
    async with FelderaClient(url, timeout=2.0) as c:
        with pytest.raises(FelderaUnreachable) as info:
            await c.stats("p")
    assert not info.value.timeout and info.value.status is None


# ----------------------------------------------------------------------- TLS with a private CA


@dataclass
class Pki:
    ca_pem: str
    other_ca_pem: str
    server_context: ssl.SSLContext


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test CA")
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
        cwd=d,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(d / "server.pem", d / "server.key")
    yield Pki((d / "ca.pem").read_text(), (d / "other-ca.pem").read_text(), context)


@pytest.fixture
async def tls_fake(pki: Pki) -> AsyncIterator[FakeFeldera]:
    server = FakeFeldera()
    runner, port = await _serve(_fake_app(server), pki.server_context)
    server.url = f"https://127.0.0.1:{port}"
    yield server
    server.released.set()
    await runner.cleanup()


async def test_custom_ca_is_trusted(tls_fake: FakeFeldera, pki: Pki) -> None:
    tls_fake.reply(json_body={"version": "0.337.0", "edition": "Open source"})
    async with FelderaClient(tls_fake.url, ca_pem=pki.ca_pem) as c:
        assert (await c.config())["edition"] == "Open source"


@pytest.mark.parametrize("which", ["system-roots", "other-ca"])
async def test_untrusted_certificate_is_a_tls_error(
    tls_fake: FakeFeldera, pki: Pki, which: str
) -> None:
    ca_pem = pki.other_ca_pem if which == "other-ca" else None
    async with FelderaClient(tls_fake.url, ca_pem=ca_pem, api_key=API_KEY) as c:
        with pytest.raises(FelderaTLSError) as info:
            await c.config()
    assert isinstance(info.value, FelderaUnreachable)
    assert "certificate" in str(info.value).lower()
    assert tls_fake.seen == []


def test_unusable_ca_pem_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="ca_pem"):
        FelderaClient("https://feldera.example", ca_pem="not a certificate")


# ----------------------------------------------------------------------------- the metrics hook


async def test_on_response_sees_template_status_and_duration(fake: FakeFeldera) -> None:
    calls: list[tuple[str, int | None, float]] = []
    async with FelderaClient(fake.url, on_response=lambda *a: calls.append(a)) as c:
        await c.stats("p1")
        await c.input_connector_action("p1", '"T"', "c", "pause")
        fake.reply_error(404, "UnknownPipelineName")
        with pytest.raises(FelderaNotFound):
            await c.start("p2", "paused")
    assert [(t, s) for t, s, _ in calls] == [
        ("GET /v0/pipelines/{pipeline}/stats", 200),
        ("POST /v0/pipelines/{pipeline}/tables/{table}/connectors/{connector}/pause", 200),
        ("POST /v0/pipelines/{pipeline}/start", 404),
    ]
    assert all(0 <= seconds < 5 for _, _, seconds in calls)


async def test_on_response_reports_no_status_when_unreachable() -> None:
    calls: list[tuple[str, int | None, float]] = []
    url = f"http://127.0.0.1:{_free_port()}"
    async with FelderaClient(url, on_response=lambda *a: calls.append(a)) as c:
        with pytest.raises(FelderaUnreachable):
            await c.list_pipelines()
    assert [(t, s) for t, s, _ in calls] == [("GET /v0/pipelines", None)]


async def test_a_failing_hook_does_not_fail_the_call(fake: FakeFeldera) -> None:
    def broken(endpoint: str, status: int | None, seconds: float) -> None:
        raise RuntimeError("metrics backend down")

    async with FelderaClient(fake.url, on_response=broken) as c:
        assert await c.config() == {}


# ----------------------------------------------------------------------------- sessions


async def test_owned_session_is_closed_and_client_refuses_further_calls(
    fake: FakeFeldera,
) -> None:
    c = FelderaClient(fake.url)
    await c.config()
    await c.close()
    await c.close()  # idempotent
    with pytest.raises(FelderaClientClosed) as info:
        await c.config()
    assert isinstance(info.value, FelderaError) and info.value.retryable


async def test_given_session_is_used_and_left_open(fake: FakeFeldera) -> None:
    async with aiohttp.ClientSession(headers={"X-Shared": "yes"}) as session:
        async with FelderaClient(fake.url, api_key=API_KEY, session=session) as c:
            await c.config()
        assert not session.closed
        assert fake.last.headers["X-Shared"] == "yes"
        assert fake.last.headers["Authorization"] == f"Bearer {API_KEY}"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"base_url": "ftp://host"}, "base_url"),
        ({"base_url": "http://user:hunter2@host"}, "credentials"),
        ({"base_url": "http://h", "api_key": API_KEY + "\r\nX: y"}, "api_key"),
        ({"base_url": "http://h", "api_key": ""}, "api_key"),
        ({"base_url": "http://h", "tenant": "a b"}, "tenant"),
        ({"base_url": "http://h", "timeout": 0}, "timeout"),
    ],
)
def test_bad_settings_are_refused_without_echoing_them(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        FelderaClient(**kwargs)
    assert "hunter2" not in str(info.value)
    assert SECRET not in str(info.value)


# ----------------------------------------------------------------------------- the key never leaks


def _assert_no_key(err: BaseException) -> None:
    assert SECRET not in "".join(traceback.format_exception(err))
    # Not only what a traceback prints: whatever an error reporter could reach from the error.
    chain: BaseException | None = err
    while chain is not None:
        for text in (str(chain), repr(chain), repr(chain.args), repr(vars(chain))):
            assert SECRET not in text, text
        chain = chain.__cause__ or chain.__context__


async def _expect_error(call: Awaitable[object]) -> FelderaError:
    with pytest.raises(FelderaError) as info:
        await call
    return info.value


async def test_api_key_never_appears_in_any_error(
    fake: FakeFeldera,
    pki: Pki,
    tls_fake: FakeFeldera,
    dropping_server: Callable[[bytes], Awaitable[str]],
) -> None:
    errors: list[FelderaError] = []
    async with FelderaClient(fake.url, api_key=API_KEY, timeout=0.5) as c:
        assert SECRET not in repr(c)
        for status, code in [
            (400, "InvalidConnectorAction"),
            (401, "AuthenticationFailed"),
            (403, "InsufficientPermissions"),
            (404, "UnknownInputEndpoint"),
            (409, "DuplicateName"),
            (500, "UnknownInternalError"),
            (501, "EnterpriseFeature"),
            (503, "PipelineInteractionNotDeployed"),
        ]:
            fake.reply_error(status, code)
            errors.append(await _expect_error(c.input_connector_action("p", "t", "c", "start")))
        # A server or proxy that echoes the request's headers back, in JSON and in text.
        echo = f"Authorization: Bearer {API_KEY}"
        fake.reply_error(
            401, "AuthenticationFailed", message=echo, details={"header": echo, "k": [API_KEY]}
        )
        errors.append(await _expect_error(c.pause("p")))
        fake.reply(502, text=echo * 5)  # longer than the excerpt: the cut must not keep a prefix
        errors.append(await _expect_error(c.pause("p")))
        fake.reply(502, text="x" * 150 + echo)  # the excerpt cuts through the key
        errors.append(await _expect_error(c.pause("p")))
        fake.reply(200, text=echo)
        errors.append(await _expect_error(c.config()))
        fake.reply(200, json_body=[])
        errors.append(await _expect_error(c.stats("p")))
        fake.reply(delay=2.0)
        errors.append(await _expect_error(c.stats("p")))

    async with FelderaClient(f"http://127.0.0.1:{_free_port()}", api_key=API_KEY) as c:
        errors.append(await _expect_error(c.config()))
    # aiohttp's error for an unparsable response prints the request headers in its repr.
    for answer in (b"", b"NOT HTTP AT ALL\r\n\r\n"):
        async with FelderaClient(await dropping_server(answer), api_key=API_KEY) as c:
            errors.append(await _expect_error(c.config()))
    async with FelderaClient(tls_fake.url, api_key=API_KEY) as c:
        errors.append(await _expect_error(c.config()))

    kinds = {type(e) for e in errors}
    assert kinds >= {
        FelderaError,
        FelderaBadRequest,
        FelderaAuthError,
        FelderaForbidden,
        FelderaNotFound,
        FelderaServerError,
        FelderaNotDeployed,
        FelderaUnreachable,
        FelderaTLSError,
    }
    assert any(isinstance(e, FelderaUnreachable) and e.timeout for e in errors)
    for err in errors:
        _assert_no_key(err)
    echoed = errors[8]
    assert "[REDACTED]" in echoed.message
    assert echoed.details == {"header": "Authorization: Bearer [REDACTED]", "k": ["[REDACTED]"]}
