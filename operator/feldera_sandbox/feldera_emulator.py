"""An emulator of the Feldera REST API (pipeline-manager), over real HTTP or https.

What it emulates, as /work/shared/feldera-api.md describes the real server (0.337 sources where
that page is silent):
- both editions (`edition="open-source" | "enterprise"`, reported by `GET /v0/config`);
- pipeline CRUD with the `all | status | status_with_connectors` selectors: PUT upserts (201/200),
  PATCH replaces the top-level fields it gives, a changed platform version counts as a program
  change for PUT (not PATCH); `version` bumps on a core change, `program_version` on a program
  change, `refresh_version` on every visible change; an update that changes nothing bumps nothing
  and is accepted in any state; `description`/`tags` are editable anytime and bump nothing;
  400 `UpdateRestrictedToStopped`, `EditRestrictedToClearedStorage` (`details.not_allowed`),
  `InvalidRuntimeConfig` (also fault tolerance in the open-source edition); `runtime_config` and
  `program_config` are stored with their defaults filled in and unknown keys dropped
  (`feldera_config`);
- compilation, a timed state machine (Pending → CompilingSql → SqlCompiled → CompilingRust →
  Success | SqlError | RustError | SystemError, each step `compile_delay` seconds) whose outcome
  and `program_error`/`program_info` come from `feldera_program` and `feldera_sql`;
- `POST /v0/pipelines/{p}/diff` (PipelineDiff), `POST /v0/validate_program`,
  `POST /v0/pipelines/{p}/update_runtime`;
- the deployment state machine (Stopped → Provisioning → Initializing → [AwaitingApproval →]
  [Bootstrapping →] Running|Paused ⇄, Suspended, Stopping → Stopped; storage Cleared → InUse →
  Clearing → Cleared), each step `delay` seconds apart, or applied before the answer when 0;
- `start?initial=&bootstrap_policy=&dismiss_error=`, `pause`, `resume`, `stop?force=`
  (`force=false`: 501 in open source, suspend with a checkpoint in Enterprise), `approve`,
  `clear`, `dismiss_error`, `/stats`, input and output connector `start|pause` and `/stats`;
- checkpoints and restarts (see "State across a restart" below);
- API keys with `read`/`write` roles (401 `AuthenticationFailed`, 403 `InsufficientPermissions`);
- exact status codes and `{message, error_code, details}` bodies; 503s of the manager carry
  `Retry-After: 5` as Feldera's do;
- https (`tls=server_tls(...)`, see `feldera_tls`), also with an expired certificate or one for
  another host.

State across a restart. A checkpoint holds the program it was taken under and each connector's
paused flag and counters. Enterprise `stop?force=false` takes one (and fails with `SuspendError`
when `runtime_config.storage` is off); a forced stop or a crash leaves what `restore` says:
`auto` (the default) is what the edition does: open source keeps no checkpoint (a restart takes
the SQL flags and empty state), Enterprise with fault tolerance keeps one of the moment (its
periodic checkpoint), Enterprise without keeps the last one it had; `checkpoint` keeps one of the
moment in any edition (a test stand-in for fault tolerance); `sql` drops any. A start resumes from
the checkpoint: each connector gets its checkpointed flag unless its config (`paused` aside)
changed. In Enterprise, when the checkpoint's program differs from the current one (any entry in
the PipelineDiff, connectors included), `bootstrap_policy` decides: `allow` bootstraps,
`await_approval` (default) waits in AwaitingApproval with
`deployment_runtime_status_details.approval_diff` until `/approve`, `reject` stops with
`InitializationError`; a change Feldera cannot bootstrap (LATENESS, or a new/modified view reading
an unchanged non-materialized table) stops the same way whatever the policy; the checkpoint is
kept in every case, `/clear` drops it. Connectors of added or modified tables restart from the SQL.

What it does not: run SQL or move data (metrics of an active connector tick up per `/stats` read),
ingress/egress/query, the checkpoint and sync APIs, transactions, logs beyond a short lifecycle
trail, tenants, JWTs, `/activate` (a Standby pipeline stays so), concurrent bootstrapping,
`silent_bootstrap` (accepted, no effect), the early-start recompilation of an old platform version.

Test hooks (not counted, no auth), in process and over HTTP under `/_emulator/`:
- faults (`inject_fault`, `POST|DELETE /_emulator/faults`; see `feldera_faults`): status, latency,
  dropped or hanging connections, slow bodies, HTML proxy pages, `Retry-After`; per route or all;
- request counts keyed `"METHOD /route/{template}"` (the `ROUTE_*` constants), `GET|DELETE
  /_emulator/requests`, with the requests of each second of arrival (`per_second`, keyed by
  whole `time.time()` seconds: the highest one-second rate a client caused) and, at every status
  list, the counts until then (`list_marks`: the calls of whole observation passes, exactly); a
  log of state-changing calls with their arrival times (`actions()`, `GET|DELETE
  /_emulator/actions`);
- settings (`GET|PATCH /_emulator/settings`): `restore`, `delay`, `compile_delay`, `edition`,
  `platform_version` (a Feldera upgrade);
- drift: `set_connector_paused` (`POST /_emulator/connector`), `fail_pipeline`
  (`POST /_emulator/fail`); the CA of the https mode: `ca_pem`, `GET /_emulator/ca`.
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
from pathlib import Path
from typing import Any, Final, Literal, cast

from aiohttp import web

from feldera_sandbox import feldera_faults
from feldera_sandbox.feldera_config import (
    ConfigError,
    fault_tolerance_enabled,
    normalize_program_config,
    normalize_runtime_config,
    storage_edits,
    storage_enabled,
)
from feldera_sandbox.feldera_faults import ANY_ROUTE, Fault
from feldera_sandbox.feldera_program import (
    Compilation,
    bootstrap_blockers,
    compile_program,
    diff_is_empty,
    lateness_blockers,
    pipeline_diff,
    program_info,
    runtime_version_error,
    sql_messages,
)
from feldera_sandbox.feldera_sql import Program, SqlParseError, canonical_name, parse_program
from feldera_sandbox.feldera_tls import TLS_MODES, ServerTls, TlsMode, server_tls

__all__ = [
    "ACTION_ROUTES",
    "ANY_ROUTE",
    "ROUTES",
    "ActionCall",
    "ApiError",
    "Fault",
    "FelderaEmulator",
    "count_key",
]

Role = Literal["read", "write"]
Restore = Literal["auto", "checkpoint", "sql"]
Edition = Literal["open-source", "enterprise"]
BootstrapPolicy = Literal["allow", "reject", "await_approval"]

EDITIONS: Final[dict[str, str]] = {"open-source": "Open source", "enterprise": "Enterprise"}
RESTORES: Final = ("auto", "checkpoint", "sql")
BOOTSTRAP_POLICIES: Final = ("allow", "reject", "await_approval")

# Route templates: the request-count keys are "METHOD " + one of these, and faults match them.
ROUTE_HEALTHZ = "/healthz"
ROUTE_CONFIG = "/v0/config"
ROUTE_CLUSTER_HEALTHZ = "/v0/cluster_healthz"
ROUTE_VALIDATE_PROGRAM = "/v0/validate_program"
ROUTE_PIPELINES = "/v0/pipelines"
ROUTE_PIPELINE = "/v0/pipelines/{pipeline}"
ROUTE_START = "/v0/pipelines/{pipeline}/start"
ROUTE_PAUSE = "/v0/pipelines/{pipeline}/pause"
ROUTE_RESUME = "/v0/pipelines/{pipeline}/resume"
ROUTE_STOP = "/v0/pipelines/{pipeline}/stop"
ROUTE_CLEAR = "/v0/pipelines/{pipeline}/clear"
ROUTE_APPROVE = "/v0/pipelines/{pipeline}/approve"
ROUTE_DIFF = "/v0/pipelines/{pipeline}/diff"
ROUTE_UPDATE_RUNTIME = "/v0/pipelines/{pipeline}/update_runtime"
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
        ROUTE_VALIDATE_PROGRAM,
        ROUTE_PIPELINES,
        ROUTE_PIPELINE,
        ROUTE_START,
        ROUTE_PAUSE,
        ROUTE_RESUME,
        ROUTE_STOP,
        ROUTE_CLEAR,
        ROUTE_APPROVE,
        ROUTE_DIFF,
        ROUTE_UPDATE_RUNTIME,
        ROUTE_DISMISS_ERROR,
        ROUTE_STATS,
        ROUTE_LOGS,
        ROUTE_INPUT_CONNECTOR_STATS,
        ROUTE_INPUT_CONNECTOR_ACTION,
        ROUTE_OUTPUT_CONNECTOR_STATS,
        ROUTE_OUTPUT_CONNECTOR_ACTION,
    }
)

# The routes whose calls change state: logged with their arrival time (see `actions()`). A GET of
# a route here (the pipeline itself) is a read and is not logged.
ACTION_ROUTES: frozenset[str] = frozenset(
    {
        ROUTE_PIPELINES,
        ROUTE_PIPELINE,
        ROUTE_START,
        ROUTE_PAUSE,
        ROUTE_RESUME,
        ROUTE_STOP,
        ROUTE_CLEAR,
        ROUTE_APPROVE,
        ROUTE_UPDATE_RUNTIME,
        ROUTE_DISMISS_ERROR,
        ROUTE_INPUT_CONNECTOR_ACTION,
        ROUTE_OUTPUT_CONNECTOR_ACTION,
    }
)

LISTENING_MESSAGE = "feldera emulator listening on {url}"

_NAME_PATTERN = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_]*)?[A-Za-z0-9]$")
_NAME_PATTERN_TEXT = r"^([A-Za-z0-9][-A-Za-z0-9_]*)?[A-Za-z0-9]$"
_NAME_DESCRIPTION = (
    "be non-empty and only contain lowercase (a-z), uppercase (A-Z), number (0-9), underscore (_) "
    "or hyphen (-) characters, but cannot start or end with hyphen or underscore"
)
_RUNTIME_VERSION = re.compile(r"^(v\d+\.\d+\.\d+|[0-9a-f]{40})$")
_CONNECTOR_ACTIONS = ("start", "pause")
_COMPILING = ("Pending", "CompilingSql", "SqlCompiled", "CompilingRust")
_COMPILE_FAILED = ("SqlError", "RustError", "SystemError")
_SQL_COMPILED = ("SqlCompiled", "CompilingRust", "Success", "RustError")
# Where the API server itself answers for the runtime: nothing to forward a request to.
_NOT_DEPLOYED = ("Stopped", "Provisioning", "Stopping")
_PROGRAM_FIELDS = ("program_code", "udf_rust", "udf_toml", "program_config")
_METADATA_FIELDS = ("description", "tags")
_RETRY_AFTER_SECONDS = "5"
_LOG_LINES = 200
_ACTION_LOG_SIZE = 100_000
_LIST_MARKS = 10_000


def count_key(method: str, route: str) -> str:
    """The request-count key of a call: `count_key("GET", ROUTE_STATS)`."""
    return f"{method.upper()} {route}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(Exception):
    """A Feldera error response: `status` and the `{message, error_code, details}` body.

    `retry_after`: add `Retry-After: 5`, as the manager does on its own 503s (default: on 503).
    """

    def __init__(
        self,
        status: int,
        error_code: str,
        message: str,
        details: Any = None,
        *,
        retry_after: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.details = details
        self.retry_after = status == 503 if retry_after is None else retry_after

    def response(self) -> web.Response:
        response = _error_response(self.status, self.error_code, self.message, self.details)
        if self.retry_after:
            response.headers["Retry-After"] = _RETRY_AFTER_SECONDS
        return response


def _error_response(status: int, error_code: str, message: str, details: Any) -> web.Response:
    body = {"message": message, "error_code": error_code, "details": details}
    return web.json_response(body, status=status)


def _bad_json(detail: str) -> web.HTTPBadRequest:
    """A body the server's framework (actix) cannot deserialize: a plain-text 400, no JSON."""
    return web.HTTPBadRequest(text=f"Json deserialize error: {detail}")


