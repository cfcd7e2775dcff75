"""An emulator of the Feldera REST API (pipeline-manager, open-source edition), over real HTTP.

What it emulates, as /work/shared/feldera-api.md describes the real server:
- pipeline CRUD (`GET/POST /v0/pipelines`, `GET/PUT/PATCH/DELETE /v0/pipelines/{name}`) with the
  `all | status | status_with_connectors` selectors, `version`/`program_version`/`refresh_version`;
- compilation (Pending → CompilingSql → SqlCompiled → CompilingRust → Success, or SqlError when the
  SQL cannot be read) and `program_info` with the tables, views and connectors read from the SQL's
  `WITH ('connectors' = ...)` clauses (see `feldera_sql`);
- the asynchronous deployment state machine (Stopped → Provisioning → Initializing →
  Running|Paused ⇄, Stopping → Stopped; storage InUse → Clearing → Cleared), each step `delay`
  seconds apart, or applied before the next request is served when `delay` is 0;
- `start?initial=`, `pause`, `resume`, `stop?force=true` (without force: 501 as open source does),
  `clear`, `dismiss_error`, `/stats`, input and output connector `start|pause` and `/stats`;
- restarts: connector paused flags come back from the "checkpoint" taken at stop, or from the SQL
  (`restore="sql"`), the drift the operator exists to correct;
- API keys with `read`/`write` roles (401 `AuthenticationFailed`, 403 `InsufficientPermissions`);
- exact status codes and `{message, error_code, details}` bodies.

What it does not: run SQL or move data (metrics of an active connector tick up per `/stats` read),
ingress/egress/query, checkpoints API, transactions, logs beyond a short lifecycle trail,
tenants, JWTs, bootstrapping approval, standby, Enterprise suspend.

Test hooks (not counted, no auth), in process and over HTTP under `/_emulator/`: fault injection
(status, latency, dropped connections), request counts keyed `"METHOD /route/{template}"` (the
`ROUTE_*` constants), a log of action calls with their arrival times (`actions()`, for latency
benchmarks), settings (`restore`, `delay`), and drift (`set_connector_paused`, `fail_pipeline`)
that changes state behind the client's back.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import re
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn, cast

from aiohttp import web

from feldera_sandbox.feldera_sql import (
    Program,
    Relation,
    SqlParseError,
    canonical_name,
    parse_program,
)

Role = Literal["read", "write"]
Restore = Literal["checkpoint", "sql"]

# Route templates: the request-count keys are "METHOD " + one of these, and faults match them.
ROUTE_HEALTHZ = "/healthz"
ROUTE_CONFIG = "/v0/config"
ROUTE_CLUSTER_HEALTHZ = "/v0/cluster_healthz"
ROUTE_PIPELINES = "/v0/pipelines"
ROUTE_PIPELINE = "/v0/pipelines/{pipeline}"
ROUTE_START = "/v0/pipelines/{pipeline}/start"
ROUTE_PAUSE = "/v0/pipelines/{pipeline}/pause"
ROUTE_RESUME = "/v0/pipelines/{pipeline}/resume"
ROUTE_STOP = "/v0/pipelines/{pipeline}/stop"
ROUTE_CLEAR = "/v0/pipelines/{pipeline}/clear"
ROUTE_DISMISS_ERROR = "/v0/pipelines/{pipeline}/dismiss_error"
ROUTE_STATS = "/v0/pipelines/{pipeline}/stats"
ROUTE_LOGS = "/v0/pipelines/{pipeline}/logs"
ROUTE_INPUT_CONNECTOR_STATS = "/v0/pipelines/{pipeline}/tables/{table}/connectors/{connector}/stats"
ROUTE_INPUT_CONNECTOR_ACTION = (
    "/v0/pipelines/{pipeline}/tables/{table}/connectors/{connector}/{action}"
)
ROUTE_OUTPUT_CONNECTOR_STATS = "/v0/pipelines/{pipeline}/views/{view}/connectors/{connector}/stats"
ROUTE_OUTPUT_CONNECTOR_ACTION = (
    "/v0/pipelines/{pipeline}/views/{view}/connectors/{connector}/{action}"
)

ROUTES: frozenset[str] = frozenset(
    {
        ROUTE_HEALTHZ,
        ROUTE_CONFIG,
        ROUTE_CLUSTER_HEALTHZ,
        ROUTE_PIPELINES,
        ROUTE_PIPELINE,
        ROUTE_START,
        ROUTE_PAUSE,
        ROUTE_RESUME,
        ROUTE_STOP,
        ROUTE_CLEAR,
        ROUTE_DISMISS_ERROR,
        ROUTE_STATS,
        ROUTE_LOGS,
        ROUTE_INPUT_CONNECTOR_STATS,
        ROUTE_INPUT_CONNECTOR_ACTION,
        ROUTE_OUTPUT_CONNECTOR_STATS,
        ROUTE_OUTPUT_CONNECTOR_ACTION,
    }
)

LISTENING_MESSAGE = "feldera emulator listening on {url}"

_NAME_PATTERN = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_]*)?[A-Za-z0-9]$")
_CONNECTOR_ACTIONS = ("start", "pause")
_COMPILING = ("Pending", "CompilingSql", "SqlCompiled", "CompilingRust")
_COMPILE_FAILED = ("SqlError", "RustError", "SystemError")
# Where the API server itself answers for the runtime: nothing to forward a request to.
_NOT_DEPLOYED = ("Stopped", "Provisioning", "Stopping")
_CORE_FIELDS = ("program_code", "udf_rust", "udf_toml", "program_config", "runtime_config")
_PROGRAM_FIELDS = ("program_code", "udf_rust", "udf_toml", "program_config")
_LOG_LINES = 200
_ACTION_LOG_SIZE = 100_000
# The routes whose calls change state: logged with their arrival time (see `actions()`).
ACTION_ROUTES: frozenset[str] = frozenset(
    {
        ROUTE_START,
        ROUTE_PAUSE,
        ROUTE_RESUME,
        ROUTE_STOP,
        ROUTE_CLEAR,
        ROUTE_DISMISS_ERROR,
        ROUTE_INPUT_CONNECTOR_ACTION,
        ROUTE_OUTPUT_CONNECTOR_ACTION,
    }
)


def count_key(method: str, route: str) -> str:
    """The request-count key of a call: `count_key("GET", ROUTE_STATS)`."""
    return f"{method.upper()} {route}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(Exception):
    """A Feldera error response: `status` and the `{message, error_code, details}` body."""

    def __init__(self, status: int, error_code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.details = details

    def response(self) -> web.Response:
        return _error_response(self.status, self.error_code, self.message, self.details)


def _error_response(status: int, error_code: str, message: str, details: Any) -> web.Response:
    body = {"message": message, "error_code": error_code, "details": details}
    return web.json_response(body, status=status)


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

    def matches(self, route: str, method: str) -> bool:
        return self.endpoint == route and (
            self.method is None or self.method.upper() == method.upper()
        )


@dataclass(frozen=True)
class ActionCall:
    """One action call as it arrived: `wall` is `time.time()` (comparable with a client's clock on
    the same machine), `monotonic` is `time.monotonic()`; `status` is the answer's HTTP status."""

    wall: float
    monotonic: float
    method: str
    route: str
    pipeline: str
    relation: str | None
    connector: str | None
    action: str
    status: int


