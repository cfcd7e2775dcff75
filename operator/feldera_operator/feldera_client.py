"""The operator's async client for the Feldera REST API: a thin, typed edge.

Covers what the operator needs and nothing more: server identity (`GET /v0/config`, `/healthz`),
pipeline status (list and one), `/stats`, the pipeline actions (start, pause, resume, stop), the
input and output connector actions, and what a declared program needs (spec.program): create
(`PUT`), update (`PATCH`), preview (`POST .../diff`), clear storage, approve a bootstrap, delete.

What it promises its callers:
- Every failure is a `FelderaError` subclass that says what went wrong in terms the reconcile loop
  can act on (unreachable, credentials, not found, not deployed, server error, bad request), with
  `retryable` and `retry_after`. No aiohttp exception escapes.
- It never retries: the reconcile loop owns backoff, and a hidden retry here would multiply it.
  The one resend is aiohttp's own: a GET or PUT whose connection closes before any answer is sent
  once more (RFC 9112 9.3.1), so a keep-alive connection a proxy closed while idle does not read
  as "unreachable". POST actions are never resent.
- Every path segment is percent-encoded and sent as is, so a quoted SQL name (`"MyTable"`) reaches
  Feldera as `%22MyTable%22`.
- The API key never appears in an exception, a log line or a repr, even when a server echoes it.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import re
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Literal, NotRequired, Self, TypedDict, cast
from urllib.parse import quote, urlencode

import aiohttp
import orjson
from yarl import URL

from feldera_operator import __version__
from feldera_operator.budget import RequestBudget, is_background

__all__ = [
    "BootstrapPolicy",
    "EndpointHealth",
    "FelderaAuthError",
    "FelderaBadRequest",
    "FelderaClient",
    "FelderaClientClosed",
    "FelderaConfig",
    "FelderaError",
    "FelderaForbidden",
    "FelderaNotDeployed",
    "FelderaNotFound",
    "FelderaServerError",
    "FelderaTLSError",
    "FelderaUnreachable",
    "GlobalMetrics",
    "Healthz",
    "InputEndpointMetrics",
    "InputEndpointStatus",
    "OnResponse",
    "OutputEndpointStatus",
    "Pipeline",
    "PipelineStats",
]

log = logging.getLogger(__name__)

Selector = Literal["all", "status", "status_with_connectors"]
InitialState = Literal["running", "paused"]
BootstrapPolicy = Literal["allow", "reject", "await_approval"]
ConnectorAction = Literal["start", "pause"]

OnResponse = Callable[[str, int | None, float], None]
"""Called once per request with the endpoint template (`"GET /v0/pipelines/{pipeline}/stats"`),
the HTTP status (None when no response came) and the seconds it took."""

# How much of a body that is not Feldera's error JSON goes into a message: enough to recognise a
# proxy's page, not so much that one error floods a log line or a Kubernetes Event.
_BODY_EXCERPT: Final = 200
_REDACTED: Final = "[REDACTED]"
# Characters an HTTP header value may carry; anything else in a key would be a header-injection
# risk, and aiohttp's own complaint about it might quote the value.
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+")
# The most a response body may hold: a listing of 10,000 pipelines is a few MB. More is a server
# gone wrong, and reading it whole would grow the operator's memory without end.
MAX_BODY: Final = 64 * 1024 * 1024
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_SSL_SOURCE = re.compile(r"\s*\(_ssl\.c:\d+\)")


# ----------------------------------------------------------------------------- response shapes
# The fields the operator reads. `total=False` because selectors return subsets and newer Feldera
# versions add fields; nothing here is validated beyond the top-level shape.


class FelderaConfig(TypedDict, total=False):
    version: str
    edition: str
    revision: str
    telemetry: str


class Healthz(TypedDict, total=False):
    status: str


class Pipeline(TypedDict, total=False):
    id: str
    name: str
    description: str
    version: int
    refresh_version: int
    program_status: str
    program_error: Any
    program_info: Any
    deployment_status: str
    deployment_desired_status: str
    deployment_error: Any
    deployment_status_since: str
    storage_status: str
    connectors: Any


class EndpointHealth(TypedDict):
    status: str
    description: NotRequired[str | None]


class InputEndpointMetrics(TypedDict, total=False):
    total_bytes: int
    total_records: int
    buffered_records: int
    buffered_bytes: int
    num_transport_errors: int
    num_parse_errors: int
    end_of_input: bool


class InputEndpointStatus(TypedDict, total=False):
    endpoint_name: str
    config: dict[str, Any]
    paused: bool
    barrier: bool
    fatal_error: str | None
    health: EndpointHealth | None
    metrics: InputEndpointMetrics


class OutputEndpointStatus(TypedDict, total=False):
    endpoint_name: str
    config: dict[str, Any]
    paused: bool  # Feldera 0.369+
    fatal_error: str | None
    health: EndpointHealth | None
    metrics: dict[str, Any]


class GlobalMetrics(TypedDict, total=False):
    state: str
    total_input_records: int
    total_processed_records: int
    buffered_input_records: int
    pipeline_complete: bool
    rss_bytes: int
    uptime_msecs: int


class PipelineStats(TypedDict, total=False):
    global_metrics: GlobalMetrics
    inputs: list[InputEndpointStatus]
    outputs: list[OutputEndpointStatus]


# ----------------------------------------------------------------------------- errors


class FelderaError(Exception):
    """A Feldera API call failed. `str()` is safe to put in a log, an Event or a status message.

    `endpoint` is the method and path actually requested (`"POST /v0/pipelines/p/pause"`), never
    the base URL, and no request header is ever part of the error.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        status: int | None = None,
        error_code: str | None = None,
        details: Any = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        self.endpoint = endpoint
        self.status = status
        self.error_code = error_code
        self.details = details
        self.retry_after = retry_after
        super().__init__(self._summary())

    def _summary(self) -> str:
        what = "no response" if self.status is None else f"HTTP {self.status}"
        if self.error_code:
            what = f"{what} {self.error_code}"
        return f"{self.endpoint}: {what}: {self.message}"

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed later without anyone changing anything.

        501 is left out of the 5xx family: Feldera answers it for an Enterprise-only feature, and
        asking again will not make the server Enterprise.
        """
        if self.status is None:
            return True
        return self.status in (408, 429) or (500 <= self.status <= 599 and self.status != 501)


class FelderaUnreachable(FelderaError):
    """No HTTP response: connection refused, reset or dropped, DNS failure, or a timeout."""

    def __init__(self, message: str, *, endpoint: str, timeout: bool = False) -> None:
        self.timeout = timeout
        super().__init__(message, endpoint=endpoint)

    @property
    def retryable(self) -> bool:
        return True


class FelderaTLSError(FelderaUnreachable):
    """The TLS handshake failed: the certificate is not trusted, expired or for another host, or
    the server does not speak TLS. `detail` says which, in OpenSSL's words.

    A kind of unreachable, so callers that only care about reachability need not know it; callers
    that want to tell a person "check the CA" can.
    """

    def __init__(self, message: str, *, endpoint: str, detail: str) -> None:
        self.detail = detail
        super().__init__(message, endpoint=endpoint)


class FelderaAuthError(FelderaError):
    """401: the API key is missing, malformed or unknown (`AuthenticationFailed`)."""


class FelderaForbidden(FelderaError):
    """403: the key is valid but lacks the role (`InsufficientPermissions`; actions need write)."""


class FelderaNotFound(FelderaError):
    """404: the pipeline, or a connector of it, does not exist."""

    @property
    def is_pipeline(self) -> bool:
        return self.error_code == "UnknownPipelineName"

    @property
    def is_connector(self) -> bool:
        return self.error_code in ("UnknownInputEndpoint", "UnknownOutputEndpoint")

    @property
    def endpoint_name(self) -> str | None:
        """The full connector name Feldera did not know (`"table.connector"`), when it says."""
        if self.is_connector and isinstance(self.details, dict):
            name = self.details.get("endpoint_name")
            return name if isinstance(name, str) else None
        return None


class FelderaNotDeployed(FelderaError):
    """The pipeline exists but cannot take the call in its current deployment state.

    503 `PipelineInteractionNotDeployed` (stopped, provisioning, stopping) and its relatives:
    the runner is unavailable or unreachable, the pipeline is initializing, awaiting approval or
    suspended, or (410) terminating. All of them pass without anyone's help, hence retryable.
    """

    @property
    def retryable(self) -> bool:
        return True

    @property
    def deployment_status(self) -> str | None:
        """The deployment status Feldera reported with the error, when it did."""
        if isinstance(self.details, dict):
            status = self.details.get("status")
            return status if isinstance(status, str) else None
        return None


class FelderaServerError(FelderaError):
    """Any other 5xx, including a proxy's 502/504 and 501 `EnterpriseFeature`."""


