"""The declared program's flow (spec.program): what Feldera holds → the ONE next step, and status.

Pure functions, no I/O, like `decision.py` beside it: the shell reads Feldera, calls
`decide_program()`, executes the step it returns, and hands the outcome to `decision.decide()`,
which merges it into the conditions and keeps run-state actions from fighting it.

What the flow does (design.md, "Changing the program"):
- Pipeline missing: Create (PUT), wait for compilation, Start as declared.
- Pipeline stopped (current and desired status Stopped): Patch at once, compile, Start.
- Pipeline not stopped and the program differs: Preview the new SQL first, stopping nothing. New
  SQL that does not compile is ProgramError and the running pipeline stays untouched. The diff
  goes to status.program.pending. Then by updateStrategy: Restart waits for an approval when a
  bootstrap is needed (AwaitingApproval) or refuses it (BootstrapRejected), else Stop, Patch,
  compile, Start (bootstrap_policy=allow when approved); Recreate also clears storage where the
  change needs it; Manual never stops a running pipeline (UpdatePending) and applies the change
  once it is stopped. A runtime-only change needs no preview, only a restart. Runtime fields that
  Feldera refuses while storage is in use stall (StorageInUse) unless the strategy is Recreate.
- ObserveOnly: never a write (Preview, a read-only call, is allowed); differences are reported.
Each step is decided again from what is observed, so an operator killed between two steps
finishes the job and repeats none that took effect: after Stop it sees the pipeline stopping, then
stopped, and patches; after Patch it sees the new program compiling and waits; after Start it sees
the desired status Running.

The declared program and its hash (`program_hash`): the canonical JSON of
  {"programConfig": <spec.program.programConfig or {}>,
   "runtimeConfig": <spec.program.runtimeConfig or {}>,
   "sql": <the SQL text: inline sql, or the ConfigMap value sqlFrom names>,
   "udfRust": <udfRust>, "udfToml": <udfToml>}
with keys sorted at every depth, no whitespace (separators "," and ":"), non-ASCII characters as
they are, encoded in UTF-8; the hash is "sha256:" + its lower-case hex SHA-256. Only what is
declared goes in (undeclared runtime keys are not the resource's), so the hash names exactly what
a reviewer saw, and spec.bootstrap.approve approves exactly that.

Comparing what is declared with what Feldera stores: program_code, udf_rust and udf_toml as
strings; runtime_config and program_config on the declared keys only, at every depth, semantically:
Feldera fills in defaults (`storage: true` is any storage object, `fault_tolerance: {}` is
{model: exactly_once}, an absent or null fault_tolerance is {model: none}), and drops keys it does
not know. A declared key that a filled-in stored object lacks is such a key: it is reported in
status.program.ignoredKeys and is no difference, or the pipeline would be patched forever.

THE SHELL'S CONTRACT (reconciler):
- Read: the status listing (`GET /v0/pipelines?selector=status`) as today. Read the full pipeline
  (`GET /v0/pipelines/{name}?selector=all`) only when `needs_full_read()` says so: no copy yet, the
  listing's `version` differs from the copy's, the declared hash changed since the copy was read,
  or the pipeline awaits approval and the copy was read before (its approval diff). Build the
  observation with `observed_program(full, latest=listing_entry)`; a 404 is `observed=None`.
- Declared: `declared_program(spec.program, sql)`, where `sql` comes from `resolve_sql()`: for
  sqlFrom, GET the ConfigMap (None when it is missing) and pass it in; a `SourceProblem` comes
  back instead of text when it is missing, lacks the key or the label `feldera.dev/program:
  "true"` (the shell watches only ConfigMaps so labelled, so an unlabelled one would go stale).
- Decide: `decide_program(spec, declared, observed, edition=..., pipeline_name=...,
  previous=status.get("program"))` with `edition` from `GET /v0/config` ("Enterprise" or "Open
  source"). Pass its `.outcome` to `decision.decide(..., program=outcome)` and write the status.
  When Feldera cannot be read at all, pass `unobservable_outcome(status.get("program"))`.
- Execute the step, if any, before decide()'s actions (there are none while it holds):
  Create → PUT /v0/pipelines/{name} with `body`; Patch → PATCH with `body` (only the fields that
  change; config objects already merged with what Feldera stores, since PATCH replaces them
  whole); Stop → POST .../stop?force=<force>; Clear → POST .../clear; Start → POST
  .../start?initial=<initial>[&bootstrap_policy=<bootstrap_policy>]; Approve → POST .../approve;
  Delete → DELETE; Preview → POST .../diff with {"program_code": ..., "runtime_version": ...}
  (omit runtime_version when None), then turn its answer into a `PreviewResult`
  (`preview_answered()` for 200, `preview_refused()` for an error answer) and call
  `decide_program(..., preview=result)` again with the same observation: that decision (which
  may be Stop, or a wait) is the one to execute and write. Each step's `event` is the reason of
  the Kubernetes Event to post. A refused step is an action failure like any other
  (`decision.with_problem`); the next reconcile decides again.
- Remember nothing else: the preview's result lives in status.program.pending (keyed by the
  declared hash and the program_version it compared against) and status.program.errors, which
  the shell persists by writing the status, and gets back through `previous`.
- Follow up as for any action: decide()'s `in_progress` is True while a program step is in
  flight, and a spec edit (an approval, `stopped: true`) or a labelled ConfigMap's edit
  reconciles at once. A person-stall (AwaitingApproval, UpdatePending...) needs no polling
  beyond the periodic observation.
- deletionPolicy Delete: hold the finalizer as for Stop; on deletion, execute
  `decide_deletion(spec, observed)` each reconcile until it says `done`, then release it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from feldera_operator import decision as d
from feldera_operator.models import (
    DIFF_NAMES_MAX,
    PROGRAM_ERRORS_MAX,
    PROGRAM_MESSAGE_MAX,
    ConfigMapKeyRef,
    FelderaPipelineSpec,
    PipelineProgram,
)

PROGRAM_LABEL = "feldera.dev/program"
ENTERPRISE = "Enterprise"

# feldera-api.md, "Managing the program": edits refused while storage_status != Cleared.
REFUSED_WITH_STORAGE = frozenset(
    {
        "runtime_config.workers",
        "runtime_config.hosts",
        "runtime_config.fault_tolerance",
        "runtime_config.clock_timezone_offset",
        "runtime_config.resources.storage_mb_max",
        "runtime_config.resources.namespace",
        "runtime_config.resources.storage_class",
    }
)
PROGRAM_FIELDS = ("program_code", "udf_rust", "udf_toml", "program_config")
CONFIG_FIELDS = ("program_config", "runtime_config")

# ----------------------------------------------------------------------------- the declared program


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same value always gives the same bytes."""
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def program_hash(
    *,
    sql: str,
    udf_rust: str,
    udf_toml: str,
    program_config: Mapping[str, Any],
    runtime_config: Mapping[str, Any],
) -> str:
    """`sha256:<hex>` of the declared program (what goes in: see the module's docstring)."""
    document = {
        "programConfig": dict(program_config),
        "runtimeConfig": dict(runtime_config),
        "sql": sql,
        "udfRust": udf_rust,
        "udfToml": udf_toml,
    }
    return "sha256:" + hashlib.sha256(canonical_json(document)).hexdigest()