def _pipeline_says(error_code: str, message: str) -> ApiError:
    """An error the pipeline process itself answers with, forwarded as is (no Retry-After)."""
    return ApiError(503, error_code, message, None, retry_after=False)


@dataclass(frozen=True)
class ActionCall:
    """One state-changing call as it arrived: `wall` is `time.time()` (comparable with a client's
    clock on the same machine), `monotonic` is `time.monotonic()`; `status` is the answer's HTTP
    status. `action` is the last path segment (`start`, `clear`, `approve`...), the connector
    action, `create` for `POST /v0/pipelines`, or `put`/`patch`/`delete` on a pipeline."""

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
    """A connector as the pipeline knows it."""

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


@dataclass(frozen=True)
class _Saved:
    fingerprint: str
    paused: bool
    total_records: int
    total_bytes: int


@dataclass
class _Checkpoint:
    """What storage holds after a checkpoint: the program it ran and each connector's state."""

    program: Program
    endpoints: dict[str, _Saved]


@dataclass
class _Pipeline:
    name: str
    program_code: str
    compilation: Compilation
    platform_version: str
    udf_rust: str = ""
    udf_toml: str = ""
    program_config: dict[str, Any] = field(default_factory=dict)
    runtime_config: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    tags: list[str] = field(default_factory=list)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=_now)
    version: int = 1
    program_version: int = 1
    refresh_version: int = 1
    program_status: str = "Pending"
    program_status_since: str = field(default_factory=_now)
    status: str = "Stopped"
    status_since: str = field(default_factory=_now)
    # Combined desired status: Stopped | Running | Paused | Suspended | Standby.
    desired: str = "Stopped"
    desired_since: str = field(default_factory=_now)
    # Running or Paused: where the runtime heads once it runs (pause/resume change it).
    runtime_wish: str = "Running"
    deployment_error: dict[str, Any] | None = None
    deployment_id: str | None = None
    deployment_initial: str | None = None
    bootstrap_policy: str | None = None
    storage_status: str = "Cleared"
    inputs: dict[str, _Endpoint] = field(default_factory=dict)
    outputs: dict[str, _Endpoint] = field(default_factory=dict)
    checkpoint: _Checkpoint | None = None
    # The checkpoint's diff to the current program while it is being bootstrapped.
    pending_diff: dict[str, Any] | None = None
    approved: bool = False
    # Ran (reached Running/Paused) in this incarnation: a forced stop may leave a checkpoint.
    initialized: bool = False
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

    @property
    def program(self) -> Program | None:
        """The program as the pipeline knows it: once its SQL compiled."""
        return self.compilation.program if self.program_status in _SQL_COMPILED else None

    def set_status(self, status: str) -> None:
        self.status = status
        self.status_since = _now()
        self.refresh_version += 1
        self.logs.append(f"{self.status_since} deployment status: {status}")

    def set_desired(self, desired: str) -> None:
        if desired != self.desired:
            self.desired = desired
            self.desired_since = _now()
            self.refresh_version += 1

    def set_program_status(self, status: str) -> None:
        self.program_status = status
        self.program_status_since = _now()
        if status not in ("CompilingSql", "CompilingRust"):
            self.refresh_version += 1
        self.logs.append(f"{self.program_status_since} program status: {status}")