@dataclass
class _Endpoint:
    """A connector as the running pipeline knows it."""

    relation: str
    name: str
    declared_paused: bool
    config: dict[str, Any]
    paused: bool
    total_records: int = 0
    total_bytes: int = 0

    @property
    def full_name(self) -> str:
        return f"{self.relation}.{self.name}"

    def fingerprint(self) -> str:
        # What decides whether a checkpointed flag still applies: the config, `paused` aside.
        return json.dumps({k: v for k, v in self.config.items() if k != "paused"}, sort_keys=True)


@dataclass
class _Pipeline:
    name: str
    program_code: str
    udf_rust: str = ""
    udf_toml: str = ""
    program_config: Any = field(default_factory=dict)
    runtime_config: Any = field(default_factory=dict)
    description: str = ""
    tags: list[str] = field(default_factory=list)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=_now)
    version: int = 1
    program_version: int = 1
    refresh_version: int = 1
    program_status: str = "Pending"
    program_status_since: str = field(default_factory=_now)
    program: Program | None = None
    parse_error: SqlParseError | None = None
    status: str = "Stopped"
    status_since: str = field(default_factory=_now)
    desired: str = "Stopped"
    desired_since: str = field(default_factory=_now)
    deployment_error: dict[str, Any] | None = None
    deployment_id: str | None = None
    deployment_initial: str | None = None
    storage_status: str = "Cleared"
    inputs: dict[str, _Endpoint] = field(default_factory=dict)
    outputs: dict[str, _Endpoint] = field(default_factory=dict)
    # Paused flags at the last stop, by full name, with the config they were taken under.
    checkpoint: dict[str, tuple[str, bool]] | None = None
    incarnation: str = ""
    started_at: float = 0.0
    logs: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=_LOG_LINES)
    )
    task: asyncio.Task[None] | None = None
    deleted: bool = False

    @property
    def fully_stopped(self) -> bool:
        return self.status == "Stopped" and self.desired == "Stopped"

    def set_status(self, status: str) -> None:
        self.status = status
        self.status_since = _now()
        self.logs.append(f"{self.status_since} deployment status: {status}")

    def set_desired(self, desired: str) -> None:
        if desired != self.desired:
            self.desired = desired
            self.desired_since = _now()

    def set_program_status(self, status: str) -> None:
        self.program_status = status
        self.program_status_since = _now()
        self.logs.append(f"{self.program_status_since} program status: {status}")


def _resources_status(status: str) -> tuple[str, str | None]:
    if status in ("Stopped", "Provisioning", "Stopping"):
        return status, None
    return "Provisioned", status


def _relation_json(rel: Relation) -> dict[str, Any]:
    return {
        "name": rel.name,
        "case_sensitive": rel.case_sensitive,
        "fields": list(rel.fields),
        "materialized": rel.materialized,
        "properties": {},
    }


def _connector_config(relation: str, config: Mapping[str, Any]) -> dict[str, Any]:
    result = {"stream": relation, "paused": False}
    result.update(config)
    result["stream"] = relation
    return result