@dataclass(frozen=True)
class DeclaredProgram:
    """The program a resource declares, its SQL resolved."""

    sql: str
    udf_rust: str = ""
    udf_toml: str = ""
    program_config: Mapping[str, Any] = field(default_factory=dict)
    runtime_config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return program_hash(
            sql=self.sql,
            udf_rust=self.udf_rust,
            udf_toml=self.udf_toml,
            program_config=self.program_config,
            runtime_config=self.runtime_config,
        )


def declared_program(program: PipelineProgram, sql: str) -> DeclaredProgram:
    """spec.program with its SQL text (inline, or from the ConfigMap: see `resolve_sql`)."""
    return DeclaredProgram(
        sql=sql,
        udf_rust=program.udfRust,
        udf_toml=program.udfToml,
        program_config=dict(program.programConfig or {}),
        runtime_config=dict(program.runtimeConfig or {}),
    )


@dataclass(frozen=True)
class SourceProblem:
    """The SQL cannot be had: a catalogue reason (Stalled) and what a person should do."""

    reason: str
    message: str


def resolve_sql(
    program: PipelineProgram, configmap: Mapping[str, Any] | None
) -> str | SourceProblem:
    """The SQL text: inline, or the value of the ConfigMap key (None: the ConfigMap is missing)."""
    if program.sql is not None:
        return program.sql
    assert program.sqlFrom is not None  # the model allows exactly one
    ref: ConfigMapKeyRef = program.sqlFrom.configMapKeyRef
    if configmap is None:
        return SourceProblem(
            d.CONFIGMAP_NOT_FOUND,
            f"ConfigMap {ref.name} (spec.program.sqlFrom) does not exist in this namespace",
        )
    meta = configmap.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(PROGRAM_LABEL) != "true":
        namespace = f" -n {meta['namespace']}" if meta.get("namespace") else ""
        return SourceProblem(
            d.CONFIGMAP_NOT_LABELLED,
            f'ConfigMap {ref.name} lacks the label {PROGRAM_LABEL}: "true"; the operator watches '
            f"only ConfigMaps so labelled: add the label: kubectl label configmap {ref.name}"
            f"{namespace} {PROGRAM_LABEL}=true --overwrite",
        )
    data = configmap.get("data") or {}
    if not isinstance(data.get(ref.key), str):
        return SourceProblem(
            d.CONFIGMAP_NOT_FOUND,
            f"ConfigMap {ref.name} has no key {ref.key} (spec.program.sqlFrom)",
        )
    return str(data[ref.key])


# ----------------------------------------------------------------------------- Feldera's answers


@dataclass(frozen=True)
class ProgramMessage:
    """One compiler message: line and column from 1, when the compiler gave them."""

    message: str
    line: int | None = None
    column: int | None = None
    warning: bool = False

    def describe(self) -> str:
        where = f"{self.line}:{self.column}: " if self.line is not None else ""
        return where + _first_line(self.message)

    def entry(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "column": self.column,
            "message": _cut(self.message, PROGRAM_MESSAGE_MAX),
            "warning": self.warning,
        }


@dataclass(frozen=True)
class NameChanges:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.modified)


@dataclass(frozen=True)
class PipelineDiff:
    """Feldera's PipelineDiff: from POST .../diff, or the approval_diff of a waiting pipeline."""

    tables: NameChanges = NameChanges()
    views: NameChanges = NameChanges()
    input_connectors: NameChanges = NameChanges()
    output_connectors: NameChanges = NameChanges()
    error: str | None = None  # program_diff_error: Feldera could not compare the programs

    @property
    def changes_dataflow(self) -> bool:
        """Tables or views change: a checkpoint of the old program needs a bootstrap."""
        return bool(self.tables or self.views)

    def entry(self) -> dict[str, Any]:
        truncated = False

        def names(changes: NameChanges) -> dict[str, list[str]]:
            nonlocal truncated
            out = {}
            for kind in ("added", "removed", "modified"):
                listed: tuple[str, ...] = getattr(changes, kind)
                truncated = truncated or len(listed) > DIFF_NAMES_MAX
                out[kind] = list(listed[:DIFF_NAMES_MAX])
            return out

        entry: dict[str, Any] = {
            "tables": names(self.tables),
            "views": names(self.views),
            "inputConnectors": names(self.input_connectors),
            "outputConnectors": names(self.output_connectors),
        }
        entry["truncated"] = True if truncated else None
        entry["error"] = _cut(self.error, PROGRAM_MESSAGE_MAX) if self.error else None
        return entry

    def summary(self) -> str:
        parts = []
        for label, changes in (
            ("tables", self.tables),
            ("views", self.views),
            ("input connectors", self.input_connectors),
            ("output connectors", self.output_connectors),
        ):
            counts = [
                f"{len(names)} {kind}"
                for kind, names in (
                    ("added", changes.added),
                    ("removed", changes.removed),
                    ("modified", changes.modified),
                )
                if names
            ]
            if counts:
                parts.append(f"{label} {', '.join(counts)}")
        if self.error:
            parts.append(f"Feldera could not compare the programs ({_first_line(self.error)})")
        return "; ".join(parts) or "no table, view or connector changes"