def _resources_status(status: str) -> tuple[str, str | None]:
    if status in _NOT_DEPLOYED:
        return status, None
    return "Provisioned", status


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise _bad_json("invalid type for `name`, expected a string")
    if not name:
        raise ApiError(400, "EmptyName", "Name cannot be be empty", None)
    if len(name) > 63:
        raise ApiError(
            400,
            "TooLongName",
            f"Name '{name}' is longer ({len(name)}) than maximum allowed (63)",
            {"name": name, "length": len(name), "maximum": 63},
        )
    if not _NAME_PATTERN.match(name):
        raise ApiError(
            400,
            "NameDoesNotMatchPattern",
            f"Name '{name}' should {_NAME_DESCRIPTION} (pattern: '{_NAME_PATTERN_TEXT}')",
            {"name": name, "pattern": _NAME_PATTERN_TEXT, "pattern_description": _NAME_DESCRIPTION},
        )
    return name


def _config_error(which: str, value: Any, err: ConfigError) -> ApiError:
    code = "InvalidRuntimeConfig" if which == "runtime_config" else "InvalidProgramConfig"
    return ApiError(
        400,
        code,
        f"JSON for '{which}' field:\n{json.dumps(value, indent=2)}\n\n... is not valid due to: "
        f"{err.reason}",
        {"value": value, "error": err.error},
    )


def _initialization_error(reason: str, details: Any) -> dict[str, Any]:
    """The `deployment_error` of a pipeline that failed to initialize, as its runner reports it."""
    return {
        "message": "Operation failed because the pipeline failed to initialize. Error details: "
        f"{reason}.",
        "error_code": "InitializationError",
        "details": {"error": details},
    }