class FelderaEmulator:
    """The Feldera API emulator: build its `app()`, or `start()` it on a port and `stop()` it."""

    def __init__(
        self,
        *,
        api_keys: Mapping[str, Role] | None = None,
        delay: float = 0.0,
        restore: Restore = "checkpoint",
        version: str = "0.369.0",
    ) -> None:
        for key, role in (api_keys or {}).items():
            if role not in ("read", "write"):
                raise ValueError(f"API key role must be 'read' or 'write', not {role!r}")
            if not key:
                raise ValueError("an API key must not be empty")
        self._api_keys: dict[str, Role] = dict(api_keys or {})
        self.delay = delay
        self.restore = restore
        self.version = version
        self._pipelines: dict[str, _Pipeline] = {}
        self._faults: list[Fault] = []
        self._counts: collections.Counter[str] = collections.Counter()
        self._actions: collections.deque[ActionCall] = collections.deque(maxlen=_ACTION_LOG_SIZE)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._started = _now()

    # ----------------------------------------------------------------- settings and test hooks

    @property
    def delay(self) -> float:
        return self._delay

    @delay.setter
    def delay(self, value: float) -> None:
        if value < 0:
            raise ValueError("delay must be >= 0")
        self._delay = float(value)

    @property
    def restore(self) -> Restore:
        return self._restore

    @restore.setter
    def restore(self, value: Restore) -> None:
        if value not in ("checkpoint", "sql"):
            raise ValueError("restore must be 'checkpoint' or 'sql'")
        self._restore: Restore = value

    def inject_fault(
        self,
        endpoint: str,
        *,
        method: str | None = None,
        status: int | None = None,
        error_code: str | None = None,
        latency: float = 0.0,
        drop: bool = False,
        count: int = 1,
    ) -> Fault:
        """Make the next `count` requests to `endpoint` (a `ROUTE_*` template) misbehave.

        `latency` delays the answer; then `drop` closes the connection without one, or `status`
        answers with a Feldera error body (`error_code`, default "EmulatedFault"). A fault with
        neither only adds latency. Faults apply in the order injected.

        aiohttp resends an idempotent request once when its connection drops, so an aiohttp GET
        fails visibly only after two drops: inject `drop=True, count=2` for that.
        """
        if endpoint not in ROUTES:
            raise ValueError(f"unknown endpoint template {endpoint!r}; use a ROUTE_* constant")
        if latency < 0:
            raise ValueError("latency must be >= 0")
        fault = Fault(endpoint, method, status, error_code, latency, drop, count)
        self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self._faults.clear()

    def request_counts(self) -> dict[str, int]:
        return dict(self._counts)

    def reset_counts(self) -> None:
        self._counts.clear()

    def actions(self) -> list[ActionCall]:
        """The action calls since the last `reset_actions()` (the newest 100,000), oldest first."""
        return list(self._actions)

    def reset_actions(self) -> None:
        self._actions.clear()

    def set_connector_paused(
        self, pipeline: str, relation: str, connector: str, paused: bool, *, output: bool = False
    ) -> None:
        """Flip a connector's flag behind the client's back (someone pressed pause elsewhere).

        Works in any deployment state, so tests can also plant a flag that a restart restores.
        """
        p = self._get(pipeline)
        endpoint = self._endpoint(p, relation, connector, output=output)
        endpoint.paused = paused
        if p.status == "Stopped":
            # A stopped pipeline's flags live in its checkpoint until the next start reads them.
            if p.checkpoint is None:
                p.checkpoint = {}
            p.checkpoint[endpoint.full_name] = (endpoint.fingerprint(), paused)

    def fail_pipeline(self, pipeline: str, message: str = "emulated fatal error") -> None:
        """A fatal runtime error: `deployment_error` is set and the pipeline heads for Stopped."""
        p = self._get(pipeline)
        p.deployment_error = {
            "message": message,
            "error_code": "RuntimeError",
            "details": {"error": message},
        }
        p.set_desired("Stopped")
        self._kick(p)

    def pipeline_names(self) -> list[str]:
        return sorted(self._pipelines)

    # ----------------------------------------------------------------------- server lifecycle

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        r = app.router
        r.add_get(ROUTE_HEALTHZ, self._healthz)
        r.add_get(ROUTE_CONFIG, self._config)
        r.add_get(ROUTE_CLUSTER_HEALTHZ, self._cluster_healthz)
        r.add_get(ROUTE_PIPELINES, self._list)
        r.add_post(ROUTE_PIPELINES, self._create)
        r.add_get(ROUTE_PIPELINE, self._get_pipeline)
        r.add_put(ROUTE_PIPELINE, self._put)
        r.add_patch(ROUTE_PIPELINE, self._patch)
        r.add_delete(ROUTE_PIPELINE, self._delete)
        r.add_post(ROUTE_START, self._start)
        r.add_post(ROUTE_PAUSE, self._pause)
        r.add_post(ROUTE_RESUME, self._resume)
        r.add_post(ROUTE_STOP, self._stop)
        r.add_post(ROUTE_CLEAR, self._clear)
        r.add_post(ROUTE_DISMISS_ERROR, self._dismiss_error)
        r.add_get(ROUTE_STATS, self._stats)
        r.add_get(ROUTE_LOGS, self._logs)
        r.add_get(ROUTE_INPUT_CONNECTOR_STATS, self._input_stats)
        r.add_post(ROUTE_INPUT_CONNECTOR_ACTION, self._input_action)
        r.add_get(ROUTE_OUTPUT_CONNECTOR_STATS, self._output_stats)
        r.add_post(ROUTE_OUTPUT_CONNECTOR_ACTION, self._output_action)
        r.add_post("/_emulator/faults", self._ctl_add_fault)
        r.add_delete("/_emulator/faults", self._ctl_clear_faults)
        r.add_get("/_emulator/requests", self._ctl_counts)
        r.add_delete("/_emulator/requests", self._ctl_reset_counts)
        r.add_get("/_emulator/actions", self._ctl_actions)
        r.add_delete("/_emulator/actions", self._ctl_reset_actions)
        r.add_get("/_emulator/settings", self._ctl_settings)
        r.add_patch("/_emulator/settings", self._ctl_settings)
        r.add_post("/_emulator/connector", self._ctl_connector)
        r.add_post("/_emulator/fail", self._ctl_fail)
        app.on_shutdown.append(self._cancel_tasks)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0 picks a free port); returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("emulator already started")
        # The default access log would print one line per request: thousands per period.
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_port = runner.addresses[0][1]
        return f"http://{host}:{bound_port}"

    async def stop(self) -> None:
        await self._cancel_tasks()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _cancel_tasks(self, _app: web.Application | None = None) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    # --------------------------------------------------------------------- request plumbing

    @web.middleware
    async def _middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        if route.startswith("/_emulator/"):
            try:
                return await handler(request)
            except (ValueError, TypeError, KeyError) as err:
                return _error_response(400, "InvalidEmulatorRequest", str(err), None)
            except ApiError as err:
                return err.response()
        self._counts[count_key(request.method, route)] += 1
        if route in ACTION_ROUTES:
            return await self._logged(request, handler, route, time.time(), time.monotonic())
        return await self._serve(request, handler, route)

    async def _logged(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        route: str,
        wall: float,
        monotonic: float,
    ) -> web.StreamResponse:
        response = await self._serve(request, handler, route)
        info = request.match_info
        self._actions.append(
            ActionCall(
                wall=wall,
                monotonic=monotonic,
                method=request.method,
                route=route,
                pipeline=info.get("pipeline", ""),
                relation=info.get("table", info.get("view")),
                connector=info.get("connector"),
                action=info.get("action", route.rsplit("/", 1)[-1]),
                status=response.status,
            )
        )
        return response

    async def _serve(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        route: str,
    ) -> web.StreamResponse:
        fault = self._take_fault(route, request.method)
        if fault is not None:
            if fault.latency > 0:
                await asyncio.sleep(fault.latency)
            if fault.drop:
                self._drop(request)
            if fault.status is not None:
                return _error_response(
                    fault.status,
                    fault.error_code or "EmulatedFault",
                    f"emulated fault on {request.method} {route}",
                    None,
                )
        try:
            if route != ROUTE_HEALTHZ:
                self._authorize(request)
            return await handler(request)
        except ApiError as err:
            return err.response()

    def _take_fault(self, route: str, method: str) -> Fault | None:
        if not self._faults:
            return None
        for fault in self._faults:
            if fault.matches(route, method):
                if fault.count > 0:
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _drop(request: web.Request) -> NoReturn:
        # Abort the socket so that no byte of a response goes out: the client sees a disconnect.
        # Ending the handler with CancelledError is how aiohttp treats a vanished client anyway.
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError

    def _authorize(self, request: web.Request) -> None:
        if not self._api_keys:
            return
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        role = self._api_keys.get(token.strip()) if scheme.lower() == "bearer" else None
        if role is None:
            message = (
                "Unauthorized API request: no Authorization header"
                if not header
                else "Unauthorized API request: invalid API key"
            )
            raise ApiError(401, "AuthenticationFailed", message, {})
        if role == "read" and request.method not in ("GET", "HEAD", "OPTIONS"):
            raise ApiError(
                403,
                "InsufficientPermissions",
                f"This action requires the 'write' permission; the API key has role '{role}'",
                {"required": "write", "actual": role},
            )

    @staticmethod
    async def _json_body(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ApiError(400, "InvalidRequestBody", f"Request body is not JSON: {err}") from err
        if not isinstance(body, dict):
            raise ApiError(400, "InvalidRequestBody", "Request body must be a JSON object")
        return body

    def _get(self, name: str) -> _Pipeline:
        p = self._pipelines.get(name)
        if p is None:
            raise ApiError(
                404,
                "UnknownPipelineName",
                f"Unknown pipeline name '{name}'",
                {"pipeline_name": name},
            )
        return p

    def _pipeline(self, request: web.Request) -> _Pipeline:
        return self._get(request.match_info["pipeline"])

    # --------------------------------------------------------------------- state machine

    def _kick(self, p: _Pipeline) -> None:
        """Carry the pipeline towards its wishes: now when delay is 0, else one step per delay."""
        if self._delay <= 0:
            while (step := self._next_step(p)) is not None:
                step()
            return
        if p.task is None or p.task.done():
            task = asyncio.get_running_loop().create_task(self._drive(p))
            p.task = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drive(self, p: _Pipeline) -> None:
        while not p.deleted and self._next_step(p) is not None:
            await asyncio.sleep(self._delay)
            # Re-read after the sleep: a request may have changed the wish meanwhile.
            step = None if p.deleted else self._next_step(p)
            if step is not None:
                step()

    def _next_step(self, p: _Pipeline) -> Callable[[], None] | None:
        if p.program_status in _COMPILING:
            return lambda: self._compile_step(p)
        if p.storage_status == "Clearing":
            return lambda: self._cleared(p)
        if p.desired == "Stopped":
            if p.status == "Stopping":
                return lambda: self._stopped(p)
            if p.status != "Stopped":
                return lambda: p.set_status("Stopping")
            return None
        # Desired Running or Paused.
        if p.status == "Stopped":
            if p.program_status in _COMPILE_FAILED:
                return lambda: self._start_failed(p)
            return lambda: self._provisioning(p)
        if p.status == "Provisioning":
            return lambda: self._initializing(p)
        if p.status in ("Initializing", "Paused", "Running") and p.status != p.desired:
            return lambda: p.set_status(p.desired)
        return None

    def _compile_step(self, p: _Pipeline) -> None:
        if p.program_status == "Pending":
            p.set_program_status("CompilingSql")
        elif p.program_status == "CompilingSql":
            if p.parse_error is not None or p.program is None:
                p.set_program_status("SqlError")
            else:
                self._load_endpoints(p, p.program)
                p.set_program_status("SqlCompiled")
            p.refresh_version += 1
        elif p.program_status == "SqlCompiled":
            p.set_program_status("CompilingRust")
        else:
            p.set_program_status("Success")
            p.refresh_version += 1

    def _load_endpoints(self, p: _Pipeline, program: Program) -> None:
        def endpoints(relations: tuple[Relation, ...]) -> dict[str, _Endpoint]:
            result: dict[str, _Endpoint] = {}
            for rel in relations:
                for c in rel.connectors:
                    ep = _Endpoint(rel.name, c.name, c.paused, c.config, c.paused)
                    result[ep.full_name] = ep
            return result

        p.inputs = endpoints(program.tables)
        p.outputs = endpoints(program.views)

    def _provisioning(self, p: _Pipeline) -> None:
        p.deployment_id = str(uuid.uuid4())
        p.storage_status = "InUse"
        p.set_status("Provisioning")

    def _initializing(self, p: _Pipeline) -> None:
        # A new process: connectors take their flags from the checkpoint or from the SQL.
        checkpoint = p.checkpoint if self._restore == "checkpoint" else None
        for ep in (*p.inputs.values(), *p.outputs.values()):
            saved = checkpoint.get(ep.full_name) if checkpoint else None
            if saved is not None and saved[0] == ep.fingerprint():
                ep.paused = saved[1]
            else:
                ep.paused = ep.declared_paused
            ep.total_records = 0
            ep.total_bytes = 0
        p.incarnation = str(uuid.uuid4())
        p.started_at = time.time()
        p.set_status("Initializing")

    def _stopped(self, p: _Pipeline) -> None:
        # Open source writes no checkpoint on a forced stop; the emulator keeps one anyway,
        # so that `restore="checkpoint"` can stand in for an Enterprise or fault-tolerant restart.
        p.checkpoint = {
            ep.full_name: (ep.fingerprint(), ep.paused)
            for ep in (*p.inputs.values(), *p.outputs.values())
        }
        p.deployment_id = None
        p.set_status("Stopped")

    def _cleared(self, p: _Pipeline) -> None:
        p.checkpoint = None
        p.storage_status = "Cleared"

    def _start_failed(self, p: _Pipeline) -> None:
        p.deployment_error = {
            "message": "Cannot start the pipeline: its program failed to compile",
            "error_code": "CannotStartWithCompilationError",
            "details": {"program_status": p.program_status},
        }
        p.set_desired("Stopped")

    # --------------------------------------------------------------------------- rendering

    def _render(self, p: _Pipeline, selector: str) -> dict[str, Any]:
        resources_status, runtime_status = _resources_status(p.status)
        desired_resources = "Stopped" if p.desired == "Stopped" else "Provisioned"
        desired_runtime = None if p.desired == "Stopped" else p.desired
        out: dict[str, Any] = {
            "id": p.id,
            "name": p.name,
            "description": p.description,
            "tags": list(p.tags),
            "created_at": p.created_at,
            "version": p.version,
            "platform_version": self.version,
            "program_config": p.program_config,
            "program_version": p.program_version,
            "program_status": p.program_status,
            "program_status_since": p.program_status_since,
            "deployment_error": p.deployment_error,
            "refresh_version": p.refresh_version,
            "storage_status": p.storage_status,
            "storage_status_details": None,
            "deployment_id": p.deployment_id,
            "deployment_initial": p.deployment_initial,
            "deployment_location": None,
            "deployment_status": p.status,
            "deployment_status_since": p.status_since,
            "deployment_desired_status": p.desired,
            "deployment_desired_status_since": p.desired_since,
            "deployment_resources_status": resources_status,
            "deployment_resources_status_details": None,
            "deployment_resources_status_since": p.status_since,
            "deployment_resources_desired_status": desired_resources,
            "deployment_resources_desired_status_since": p.desired_since,
            "deployment_runtime_status": runtime_status,
            "deployment_runtime_status_details": None,
            "deployment_runtime_status_since": p.status_since if runtime_status else None,
            "deployment_runtime_desired_status": desired_runtime,
            "deployment_runtime_desired_status_since": p.desired_since if desired_runtime else None,
            "bootstrap_policy": "allow",
        }
        if selector == "all":
            out.update(
                runtime_config=p.runtime_config,
                program_code=p.program_code,
                udf_rust=p.udf_rust,
                udf_toml=p.udf_toml,
                program_error=self._program_error(p),
                program_info=self._program_info(p),
            )
        elif selector == "status_with_connectors":
            out["connectors"] = {"num_errors": 0} if p.status not in _NOT_DEPLOYED else None
        return out

    @staticmethod
    def _program_error(p: _Pipeline) -> dict[str, Any]:
        sql: dict[str, Any] | None = None
        rust: dict[str, Any] | None = None
        if p.program_status == "SqlError":
            err = p.parse_error or SqlParseError("cannot read the program")
            snippet_line = p.program_code.splitlines()[err.line - 1 : err.line]
            sql = {
                "exit_code": 1,
                "messages": [
                    {
                        "start_line_number": err.line,
                        "start_column": err.column,
                        "end_line_number": err.line,
                        "end_column": err.column,
                        "warning": False,
                        "error_type": "Error parsing SQL",
                        "message": err.message,
                        "snippet": f"    {err.line}|{snippet_line[0] if snippet_line else ''}\n",
                    }
                ],
            }
        elif p.program_status not in ("Pending", "CompilingSql"):
            sql = {"exit_code": 0, "messages": []}
            if p.program_status == "Success":
                rust = {"exit_code": 0, "stdout": "", "stderr": ""}
        return {"sql_compilation": sql, "rust_compilation": rust, "system_error": None}

    @staticmethod
    def _program_info(p: _Pipeline) -> dict[str, Any] | None:
        if p.program is None or p.program_status not in ("SqlCompiled", "CompilingRust", "Success"):
            return None
        return {
            "schema": {
                "inputs": [_relation_json(t) for t in p.program.tables],
                "outputs": [_relation_json(v) for v in p.program.views],
            },
            "main_rust": "",
            "udf_stubs": "",
            "dataflow": None,
            "input_connectors": {
                ep.full_name: _connector_config(ep.relation, ep.config) for ep in p.inputs.values()
            },
            "output_connectors": {
                ep.full_name: _connector_config(ep.relation, ep.config) for ep in p.outputs.values()
            },
        }

    def _input_status(self, p: _Pipeline, ep: _Endpoint) -> dict[str, Any]:
        if p.status == "Running" and not ep.paused:
            # No data flows here; an active connector just looks busy.
            ep.total_records += 10
            ep.total_bytes += 1000
        return {
            "endpoint_name": ep.full_name,
            "config": {"stream": ep.relation},
            "metrics": {
                "total_bytes": ep.total_bytes,
                "total_records": ep.total_records,
                "buffered_records": 0,
                "buffered_bytes": 0,
                "num_transport_errors": 0,
                "num_parse_errors": 0,
                "end_of_input": False,
            },
            "fatal_error": None,
            "parse_errors": [],
            "transport_errors": [],
            "health": {"status": "Healthy", "description": None},
            "paused": ep.paused,
            "barrier": False,
            "completed_frontier": None,
        }

    def _output_status(self, p: _Pipeline, ep: _Endpoint) -> dict[str, Any]:
        if p.status == "Running" and not ep.paused:
            ep.total_records += 10
            ep.total_bytes += 1000
        return {
            "endpoint_name": ep.full_name,
            "config": {"stream": ep.relation},
            "metrics": {
                "transmitted_records": ep.total_records,
                "transmitted_bytes": ep.total_bytes,
                "queued_records": 0,
                "queued_batches": 0,
                "buffered_records": 0,
                "buffered_batches": 0,
                "num_encode_errors": 0,
                "num_transport_errors": 0,
                "total_processed_input_records": ep.total_records,
                "total_processed_steps": 0,
                "memory": 0,
            },
            "fatal_error": None,
            "encode_errors": [],
            "transport_errors": [],
            "health": {"status": "Healthy", "description": None},
            "paused": ep.paused,
        }

    # ------------------------------------------------------------------------ the API

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "healthy"})

    async def _config(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "edition": "Open source",
                "version": self.version,
                "revision": "emulator",
                "runtime_revision": "emulator",
                "changelog_url": "https://docs.feldera.com/changelog/",
                "build_info": {},
                "build_source": "source",
                "posthog": "",
                "conceptualhq": "",
                "product_fruits": "",
                "license_validity": None,
                "update_info": None,
                "unstable_features": None,
            }
        )

    async def _cluster_healthz(self, request: web.Request) -> web.Response:
        now = _now()
        service = {"healthy": True, "message": "healthy", "unchanged_since": self._started}
        service["checked_at"] = now
        return web.json_response(
            {"all_healthy": True, "api": service, "compiler": service, "runner": service}
        )

    @staticmethod
    def _selector(request: web.Request) -> str:
        selector = request.query.get("selector", "all")
        if selector not in ("all", "status", "status_with_connectors"):
            raise ApiError(
                400,
                "InvalidQueryParameter",
                f"unknown variant `{selector}`, expected one of `all`, `status`, "
                "`status_with_connectors`",
                {"parameter": "selector"},
            )
        return selector

    async def _list(self, request: web.Request) -> web.Response:
        selector = self._selector(request)
        body = [self._render(self._pipelines[n], selector) for n in sorted(self._pipelines)]
        return web.json_response(body)

    async def _get_pipeline(self, request: web.Request) -> web.Response:
        selector = self._selector(request)
        return web.json_response(self._render(self._pipeline(request), selector))

    @staticmethod
    def _check_name(name: Any) -> str:
        if not isinstance(name, str) or len(name) > 63 or not _NAME_PATTERN.match(name):
            raise ApiError(
                400,
                "NameDoesNotMatchPattern",
                f"Name '{name}' contains characters which are not lowercase (a-z), uppercase "
                "(A-Z), numbers (0-9), underscores (_) or hyphens (-), or is longer than 63",
                {"name": name},
            )
        return name

    @staticmethod
    def _fields(body: Mapping[str, Any], *, full: bool) -> dict[str, Any]:
        """The pipeline fields a body sets. PUT/POST: all (absent = empty); PATCH: given ones."""
        defaults: dict[str, Any] = {
            "program_code": "",
            "udf_rust": "",
            "udf_toml": "",
            "program_config": {},
            "runtime_config": {},
            "description": "",
            "tags": [],
        }
        fields: dict[str, Any] = {}
        for key, default in defaults.items():
            value = body.get(key)
            if value is None:
                if full:
                    fields[key] = default
                continue
            if key in ("program_code", "udf_rust", "udf_toml", "description") and not isinstance(
                value, str
            ):
                raise ApiError(400, "InvalidRequestBody", f"'{key}' must be a string")
            if key == "tags" and not (
                isinstance(value, list) and all(isinstance(t, str) for t in value)
            ):
                raise ApiError(400, "InvalidRequestBody", "'tags' must be a list of strings")
            fields[key] = value
        return fields

    def _new_pipeline(self, name: str, fields: Mapping[str, Any]) -> _Pipeline:
        p = _Pipeline(name=name, program_code=fields["program_code"])
        for key, value in fields.items():
            setattr(p, key, value)
        self._reparse(p)
        self._pipelines[name] = p
        self._kick(p)
        return p

    @staticmethod
    def _reparse(p: _Pipeline) -> None:
        try:
            p.program, p.parse_error = parse_program(p.program_code), None
        except SqlParseError as err:
            p.program, p.parse_error = None, err
        p.inputs, p.outputs = {}, {}

    def _update(self, p: _Pipeline, fields: Mapping[str, Any], new_name: str | None) -> None:
        changed = {k: v for k, v in fields.items() if getattr(p, k) != v}
        renamed = new_name is not None and new_name != p.name
        if not changed and not renamed:
            return  # Nothing changes: accepted in any state, no version bump.
        if renamed:
            assert new_name is not None
            self._check_name(new_name)
            if new_name in self._pipelines:
                raise ApiError(
                    409,
                    "DuplicateName",
                    f"A pipeline named '{new_name}' already exists",
                    {"name": new_name},
                )
        if (renamed or any(k in _CORE_FIELDS for k in changed)) and not p.fully_stopped:
            raise ApiError(
                400,
                "UpdateRestrictedToStopped",
                "Pipeline can only be updated while stopped. Stop it first.",
                {"pipeline_name": p.name, "status": p.status, "desired_status": p.desired},
            )
        if renamed and p.storage_status != "Cleared":
            raise ApiError(
                400,
                "EditRestrictedToClearedStorage",
                "The pipeline name cannot be changed while storage is in use: clear it first.",
                {"not_allowed": ["`name`"]},
            )
        for key, value in changed.items():
            setattr(p, key, value)
        if renamed:
            assert new_name is not None
            del self._pipelines[p.name]
            p.name = new_name
            self._pipelines[new_name] = p
        p.version += 1
        p.refresh_version += 1
        if any(k in _PROGRAM_FIELDS for k in changed):
            p.program_version += 1
            p.set_program_status("Pending")
            self._reparse(p)
            self._kick(p)

    async def _create(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        name = self._check_name(body.get("name"))
        if not isinstance(body.get("program_code"), str):
            raise ApiError(400, "InvalidRequestBody", "missing field `program_code`")
        if name in self._pipelines:
            raise ApiError(
                409, "DuplicateName", f"A pipeline named '{name}' already exists", {"name": name}
            )
        p = self._new_pipeline(name, self._fields(body, full=True))
        return web.json_response(self._render(p, "all"), status=201)

    async def _put(self, request: web.Request) -> web.Response:
        name = request.match_info["pipeline"]
        body = await self._json_body(request)
        body_name = body.get("name")
        if not isinstance(body_name, str):
            raise ApiError(400, "InvalidRequestBody", "missing field `name`")
        if not isinstance(body.get("program_code"), str):
            raise ApiError(400, "InvalidRequestBody", "missing field `program_code`")
        fields = self._fields(body, full=True)
        p = self._pipelines.get(name)
        if p is None:
            if body_name != name:
                raise ApiError(
                    400,
                    "NameDoesNotMatch",
                    f"Name in the path '{name}' differs from the name in the body '{body_name}'",
                    {"name": name, "body_name": body_name},
                )
            p = self._new_pipeline(self._check_name(name), fields)
            return web.json_response(self._render(p, "all"), status=201)
        self._update(p, fields, body_name)
        return web.json_response(self._render(p, "all"), status=200)

    async def _patch(self, request: web.Request) -> web.Response:
        p = self._pipeline(request)
        body = await self._json_body(request)
        new_name = body.get("name")
        if new_name is not None and not isinstance(new_name, str):
            raise ApiError(400, "InvalidRequestBody", "'name' must be a string")
        self._update(p, self._fields(body, full=False), new_name)
        return web.json_response(self._render(p, "all"))

    async def _delete(self, request: web.Request) -> web.Response:
        p = self._pipeline(request)
        if not p.fully_stopped:
            raise ApiError(
                400,
                "DeleteRestrictedToFullyStopped",
                "Cannot delete a pipeline which is not fully stopped. Stop the pipeline first.",
                {"pipeline_name": p.name, "status": p.status, "desired_status": p.desired},
            )
        if p.storage_status != "Cleared":
            raise ApiError(
                400,
                "DeleteRestrictedToClearedStorage",
                "Cannot delete a pipeline whose storage is not cleared. Clear storage first.",
                {"pipeline_name": p.name, "storage_status": p.storage_status},
            )
        p.deleted = True
        if p.task is not None:
            p.task.cancel()
        del self._pipelines[p.name]
        return web.Response(status=200)

    def _not_deployed(self, p: _Pipeline) -> ApiError:
        return ApiError(
            503,
            "PipelineInteractionNotDeployed",
            f"Unable to interact with pipeline '{p.name}' because it is not deployed: "
            f"its status is {p.status} and its desired status is {p.desired}",
            {"pipeline_name": p.name, "status": p.status, "desired_status": p.desired},
        )

    def _require_runtime(self, p: _Pipeline) -> None:
        """Requests forwarded to the pipeline process need one that answers."""
        if p.status in _NOT_DEPLOYED:
            raise self._not_deployed(p)
        if p.status == "Initializing":
            raise ApiError(
                503,
                "Initializing",
                "The pipeline is initializing; it will be ready to serve requests shortly",
                None,
            )

    async def _start(self, request: web.Request) -> web.Response:
        p = self._pipeline(request)
        initial = request.query.get("initial", "running")
        if initial not in ("running", "paused", "standby"):
            raise ApiError(
                400,
                "InvalidQueryParameter",
                f"unknown variant `{initial}`, expected one of `running`, `paused`, `standby`",
                {"parameter": "initial"},
            )
        if initial == "standby":
            raise ApiError(
                501,
                "EnterpriseFeature",
                "Starting in standby is a Feldera Enterprise feature",
                {"feature": "standby"},
            )
        wanted = initial.capitalize()
        if p.program_status in _COMPILE_FAILED:
            raise ApiError(
                400,
                "CannotStartWithCompilationError",
                f"Cannot start pipeline '{p.name}': its program failed to compile "
                f"({p.program_status})",
                {"pipeline_name": p.name, "program_status": p.program_status},
            )
        if p.desired == "Stopped" and p.status != "Stopped":
            raise ApiError(
                400,
                "IllegalPipelineAction",
                f"Cannot start pipeline '{p.name}' while it is stopping; wait until Stopped",
                {"pipeline_name": p.name, "status": p.status, "desired_status": p.desired},
            )
        if p.desired != "Stopped":
            if p.deployment_initial != wanted:
                raise ApiError(
                    400,
                    "InitialImmutableUnlessStopped",
                    f"Pipeline '{p.name}' was started with initial={p.deployment_initial}; "
                    "stop it before starting with another",
                    {"pipeline_name": p.name, "initial": p.deployment_initial},
                )
            return web.Response(status=202)  # Already started so: idempotent.
        if request.query.get("dismiss_error", "true") != "false":
            p.deployment_error = None
        p.deployment_initial = wanted
        p.set_desired(wanted)
        self._kick(p)
        return web.Response(status=202)

    async def _pause(self, request: web.Request) -> web.Response:
        return self._set_runtime_wish(self._pipeline(request), "Paused")

    async def _resume(self, request: web.Request) -> web.Response:
        return self._set_runtime_wish(self._pipeline(request), "Running")

    def _set_runtime_wish(self, p: _Pipeline, wanted: str) -> web.Response:
        if p.status in _NOT_DEPLOYED or p.desired == "Stopped":
            raise self._not_deployed(p)
        p.set_desired(wanted)
        self._kick(p)
        return web.Response(status=202)

    async def _stop(self, request: web.Request) -> web.Response:
        p = self._pipeline(request)
        if request.query.get("force", "false") != "true":
            raise ApiError(
                501,
                "EnterpriseFeature",
                "Stopping without force (suspend and checkpoint) is a Feldera Enterprise "
                "feature; use ?force=true",
                {"feature": "suspend"},
            )
        p.set_desired("Stopped")
        self._kick(p)
        return web.Response(status=202)

    async def _clear(self, request: web.Request) -> web.Response:
        p = self._pipeline(request)
        if p.storage_status in ("Cleared", "Clearing"):
            return web.Response(status=202)
        if not p.fully_stopped:
            raise ApiError(
                400,
                "StorageStatusImmutableUnlessStopped",
                "Storage can only be cleared while the pipeline is fully stopped",
                {"pipeline_name": p.name, "status": p.status, "desired_status": p.desired},
            )
        p.storage_status = "Clearing"
        self._kick(p)
        return web.Response(status=202)

    async def _dismiss_error(self, request: web.Request) -> web.Response:
        p = self._pipeline(request)
        if not p.fully_stopped:
            raise ApiError(
                400,
                "DismissErrorRestrictedToFullyStopped",
                "The deployment error can only be dismissed while the pipeline is fully stopped",
                {"pipeline_name": p.name, "status": p.status, "desired_status": p.desired},
            )
        p.deployment_error = None
        return web.Response(status=200)

    async def _stats(self, request: web.Request) -> web.Response:
        p = self._pipeline(request)
        self._require_runtime(p)
        inputs = [self._input_status(p, ep) for ep in p.inputs.values()]
        outputs = [self._output_status(p, ep) for ep in p.outputs.values()]
        total_records = sum(ep.total_records for ep in p.inputs.values())
        total_bytes = sum(ep.total_bytes for ep in p.inputs.values())
        uptime_ms = int((time.time() - p.started_at) * 1000)
        return web.json_response(
            {
                "global_metrics": {
                    "state": p.status,
                    "bootstrap_in_progress": False,
                    "transaction_status": "NoTransaction",
                    "transaction_id": 0,
                    "transaction_msecs": None,
                    "transaction_records": None,
                    "transaction_initiators": {
                        "transaction_id": None,
                        "initiated_by_api": None,
                        "initiated_by_connectors": {},
                    },
                    "concurrent_bootstrap_phase": None,
                    "rss_bytes": 64 * 1024 * 1024,
                    "memory_pressure": 0,
                    "memory_pressure_epoch": 0,
                    "cpu_msecs": uptime_ms // 10,
                    "uptime_msecs": uptime_ms,
                    "start_time": int(p.started_at),
                    "incarnation_uuid": p.incarnation,
                    "initial_start_time": int(p.started_at),
                    "storage_bytes": 0,
                    "storage_mb_secs": 0,
                    "runtime_elapsed_msecs": uptime_ms,
                    "buffered_input_records": 0,
                    "buffered_input_bytes": 0,
                    "total_input_records": total_records,
                    "total_input_bytes": total_bytes,
                    "total_processed_records": total_records,
                    "total_processed_bytes": total_bytes,
                    "total_completed_records": total_records,
                    "output_stall_msecs": 0,
                    "total_initiated_steps": total_records // 10,
                    "total_completed_steps": total_records // 10,
                    "pipeline_complete": False,
                },
                "suspend_error": None,
                "checkpoint_activity": "Idle",
                "permanent_checkpoint_errors": [],
                "inputs": inputs,
                "outputs": outputs,
            }
        )

    async def _logs(self, request: web.Request) -> web.Response:
        p = self._pipeline(request)
        return web.Response(text="".join(line + "\n" for line in p.logs), content_type="text/plain")

    def _endpoint(self, p: _Pipeline, relation: str, connector: str, *, output: bool) -> _Endpoint:
        full_name = f"{canonical_name(relation)}.{connector}"
        endpoint = (p.outputs if output else p.inputs).get(full_name)
        if endpoint is None:
            kind = "Output" if output else "Input"
            raise ApiError(
                404,
                f"Unknown{kind}Endpoint",
                f"{kind} endpoint '{full_name}' does not exist",
                {"endpoint_name": full_name},
            )
        return endpoint

    async def _connector_action(self, request: web.Request, *, output: bool) -> web.Response:
        action = request.match_info["action"]
        # Checked before the pipeline is looked up, as the real server does.
        if action not in _CONNECTOR_ACTIONS:
            raise ApiError(
                400,
                "InvalidConnectorAction",
                f"Invalid connector action '{action}'; valid actions are: 'start' and 'pause'",
                {"action": action},
            )
        p = self._pipeline(request)
        # The API server forwards to the pipeline, which is the one that knows its endpoints.
        self._require_runtime(p)
        relation = request.match_info["view" if output else "table"]
        endpoint = self._endpoint(p, relation, request.match_info["connector"], output=output)
        endpoint.paused = action == "pause"
        return web.Response(status=200)

    async def _input_action(self, request: web.Request) -> web.Response:
        return await self._connector_action(request, output=False)

    async def _output_action(self, request: web.Request) -> web.Response:
        return await self._connector_action(request, output=True)

    async def _input_stats(self, request: web.Request) -> web.Response:
        p = self._pipeline(request)
        self._require_runtime(p)
        ep = self._endpoint(
            p, request.match_info["table"], request.match_info["connector"], output=False
        )
        return web.json_response(self._input_status(p, ep))

    async def _output_stats(self, request: web.Request) -> web.Response:
        p = self._pipeline(request)
        self._require_runtime(p)
        ep = self._endpoint(
            p, request.match_info["view"], request.match_info["connector"], output=True
        )
        return web.json_response(self._output_status(p, ep))

    # --------------------------------------------------------------------- control endpoints

    async def _ctl_add_fault(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        allowed = {f for f in Fault.__dataclass_fields__}
        unknown = set(body) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        fault = self.inject_fault(
            str(body["endpoint"]),
            method=body.get("method"),
            status=body.get("status"),
            error_code=body.get("error_code"),
            latency=float(body.get("latency", 0.0)),
            drop=bool(body.get("drop", False)),
            count=int(body.get("count", 1)),
        )
        return web.json_response(asdict(fault), status=201)

    async def _ctl_clear_faults(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response({})

    async def _ctl_counts(self, request: web.Request) -> web.Response:
        return web.json_response({"counts": self.request_counts()})

    async def _ctl_reset_counts(self, request: web.Request) -> web.Response:
        self.reset_counts()
        return web.json_response({})

    async def _ctl_actions(self, request: web.Request) -> web.Response:
        return web.json_response({"actions": [asdict(a) for a in self.actions()]})

    async def _ctl_reset_actions(self, request: web.Request) -> web.Response:
        self.reset_actions()
        return web.json_response({})

    async def _ctl_settings(self, request: web.Request) -> web.Response:
        if request.method == "PATCH":
            body = await self._json_body(request)
            if "restore" in body:
                self.restore = cast(Restore, body["restore"])
            if "delay" in body:
                self.delay = float(body["delay"])
        return web.json_response({"restore": self.restore, "delay": self.delay})

    async def _ctl_connector(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        output = "view" in body
        self.set_connector_paused(
            str(body["pipeline"]),
            str(body["view"] if output else body["table"]),
            str(body["connector"]),
            bool(body["paused"]),
            output=output,
        )
        return web.json_response({})

    async def _ctl_fail(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        self.fail_pipeline(str(body["pipeline"]), str(body.get("message", "emulated fatal error")))
        return web.json_response({})


def _iter_keys(values: list[str] | None, role: Role) -> Iterator[tuple[str, Role]]:
    for value in values or []:
        yield value, role


# ------------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=0, help="Port (0, the default: a free one).")
    parser.add_argument("--host", default="127.0.0.1", help="Address (default: 127.0.0.1).")
    parser.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help="Accept this API key with the write role (repeatable). No keys: no auth.",
    )
    parser.add_argument(
        "--read-api-key",
        action="append",
        metavar="KEY",
        help="Accept this API key with the read role (repeatable).",
    )
    parser.add_argument(
        "--delay",
        type=float,
        default=0.0,
        help="Seconds each compile and deployment step takes (default 0: at once).",
    )
    parser.add_argument(
        "--restore",
        choices=("checkpoint", "sql"),
        default="checkpoint",
        help="Where connector paused flags come from after a restart (default: checkpoint).",
    )


async def _serve(args: argparse.Namespace) -> None:
    keys = dict(_iter_keys(args.read_api_key, "read"))
    keys.update(_iter_keys(args.api_key, "write"))
    emulator = FelderaEmulator(api_keys=keys, delay=args.delay, restore=args.restore)
    url = await emulator.start(args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(LISTENING_MESSAGE.format(url=url), flush=True)
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def main(args: argparse.Namespace) -> int:
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="feldera-emulator")
    add_arguments(_parser)
    raise SystemExit(main(_parser.parse_args()))