def parse_pipeline_diff(body: Mapping[str, Any]) -> PipelineDiff:
    """Feldera's PipelineDiff JSON → PipelineDiff (missing lists are empty)."""
    program = _mapping(body.get("program_diff"))

    def names(source: Mapping[str, Any], *keys: str) -> NameChanges:
        lists = [tuple(str(n) for n in source.get(k) or () if isinstance(n, str)) for k in keys]
        return NameChanges(*lists)

    error = body.get("program_diff_error")
    return PipelineDiff(
        tables=names(program, "added_tables", "removed_tables", "modified_tables"),
        views=names(program, "added_views", "removed_views", "modified_views"),
        input_connectors=names(
            body,
            "added_input_connectors",
            "removed_input_connectors",
            "modified_input_connectors",
        ),
        output_connectors=names(
            body,
            "added_output_connectors",
            "removed_output_connectors",
            "modified_output_connectors",
        ),
        error=str(error) if error else None,
    )


def _diff_from_entry(entry: Mapping[str, Any]) -> PipelineDiff:
    """status.program.pending.diff → PipelineDiff (names may be cut, emptiness is kept)."""

    def names(key: str) -> NameChanges:
        part = entry.get(key) or {}
        return NameChanges(*(tuple(part.get(k) or ()) for k in ("added", "removed", "modified")))

    return PipelineDiff(
        tables=names("tables"),
        views=names("views"),
        input_connectors=names("inputConnectors"),
        output_connectors=names("outputConnectors"),
        error=entry.get("error") or None,
    )


def parse_program_errors(program_error: Any) -> tuple[ProgramMessage, ...]:
    """Feldera's program_error (or a list of SQL compiler messages) → messages, errors first."""
    found: list[ProgramMessage] = []
    if isinstance(program_error, str) and program_error.strip():
        found.append(ProgramMessage(program_error.strip()))
    elif isinstance(program_error, Sequence) and not isinstance(program_error, str):
        found.extend(_sql_message(m) for m in program_error if isinstance(m, Mapping))
    elif isinstance(program_error, Mapping):
        sql = program_error.get("sql_compilation")
        if isinstance(sql, Mapping):
            found.extend(
                _sql_message(m) for m in sql.get("messages") or () if isinstance(m, Mapping)
            )
        elif isinstance(program_error.get("messages"), Sequence):
            found.extend(
                _sql_message(m) for m in program_error["messages"] if isinstance(m, Mapping)
            )
        rust = program_error.get("rust_compilation")
        if isinstance(rust, Mapping) and rust.get("exit_code") not in (0, None):
            text = str(rust.get("stderr") or rust.get("stdout") or "").strip()
            found.append(ProgramMessage(_rust_error(text) or "the Rust compilation (UDFs) failed"))
        system = program_error.get("system_error")
        if isinstance(system, str) and system.strip():
            found.append(ProgramMessage(system.strip()))
    errors = [m for m in found if not m.warning] + [m for m in found if m.warning]
    return tuple(errors)


def _sql_message(raw: Mapping[str, Any]) -> ProgramMessage:
    line, column = raw.get("start_line_number"), raw.get("start_column")
    return ProgramMessage(
        message=str(raw.get("message") or raw.get("error_type") or "SQL error").strip(),
        line=line if isinstance(line, int) and line > 0 else None,
        column=column if isinstance(column, int) and column > 0 else None,
        warning=raw.get("warning") is True,
    )