class FelderaEmulator:
    """The Feldera API emulator: build its `app()`, or `start()` it on a port and `stop()` it."""

    def __init__(
        self,
        *,
        api_keys: Mapping[str, Role] | None = None,
        delay: float = 0.0,
        compile_delay: float = 0.0,
        restore: Restore = "auto",
        edition: Edition = "open-source",
        version: str = "0.369.0",
        tls: ServerTls | None = None,
    ) -> None:
        for key, role in (api_keys or {}).items():
            if role not in ("read", "write"):
                raise ValueError(f"API key role must be 'read' or 'write', not {role!r}")
            if not key:
                raise ValueError("an API key must not be empty")
        self._api_keys: dict[str, Role] = dict(api_keys or {})
        self.delay = delay
        self.compile_delay = compile_delay
        self.restore = restore
        self.edition = edition
        self.version = version
        self.tls = tls
        self._pipelines: dict[str, _Pipeline] = {}
        self._faults: list[Fault] = []
        self._counts: collections.Counter[str] = collections.Counter()
        self._per_second: collections.Counter[int] = collections.Counter()
        self._list_marks: collections.deque[tuple[float, dict[str, int]]] = collections.deque(
            maxlen=_LIST_MARKS
        )
        self._actions: collections.deque[ActionCall] = collections.deque(maxlen=_ACTION_LOG_SIZE)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = _now()

    # ----------------------------------------------------------------- settings and test hooks

    @property
    def delay(self) -> float:
        """Seconds each deployment and storage step takes (0: applied before the answer)."""
        return self._delay

    @delay.setter
    def delay(self, value: float) -> None:
        if value < 0:
            raise ValueError("delay must be >= 0")
        self._delay = float(value)

    @property
    def compile_delay(self) -> float:
        """Seconds each of the four compilation steps takes (0: applied before the answer)."""
        return self._compile_delay

    @compile_delay.setter
    def compile_delay(self, value: float) -> None:
        if value < 0:
            raise ValueError("compile_delay must be >= 0")
        self._compile_delay = float(value)

    @property
    def restore(self) -> Restore:
        """What a forced stop or a crash leaves for the next start (see the module docstring)."""
        return self._restore

    @restore.setter
    def restore(self, value: Restore) -> None:
        if value not in RESTORES:
            raise ValueError("restore must be 'auto', 'checkpoint' or 'sql'")
        self._restore: Restore = value

    @property
    def edition(self) -> Edition:
        return self._edition

    @edition.setter
    def edition(self, value: Edition) -> None:
        if value not in EDITIONS:
            raise ValueError("edition must be 'open-source' or 'enterprise'")
        self._edition: Edition = value

    @property
    def enterprise(self) -> bool:
        return self._edition == "enterprise"

    @property
    def ca_pem(self) -> bytes | None:
        """The PEM of the CA that signed the https certificate (None: plain http or own files)."""
        return self.tls.ca_pem if self.tls is not None else None

    def settings(self) -> dict[str, Any]:
        return {
            "restore": self.restore,
            "delay": self.delay,
            "compile_delay": self.compile_delay,
            "edition": self.edition,
            "platform_version": self.version,
        }

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
        hang: bool = False,
        slow_body: float = 0.0,
        html: bool = False,
        retry_after: str | None = None,
    ) -> Fault:
        """Make the next `count` requests to `endpoint` (a `ROUTE_*` template, or `ANY_ROUTE`)
        misbehave; `count <= 0`: every one until `clear_faults()`. See `feldera_faults` for what
        each kind does. Faults apply in the order injected, one per request.

        aiohttp resends an idempotent request once when its connection drops, so an aiohttp GET
        fails visibly only after two drops: inject `drop=True, count=2` for that.
        """
        if endpoint not in ROUTES and endpoint != ANY_ROUTE:
            raise ValueError(f"unknown endpoint template {endpoint!r}; use a ROUTE_* constant")
        fault = Fault(
            endpoint,
            method,
            status,
            error_code,
            latency,
            drop,
            count,
            hang,
            slow_body,
            html,
            None if retry_after is None else str(retry_after),
        )
        self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self._faults.clear()

    def request_counts(self) -> dict[str, int]:
        return dict(self._counts)

    def per_second(self) -> dict[int, int]:
        """Requests by the whole second (`time.time()`) they arrived in."""
        return dict(self._per_second)

    def list_marks(self) -> list[tuple[float, dict[str, int]]]:
        """At every `GET /v0/pipelines`: its arrival (`time.time()`) and the counts before it."""
        return list(self._list_marks)

    def reset_counts(self) -> None:
        self._counts.clear()
        self._per_second.clear()
        self._list_marks.clear()

    def actions(self) -> list[ActionCall]:
        """The state-changing calls since the last `reset_actions()` (the newest 100,000), oldest
        first."""
        return list(self._actions)

    def reset_actions(self) -> None:
        self._actions.clear()

    def set_connector_paused(
        self, pipeline: str, relation: str, connector: str, paused: bool, *, output: bool = False
    ) -> None:
        """Flip a connector's flag behind the client's back (someone pressed pause elsewhere).

        Works in any deployment state: on a stopped pipeline it plants the flag in the checkpoint
        (making one if there is none), so that the next start restores it.
        """
        p = self._get(pipeline)
        endpoint = self._endpoint(p, relation, connector, output=output)
        endpoint.paused = paused
        if p.status == "Stopped" and p.program is not None:
            if p.checkpoint is None:
                p.checkpoint = _Checkpoint(p.program, {})
            p.checkpoint.endpoints[endpoint.full_name] = _Saved(
                endpoint.fingerprint(), paused, endpoint.total_records, endpoint.total_bytes
            )

    def fail_pipeline(self, pipeline: str, message: str = "emulated fatal error") -> None:
        """A fatal runtime error: `deployment_error` is set and the pipeline heads for Stopped
        (a crash: what it leaves for the next start follows `restore`)."""
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
        r.add_post(ROUTE_VALIDATE_PROGRAM, self._validate_program)
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
        r.add_post(ROUTE_APPROVE, self._approve)
        r.add_post(ROUTE_DIFF, self._diff)
        r.add_post(ROUTE_UPDATE_RUNTIME, self._update_runtime)
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
        r.add_get("/_emulator/ca", self._ctl_ca)
        app.on_shutdown.append(self._cancel_tasks)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0 picks a free port); returns the base URL (https with `tls`)."""
        if self._runner is not None:
            raise RuntimeError("emulator already started")
        self._loop = asyncio.get_running_loop()
        # The default access log would print one line per request: thousands per period.
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        context = self.tls.context if self.tls is not None else None
        site = web.TCPSite(runner, host, port, ssl_context=context)
        await site.start()
        self._runner = runner
        bound_port = runner.addresses[0][1]
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{bound_port}"

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
        key = count_key(request.method, route)
        now = time.time()
        if route == ROUTE_PIPELINES and request.method == "GET":
            self._list_marks.append((now, dict(self._counts)))
        self._counts[key] += 1
        self._per_second[int(now)] += 1
        if route in ACTION_ROUTES and request.method != "GET":
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
        if route == ROUTE_PIPELINES:
            action = "create"
        elif route == ROUTE_PIPELINE:
            action = request.method.lower()
        else:
            action = info.get("action", route.rsplit("/", 1)[-1])
        self._actions.append(
            ActionCall(
                wall=wall,
                monotonic=monotonic,
                method=request.method,
                route=route,
                pipeline=info.get("pipeline", ""),
                relation=info.get("table", info.get("view")),
                connector=info.get("connector"),
                action=action,
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
        if fault is None:
            return await self._answer(request, handler, route)
        if fault.latency > 0:
            await asyncio.sleep(fault.latency)
        if fault.hang:
            await feldera_faults.hang(request)
        if fault.drop:
            feldera_faults.drop(request)
        response: web.StreamResponse
        if fault.status is None:
            response = await self._answer(request, handler, route)
        elif fault.html:
            response = feldera_faults.html_page(fault.status)
        else:
            response = _error_response(
                fault.status,
                fault.error_code or "EmulatedFault",
                f"emulated fault on {request.method} {route}",
                None,
            )
        if fault.retry_after is not None:
            response.headers["Retry-After"] = fault.retry_after
        if fault.slow_body > 0:
            return await feldera_faults.trickle(request, response, fault.slow_body)
        return response

    async def _answer(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        route: str,
    ) -> web.StreamResponse:
        try:
            if route != ROUTE_HEALTHZ:
                self._authorize(request)
            return await handler(request)
        except ApiError as err:
            return err.response()
        except web.HTTPException as exc:
            # A query the real server's framework cannot read: its plain-text 400.
            return web.Response(status=exc.status, text=exc.text, content_type="text/plain")

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
            raise _bad_json(str(err)) from err
        if not isinstance(body, dict):
            kind = "null" if body is None else "sequence" if isinstance(body, list) else "value"
            raise _bad_json(f"invalid type: {kind}, expected a struct at line 1")
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
        """Carry the pipeline towards its wishes: steps that take no time now, the others from a
        task that sleeps each step's duration."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # A hook called from another thread (the SDK tests): run it on the server's loop.
            if self._loop is None:
                raise
            self._loop.call_soon_threadsafe(self._kick, p)
            return
        self._advance(p)
        if self._next_step(p) is not None and (p.task is None or p.task.done()):
            task = loop.create_task(self._drive(p))
            p.task = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _advance(self, p: _Pipeline) -> None:
        while (step := self._next_step(p)) is not None and step[0] <= 0:
            step[1]()

    async def _drive(self, p: _Pipeline) -> None:
        while not p.deleted and (step := self._next_step(p)) is not None:
            await asyncio.sleep(step[0])
            # Re-read after the sleep: a request may have changed the wish meanwhile.
            step = None if p.deleted else self._next_step(p)
            if step is not None:
                step[1]()
                self._advance(p)

    def _next_step(self, p: _Pipeline) -> tuple[float, Callable[[], None]] | None:
        """The next transition and how long it takes, or None when the pipeline rests."""
        if p.program_status in _COMPILING:
            return self._compile_delay, lambda: self._compile_step(p)
        if p.storage_status == "Clearing":
            return self._delay, lambda: self._cleared(p)
        if p.desired == "Stopped":
            if p.status == "Stopped":
                return None
            if p.status == "Stopping":
                return self._delay, lambda: self._stopped(p)
            return self._delay, lambda: self._stopping(p)
        if p.desired == "Suspended":
            if p.status in ("Paused", "Running"):
                return self._delay, lambda: self._suspend(p)
            if p.status == "Suspended":
                return self._delay, lambda: self._suspended(p)
            # Suspending waits until the pipeline has initialized; then it checkpoints.
        step = self._towards_running(p)
        return None if step is None else (self._delay, step)

    def _towards_running(self, p: _Pipeline) -> Callable[[], None] | None:
        if p.status == "Stopped":
            if p.program_status in _COMPILE_FAILED:
                return lambda: self._start_failed(p)
            if p.program_status != "Success":
                return None  # `/start` during compilation waits for it.
            return lambda: self._provisioning(p)
        if p.status == "Provisioning":
            return lambda: self._initializing(p)
        if p.status == "Initializing":
            return lambda: self._initialized(p)
        if p.status == "AwaitingApproval":
            return (lambda: p.set_status("Bootstrapping")) if p.approved else None
        if p.status == "Bootstrapping":
            return lambda: self._running(p)
        if p.status in ("Paused", "Running") and p.status != p.runtime_wish:
            return lambda: p.set_status(p.runtime_wish)
        return None

    def _compile_step(self, p: _Pipeline) -> None:
        outcome = p.compilation
        if p.program_status == "Pending":
            p.set_program_status("CompilingSql")
        elif p.program_status == "CompilingSql":
            if outcome.status in ("SqlError", "SystemError"):
                p.set_program_status(outcome.status)
            else:
                assert outcome.program is not None
                self._load_endpoints(p, outcome.program)
                p.set_program_status("SqlCompiled")
        elif p.program_status == "SqlCompiled":
            p.set_program_status("CompilingRust")
        else:
            p.set_program_status("RustError" if outcome.status == "RustError" else "Success")

    @staticmethod
    def _load_endpoints(p: _Pipeline, program: Program) -> None:
        def endpoints(relations: tuple[Any, ...]) -> dict[str, _Endpoint]:
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
        p.initialized = False
        p.approved = False
        p.pending_diff = None
        p.set_status("Provisioning")

    def _initializing(self, p: _Pipeline) -> None:
        # A new process: connectors take their state from the checkpoint or from the SQL.
        program = p.program
        assert program is not None
        checkpoint = p.checkpoint
        diff: dict[str, Any] | None = None
        if checkpoint is not None and self.enterprise:
            diff = pipeline_diff(checkpoint.program, program)
            if diff_is_empty(diff):
                diff = None
        reset_tables: set[str] = set()
        if diff is not None:
            changes = diff["program_diff"]
            reset_tables = set(changes["added_tables"]) | set(changes["modified_tables"])
        for ep in (*p.inputs.values(), *p.outputs.values()):
            saved = checkpoint.endpoints.get(ep.full_name) if checkpoint else None
            if (
                saved is not None
                and saved.fingerprint == ep.fingerprint()
                and not (ep.full_name in p.inputs and ep.relation in reset_tables)
            ):
                ep.paused = saved.paused
                ep.total_records, ep.total_bytes = saved.total_records, saved.total_bytes
            else:
                ep.paused = ep.declared_paused
                ep.total_records = ep.total_bytes = 0
        p.pending_diff = diff
        p.incarnation = str(uuid.uuid4())
        p.started_at = time.time()
        p.set_status("Initializing")

    def _initialized(self, p: _Pipeline) -> None:
        diff = p.pending_diff
        if p.desired == "Standby":
            p.set_status("Standby")
            return
        if diff is None:
            self._running(p)
            return
        assert p.checkpoint is not None and p.program is not None
        blockers = bootstrap_blockers(p.checkpoint.program, p.program, diff)
        if blockers is not None:
            reason = (
                "The pipeline has been modified since the last checkpoint; however it cannot be "
                f"bootstrapped due to the following reasons:\n{blockers}"
            )
            self._fail_initialization(p, _initialization_error(reason, {"error": blockers}))
            return
        policy = "allow" if p.approved else (p.bootstrap_policy or "await_approval")
        if policy == "reject":
            reason = "Bootstrapping of the modified pipeline was rejected by the user."
            self._fail_initialization(p, _initialization_error(reason, None))
        elif policy == "await_approval":
            p.set_status("AwaitingApproval")
        else:
            p.set_status("Bootstrapping")

    def _fail_initialization(self, p: _Pipeline, error: dict[str, Any]) -> None:
        # The checkpoint stays: a pipeline that never ran wrote nothing over it.
        p.deployment_error = error
        p.set_desired("Stopped")

    def _running(self, p: _Pipeline) -> None:
        p.pending_diff = None
        p.initialized = True
        p.set_status(p.runtime_wish)

    def _suspend(self, p: _Pipeline) -> None:
        if not storage_enabled(p.runtime_config):
            p.deployment_error = {
                "message": "The pipeline does not support checkpointing for the following "
                "reasons: Storage must be configured",
                "error_code": "SuspendError",
                "details": {"error": {"Permanent": ["StorageRequired"]}},
            }
            p.set_desired("Stopped")
            return
        p.checkpoint = self._checkpoint_of(p)
        # The checkpoint is written: nothing for the stop to decide about any more.
        p.initialized = False
        p.set_status("Suspended")

    def _suspended(self, p: _Pipeline) -> None:
        p.set_desired("Stopped")
        self._stopping(p)

    def _checkpoint_of(self, p: _Pipeline) -> _Checkpoint:
        assert p.program is not None
        return _Checkpoint(
            p.program,
            {
                ep.full_name: _Saved(ep.fingerprint(), ep.paused, ep.total_records, ep.total_bytes)
                for ep in (*p.inputs.values(), *p.outputs.values())
            },
        )

    def _stopping(self, p: _Pipeline) -> None:
        if p.initialized:
            # A forced stop or a crash of a pipeline that ran: what survives follows `restore`.
            if self._restore == "checkpoint" or (
                self._restore == "auto"
                and self.enterprise
                and fault_tolerance_enabled(p.runtime_config)
                and storage_enabled(p.runtime_config)
            ):
                p.checkpoint = self._checkpoint_of(p)
            elif self._restore == "sql" or not self.enterprise:
                p.checkpoint = None
        p.initialized = False
        p.set_status("Stopping")

    def _stopped(self, p: _Pipeline) -> None:
        p.deployment_id = None
        p.deployment_initial = None
        p.bootstrap_policy = None
        p.pending_diff = None
        p.approved = False
        p.set_status("Stopped")

    def _cleared(self, p: _Pipeline) -> None:
        p.checkpoint = None
        p.storage_status = "Cleared"
        p.refresh_version += 1

    def _start_failed(self, p: _Pipeline) -> None:
        p.deployment_error = {
            "message": "Not possible to start the pipeline because the program failed to compile",
            "error_code": "StartFailedDueToFailedCompilation",
            "details": {
                "compiler_error": f"{p.program_status} occurred (see `program_error` for more "
                "information)"
            },
        }
        p.set_desired("Stopped")
        p.deployment_initial = None
        p.bootstrap_policy = None

    # --------------------------------------------------------------------------- rendering

    def _render(self, p: _Pipeline, selector: str) -> dict[str, Any]:
        resources_status, runtime_status = _resources_status(p.status)
        desired_resources = "Stopped" if p.desired == "Stopped" else "Provisioned"
        desired_runtime = None if p.desired == "Stopped" else p.desired
        details: dict[str, Any] | None = None
        if runtime_status is not None:
            details = {}
            if p.status == "AwaitingApproval" and p.pending_diff is not None:
                details["approval_diff"] = p.pending_diff
        out: dict[str, Any] = {
            "id": p.id,
            "name": p.name,
            "description": p.description,
            "tags": list(p.tags),
            "created_at": p.created_at,
            "version": p.version,
            "platform_version": p.platform_version,
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
            "deployment_runtime_status_details": details,
            "deployment_runtime_status_since": p.status_since if runtime_status else None,
            "deployment_runtime_desired_status": desired_runtime,
            "deployment_runtime_desired_status_since": p.desired_since if desired_runtime else None,
            "bootstrap_policy": p.bootstrap_policy,
        }
        if selector == "all":
            out.update(
                runtime_config=p.runtime_config,
                program_code=p.program_code,
                udf_rust=p.udf_rust,
                udf_toml=p.udf_toml,
                program_error=self._program_error(p),
                program_info=p.compilation.info if p.program is not None else None,
                deployment_config=None,
            )
        elif selector == "status_with_connectors":
            out["connectors"] = {"num_errors": 0} if p.status not in _NOT_DEPLOYED else None
        return out

    @staticmethod
    def _program_error(p: _Pipeline) -> dict[str, Any]:
        outcome = p.compilation
        sql: dict[str, Any] | None = None
        rust: dict[str, Any] | None = None
        system: str | None = None
        if p.program_status == "SqlError":
            sql = {"exit_code": 1, "messages": list(outcome.messages)}
        elif p.program_status == "SystemError":
            system = outcome.system_error
        elif p.program_status in _SQL_COMPILED:
            sql = {"exit_code": 0, "messages": list(outcome.messages)}
            if p.program_status == "Success":
                rust = {"exit_code": 0, "stdout": "", "stderr": ""}
            elif p.program_status == "RustError":
                rust = outcome.rust
        return {"sql_compilation": sql, "rust_compilation": rust, "system_error": system}

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
                "edition": EDITIONS[self._edition],
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

    def _fields(self, body: Mapping[str, Any], *, full: bool) -> dict[str, Any]:
        """The pipeline fields a body sets, stored forms. PUT/POST: all (absent = empty, that is
        the defaults); PATCH: the ones given."""
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
                if not full:
                    continue
                value = default
            if key in ("program_code", "udf_rust", "udf_toml", "description") and not isinstance(
                value, str
            ):
                raise _bad_json(f"invalid type for `{key}`, expected a string")
            if key == "tags" and not (
                isinstance(value, list) and all(isinstance(t, str) for t in value)
            ):
                raise _bad_json("invalid type for `tags`, expected a sequence of strings")
            if key == "runtime_config":
                try:
                    value = normalize_runtime_config(value, enterprise=self.enterprise)
                except ConfigError as err:
                    raise _config_error(key, value, err) from err
            elif key == "program_config":
                try:
                    value = normalize_program_config(value)
                except ConfigError as err:
                    raise _config_error(key, value, err) from err
            fields[key] = value
        return fields

    def _compile(self, p: _Pipeline) -> Compilation:
        return compile_program(
            p.program_code, p.udf_rust, p.udf_toml, p.program_config, self.version
        )

    def _new_pipeline(self, name: str, fields: Mapping[str, Any]) -> _Pipeline:
        p = _Pipeline(
            name=name,
            program_code=fields["program_code"],
            compilation=Compilation("SqlError"),
            platform_version=self.version,
        )
        for key, value in fields.items():
            setattr(p, key, value)
        p.compilation = self._compile(p)
        self._pipelines[name] = p
        self._kick(p)
        return p

    def _update(
        self,
        p: _Pipeline,
        fields: Mapping[str, Any],
        new_name: str | None,
        *,
        platform_counts: bool,
    ) -> None:
        """Apply an update as the manager does: what it may change, and what it bumps."""
        if new_name is not None:
            _check_name(new_name)
        changed = {k: v for k, v in fields.items() if getattr(p, k) != v}
        renamed = new_name is not None and new_name != p.name
        platform_changed = platform_counts and p.platform_version != self.version
        program_changed = platform_changed or any(k in _PROGRAM_FIELDS for k in changed)
        core_changed = renamed or program_changed or any(k not in _METADATA_FIELDS for k in changed)
        if core_changed and not p.fully_stopped:
            raise ApiError(
                400,
                "UpdateRestrictedToStopped",
                "Pipeline can only be updated while stopped. Stop it first by invoking '/stop'.",
                None,
            )
        if not core_changed:
            # Description and tags: editable anytime, and nothing to bump.
            for key, value in changed.items():
                setattr(p, key, value)
            return
        if p.storage_status != "Cleared":
            refused = storage_edits(
                p.name,
                new_name if new_name is not None else p.name,
                p.runtime_config,
                changed.get("runtime_config"),
            )
            if refused:
                raise ApiError(
                    400,
                    "EditRestrictedToClearedStorage",
                    "The following pipeline edits are not allowed while storage is not cleared: "
                    + ", ".join(refused),
                    {"not_allowed": refused},
                )
        if renamed and new_name in self._pipelines:
            raise ApiError(409, "DuplicateName", "An entity with this name already exists", None)
        for key, value in changed.items():
            setattr(p, key, value)
        if renamed:
            assert new_name is not None
            del self._pipelines[p.name]
            p.name = new_name
            self._pipelines[new_name] = p
        p.version += 1
        p.refresh_version += 1
        if program_changed:
            p.program_version += 1
            p.platform_version = self.version
            p.compilation = self._compile(p)
            p.inputs, p.outputs = {}, {}
            p.set_program_status("Pending")
            self._kick(p)

    async def _create(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        name = _check_name(body.get("name"))
        if not isinstance(body.get("program_code"), str):
            raise _bad_json("missing field `program_code`")
        fields = self._fields(body, full=True)
        if name in self._pipelines:
            raise ApiError(409, "DuplicateName", "An entity with this name already exists", None)
        p = self._new_pipeline(name, fields)
        return web.json_response(self._render(p, "all"), status=201)

    async def _put(self, request: web.Request) -> web.Response:
        name = request.match_info["pipeline"]
        body = await self._json_body(request)
        body_name = body.get("name")
        if not isinstance(body_name, str):
            raise _bad_json("missing field `name`")
        if not isinstance(body.get("program_code"), str):
            raise _bad_json("missing field `program_code`")
        fields = self._fields(body, full=True)
        p = self._pipelines.get(name)
        if p is None:
            if body_name != name:
                raise ApiError(
                    400,
                    "CannotRenameNonExistingPipeline",
                    "The pipeline name in the request body does not match the one provided in "
                    "the URL path. This is not allowed when no pipeline with the name provided "
                    "in the URL path exists.",
                    None,
                )
            p = self._new_pipeline(_check_name(name), fields)
            return web.json_response(self._render(p, "all"), status=201)
        self._update(p, fields, body_name, platform_counts=True)
        return web.json_response(self._render(p, "all"), status=200)

    async def _patch(self, request: web.Request) -> web.Response:
        p = self._pipeline(request)
        body = await self._json_body(request)
        new_name = body.get("name")
        if new_name is not None and not isinstance(new_name, str):
            raise _bad_json("invalid type for `name`, expected a string")
        self._update(p, self._fields(body, full=False), new_name, platform_counts=False)
        return web.json_response(self._render(p, "all"))

    async def _update_runtime(self, request: web.Request) -> web.Response:
        p = self._pipeline(request)
        self._update(p, {}, None, platform_counts=True)
        return web.json_response(self._render(p, "all"))

    async def _delete(self, request: web.Request) -> web.Response:
        p = self._pipeline(request)
        if not p.fully_stopped:
            raise ApiError(
                400,
                "DeleteRestrictedToFullyStopped",
                "Cannot delete a pipeline which is not fully stopped. Stop the pipeline first "
                "fully by invoking the '/stop' endpoint.",
                None,
            )
        if p.storage_status != "Cleared":
            raise ApiError(
                400,
                "DeleteRestrictedToClearedStorage",
                "Cannot delete pipeline unless its storage is cleared. Clear storage first using "
                "`/clear`.",
                None,
            )
        p.deleted = True
        if p.task is not None:
            p.task.cancel()
        del self._pipelines[p.name]
        return web.Response(status=200)

    # ------------------------------------------------------------------ program management

    def _check_runtime_version(self, value: Any) -> str | None:
        """Why a requested runtime version cannot compile here (None: it can). A malformed one
        is refused outright with 400 `InvalidRuntimeVersion`."""
        if value is None:
            return None
        if not isinstance(value, str) or not _RUNTIME_VERSION.match(value):
            raise ApiError(
                400,
                "InvalidRuntimeVersion",
                f"Invalid runtime version: '{value}' is neither a version tag (vX.Y.Z) nor a "
                "40-character git SHA",
                {"error": f"'{value}' is neither a version tag (vX.Y.Z) nor a git SHA"},
            )
        return runtime_version_error(value, self.version)

    async def _diff(self, request: web.Request) -> web.Response:
        p = self._pipeline(request)
        body = await self._json_body(request)
        current = p.program
        if p.program_status != "Success" or current is None:
            raise ApiError(
                404,
                "ProgramNotCompiled",
                f"Pipeline '{p.name}' has not been compiled yet. Please compile the pipeline "
                "first.",
                {"pipeline_name": p.name},
            )
        code = body.get("program_code")
        if code is None:
            code = p.program_code
        if not isinstance(code, str):
            raise _bad_json("invalid type for `program_code`, expected a string")
        system = self._check_runtime_version(body.get("runtime_version"))
        if system is not None:
            raise ApiError(
                500,
                "NewProgramCompilationFailed",
                "The proposed new program could not be compiled because of an internal error "
                "(for example, the compiler service failed or a runtime version could not be "
                f"downloaded): {system}",
                {"error": system},
            )
        try:
            new = parse_program(code)
        except SqlParseError as err:
            error = json.dumps(list(sql_messages(code, [err])), indent=2)
            raise ApiError(
                400,
                "InvalidNewProgramSql",
                f"The proposed new SQL program has compilation errors: {error}",
                {"error": error},
            ) from err
        diff = pipeline_diff(current, new)
        blockers = lateness_blockers(current, new, diff)
        if blockers is not None:
            raise ApiError(
                400,
                "BootstrapNotAllowed",
                f"The requested change cannot be bootstrapped: {blockers}",
                {"error": blockers},
            )
        return web.json_response(diff)

    async def _validate_program(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        code = body.get("program_code")
        if not isinstance(code, str):
            raise _bad_json("missing field `program_code`")
        system = self._check_runtime_version(body.get("runtime_version"))
        if system is not None:
            return web.json_response({"SystemError": {"error": system}})
        try:
            program = parse_program(code)
        except SqlParseError as err:
            info = {"exit_code": 1, "messages": list(sql_messages(code, [err]))}
            return web.json_response({"SqlError": {"info": info}})
        info = program_info(program)
        del info["main_rust"], info["udf_stubs"]
        if not body.get("ir", False):
            info["dataflow"] = None
        return web.json_response({"Success": {"program_info": info}})

    # ------------------------------------------------------------------------ lifecycle

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
        if p.status in ("Initializing", "Standby"):
            raise _pipeline_says(
                "Initializing",
                "Operation failed because the pipeline has not finished initializing.",
            )
        if p.status == "AwaitingApproval":
            raise _pipeline_says(
                "AwaitingApproval",
                "Operation failed: the pipeline is waiting for approval to bootstrap modified "
                "components.",
            )
        if p.status == "Suspended":
            raise _pipeline_says(
                "Suspended", "Operation failed because the pipeline has been suspended."
            )

    @staticmethod
    def _bool_param(request: web.Request, name: str, default: bool) -> bool:
        value = request.query.get(name)
        if value is None:
            return default
        if value not in ("true", "false"):
            raise web.HTTPBadRequest(
                text=f"Query deserialize error: provided string was not `true` or `false` "
                f"for `{name}`"
            )
        return value == "true"

    def _query_choice(self, request: web.Request, name: str, choices: tuple[str, ...]) -> str:
        value = request.query.get(name, choices[-1])
        if value not in choices:
            # actix refuses a query it cannot deserialize with a plain-text 400.
            raise web.HTTPBadRequest(
                text=f"Query deserialize error: unknown variant `{value}`, expected one of "
                + ", ".join(f"`{c}`" for c in choices)
            )
        return value

    async def _start(self, request: web.Request) -> web.Response:
        initial = request.query.get("initial", "running")
        policy = self._query_choice(request, "bootstrap_policy", BOOTSTRAP_POLICIES)
        silent = self._bool_param(request, "silent_bootstrap", False)
        concurrent = self._bool_param(request, "concurrent_bootstrap", False)
        dismiss = self._bool_param(request, "dismiss_error", True)
        if silent and concurrent:
            raise ApiError(
                400,
                "InvalidBootstrapConfig",
                "Invalid bootstrap configuration: `silent_bootstrap` and `concurrent_bootstrap` "
                "are mutually exclusive; set at most one",
                {"reason": "`silent_bootstrap` and `concurrent_bootstrap` are mutually exclusive"},
            )
        if initial not in ("running", "paused", "standby"):
            raise ApiError(
                405,
                "UnsupportedPipelineAction",
                f"Unsupported pipeline action '/start?initial={initial}': unknown initial "
                f"runtime desired status: {initial}",
                {
                    "action": f"/start?initial={initial}",
                    "reason": f"unknown initial runtime desired status: {initial}",
                },
            )
        p = self._pipeline(request)
        wanted = initial.capitalize()
        if p.desired == "Stopped" and p.status != "Stopped":
            resources, _ = _resources_status(p.status)
            raise ApiError(
                400,
                "IllegalPipelineAction",
                f"Deployment resources status (current: '{resources}', desired: 'Stopped') "
                "cannot have desired changed to 'Provisioned'. Cannot restart the pipeline while "
                "it is stopping. Wait until it is stopped before starting the pipeline again.",
                {
                    "status": resources,
                    "current_desired_status": "Stopped",
                    "new_desired_status": "Provisioned",
                    "hint": "Cannot restart the pipeline while it is stopping. Wait until it is "
                    "stopped before starting the pipeline again.",
                },
            )
        if not dismiss and p.deployment_error is not None:
            raise ApiError(
                400,
                "CannotStartWithUndismissedError",
                "Cannot process `/start?dismiss_error=false` if the `deployment_error` is set. "
                "You can dismiss the error by calling `/start?dismiss_error=true`, or "
                "alternatively first call `/dismiss_error`, after which "
                "`/start?dismiss_error=false` is again possible.",
                None,
            )
        if p.storage_status == "Clearing":
            raise ApiError(
                400,
                "CannotStartWhileClearingStorage",
                "Cannot process `/start` if the `storage_status` is `Clearing`. Wait for the "
                "storage to become cleared before trying again.",
                None,
            )
        if p.program_status in _COMPILE_FAILED:
            raise ApiError(
                400,
                "CannotStartWithCompilationError",
                "Cannot process `/start` if the `program_status` is `SqlError`, `RustError` or "
                "`SystemError`. Make changes to fix the error, which will trigger recompilation.",
                None,
            )
        if p.deployment_initial is not None and p.deployment_initial != wanted:
            raise ApiError(
                400,
                "InitialImmutableUnlessStopped",
                "Initial desired runtime status cannot be changed unless the pipeline is desired "
                "to become Stopped.",
                None,
            )
        if p.bootstrap_policy is not None and p.bootstrap_policy != policy:
            raise ApiError(
                400,
                "BootstrapPolicyImmutableUnlessStopped",
                "Bootstrap policy cannot be changed unless the pipeline is desired to become "
                "Stopped.",
                None,
            )
        if wanted == "Standby" and not self._standby_configured(p):
            raise ApiError(
                400,
                "InitialStandbyNotAllowed",
                "Initial desired runtime status can only be set to Standby if: (1) "
                "`runtime_config.storage.backend.name` is set to `file`, and (2) "
                "`runtime_config.storage.backend.config.sync` is configured.",
                None,
            )
        if dismiss:
            p.deployment_error = None
        if p.desired == "Stopped":
            p.deployment_initial = wanted
            p.bootstrap_policy = policy
            if wanted != "Standby":
                p.runtime_wish = wanted
            p.set_desired(wanted)
            self._kick(p)
        return web.json_response("Pipeline is starting", status=202)

    @staticmethod
    def _standby_configured(p: _Pipeline) -> bool:
        storage = p.runtime_config.get("storage") or {}
        backend = storage.get("backend") or {}
        config = backend.get("config") or {}
        return backend.get("name") == "file" and config.get("sync") is not None

    async def _pause(self, request: web.Request) -> web.Response:
        return self._set_runtime_wish(self._pipeline(request), "Paused")

    async def _resume(self, request: web.Request) -> web.Response:
        return self._set_runtime_wish(self._pipeline(request), "Running")

    def _set_runtime_wish(self, p: _Pipeline, wanted: str) -> web.Response:
        if p.status in _NOT_DEPLOYED or p.desired == "Stopped":
            raise self._not_deployed(p)
        p.runtime_wish = wanted
        if p.desired in ("Running", "Paused"):
            p.set_desired(wanted)
        self._kick(p)
        return web.Response(status=202)

    async def _stop(self, request: web.Request) -> web.Response:
        force = self._bool_param(request, "force", False)
        p = self._pipeline(request)
        if not force:
            if not self.enterprise:
                raise ApiError(
                    501,
                    "EnterpriseFeature",
                    "Cannot use enterprise-only feature (stop?force=false) in Feldera community "
                    "edition.",
                    {"feature": "stop?force=false"},
                )
            if p.status not in _NOT_DEPLOYED and p.desired != "Stopped":
                # Forwarded to the pipeline's /suspend: checkpoint, then deprovision.
                p.set_desired("Suspended")
                self._kick(p)
                return web.json_response("Pipeline is suspending", status=202)
        if p.status == "Stopped":
            p.deployment_initial = None
            p.bootstrap_policy = None
        p.set_desired("Stopped")
        self._kick(p)
        return web.json_response("Pipeline is forcefully stopping", status=202)

    async def _approve(self, request: web.Request) -> web.Response:
        silent = self._bool_param(request, "silent_bootstrap", False)
        concurrent = self._bool_param(request, "concurrent_bootstrap", False)
        if silent and concurrent:
            raise ApiError(
                400,
                "InvalidBootstrapConfig",
                "Invalid bootstrap configuration: `silent_bootstrap` and `concurrent_bootstrap` "
                "are mutually exclusive; set at most one",
                {"reason": "`silent_bootstrap` and `concurrent_bootstrap` are mutually exclusive"},
            )
        p = self._pipeline(request)
        if p.status in _NOT_DEPLOYED:
            raise self._not_deployed(p)
        # The pipeline's policy becomes `allow`; the answer waits until it left AwaitingApproval.
        p.approved = True
        if p.status == "AwaitingApproval":
            p.set_status("Bootstrapping")
        self._kick(p)
        return web.json_response("Bootstrap approved")

    async def _clear(self, request: web.Request) -> web.Response:
        p = self._pipeline(request)
        if p.storage_status != "Cleared":
            if not p.fully_stopped:
                resources, _ = _resources_status(p.status)
                desired = "Stopped" if p.desired == "Stopped" else "Provisioned"
                current = "in_use" if p.storage_status == "InUse" else "clearing"
                raise ApiError(
                    400,
                    "StorageStatusImmutableUnlessStopped",
                    f"Cannot transition storage status from '{current}' to 'clearing' with "
                    f"resources status '{resources.lower()}' and desired status "
                    f"'{desired.lower()}'. Storage status cannot be changed unless the pipeline "
                    "is fully stopped.",
                    {
                        "resources_status": resources,
                        "resources_desired_status": desired,
                        "current_status": p.storage_status,
                        "new_status": "Clearing",
                    },
                )
            if p.storage_status == "InUse":
                p.storage_status = "Clearing"
                p.refresh_version += 1
            self._kick(p)
        return web.json_response("Pipeline storage is being cleared", status=202)

    async def _dismiss_error(self, request: web.Request) -> web.Response:
        p = self._pipeline(request)
        if not p.fully_stopped and p.deployment_error is not None:
            raise ApiError(
                400,
                "DismissErrorRestrictedToFullyStopped",
                "The pipeline must have both status `Stopped` and desired status `Stopped` to "
                "dismiss the `deployment_error` if it is set.",
                None,
            )
        p.deployment_error = None
        return web.json_response("Pipeline deployment error has been dismissed")

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
                    "state": p.status if p.status in ("Paused", "Running") else "Paused",
                    "bootstrap_in_progress": p.status == "Bootstrapping",
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
                f"Invalid connector action '{action}'; valid actions are: 'start' or 'pause'",
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
        allowed = set(Fault.__dataclass_fields__)
        unknown = set(body) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        retry_after = body.get("retry_after")
        fault = self.inject_fault(
            str(body["endpoint"]),
            method=body.get("method"),
            status=body.get("status"),
            error_code=body.get("error_code"),
            latency=float(body.get("latency", 0.0)),
            drop=bool(body.get("drop", False)),
            count=int(body.get("count", 1)),
            hang=bool(body.get("hang", False)),
            slow_body=float(body.get("slow_body", 0.0)),
            html=bool(body.get("html", False)),
            retry_after=None if retry_after is None else str(retry_after),
        )
        return web.json_response(asdict(fault), status=201)

    async def _ctl_clear_faults(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response({})

    async def _ctl_counts(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "counts": self.request_counts(),
                "per_second": {str(k): v for k, v in self._per_second.items()},
                "list_marks": [[wall, counts] for wall, counts in self._list_marks],
            }
        )

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
            unknown = set(body) - set(self.settings())
            if unknown:
                raise ValueError(f"unknown settings: {sorted(unknown)}")
            # Validate everything before changing anything.
            restore = body.get("restore", self.restore)
            edition = body.get("edition", self.edition)
            if restore not in RESTORES:
                raise ValueError("restore must be 'auto', 'checkpoint' or 'sql'")
            if edition not in EDITIONS:
                raise ValueError("edition must be 'open-source' or 'enterprise'")
            delay = float(body.get("delay", self.delay))
            compile_delay = float(body.get("compile_delay", self.compile_delay))
            version = str(body.get("platform_version", self.version))
            if delay < 0 or compile_delay < 0:
                raise ValueError("delays must be >= 0")
            self.restore = cast(Restore, restore)
            self.edition = cast(Edition, edition)
            self.delay, self.compile_delay, self.version = delay, compile_delay, version
        return web.json_response(self.settings())

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

    async def _ctl_ca(self, request: web.Request) -> web.Response:
        if self.ca_pem is None:
            raise ApiError(404, "NoCertificateAuthority", "this emulator serves no CA", None)
        return web.Response(body=self.ca_pem, content_type="application/x-pem-file")


def _iter_keys(values: list[str] | None, role: Role) -> Iterator[tuple[str, Role]]:
    for value in values or []:
        yield value, role


# ------------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve an emulator of the Feldera REST API (pipelines, compilation, connectors, "
        "editions, checkpoints and bootstrapping, storage) and its test hooks under "
        "/_emulator/. Prints 'feldera emulator listening on URL' once it serves."
    )
    parser.add_argument("--port", type=int, default=0, help="Port (0, the default: a free one).")
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        metavar="N",
        help="Serve N independent emulators (no shared state) from this one process, on ports "
        "--port, --port+1, ... (or N free ones); one 'listening' line each. One process holds "
        "many instances in a fraction of the memory of a process each (docs/performance.md).",
    )
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
        "--edition",
        choices=tuple(EDITIONS),
        default="open-source",
        help="Edition to behave as (default: open-source): stop?force=false, checkpoints, "
        "bootstrapping and fault tolerance are Enterprise's.",
    )
    parser.add_argument(
        "--platform-version",
        default="0.369.0",
        metavar="VERSION",
        help="Feldera version to report (default 0.369.0); change it later through "
        "PATCH /_emulator/settings to simulate an upgrade.",
    )
    parser.add_argument(
        "--delay",
        type=float,
        default=0.0,
        help="Seconds each deployment and storage step takes (default 0: at once).",
    )
    parser.add_argument(
        "--compile-delay",
        type=float,
        default=0.0,
        help="Seconds each of the four compilation steps takes (default 0: at once).",
    )
    parser.add_argument(
        "--restore",
        choices=RESTORES,
        default="auto",
        help="What a forced stop or a crash leaves for the next start: auto (the edition's "
        "behaviour, the default), checkpoint (the state of the moment), sql (nothing).",
    )
    tls = parser.add_argument_group("https")
    tls.add_argument(
        "--tls",
        action="store_true",
        help="Serve https with a certificate from a throwaway CA (see --ca-out, --tls-mode).",
    )
    tls.add_argument(
        "--tls-mode",
        choices=TLS_MODES,
        default="valid",
        help="valid (default), expired (a certificate that expired yesterday) or wrong-host "
        "(valid, but only for feldera.invalid). Implies --tls.",
    )
    tls.add_argument("--cert-file", type=Path, help="Serve https with this certificate (PEM).")
    tls.add_argument("--key-file", type=Path, help="The private key of --cert-file (PEM).")
    tls.add_argument(
        "--ca-out",
        type=Path,
        metavar="PATH",
        help="Write the throwaway CA's certificate (PEM) there, for clients to trust.",
    )