class FelderaClientClosed(FelderaError):
    """This client was closed (its settings were replaced): nothing was sent; ask the new one."""

    @property
    def retryable(self) -> bool:
        return True


class FelderaBadRequest(FelderaError):
    """400, 409 and any other 4xx: the request itself was refused (408 and 429 are retryable)."""


_NOT_DEPLOYED_CODES: Final = frozenset(
    {
        "PipelineInteractionNotDeployed",
        "PipelineUnavailable",
        "PipelineInteractionUnreachable",
        "Initializing",
        "AwaitingApproval",
        "Suspended",
        "Terminating",
    }
)


def _error_class(status: int, error_code: str | None) -> type[FelderaError]:
    if error_code in _NOT_DEPLOYED_CODES and status in (410, 503):
        return FelderaNotDeployed
    if status == 401:
        return FelderaAuthError
    if status == 403:
        return FelderaForbidden
    if status == 404:
        return FelderaNotFound
    if 500 <= status <= 599:
        return FelderaServerError
    if 400 <= status <= 499:
        return FelderaBadRequest
    # 1xx/3xx: redirects are not followed (they could carry the key to another host).
    return FelderaError


def _parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT even when it fails to say so
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(seconds, 0.0)


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _BODY_EXCERPT else text[:_BODY_EXCERPT] + "…"