def _rust_error(stderr: str) -> str:
    """The first `error...` line of cargo's output, else its first line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("error"):
            return line
    return lines[0] if lines else ""


@dataclass(frozen=True)
class ObservedProgram:
    """One pipeline as Feldera stores it (selector=all), with the status fields up to date."""

    version: int | None
    program_version: int | None
    program_status: str | None
    program_code: str
    udf_rust: str
    udf_toml: str
    program_config: Mapping[str, Any]
    runtime_config: Mapping[str, Any]
    program_errors: tuple[ProgramMessage, ...]
    deployment_status: str
    desired_status: str
    deployment_error: str | None
    storage_status: str | None
    approval_diff: PipelineDiff | None = None

    @property
    def settled_stopped(self) -> bool:
        """Stopped and meant to stay so: the only state in which Feldera accepts a core edit."""
        return self.deployment_status == "Stopped" and self.desired_status == "Stopped"


_STATUS_FIELDS = (
    "version",
    "program_version",
    "program_status",
    "deployment_status",
    "deployment_desired_status",
    "deployment_error",
    "storage_status",
    "deployment_runtime_status_details",
)


def observed_program(
    full: Mapping[str, Any], latest: Mapping[str, Any] | None = None
) -> ObservedProgram:
    """`GET ...?selector=all` → ObservedProgram; `latest` (the status listing's entry, newer)
    overrides the status fields. The shell guarantees both have the same `version`."""
    now = dict(full)
    for key in _STATUS_FIELDS:
        if latest is not None and key in latest:
            now[key] = latest[key]
    details = now.get("deployment_runtime_status_details")
    approval = details.get("approval_diff") if isinstance(details, Mapping) else None
    return ObservedProgram(
        version=_int(now.get("version")),
        program_version=_int(now.get("program_version")),
        program_status=_str(now.get("program_status")),
        program_code=str(now.get("program_code") or ""),
        udf_rust=str(now.get("udf_rust") or ""),
        udf_toml=str(now.get("udf_toml") or ""),
        program_config=_mapping(now.get("program_config")),
        runtime_config=_mapping(now.get("runtime_config")),
        program_errors=parse_program_errors(now.get("program_error")),
        deployment_status=str(now.get("deployment_status") or "Unknown"),
        desired_status=str(now.get("deployment_desired_status") or "Unknown"),
        deployment_error=_error_message(now.get("deployment_error")),
        storage_status=_str(now.get("storage_status")),
        approval_diff=parse_pipeline_diff(approval) if isinstance(approval, Mapping) else None,
    )


def needs_full_read(
    latest: Mapping[str, Any],
    copy: Mapping[str, Any] | None,
    *,
    declared_hash: str,
    copy_hash: str | None,
) -> bool:
    """Whether to GET the pipeline with selector=all, given the listing's entry and the copy
    read before (with the declared hash it was read for): a converged pipeline costs no call."""
    if copy is None or copy_hash != declared_hash:
        return True
    if latest.get("version") != copy.get("version"):
        return True
    awaiting = latest.get("deployment_status") == "AwaitingApproval"
    return awaiting and copy.get("deployment_status") != "AwaitingApproval"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _error_message(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping):
        message = value.get("message")
        return str(message) if message else (str(value.get("error_code") or "") or None)
    return None


# ----------------------------------------------------------------------------- the preview


@dataclass(frozen=True)
class PreviewResult:
    """What POST .../diff answered for one declared hash, against one running program_version.

    Exactly one of: `diff` (the new SQL compiles), `errors` (it does not), `problem` (no answer
    about the program: compiler unavailable, timeout...; not remembered, so it is retried)."""

    hash: str
    from_version: int | None
    diff: PipelineDiff | None = None
    errors: tuple[ProgramMessage, ...] = ()
    problem: str | None = None


def preview_answered(step: Preview, body: Mapping[str, Any]) -> PreviewResult:
    """A 200 from POST .../diff."""
    return PreviewResult(step.hash, step.from_version, diff=parse_pipeline_diff(body))


def preview_refused(
    step: Preview, *, error_code: str | None, message: str, details: Any = None
) -> PreviewResult:
    """An error answer from POST .../diff: compile errors for 400 InvalidNewProgramSql, else a
    problem to retry (404 ProgramNotCompiled, 503 CompilerUnavailable, 504 CompilerTimeout...)."""
    if error_code != "InvalidNewProgramSql":
        return PreviewResult(
            step.hash, step.from_version, problem=f"{error_code or 'error'}: {message}"
        )
    raw: Any = details.get("error") if isinstance(details, Mapping) else None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            pass
    errors = parse_program_errors(raw) if raw is not None else ()
    if not any(not e.warning for e in errors):
        errors = (ProgramMessage(message or "the new SQL does not compile"), *errors)
    return PreviewResult(step.hash, step.from_version, errors=errors)


# ----------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class Create:
    """PUT /v0/pipelines/{name} with `body`."""

    body: Mapping[str, Any]
    writes: ClassVar[bool] = True
    event: ClassVar[str] = "PipelineCreated"

    def describe(self) -> str:
        return "create the pipeline"


@dataclass(frozen=True)
class Preview:
    """POST .../diff with the new SQL: read-only, the running pipeline is untouched."""

    program_code: str
    runtime_version: str | None
    hash: str
    from_version: int | None
    writes: ClassVar[bool] = False
    event: ClassVar[str] = "ProgramPreviewed"

    def describe(self) -> str:
        return f"preview {self.hash}"


@dataclass(frozen=True)
class Stop:
    """POST .../stop?force=<force>."""

    force: bool
    writes: ClassVar[bool] = True
    event: ClassVar[str] = "PipelineStopped"

    def describe(self) -> str:
        return f"stop?force={str(self.force).lower()}"


@dataclass(frozen=True)
class Patch:
    """PATCH /v0/pipelines/{name} with `body`: only the fields that change."""

    body: Mapping[str, Any]
    writes: ClassVar[bool] = True
    event: ClassVar[str] = "ProgramUpdated"

    def describe(self) -> str:
        return f"update {', '.join(sorted(self.body))}"


@dataclass(frozen=True)
class Clear:
    """POST .../clear: storage (checkpoints, state) is deleted."""

    writes: ClassVar[bool] = True
    event: ClassVar[str] = "StorageCleared"

    def describe(self) -> str:
        return "clear storage"


BootstrapPolicyParam = Literal["allow", "reject", "await_approval"]


@dataclass(frozen=True)
class Start:
    """POST .../start?initial=<initial>[&bootstrap_policy=<bootstrap_policy>]."""

    initial: Literal["running", "paused"]
    bootstrap_policy: BootstrapPolicyParam | None = None
    writes: ClassVar[bool] = True
    event: ClassVar[str] = "PipelineStarted"

    def describe(self) -> str:
        policy = f"&bootstrap_policy={self.bootstrap_policy}" if self.bootstrap_policy else ""
        return f"start?initial={self.initial}{policy}"


@dataclass(frozen=True)
class Approve:
    """POST .../approve: the pipeline awaiting approval bootstraps."""

    writes: ClassVar[bool] = True
    event: ClassVar[str] = "BootstrapApproved"

    def describe(self) -> str:
        return "approve the bootstrap"


@dataclass(frozen=True)
class Delete:
    """DELETE /v0/pipelines/{name}."""

    writes: ClassVar[bool] = True
    event: ClassVar[str] = "PipelineDeleted"

    def describe(self) -> str:
        return "delete the pipeline"


Step = Create | Preview | Stop | Patch | Clear | Start | Approve | Delete


# ----------------------------------------------------------------------------- comparison

_MISSING: Any = object()


def _normalised(path: str, value: Any) -> Any:
    """Declared or stored value → the form both compare in (Feldera's own equivalences)."""
    if path == "runtime_config.fault_tolerance":
        if value is None or value is _MISSING:
            return {"model": "none"}
        if isinstance(value, Mapping) and "model" not in value:
            return {**value, "model": "exactly_once"}
    if path == "runtime_config.storage":
        if value is True:
            return {}  # "the default storage object": any stored object has it
        if value is False:
            return None
    return value


_ABSENCE_MEANS = frozenset({"runtime_config.fault_tolerance"})
# Values Feldera reads as a whole (a bool stands for an object): named whole when they differ.
_WHOLE = frozenset({"runtime_config.fault_tolerance", "runtime_config.storage"})


def _same(declared: Any, stored: Any) -> bool:
    """Declared covers stored: mappings on the declared keys, the rest by value (a bool is no
    number)."""
    if isinstance(declared, Mapping):
        return isinstance(stored, Mapping) and all(
            k in stored and _same(v, stored[k]) for k, v in declared.items()
        )
    if isinstance(declared, list):
        return (
            isinstance(stored, list)
            and len(declared) == len(stored)
            and all(_same(a, b) for a, b in zip(declared, stored, strict=True))
        )
    if isinstance(declared, bool) or isinstance(stored, bool):
        return declared is stored
    return bool(declared == stored)


def config_differences(
    declared: Mapping[str, Any], stored: Mapping[str, Any], prefix: str
) -> tuple[list[str], list[str]]:
    """(paths that differ, declared paths Feldera does not store), dotted under `prefix`."""
    differ: list[str] = []
    unknown: list[str] = []
    for key, value in declared.items():
        path = f"{prefix}.{key}"
        have = stored.get(key, _MISSING)
        if have is _MISSING and stored and path not in _ABSENCE_MEANS:
            unknown.append(path)  # Feldera dropped it (a filled-in object has every known key)
            continue
        want, have = _normalised(path, value), _normalised(path, have)
        if _same(want, have):
            continue
        if isinstance(want, Mapping) and isinstance(have, Mapping) and path not in _WHOLE:
            inner_differ, inner_unknown = config_differences(want, have, path)
            differ.extend(inner_differ)
            unknown.extend(inner_unknown)
            if not inner_differ and not inner_unknown:
                differ.append(path)
        else:
            differ.append(path)
    return differ, unknown


def merged_config(
    declared: Mapping[str, Any], stored: Mapping[str, Any], prefix: str
) -> dict[str, Any]:
    """What to send for a config field (PATCH replaces it whole): what Feldera stores, with the
    declared keys that differ set as declared (stored values kept where they are the same)."""
    out = dict(stored)
    for key, value in declared.items():
        path = f"{prefix}.{key}"
        have = stored.get(key, _MISSING)
        want = _normalised(path, value)
        if have is not _MISSING and _same(want, _normalised(path, have)):
            continue
        if isinstance(want, Mapping) and isinstance(have, Mapping) and value is not True:
            out[key] = merged_config(want, have, path)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class ProgramChanges:
    """How what Feldera stores differs from the declared program."""

    fields: tuple[str, ...]  # top-level Feldera fields to PATCH
    paths: tuple[str, ...]  # what differs, dotted (program_code, runtime_config.workers...)
    ignored: tuple[str, ...]  # declared config keys Feldera does not store

    @property
    def program(self) -> bool:
        """The program changes (a recompilation): not the runtime configuration alone."""
        return any(f in PROGRAM_FIELDS for f in self.fields)

    @property
    def sql(self) -> bool:
        return "program_code" in self.fields

    def refused_with_storage(self) -> tuple[str, ...]:
        """Paths Feldera refuses to change while storage is in use (a parent replaced whole
        counts as its refused children)."""
        return tuple(
            p
            for p in self.paths
            if p in REFUSED_WITH_STORAGE or any(r.startswith(p + ".") for r in REFUSED_WITH_STORAGE)
        )


def program_changes(declared: DeclaredProgram, observed: ObservedProgram) -> ProgramChanges:
    paths: list[str] = []
    ignored: list[str] = []
    fields: list[str] = []
    for name, want, have in (
        ("program_code", declared.sql, observed.program_code),
        ("udf_rust", declared.udf_rust, observed.udf_rust),
        ("udf_toml", declared.udf_toml, observed.udf_toml),
    ):
        if want != have:
            fields.append(name)
            paths.append(name)
    for name, want_config, have_config in (
        ("program_config", declared.program_config, observed.program_config),
        ("runtime_config", declared.runtime_config, observed.runtime_config),
    ):
        differ, unknown = config_differences(want_config, have_config, name)
        ignored.extend(unknown)
        if differ:
            fields.append(name)
            paths.extend(differ)
    return ProgramChanges(tuple(fields), tuple(paths), tuple(ignored))


def patch_body(
    declared: DeclaredProgram, observed: ObservedProgram, changes: ProgramChanges
) -> dict[str, Any]:
    """The PATCH body: only the top-level fields that change."""
    body: dict[str, Any] = {}
    values = {"program_code": declared.sql, "udf_rust": declared.udf_rust}
    values["udf_toml"] = declared.udf_toml
    for name in changes.fields:
        if name == "program_config":
            body[name] = merged_config(declared.program_config, observed.program_config, name)
        elif name == "runtime_config":
            body[name] = merged_config(declared.runtime_config, observed.runtime_config, name)
        else:
            body[name] = values[name]
    return body


def create_body(declared: DeclaredProgram, pipeline_name: str) -> dict[str, Any]:
    """The PUT body: the whole declared program (Feldera fills the defaults)."""
    return {
        "name": pipeline_name,
        "program_code": declared.sql,
        "udf_rust": declared.udf_rust,
        "udf_toml": declared.udf_toml,
        "program_config": dict(declared.program_config),
        "runtime_config": dict(declared.runtime_config),
    }


# ----------------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class ProgramDecision:
    """The next step (None: wait), status.program, and the program's reason for the conditions."""

    step: Step | None
    status: dict[str, Any] | None
    reason: str
    message: str
    holds_pipeline: bool = False

    @property
    def outcome(self) -> d.ProgramOutcome:
        """What `decision.decide(..., program=...)` takes."""
        return d.ProgramOutcome(
            status=self.status,
            reason=self.reason,
            message=self.message,
            holds_pipeline=self.holds_pipeline,
            acting=self.step is not None,
        )


def unobservable_outcome(previous: Mapping[str, Any] | None) -> d.ProgramOutcome:
    """Feldera could not be read: status.program stays as last written, nothing is decided."""
    return d.ProgramOutcome(
        status=dict(previous) if previous else None,
        reason=d.CONVERGED,
        message="Feldera could not be read",
    )


@dataclass(frozen=True)
class _Context:
    """What every branch of the decision reads."""

    spec: FelderaPipelineSpec
    declared: DeclaredProgram
    hash: str
    short: str  # the hash as messages show it
    enterprise: bool
    full: bool  # managementPolicy Full: writes allowed
    policy: str
    approved: bool
    previous: Mapping[str, Any]

    def status(
        self,
        observed: ObservedProgram | None,
        *,
        converged: bool = False,
        errors: Sequence[ProgramMessage] = (),
        pending: Mapping[str, Any] | None = None,
        ignored: Sequence[str] = (),
    ) -> dict[str, Any]:
        applied = self.previous.get("appliedHash")
        if converged:
            applied = self.hash
        elif applied == self.hash:
            applied = None  # no longer confirmed: Feldera holds something else now
        return {
            "hash": self.hash,
            "appliedHash": applied,
            "version": observed.program_version if observed else None,
            "status": observed.program_status if observed else None,
            "errors": [e.entry() for e in errors[:PROGRAM_ERRORS_MAX]],
            "pending": dict(pending) if pending is not None else None,
            "ignoredKeys": list(ignored[:64]),
        }


def decide_program(
    spec: FelderaPipelineSpec,
    declared: DeclaredProgram | SourceProblem,
    observed: ObservedProgram | None,
    *,
    edition: str,
    pipeline_name: str,
    preview: PreviewResult | None = None,
    previous: Mapping[str, Any] | None = None,
) -> ProgramDecision:
    """The one next step of the program flow, status.program, and its reason (module docstring).

    `observed` None: Feldera has no such pipeline. `preview`: the answer of the Preview just
    executed, if any. `previous`: status.program as last written (the preview's memory)."""
    previous = previous or {}
    if isinstance(declared, SourceProblem):
        return ProgramDecision(None, dict(previous) or None, declared.reason, declared.message)
    bootstrap = spec.bootstrap
    ctx = _Context(
        spec=spec,
        declared=declared,
        hash=declared.hash,
        short=declared.hash[: len("sha256:") + 12],
        enterprise=edition == ENTERPRISE,
        full=spec.managementPolicy == "Full",
        policy=bootstrap.policy if bootstrap else "AwaitApproval",
        approved=bootstrap is not None and bootstrap.approve == declared.hash,
        previous=previous,
    )
    if observed is None:
        return _missing(ctx, pipeline_name)
    changes = program_changes(declared, observed)
    if not changes.fields:
        return _holds_declared(ctx, observed, changes)
    return _differs(ctx, observed, changes, preview)


def _missing(ctx: _Context, pipeline_name: str) -> ProgramDecision:
    fields = ["program_code", "udf_rust", "udf_toml", "program_config", "runtime_config"]
    pending = _pending(ctx, changed=fields)
    if not ctx.full:
        return ProgramDecision(
            None,
            ctx.status(None, pending=pending),
            d.PIPELINE_NOT_FOUND,
            f"Feldera has no pipeline {pipeline_name}; managementPolicy ObserveOnly: not "
            "creating it",
        )
    return ProgramDecision(
        Create(create_body(ctx.declared, pipeline_name)),
        ctx.status(None, pending=pending),
        d.CREATING_PIPELINE,
        f"creating pipeline {pipeline_name} with program {ctx.short}",
        holds_pipeline=True,
    )


def _holds_declared(
    ctx: _Context, observed: ObservedProgram, changes: ProgramChanges
) -> ProgramDecision:
    """Feldera stores the declared program: compile, start, approve its bootstrap, or rest."""
    compiled = observed.program_status == d.PROGRAM_READY
    status = ctx.status(
        observed, converged=compiled, errors=observed.program_errors, ignored=changes.ignored
    )
    if observed.deployment_status == "AwaitingApproval":
        return _awaiting_approval(ctx, observed, status)
    if observed.program_status in d.PROGRAM_FAILED:
        first = next((e for e in observed.program_errors if not e.warning), None)
        return ProgramDecision(
            None,
            status,
            d.PROGRAM_ERROR,
            f"program {ctx.short} does not compile ({observed.program_status}): "
            f"{first.describe() if first else 'see status.program.errors'}",
        )
    if not compiled:
        return ProgramDecision(
            None,
            status,
            d.COMPILING,
            f"compiling program {ctx.short} (program status {observed.program_status})",
        )
    startable = (
        observed.settled_stopped
        and not observed.deployment_error
        and observed.storage_status != "Clearing"
    )
    if ctx.full and not ctx.spec.stopped and startable:
        initial: Literal["running", "paused"] = "paused" if ctx.spec.paused else "running"
        step = Start(initial, _bootstrap_policy(ctx))
        return ProgramDecision(
            step,
            status,
            d.STARTING,
            f"program {ctx.short} compiled; {step.describe()}",
            holds_pipeline=True,
        )
    return ProgramDecision(
        None,
        status,
        d.CONVERGED,
        f"program {ctx.short} as declared (program version {observed.program_version})",
    )


def _bootstrap_policy(ctx: _Context) -> BootstrapPolicyParam | None:
    if not ctx.enterprise:
        return None  # no checkpoints, nothing to bootstrap
    if ctx.approved or ctx.policy == "Allow":
        return "allow"
    if ctx.policy == "Reject":
        return "reject"
    return "await_approval"


def _awaiting_approval(
    ctx: _Context, observed: ObservedProgram, status: dict[str, Any]
) -> ProgramDecision:
    """Feldera itself waits (a start found a checkpoint of another program)."""
    diff = observed.approval_diff
    pending = _pending(
        ctx,
        changed=[],
        diff=diff,
        needs_bootstrap=True,
        waiting_for="Approval",
    )
    what = f"bootstrap of program {ctx.short} ({diff.summary() if diff else 'diff unknown'})"
    if ctx.spec.stopped:
        # decide() stops it: approving a bootstrap first would only waste it.
        return ProgramDecision(
            None, status, d.CONVERGED, f"program {ctx.short} as declared; the pipeline stops"
        )
    if ctx.policy == "Reject":
        status["pending"] = {**pending, "waitingFor": None}
        return ProgramDecision(
            None,
            status,
            d.BOOTSTRAP_REJECTED,
            f"Feldera awaits approval of the {what}; bootstrap.policy is Reject: not approved "
            "(stop the pipeline, or clear its storage with updateStrategy Recreate)",
        )
    if ctx.approved or ctx.policy == "Allow":
        status["pending"] = {**pending, "waitingFor": None}
        if not ctx.full:
            return ProgramDecision(
                None,
                status,
                d.OBSERVE_ONLY,
                f"Feldera awaits approval of the {what}; managementPolicy ObserveOnly: the "
                "operator does not approve it",
            )
        why = "approved in spec.bootstrap.approve" if ctx.approved else "bootstrap.policy Allow"
        return ProgramDecision(
            Approve(),
            status,
            d.UPDATING_PROGRAM,
            f"approving the {what} ({why})",
            holds_pipeline=True,
        )
    status["pending"] = pending
    return ProgramDecision(
        None,
        status,
        d.AWAITING_APPROVAL,
        f"the {what} awaits approval: set spec.bootstrap.approve to {ctx.hash}",
    )


def _remembered(
    ctx: _Context, observed: ObservedProgram, preview: PreviewResult | None
) -> PreviewResult | None:
    """The preview of this hash against the program Feldera runs now: just answered, or kept in
    status.program (pending + errors) from an earlier reconcile."""
    version = observed.program_version
    if preview is not None and (preview.hash, preview.from_version) == (ctx.hash, version):
        return preview
    pending = ctx.previous.get("pending")
    if not isinstance(pending, Mapping) or version is None:
        return None
    if (pending.get("hash"), pending.get("fromVersion")) != (ctx.hash, version):
        return None
    if isinstance(pending.get("diff"), Mapping):
        return PreviewResult(ctx.hash, version, diff=_diff_from_entry(pending["diff"]))
    errors = tuple(
        ProgramMessage(
            message=str(e.get("message") or ""),
            line=e.get("line"),
            column=e.get("column"),
            warning=bool(e.get("warning")),
        )
        for e in ctx.previous.get("errors") or ()
        if isinstance(e, Mapping)
    )
    if any(not e.warning for e in errors):
        return PreviewResult(ctx.hash, version, errors=errors)
    return None


def _differs(
    ctx: _Context,
    observed: ObservedProgram,
    changes: ProgramChanges,
    preview: PreviewResult | None,
) -> ProgramDecision:
    """Feldera stores another program than the declared one."""
    spec = ctx.spec
    storage_in_use = observed.storage_status not in (None, "Cleared")
    refused = changes.refused_with_storage() if storage_in_use else ()
    recreate = spec.updateStrategy == "Recreate"
    remembered = _remembered(ctx, observed, preview) if changes.sql else None
    diff = remembered.diff if remembered else None
    from_version = remembered.from_version if remembered and not remembered.problem else None
    # Enterprise keeps a checkpoint in storage: a new dataflow must be bootstrapped from it.
    checkpointed = ctx.enterprise and observed.storage_status == "InUse"
    cannot_bootstrap = diff is not None and diff.error is not None
    must_clear = bool(refused) or (recreate and checkpointed and cannot_bootstrap)
    needs_bootstrap = (
        checkpointed
        and changes.sql
        and diff is not None
        and (diff.changes_dataflow or cannot_bootstrap)
        and not must_clear
    )
    loses_state = not ctx.enterprise or must_clear

    def status(
        waiting_for: str | None = None, errors: Sequence[ProgramMessage] = ()
    ) -> dict[str, Any]:
        pending = _pending(
            ctx,
            changed=changes.paths,
            diff=diff,
            from_version=from_version,
            needs_bootstrap=needs_bootstrap,
            loses_state=loses_state,
            waiting_for=waiting_for,
        )
        return ctx.status(observed, errors=errors, pending=pending, ignored=changes.ignored)

    what = f"program {ctx.short} ({', '.join(changes.paths)})"
    if not ctx.full:
        return _observe_only_differs(ctx, observed, changes, remembered, status, what)
    if observed.storage_status == "Clearing":
        # Feldera refuses a start while clearing: hold the pipeline until it is done.
        return ProgramDecision(
            None,
            status(),
            d.UPDATING_PROGRAM,
            f"storage is being cleared; then {what} is applied",
            holds_pipeline=True,
        )
    if refused and not recreate:
        return ProgramDecision(
            None,
            status("StorageClear"),
            d.STORAGE_IN_USE,
            f"Feldera refuses to change {', '.join(refused)} while the pipeline's storage is in "
            f"use: clear its storage, or set updateStrategy Recreate (state is lost); {what} "
            "is not applied",
        )

    if observed.settled_stopped:
        # Stopped: apply at once (clearing first where the change needs it).
        if must_clear:
            return ProgramDecision(
                Clear(),
                status(),
                d.UPDATING_PROGRAM,
                f"clearing storage (updateStrategy Recreate; state is lost) to apply {what}",
                holds_pipeline=True,
            )
        return ProgramDecision(
            Patch(patch_body(ctx.declared, observed, changes)),
            status(),
            d.UPDATING_PROGRAM,
            f"updating the stopped pipeline to {what}",
            holds_pipeline=True,
        )

    if spec.stopped or observed.desired_status in ("Stopped", "Suspended"):
        # On its way to Stopped (ours, the spec's or anyone's): apply once it is there.
        return ProgramDecision(
            None,
            status(),
            d.UPDATING_PROGRAM,
            f"the pipeline is {observed.deployment_status}, stopping; then {what} is applied",
        )

    # Not stopped: preview the new SQL before anything stops.
    if changes.sql and remembered is None:
        if observed.program_status != d.PROGRAM_READY:
            if observed.deployment_status == "Stopped" and spec.updateStrategy != "Manual":
                # A start of the old program waits for it to compile: nothing runs yet, and
                # nothing can be previewed against it. Cancel the start; the change applies.
                return ProgramDecision(
                    Stop(force=True),
                    status(),
                    d.UPDATING_PROGRAM,
                    f"cancelling the pending start of Feldera's current program to apply {what}",
                    holds_pipeline=True,
                )
            return ProgramDecision(
                None,
                status(),
                d.PREVIEWING_CHANGE,
                f"waiting for Feldera's current program to compile to preview {what}",
            )
        return ProgramDecision(
            _preview(ctx, observed), status(), d.PREVIEWING_CHANGE, f"previewing {what}"
        )
    if remembered is not None and remembered.problem:
        return ProgramDecision(
            None,
            status(),
            d.PREVIEWING_CHANGE,
            f"the preview of {what} failed, retrying: {_first_line(remembered.problem)}",
        )
    if remembered is not None and remembered.errors:
        first = next(e for e in remembered.errors if not e.warning)
        return ProgramDecision(
            None,
            status(errors=remembered.errors),
            d.PROGRAM_ERROR,
            f"program {ctx.short} does not compile: {first.describe()}; the running pipeline "
            "is untouched",
        )

    effect = diff.summary() if diff else "runtime configuration only"
    if changes.program and diff is None:
        effect = "UDFs or program configuration"
    if loses_state:
        effect += "; restarting loses the pipeline's state"
    if spec.updateStrategy == "Manual":
        return ProgramDecision(
            None,
            status("Stop"),
            d.UPDATE_PENDING,
            f"{what} is pending ({effect}); updateStrategy Manual: it is applied once the "
            "pipeline is stopped (spec.stopped: true)",
        )
    if needs_bootstrap and ctx.policy == "Reject":
        return ProgramDecision(
            None,
            status(),
            d.BOOTSTRAP_REJECTED,
            f"{what} needs a bootstrap ({effect}) and bootstrap.policy is Reject: not applied",
        )
    if needs_bootstrap and ctx.policy == "AwaitApproval" and not ctx.approved:
        return ProgramDecision(
            None,
            status("Approval"),
            d.AWAITING_APPROVAL,
            f"{what} needs a bootstrap ({effect}): set spec.bootstrap.approve to {ctx.hash} "
            "to apply it",
        )
    # Enterprise with a checkpoint: stop without force writes one, so state survives the restart.
    keep_state = checkpointed and not must_clear and observed.deployment_status in d.DEPLOYED
    stop = Stop(force=not keep_state)
    return ProgramDecision(
        stop,
        status(),
        d.UPDATING_PROGRAM,
        f"{stop.describe()} to apply {what} ({effect})",
        holds_pipeline=True,
    )


def _observe_only_differs(
    ctx: _Context,
    observed: ObservedProgram,
    changes: ProgramChanges,
    remembered: PreviewResult | None,
    status: Callable[..., dict[str, Any]],
    what: str,
) -> ProgramDecision:
    """ObserveOnly: report the difference, with the change's preview (a read) when there is one
    to make; never apply it."""
    compiled = observed.program_status == d.PROGRAM_READY
    if changes.sql and remembered is None and compiled and not observed.settled_stopped:
        return ProgramDecision(
            _preview(ctx, observed), status(), d.PREVIEWING_CHANGE, f"previewing {what}"
        )
    if remembered is not None and remembered.errors:
        first = next(e for e in remembered.errors if not e.warning)
        return ProgramDecision(
            None,
            status(errors=remembered.errors),
            d.PROGRAM_ERROR,
            f"program {ctx.short} does not compile: {first.describe()}",
        )
    effect = f": {remembered.diff.summary()}" if remembered and remembered.diff else ""
    return ProgramDecision(
        None,
        status(),
        d.OBSERVE_ONLY,
        f"Feldera's program differs from the declared {what}{effect}; managementPolicy "
        "ObserveOnly: not applied",
    )


def _preview(ctx: _Context, observed: ObservedProgram) -> Preview:
    runtime_version = ctx.declared.program_config.get("runtime_version")
    return Preview(
        program_code=ctx.declared.sql,
        runtime_version=runtime_version if isinstance(runtime_version, str) else None,
        hash=ctx.hash,
        from_version=observed.program_version,
    )


def _pending(
    ctx: _Context,
    *,
    changed: Sequence[str],
    diff: PipelineDiff | None = None,
    from_version: int | None = None,
    needs_bootstrap: bool = False,
    loses_state: bool = False,
    waiting_for: str | None = None,
) -> dict[str, Any]:
    return {
        "hash": ctx.hash,
        "fromVersion": from_version,
        "diff": diff.entry() if diff is not None else None,
        "changedFields": list(changed[:64]),
        "needsBootstrap": needs_bootstrap,
        "losesState": loses_state,
        "waitingFor": waiting_for,
    }


# ----------------------------------------------------------------------------- deletion


@dataclass(frozen=True)
class DeletionDecision:
    """deletionPolicy Delete: the next step of stop → clear storage → delete, until done."""

    step: Step | None
    done: bool
    message: str


def decide_deletion(
    spec: FelderaPipelineSpec, observed: ObservedProgram | None
) -> DeletionDecision:
    if spec.deletionPolicy != "Delete" or spec.managementPolicy != "Full":
        return DeletionDecision(None, True, f"deletionPolicy {spec.deletionPolicy}: nothing to do")
    if observed is None:
        return DeletionDecision(None, True, "the pipeline is deleted")
    if not observed.settled_stopped:
        if observed.desired_status == "Stopped":
            return DeletionDecision(None, False, "waiting for the pipeline to stop")
        return DeletionDecision(Stop(force=True), False, "stopping the pipeline to delete it")
    if observed.storage_status == "Clearing":
        return DeletionDecision(None, False, "waiting for its storage to be cleared")
    if observed.storage_status not in (None, "Cleared"):
        return DeletionDecision(Clear(), False, "clearing its storage to delete it")
    return DeletionDecision(Delete(), False, "deleting the pipeline")


# ----------------------------------------------------------------------------- text


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return _cut(line, limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