def _tls_of(args: argparse.Namespace) -> ServerTls | None:
    mode = cast(TlsMode, args.tls_mode)
    if args.cert_file is not None:
        return server_tls(mode, host=args.host, cert_file=args.cert_file, key_file=args.key_file)
    if args.key_file is not None:
        raise SystemExit("--key-file needs --cert-file")
    if args.tls or mode != "valid" or args.ca_out is not None:
        return server_tls(mode, host=args.host)
    return None


async def _serve(args: argparse.Namespace) -> None:
    keys = dict(_iter_keys(args.read_api_key, "read"))
    keys.update(_iter_keys(args.api_key, "write"))
    tls = _tls_of(args)
    if args.ca_out is not None and tls is not None and tls.ca_pem is not None:
        args.ca_out.write_bytes(tls.ca_pem)
    if args.instances < 1:
        raise SystemExit("--instances must be >= 1")
    emulators = [
        FelderaEmulator(
            api_keys=keys,
            delay=args.delay,
            compile_delay=args.compile_delay,
            restore=args.restore,
            edition=args.edition,
            version=args.platform_version,
            tls=tls,
        )
        for _ in range(args.instances)
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    for k, emulator in enumerate(emulators):
        url = await emulator.start(args.host, args.port + k if args.port else 0)
        print(LISTENING_MESSAGE.format(url=url), flush=True)
    try:
        await stop.wait()
    finally:
        for emulator in emulators:
            await emulator.stop()


def main(args: argparse.Namespace) -> int:
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="feldera-emulator")
    add_arguments(_parser)
    raise SystemExit(main(_parser.parse_args()))