def _segment(value: str) -> str:
    """One path segment, percent-encoded whole: `/`, `"`, `%`, `?` and spaces included."""
    if not value:
        # An empty name would silently address a different endpoint (`/v0/pipelines/`).
        raise ValueError("a Feldera name used in a URL path must not be empty")
    return quote(value, safe="")


class FelderaClient:
    """An async client for one Feldera API server, over one aiohttp session.

    Use as `async with FelderaClient(url, api_key=...) as client:` or call `close()`. A session
    passed in is used as is and left open; otherwise the client creates its own on first use (an
    aiohttp session must be created inside the running event loop) and closes it.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        tenant: str | None = None,
        ca_pem: str | None = None,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        on_response: OnResponse | None = None,
        max_in_flight: int = 32,
        max_body: int = MAX_BODY,
        budget: RequestBudget | None = None,
    ) -> None:
        url = URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("base_url must be an absolute http:// or https:// URL")
        if url.user is not None or url.password is not None:
            # Credentials go in api_key; in the URL they would leak into every error and log.
            raise ValueError("base_url must not carry credentials; pass api_key instead")
        if api_key is not None and not _HEADER_VALUE.fullmatch(api_key):
            raise ValueError("api_key must be non-empty printable ASCII without spaces")
        if tenant is not None and not _HEADER_VALUE.fullmatch(tenant):
            raise ValueError("tenant must be non-empty printable ASCII without spaces")
        if timeout <= 0:
            raise ValueError("timeout must be positive")

        self._base = str(url.with_query(None).with_fragment(None)).rstrip("/")
        self._api_key = api_key
        self._headers: dict[str, str] = {
            "Accept": "application/json",
            "User-Agent": f"feldera-operator/{__version__}",
        }
        if api_key is not None:
            self._headers["Authorization"] = f"Bearer {api_key}"
        if tenant is not None:
            self._headers["Feldera-Tenant"] = tenant
        self._tenant = tenant
        self._ssl: ssl.SSLContext | bool = True
        if ca_pem is not None:
            self._ssl = _ssl_context(ca_pem)
        # `total` bounds the whole exchange, the body's read included (a server trickling a
        # byte a second); the wait for a free slot below is not part of it.
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._in_flight = asyncio.Semaphore(max_in_flight)
        # The instance's request rate, shared by every client it has over time.
        self._budget = budget
        self._max_body = max_body
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._on_response = on_response

    def __repr__(self) -> str:
        auth = "api-key" if self._api_key is not None else "none"
        return f"FelderaClient(base_url={self._base!r}, tenant={self._tenant!r}, auth={auth})"

    @property
    def base_url(self) -> str:
        return self._base

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client created it. Safe to call more than once."""
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------------- server

    async def config(self) -> FelderaConfig:
        """`GET /v0/config`: the server's version and edition ("Open source" | "Enterprise")."""
        return cast(FelderaConfig, await self._request("GET", "/v0/config", expect=dict))

    async def healthz(self) -> Healthz:
        """`GET /healthz`: needs no credentials; 200 `{"status": "healthy"}`."""
        return cast(Healthz, await self._request("GET", "/healthz", expect=dict))

    # ------------------------------------------------------------------------- pipelines

    async def list_pipelines(self, selector: Selector = "status") -> list[Pipeline]:
        """`GET /v0/pipelines?selector=...`: every pipeline, in one call."""
        body = await self._request(
            "GET", "/v0/pipelines", query={"selector": selector}, expect=list
        )
        return cast(list[Pipeline], body)

    async def get_pipeline(self, name: str, selector: Selector = "status") -> Pipeline:
        """`GET /v0/pipelines/{name}?selector=...`."""
        body = await self._request(
            "GET",
            "/v0/pipelines/{pipeline}",
            {"pipeline": name},
            query={"selector": selector},
            expect=dict,
        )
        return cast(Pipeline, body)

    async def put_pipeline(self, name: str, body: Mapping[str, Any]) -> Pipeline:
        """`PUT /v0/pipelines/{name}`: create or replace (body needs `name` and `program_code`)."""
        result = await self._request(
            "PUT", "/v0/pipelines/{pipeline}", {"pipeline": name}, json_body=dict(body), expect=dict
        )
        return cast(Pipeline, result)

    async def patch_pipeline(self, name: str, body: Mapping[str, Any]) -> Pipeline:
        """`PATCH /v0/pipelines/{name}`: only the top-level fields given change (a config object
        given is replaced whole)."""
        result = await self._request(
            "PATCH",
            "/v0/pipelines/{pipeline}",
            {"pipeline": name},
            json_body=dict(body),
            expect=dict,
        )
        return cast(Pipeline, result)

    async def delete_pipeline(self, name: str) -> None:
        """`DELETE /v0/pipelines/{name}`: needs it fully stopped and its storage cleared."""
        await self._request("DELETE", "/v0/pipelines/{pipeline}", {"pipeline": name})

    async def diff(
        self, name: str, program_code: str, runtime_version: str | None = None
    ) -> dict[str, Any]:
        """`POST .../diff`: what the new SQL would change (Feldera's PipelineDiff), stopping
        nothing. 400 `InvalidNewProgramSql` carries the compiler's messages in `details`."""
        body: dict[str, Any] = {"program_code": program_code}
        if runtime_version is not None:
            body["runtime_version"] = runtime_version
        result = await self._request(
            "POST", "/v0/pipelines/{pipeline}/diff", {"pipeline": name}, json_body=body, expect=dict
        )
        return cast(dict[str, Any], result)

    async def clear(self, name: str) -> None:
        """`POST .../clear`: deletes the pipeline's storage (checkpoints, state); 202."""
        await self._request("POST", "/v0/pipelines/{pipeline}/clear", {"pipeline": name})

    async def approve(self, name: str) -> None:
        """`POST .../approve`: a pipeline awaiting approval bootstraps (Enterprise)."""
        await self._request("POST", "/v0/pipelines/{pipeline}/approve", {"pipeline": name})

    async def stats(self, name: str) -> PipelineStats:
        """`GET /v0/pipelines/{name}/stats`: global metrics and every connector's state."""
        body = await self._request(
            "GET", "/v0/pipelines/{pipeline}/stats", {"pipeline": name}, expect=dict
        )
        return cast(PipelineStats, body)

    async def start(
        self, name: str, initial: InitialState, bootstrap_policy: BootstrapPolicy | None = None
    ) -> None:
        """`POST .../start?initial=...[&bootstrap_policy=...]`: 202 records the wish; poll the
        status to see it happen. The policy is for a start from a checkpoint of another program
        (Enterprise); None leaves Feldera's default (await_approval)."""
        query: dict[str, str] = {"initial": initial}
        if bootstrap_policy is not None:
            query["bootstrap_policy"] = bootstrap_policy
        await self._request(
            "POST", "/v0/pipelines/{pipeline}/start", {"pipeline": name}, query=query
        )

    async def pause(self, name: str) -> None:
        """`POST .../pause`: asynchronous (202) and idempotent."""
        await self._request("POST", "/v0/pipelines/{pipeline}/pause", {"pipeline": name})

    async def resume(self, name: str) -> None:
        """`POST .../resume`: asynchronous (202) and idempotent."""
        await self._request("POST", "/v0/pipelines/{pipeline}/resume", {"pipeline": name})

    async def stop(self, name: str, force: bool = True) -> None:
        """`POST .../stop?force=...`. The open-source edition answers `force=false` with 501
        `EnterpriseFeature`, hence the default."""
        await self._request(
            "POST",
            "/v0/pipelines/{pipeline}/stop",
            {"pipeline": name},
            query={"force": "true" if force else "false"},
        )

    async def dismiss_error(self, name: str) -> None:
        """`POST .../dismiss_error`: clears `deployment_error` of a fully stopped pipeline."""
        await self._request("POST", "/v0/pipelines/{pipeline}/dismiss_error", {"pipeline": name})

    # ------------------------------------------------------------------------- connectors

    async def input_connector_action(
        self, pipeline: str, table: str, connector: str, action: ConnectorAction
    ) -> None:
        """Start or pause one input connector. `table` is written as in SQL: a table declared
        quoted is passed with its quotes (`'"MyTable"'`)."""
        await self._connector_action(pipeline, "tables", "table", table, connector, action)

    async def output_connector_action(
        self, pipeline: str, view: str, connector: str, action: ConnectorAction
    ) -> None:
        """Start or pause one output connector (Feldera 0.369+)."""
        await self._connector_action(pipeline, "views", "view", view, connector, action)

    async def _connector_action(
        self,
        pipeline: str,
        collection: Literal["tables", "views"],
        placeholder: Literal["table", "view"],
        relation: str,
        connector: str,
        action: ConnectorAction,
    ) -> None:
        if action not in ("start", "pause"):
            # The action is part of the endpoint template (a metrics label): keep it a closed set.
            raise ValueError("connector action must be 'start' or 'pause'")
        template = (
            f"/v0/pipelines/{{pipeline}}/{collection}/{{{placeholder}}}"
            f"/connectors/{{connector}}/{action}"
        )
        await self._request(
            "POST",
            template,
            {"pipeline": pipeline, placeholder: relation, "connector": connector},
        )

    # ------------------------------------------------------------------------- plumbing

    def _http(self, endpoint: str) -> aiohttp.ClientSession:
        if self._closed:
            raise FelderaClientClosed("the client is closed; nothing was sent", endpoint=endpoint)
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # An API client has no use for cookies, and a shared jar could carry one tenant's
                # session to another.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def _request(
        self,
        method: str,
        path_template: str,
        names: Mapping[str, str] | None = None,
        *,
        query: Mapping[str, str] | None = None,
        json_body: Any = None,
        expect: type[dict[str, Any]] | type[list[Any]] | None = None,
    ) -> Any:
        """One round trip. Returns the parsed JSON body (checked to be an `expect` when given),
        or None for an empty one."""
        path = path_template.format_map({k: _segment(v) for k, v in (names or {}).items()})
        if query:
            path = f"{path}?{urlencode(query)}"
        endpoint = f"{method} {path}"
        # encoded=True: the path is already percent-encoded, and yarl must neither encode it again
        # (%22 → %2522) nor decode it (%2F → /).
        url = URL(self._base + path, encoded=True)
        session = self._http(endpoint)
        status: int | None = None
        failure: FelderaUnreachable | None = None
        started = time.monotonic()
        # Failures are raised after the `except` blocks, not inside them, so that they carry no
        # __context__: aiohttp's exceptions hold the request, and the repr of some of them prints
        # its headers, the key among them.
        too_large = False
        raw = b""
        if self._budget is not None:
            await self._budget.acquire(background=is_background(method))
        try:
            async with self._in_flight:
                started = time.monotonic()
                # Redirects are never followed: the key would go with the request wherever the
                # server points (another host, plain http). A redirect is reported instead.
                async with session.request(
                    method,
                    url,
                    headers=self._headers,
                    json=json_body,
                    ssl=self._ssl,
                    timeout=self._timeout,
                    allow_redirects=False,
                    raise_for_status=False,
                ) as response:
                    raw, too_large = await self._read(response)
                    status = response.status
        except TimeoutError:
            failure = FelderaUnreachable(
                f"no response within {self._timeout.total:g} s", endpoint=endpoint, timeout=True
            )
        except aiohttp.ClientSSLError as e:
            detail = _tls_detail(e)
            failure = FelderaTLSError(
                self._redact(f"TLS failed: {detail}"), endpoint=endpoint, detail=detail
            )
        except aiohttp.ClientError as e:
            # Refused, reset, DNS, dropped mid-response, or a response too broken to parse.
            failure = FelderaUnreachable(self._redact(_describe(e)), endpoint=endpoint)
        finally:
            self._report(method, path_template, status, time.monotonic() - started)
        if failure is not None:
            raise failure
        if too_large:
            raise FelderaError(
                f"response larger than {self._max_body} bytes: not read",
                endpoint=endpoint,
                status=response.status,
            )

        if not 200 <= response.status <= 299:
            raise self._error(endpoint, response, raw)
        body = self._parse_success(endpoint, response.status, raw)
        if expect is not None and not isinstance(body, expect):
            got = "an empty body" if body is None else f"JSON {type(body).__name__}"
            raise FelderaError(
                f"expected a JSON {expect.__name__}, got {got}",
                endpoint=endpoint,
                status=response.status,
            )
        return body

    async def _read(self, response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        """The body, unless it is larger than allowed: (what was read, whether it was cut)."""
        length = response.content_length
        if length is not None and length > self._max_body:
            return b"", True
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(65536):
            size += len(chunk)
            if size > self._max_body:
                return b"", True
            chunks.append(chunk)
        return b"".join(chunks), False

    def _parse_success(self, endpoint: str, status: int, raw: bytes) -> Any:
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        try:
            return json.loads(raw)  # what orjson refuses and json reads (integers over 64 bits)
        except ValueError:
            pass
        # Typically a proxy or login page answering 200 in the API's place. Raised outside the
        # `except`: the decoder's error keeps the whole body, which may echo the key.
        text = _excerpt(self._redact(raw.decode("utf-8", "replace")))
        raise FelderaError(f"response is not JSON: {text}", endpoint=endpoint, status=status)

    def _error(self, endpoint: str, response: aiohttp.ClientResponse, raw: bytes) -> FelderaError:
        # Redact before excerpting: a cut through the key would leave a prefix of it behind.
        text = self._redact(raw.decode("utf-8", "replace"))
        error_code: str | None = None
        details: Any = None
        message = _excerpt(text) if text.strip() else (response.reason or "no body")
        if _looks_like_html(text):
            # A proxy or load balancer answered in Feldera's place (nginx's 502 page...).
            message = f"{_html_summary(text)} (an HTML page, not Feldera's error: a proxy?)"
        if 300 <= response.status <= 399:
            location = response.headers.get("Location")
            where = f" to {_without_query(location)}" if location else ""
            message = f"redirected{where}; redirects are not followed"
        try:
            # Parsed from the original bytes: the key may sit JSON-escaped in them.
            parsed = self._redact(json.loads(raw))
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            message = _excerpt(parsed["message"])
            code = parsed.get("error_code")
            error_code = code if isinstance(code, str) else None
            details = parsed.get("details")
        elif parsed is not None:
            details = parsed
        return _error_class(response.status, error_code)(
            message,
            endpoint=endpoint,
            status=response.status,
            error_code=error_code,
            details=details,
            retry_after=_parse_retry_after(response.headers.get("Retry-After")),
        )

    def _redact(self, value: Any) -> Any:
        """Remove the API key from text that came from elsewhere: a server or proxy that echoes
        request headers back must not turn an error message into a leak."""
        key = self._api_key
        if key is None:
            return value
        if isinstance(value, str):
            return value.replace(key, _REDACTED)
        if isinstance(value, list):
            return [self._redact(v) for v in value]
        if isinstance(value, dict):
            return {self._redact(k): self._redact(v) for k, v in value.items()}
        return value

    def _report(self, method: str, path_template: str, status: int | None, seconds: float) -> None:
        if self._on_response is None:
            return
        try:
            self._on_response(f"{method} {path_template}", status, seconds)
        except Exception:
            # Metrics are an observer: a broken hook must not turn a good call into a failure.
            log.exception("on_response hook failed")


def _ssl_context(ca_pem: str) -> ssl.SSLContext:
    """A verifying context that trusts exactly the given CA bundle (a private CA, typically)."""
    try:
        return ssl.create_default_context(cadata=ca_pem)
    except (ssl.SSLError, ValueError) as e:
        raise ValueError(f"ca_pem is not a usable PEM certificate bundle: {e}") from None


def _looks_like_html(text: str) -> bool:
    head = text.lstrip()[:200].lower()
    return head.startswith("<!doctype html") or head.startswith("<html") or "<head" in head


def _html_summary(text: str) -> str:
    """An HTML page in a few words: its title, else its text without tags."""
    match = _TITLE.search(text)
    words = match.group(1) if match else _TAG.sub(" ", text)
    return _excerpt(words) or "an empty page"


def _without_query(url: str) -> str:
    """A redirect target fit to show: no query or fragment (tokens travel there), no user info."""
    try:
        target = URL(url)
        if target.user is not None or target.password is not None:
            target = target.with_user(None)
        return str(target.with_query(None).with_fragment(None))
    except ValueError:
        return "an unreadable location"


def _tls_detail(e: aiohttp.ClientSSLError) -> str:
    """OpenSSL's reason, as a person reads it: "certificate verify failed: certificate has
    expired", "wrong version number" (no TLS at that address)."""
    cause: Any = getattr(e, "certificate_error", None) or (e.args[1] if len(e.args) > 1 else e)
    verify = getattr(cause, "verify_message", None)
    if isinstance(verify, str) and verify:
        return f"certificate verify failed: {verify.rstrip('.')}"
    reason = getattr(cause, "reason", None)
    if isinstance(reason, str) and reason:
        return reason.replace("_", " ").lower()
    text = _SSL_SOURCE.sub("", str(cause))
    return text or type(e).__name__


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
