"""The declared program's flow (program.py): what Feldera holds → the one next step, and status.

Three layers, as for decide():
- example tests that pin each rule of design.md "Changing the program" and feldera-api.md
  "Managing the program", written against those pages rather than against the code;
- the integration with decide(): the program's reason leads, run-state actions wait while the
  program flow holds the pipeline, ObserveOnly acts on nothing;
- property tests on a small model of Feldera's program management (`FelderaModel`, both
  editions) that refuses what Feldera refuses, driven from any starting state.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feldera_operator import decision as d
from feldera_operator import program as p
from feldera_operator.models import FelderaPipelineSpec, FelderaPipelineStatus, PipelineProgram

OSS = "Open source"
ENT = "Enterprise"
T0 = "2026-01-01T00:00:00Z"

SQL_A = "CREATE TABLE t1 (x INT);\nCREATE VIEW v1 AS SELECT x FROM t1;"
SQL_B = SQL_A + "\nCREATE VIEW v2 AS SELECT x + 1 AS y FROM t1;"  # adds a view
SQL_C = "CREATE TABLE t1 (x INT);\nCREATE VIEW v1 AS SELECT x * 2 AS x FROM t1;"  # modifies v1
SQL_D = SQL_A + "\n-- a comment: the dataflow is the same"
BROKEN = SQL_A + "\nCREATE VIEW v3 AS SELEC oops;"  # line 3, column 19

CATALOGUE = (
    frozenset(
        {
            d.CONVERGED,
            d.SYNCED,
            d.AS_EXPECTED,
            d.COMPILING,
            d.STARTING,
            d.STOPPING,
            d.PAUSING,
            d.RESUMING,
            d.TRANSITIONING,
            d.PIPELINE_NOT_DEPLOYED,
            d.CONNECTORS_PENDING,
        }
    )
    | d.PROGRAM_PROGRESS_REASONS
    | d.STALLED_REASONS
    | d.SYNC_FAILURE_REASONS
)
CAMEL_CASE = re.compile(r"^[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]+)*$")

# ----------------------------------------------------------------------------- helpers


def make_spec(
    sql: str | None = SQL_B,
    *,
    runtime: Mapping[str, Any] | None = None,
    program_config: Mapping[str, Any] | None = None,
    udf_rust: str = "",
    strategy: str = "Restart",
    policy: str | None = None,
    approve: str | None = None,
    management: str = "Full",
    stopped: bool = False,
    paused: bool = False,
    sql_from: Mapping[str, Any] | None = None,
) -> FelderaPipelineSpec:
    program: dict[str, Any] = {"udfRust": udf_rust}
    if sql_from is not None:
        program["sqlFrom"] = sql_from
    else:
        program["sql"] = sql
    if runtime is not None:
        program["runtimeConfig"] = dict(runtime)
    if program_config is not None:
        program["programConfig"] = dict(program_config)
    body: dict[str, Any] = {
        "program": program,
        "updateStrategy": strategy,
        "managementPolicy": management,
        "stopped": stopped,
        "paused": paused,
    }
    if policy is not None or approve is not None:
        body["bootstrap"] = {"policy": policy or "AwaitApproval", "approve": approve}
    return FelderaPipelineSpec.model_validate(body)


def declared_of(spec: FelderaPipelineSpec) -> p.DeclaredProgram:
    assert spec.program is not None and spec.program.sql is not None
    return p.declared_program(spec.program, spec.program.sql)


# What Feldera fills in (feldera-api.md: defaults), as the model below stores it.
RUNTIME_DEFAULTS: dict[str, Any] = {
    "workers": 8,
    "hosts": 1,
    "storage": {"backend": {"name": "default"}, "cache_mib": None, "compression": "default"},
    "fault_tolerance": {"model": "none", "checkpoint_interval_secs": 60},
    "clock_resolution_usecs": 1000000,
    "clock_timezone_offset": None,
    "cpu_profiler": True,
    "resources": {
        "cpu_cores_min": None,
        "cpu_cores_max": None,
        "storage_mb_max": None,
        "storage_class": None,
        "namespace": None,
    },
}
PROGRAM_CONFIG_DEFAULTS: dict[str, Any] = {
    "profile": None,
    "cache": True,
    "runtime_version": None,
    "use_platform_compiler": False,
}


def full_pipeline(
    sql: str = SQL_A,
    *,
    status: str = "Running",
    desired: str | None = None,
    program_status: str = "Success",
    storage: str = "InUse",
    runtime: Mapping[str, Any] | None = None,
    program_config: Mapping[str, Any] | None = None,
    udf_rust: str = "",
    version: int = 5,
    program_version: int = 3,
    program_error: Any = None,
    deployment_error: Any = None,
    approval_diff: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A `GET ...?selector=all` answer, defaults filled in as Feldera does."""
    return {
        "name": "orders",
        "version": version,
        "program_version": program_version,
        "program_status": program_status,
        "program_code": sql,
        "udf_rust": udf_rust,
        "udf_toml": "",
        "program_config": fill(PROGRAM_CONFIG_DEFAULTS, program_config or {}),
        "runtime_config": fill(RUNTIME_DEFAULTS, runtime or {}),
        "program_error": program_error,
        "deployment_status": status,
        "deployment_desired_status": desired if desired is not None else status,
        "deployment_error": deployment_error,
        "storage_status": storage,
        "deployment_runtime_status_details": (
            {"approval_diff": approval_diff} if approval_diff is not None else None
        ),
    }


def observed(sql: str = SQL_A, **kw: Any) -> p.ObservedProgram:
    return p.observed_program(full_pipeline(sql, **kw))


def run(
    spec: FelderaPipelineSpec,
    obs: p.ObservedProgram | None,
    *,
    edition: str = ENT,
    preview: p.PreviewResult | None = None,
    previous: Mapping[str, Any] | None = None,
) -> p.ProgramDecision:
    return p.decide_program(
        spec,
        declared_of(spec),
        obs,
        edition=edition,
        pipeline_name="orders",
        preview=preview,
        previous=previous,
    )


def previewed(
    spec: FelderaPipelineSpec,
    obs: p.ObservedProgram,
    diff: Mapping[str, Any],
    *,
    edition: str = ENT,
) -> p.ProgramDecision:
    """Decide, execute the Preview it asks for with Feldera's answer `diff`, decide again."""
    first = run(spec, obs, edition=edition)
    assert isinstance(first.step, p.Preview), first
    result = p.preview_answered(first.step, diff)
    return run(spec, obs, edition=edition, preview=result)


def adds_view(name: str = "v2") -> dict[str, Any]:
    return {"program_diff": {"added_views": [name]}, "program_diff_error": None}


NO_DIFF: dict[str, Any] = {"program_diff": {}, "program_diff_error": None}


def fill(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """What Feldera stores for a config: its defaults, the given known keys over them, unknown
    keys dropped (feldera-api.md)."""
    out = copy.deepcopy(dict(defaults))
    for key, value in given.items():
        if key not in defaults:
            continue
        if key == "storage":
            if value is True:
                out[key] = copy.deepcopy(defaults["storage"])
            elif value in (False, None):
                out[key] = None
            else:
                out[key] = fill(defaults["storage"], value)
        elif key == "fault_tolerance":
            given_ft = value if isinstance(value, Mapping) else {"model": "none"}
            out[key] = {
                "model": given_ft.get("model", "exactly_once"),
                "checkpoint_interval_secs": given_ft.get("checkpoint_interval_secs", 60),
            }
        elif isinstance(defaults[key], Mapping) and isinstance(value, Mapping):
            out[key] = fill(defaults[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ============================================================================= the hash


def test_hash_is_sha256_of_the_documented_canonical_json() -> None:
    declared = p.DeclaredProgram(
        sql="CREATE TABLE é (x INT);",
        udf_rust="fn f() {}",
        udf_toml="[dependencies]",
        program_config={"profile": "optimized"},
        runtime_config={"workers": 4, "resources": {"b": 1, "a": 2}},
    )
    document = (
        '{"programConfig":{"profile":"optimized"},'
        '"runtimeConfig":{"resources":{"a":2,"b":1},"workers":4},'
        '"sql":"CREATE TABLE é (x INT);","udfRust":"fn f() {}","udfToml":"[dependencies]"}'
    )
    import hashlib

    assert declared.hash == "sha256:" + hashlib.sha256(document.encode("utf-8")).hexdigest()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", declared.hash)


def test_hash_does_not_depend_on_key_order_but_on_every_declared_part() -> None:
    base = p.DeclaredProgram(SQL_A, runtime_config={"workers": 4, "hosts": 1})
    assert base.hash == p.DeclaredProgram(SQL_A, runtime_config={"hosts": 1, "workers": 4}).hash
    others = [
        replace(base, sql=SQL_B),
        replace(base, udf_rust="fn f() {}"),
        replace(base, udf_toml="[x]"),
        replace(base, program_config={"profile": "dev"}),
        replace(base, runtime_config={"workers": 5, "hosts": 1}),
        replace(base, runtime_config={"workers": 4}),
    ]
    assert len({base.hash, *(o.hash for o in others)}) == len(others) + 1


def test_absent_configs_hash_as_empty_objects() -> None:
    spec = make_spec(SQL_A)
    assert spec.program is not None
    assert declared_of(spec).hash == p.DeclaredProgram(SQL_A).hash


def test_sql_from_a_configmap_hashes_as_the_same_sql_inline() -> None:
    inline = make_spec(SQL_A)
    from_cm = make_spec(sql_from={"configMapKeyRef": {"name": "orders-sql", "key": "p.sql"}})
    assert from_cm.program is not None
    configmap = {"metadata": {"labels": {"feldera.dev/program": "true"}}, "data": {"p.sql": SQL_A}}
    sql = p.resolve_sql(from_cm.program, configmap)
    assert sql == SQL_A
    assert p.declared_program(from_cm.program, sql).hash == declared_of(inline).hash


# ============================================================================= sqlFrom


def _sql_from_program() -> PipelineProgram:
    spec = make_spec(sql_from={"configMapKeyRef": {"name": "orders-sql", "key": "p.sql"}})
    assert spec.program is not None
    return spec.program


@pytest.mark.parametrize(
    ("configmap", "reason", "says"),
    [
        (None, d.CONFIGMAP_NOT_FOUND, "orders-sql"),
        (
            {"metadata": {"labels": {}}, "data": {"p.sql": SQL_A}},
            d.CONFIGMAP_NOT_LABELLED,
            'feldera.dev/program: "true"',
        ),
        (
            {"metadata": {"labels": {"feldera.dev/program": "yes"}}, "data": {"p.sql": SQL_A}},
            d.CONFIGMAP_NOT_LABELLED,
            "add the label",
        ),
        (
            {"metadata": {"labels": {"feldera.dev/program": "true"}}, "data": {"other": "x"}},
            d.CONFIGMAP_NOT_FOUND,
            "no key p.sql",
        ),
    ],
)
def test_configmap_problems_have_their_own_reasons(
    configmap: Mapping[str, Any] | None, reason: str, says: str
) -> None:
    problem = p.resolve_sql(_sql_from_program(), configmap)
    assert isinstance(problem, p.SourceProblem)
    assert problem.reason == reason
    assert says in problem.message
    assert reason in d.STALLED_REASONS


def test_an_unlabelled_configmap_is_told_with_the_command_that_labels_it() -> None:
    configmap = {
        "metadata": {"name": "orders-sql", "namespace": "team-a", "labels": {}},
        "data": {"p.sql": SQL_A},
    }
    problem = p.resolve_sql(_sql_from_program(), configmap)
    assert isinstance(problem, p.SourceProblem)
    assert (
        "kubectl label configmap orders-sql -n team-a feldera.dev/program=true --overwrite"
        in problem.message
    )


def test_a_configmap_problem_decides_nothing_and_keeps_the_last_program_status() -> None:
    spec = make_spec(sql_from={"configMapKeyRef": {"name": "orders-sql", "key": "p.sql"}})
    previous = {"hash": "sha256:" + "1" * 64, "appliedHash": "sha256:" + "1" * 64}
    problem = p.SourceProblem(d.CONFIGMAP_NOT_FOUND, "ConfigMap orders-sql does not exist")
    result = p.decide_program(
        spec, problem, observed(), edition=ENT, pipeline_name="orders", previous=previous
    )
    assert result.step is None
    assert (result.reason, result.status) == (d.CONFIGMAP_NOT_FOUND, previous)
    assert not result.holds_pipeline


# ============================================================================= comparison


@pytest.mark.parametrize(
    ("declared", "stored"),
    [
        ({"workers": 8}, {}),  # a default, stored as such
        ({"storage": True}, {}),  # true = the default storage object
        ({"storage": True}, {"storage": {"backend": {"name": "file"}}}),
        ({"storage": False}, {"storage": None}),
        ({"fault_tolerance": {}}, {"fault_tolerance": {"model": "exactly_once"}}),
        ({"fault_tolerance": None}, {}),
        ({"fault_tolerance": {"model": "none"}}, {}),
        ({"resources": {"cpu_cores_max": 2}}, {"resources": {"cpu_cores_max": 2}}),
        ({"resources": {}}, {}),
        ({"cpu_profiler": True}, {}),
    ],
)
def test_a_converged_config_shows_no_difference(
    declared: Mapping[str, Any], stored: Mapping[str, Any]
) -> None:
    full = fill(RUNTIME_DEFAULTS, stored)
    assert p.config_differences(declared, full, "runtime_config") == ([], [])


def test_absent_fault_tolerance_in_what_feldera_returns_means_none() -> None:
    stored = {k: v for k, v in fill(RUNTIME_DEFAULTS, {}).items() if k != "fault_tolerance"}
    assert p.config_differences({"fault_tolerance": None}, stored, "runtime_config") == ([], [])
    assert p.config_differences({"fault_tolerance": {}}, stored, "runtime_config") == (
        ["runtime_config.fault_tolerance"],
        [],
    )


@pytest.mark.parametrize(
    ("declared", "stored", "paths"),
    [
        ({"workers": 4}, {}, ["runtime_config.workers"]),
        ({"storage": True}, {"storage": None}, ["runtime_config.storage"]),
        ({"storage": False}, {}, ["runtime_config.storage"]),
        ({"fault_tolerance": {}}, {}, ["runtime_config.fault_tolerance"]),
        (
            {"resources": {"storage_mb_max": 10, "cpu_cores_max": 2}},
            {"resources": {"cpu_cores_max": 2}},
            ["runtime_config.resources.storage_mb_max"],
        ),
        ({"cpu_profiler": 1}, {}, ["runtime_config.cpu_profiler"]),  # a number is no bool
    ],
)
def test_a_declared_value_that_differs_is_named_by_its_path(
    declared: Mapping[str, Any], stored: Mapping[str, Any], paths: list[str]
) -> None:
    full = fill(RUNTIME_DEFAULTS, stored)
    assert p.config_differences(declared, full, "runtime_config") == (paths, [])


def test_keys_feldera_does_not_store_are_ignored_and_reported_not_differences() -> None:
    full = fill(RUNTIME_DEFAULTS, {})
    declared = {"workers": 8, "turbo": True, "resources": {"gpus": 1}}
    assert p.config_differences(declared, full, "runtime_config") == (
        [],
        ["runtime_config.turbo", "runtime_config.resources.gpus"],
    )


def test_an_empty_stored_config_is_no_proof_that_a_key_is_unknown() -> None:
    assert p.config_differences({"workers": 4}, {}, "runtime_config") == (
        ["runtime_config.workers"],
        [],
    )


def test_merged_config_keeps_what_feldera_stores_and_sets_only_what_differs() -> None:
    stored = fill(RUNTIME_DEFAULTS, {"workers": 2, "resources": {"cpu_cores_max": 4}})
    declared = {
        "storage": True,
        "fault_tolerance": {},
        "resources": {"storage_mb_max": 100},
        "hosts": 1,
    }
    merged = p.merged_config(declared, stored, "runtime_config")
    expected = copy.deepcopy(stored)
    expected["fault_tolerance"] = {"model": "exactly_once", "checkpoint_interval_secs": 60}
    expected["resources"]["storage_mb_max"] = 100
    assert merged == expected
    # Feldera, given this (PATCH replaces runtime_config whole), stores what was declared.
    assert p.config_differences(declared, fill(RUNTIME_DEFAULTS, merged), "runtime_config") == (
        [],
        [],
    )


def test_refused_fields_are_those_feldera_lists_and_their_parents() -> None:
    changes = p.ProgramChanges(
        fields=("runtime_config",),
        paths=(
            "runtime_config.workers",
            "runtime_config.resources.storage_class",
            "runtime_config.resources.cpu_cores_max",
            "runtime_config.cpu_profiler",
        ),
        ignored=(),
    )
    assert changes.refused_with_storage() == (
        "runtime_config.workers",
        "runtime_config.resources.storage_class",
    )
    whole = p.ProgramChanges(("runtime_config",), ("runtime_config.resources",), ())
    assert whole.refused_with_storage() == ("runtime_config.resources",)


# ============================================================================= observations


def test_program_errors_are_parsed_errors_first_with_line_and_column() -> None:
    program_error = {
        "sql_compilation": {
            "exit_code": 1,
            "messages": [
                {
                    "start_line_number": 1,
                    "start_column": 1,
                    "warning": True,
                    "error_type": "Warning",
                    "message": "unused table",
                },
                {
                    "start_line_number": 3,
                    "start_column": 19,
                    "end_line_number": 3,
                    "end_column": 23,
                    "warning": False,
                    "error_type": "ParseError",
                    "message": 'Encountered "oops"',
                    "snippet": "...",
                },
            ],
        },
        "rust_compilation": None,
        "system_error": None,
    }
    errors = p.parse_program_errors(program_error)
    assert [(e.line, e.column, e.warning) for e in errors] == [(3, 19, False), (1, 1, True)]
    assert errors[0].describe() == '3:19: Encountered "oops"'


def test_rust_and_system_errors_become_messages_without_position() -> None:
    errors = p.parse_program_errors(
        {
            "rust_compilation": {
                "exit_code": 101,
                "stdout": "",
                "stderr": "   Compiling udf\nerror[E0425]: cannot find value `x`\n",
            },
            "system_error": "the compiler crashed",
        }
    )
    assert [(e.message, e.line) for e in errors] == [
        ("error[E0425]: cannot find value `x`", None),
        ("the compiler crashed", None),
    ]


def test_a_diff_is_parsed_and_summarised() -> None:
    diff = p.parse_pipeline_diff(
        {
            "program_diff": {"added_views": ["v2"], "modified_views": ["v1"]},
            "added_input_connectors": ["t1.kafka"],
            "program_diff_error": None,
        }
    )
    assert diff.changes_dataflow
    assert diff.summary() == "views 1 added, 1 modified; input connectors 1 added"
    assert not p.parse_pipeline_diff(NO_DIFF).changes_dataflow
    assert p.parse_pipeline_diff(NO_DIFF).summary() == "no table, view or connector changes"


def test_a_long_diff_is_cut_in_status_and_says_so() -> None:
    diff = p.parse_pipeline_diff({"program_diff": {"added_tables": [f"t{i}" for i in range(40)]}})
    entry = diff.entry()
    assert len(entry["tables"]["added"]) == 32
    assert entry["truncated"] is True
    assert p.parse_pipeline_diff(adds_view()).entry()["truncated"] is None


def test_the_status_listing_overrides_the_status_fields_of_the_full_read() -> None:
    full = full_pipeline(SQL_A, status="Running", version=5)
    latest = {"version": 5, "deployment_status": "Stopping", "deployment_desired_status": "Stopped"}
    obs = p.observed_program(full, latest)
    assert (obs.deployment_status, obs.desired_status) == ("Stopping", "Stopped")
    assert obs.program_code == SQL_A


def test_deployment_error_is_read_as_its_message() -> None:
    obs = observed(
        status="Stopped",
        deployment_error={"error_code": "InitializationError", "message": "rejected by user"},
    )
    assert obs.deployment_error == "rejected by user"


@pytest.mark.parametrize(
    ("latest", "copy_", "declared_hash", "copy_hash", "read"),
    [
        ({"version": 5}, None, "h1", None, True),
        ({"version": 5}, {"version": 5}, "h1", "h1", False),
        ({"version": 6}, {"version": 5}, "h1", "h1", True),
        ({"version": 5}, {"version": 5}, "h2", "h1", True),
        (
            {"version": 5, "deployment_status": "AwaitingApproval"},
            {"version": 5, "deployment_status": "Initializing"},
            "h1",
            "h1",
            True,
        ),
        (
            {"version": 5, "deployment_status": "AwaitingApproval"},
            {"version": 5, "deployment_status": "AwaitingApproval"},
            "h1",
            "h1",
            False,
        ),
    ],
)
def test_the_full_pipeline_is_read_only_when_version_or_hash_changed(
    latest: Mapping[str, Any],
    copy_: Mapping[str, Any] | None,
    declared_hash: str,
    copy_hash: str | None,
    read: bool,
) -> None:
    assert (
        p.needs_full_read(latest, copy_, declared_hash=declared_hash, copy_hash=copy_hash) == read
    )


def test_a_preview_refused_for_invalid_sql_carries_the_compiler_messages() -> None:
    step = p.Preview(BROKEN, None, "sha256:" + "a" * 64, 3)
    messages = [{"start_line_number": 3, "start_column": 19, "warning": False, "message": "bad"}]
    result = p.preview_refused(
        step,
        error_code="InvalidNewProgramSql",
        message="The new program does not compile",
        details={"error": json.dumps(messages)},
    )
    assert result.errors == (p.ProgramMessage("bad", 3, 19),)
    assert (result.hash, result.from_version, result.problem) == (step.hash, 3, None)


def test_a_preview_refused_with_unreadable_details_still_is_an_error() -> None:
    step = p.Preview(BROKEN, None, "sha256:" + "a" * 64, 3)
    result = p.preview_refused(
        step, error_code="InvalidNewProgramSql", message="does not compile", details="?"
    )
    assert result.errors == (p.ProgramMessage("does not compile"),)


@pytest.mark.parametrize("code", ["CompilerUnavailable", "CompilerTimeout", "ProgramNotCompiled"])
def test_a_preview_without_an_answer_is_a_problem_to_retry(code: str) -> None:
    step = p.Preview(SQL_B, None, "sha256:" + "a" * 64, 3)
    result = p.preview_refused(step, error_code=code, message="try later")
    assert result.problem is not None and code in result.problem
    assert result.errors == () and result.diff is None


# ============================================================================= the flow


def test_missing_pipeline_is_created_with_the_whole_declared_program() -> None:
    spec = make_spec(SQL_B, runtime={"workers": 4}, program_config={"profile": "optimized"})
    result = run(spec, None)
    assert result.step == p.Create(
        {
            "name": "orders",
            "program_code": SQL_B,
            "udf_rust": "",
            "udf_toml": "",
            "program_config": {"profile": "optimized"},
            "runtime_config": {"workers": 4},
        }
    )
    assert result.reason == d.CREATING_PIPELINE
    assert result.holds_pipeline
    assert result.status is not None and result.status["pending"]["hash"] == declared_of(spec).hash


@pytest.mark.parametrize("program_status", ["Pending", "CompilingSql", "CompilingRust"])
def test_created_pipeline_waits_for_compilation(program_status: str) -> None:
    spec = make_spec(SQL_B)
    obs = observed(SQL_B, status="Stopped", program_status=program_status, storage="Cleared")
    result = run(spec, obs)
    assert result.step is None
    assert result.reason == d.COMPILING
    assert result.status is not None and result.status["pending"] is None


@pytest.mark.parametrize(("paused", "initial"), [(False, "running"), (True, "paused")])
def test_compiled_stopped_pipeline_is_started_as_declared(paused: bool, initial: str) -> None:
    spec = make_spec(SQL_B, paused=paused)
    obs = observed(SQL_B, status="Stopped", storage="Cleared")
    result = run(spec, obs, edition=OSS)
    assert result.step == p.Start(initial, None)  # type: ignore[arg-type]
    assert result.reason == d.STARTING
    assert result.holds_pipeline


@pytest.mark.parametrize(
    ("policy", "approve", "expected"),
    [
        ("AwaitApproval", None, "await_approval"),
        ("AwaitApproval", "mine", "allow"),
        ("AwaitApproval", "other", "await_approval"),
        ("Allow", None, "allow"),
        ("Reject", None, "reject"),
    ],
)
def test_enterprise_start_carries_the_bootstrap_policy_and_an_approval_of_this_hash(
    policy: str, approve: str | None, expected: str
) -> None:
    hash_ = declared_of(make_spec(SQL_B)).hash
    approval = {"mine": hash_, "other": "sha256:" + "f" * 64, None: None}[approve]
    spec = make_spec(SQL_B, policy=policy, approve=approval)
    result = run(spec, observed(SQL_B, status="Stopped"))
    assert isinstance(result.step, p.Start)
    assert result.step.bootstrap_policy == expected


def test_a_pipeline_declared_stopped_is_not_started() -> None:
    result = run(make_spec(SQL_B, stopped=True), observed(SQL_B, status="Stopped"))
    assert (result.step, result.reason) == (None, d.CONVERGED)


def test_a_pipeline_stopped_with_an_error_is_not_started_by_the_program_flow() -> None:
    obs = observed(SQL_B, status="Stopped", deployment_error={"message": "boom"})
    result = run(make_spec(SQL_B), obs)
    assert (result.step, result.reason) == (None, d.CONVERGED)  # decide() says DeploymentFailed


def test_running_declared_program_is_converged_with_its_hash_applied() -> None:
    spec = make_spec(SQL_B, runtime={"workers": 8, "storage": True})
    result = run(spec, observed(SQL_B))
    assert (result.step, result.reason) == (None, d.CONVERGED)
    assert result.status == {
        "hash": declared_of(spec).hash,
        "appliedHash": declared_of(spec).hash,
        "version": 3,
        "status": "Success",
        "errors": [],
        "pending": None,
        "ignoredKeys": [],
    }
    FelderaPipelineStatus.model_validate({"program": result.status})


def test_declared_program_that_fails_to_compile_is_program_error_with_line_and_column() -> None:
    program_error = {
        "sql_compilation": {
            "messages": [{"start_line_number": 3, "start_column": 19, "message": "bad SELEC"}]
        }
    }
    obs = observed(BROKEN, status="Stopped", program_status="SqlError", program_error=program_error)
    result = run(make_spec(BROKEN), obs)
    assert result.reason == d.PROGRAM_ERROR
    assert "3:19: bad SELEC" in result.message
    assert result.status is not None
    assert result.status["errors"] == [
        {"line": 3, "column": 19, "message": "bad SELEC", "warning": False}
    ]
    assert result.status["appliedHash"] is None


@pytest.mark.parametrize("strategy", ["Restart", "Recreate", "Manual"])
def test_stopped_pipeline_is_patched_at_once_with_only_the_changed_fields(strategy: str) -> None:
    spec = make_spec(SQL_B, strategy=strategy, program_config={"profile": "optimized"})
    obs = observed(SQL_A, status="Stopped")
    result = run(spec, obs)
    assert result.step == p.Patch(
        {
            "program_code": SQL_B,
            "program_config": fill(PROGRAM_CONFIG_DEFAULTS, {"profile": "optimized"}),
        }
    )
    assert result.reason == d.UPDATING_PROGRAM
    assert result.holds_pipeline


def test_running_pipeline_with_another_program_is_previewed_first_without_stopping() -> None:
    spec = make_spec(SQL_B)
    result = run(spec, observed(SQL_A, program_version=7))
    assert result.step == p.Preview(SQL_B, None, declared_of(spec).hash, 7)
    assert result.reason == d.PREVIEWING_CHANGE
    assert not result.holds_pipeline
    assert not p.Preview.writes


def test_the_preview_passes_the_declared_runtime_version() -> None:
    spec = make_spec(SQL_B, program_config={"runtime_version": "v0.400.0"})
    result = run(spec, observed(SQL_A))
    assert isinstance(result.step, p.Preview)
    assert result.step.runtime_version == "v0.400.0"


def test_new_sql_that_does_not_compile_is_program_error_and_stops_nothing() -> None:
    spec = make_spec(BROKEN)
    obs = observed(SQL_A)
    first = run(spec, obs)
    assert isinstance(first.step, p.Preview)
    answer = p.preview_refused(
        first.step,
        error_code="InvalidNewProgramSql",
        message="does not compile",
        details={
            "error": json.dumps(
                [{"start_line_number": 3, "start_column": 19, "message": "Encountered oops"}]
            )
        },
    )
    result = run(spec, obs, preview=answer)
    assert result.step is None
    assert result.reason == d.PROGRAM_ERROR
    assert "3:19: Encountered oops" in result.message
    assert "untouched" in result.message
    assert not result.holds_pipeline
    assert result.status is not None
    assert result.status["errors"][0]["line"] == 3
    # Remembered through status.program: the next reconcile previews nothing again.
    again = run(spec, obs, previous=result.status)
    assert (again.step, again.reason, again.status) == (None, d.PROGRAM_ERROR, result.status)


def test_enterprise_change_that_needs_a_bootstrap_awaits_approval_of_its_own_hash() -> None:
    spec = make_spec(SQL_B)
    hash_ = declared_of(spec).hash
    result = previewed(spec, observed(SQL_A), adds_view())
    assert result.step is None
    assert result.reason == d.AWAITING_APPROVAL
    assert hash_ in result.message
    assert result.status is not None
    pending = result.status["pending"]
    assert pending["hash"] == hash_
    assert pending["needsBootstrap"] is True
    assert pending["losesState"] is False
    assert pending["waitingFor"] == "Approval"
    assert pending["diff"]["views"]["added"] == ["v2"]
    FelderaPipelineStatus.model_validate({"program": result.status})


def test_an_approval_of_another_hash_approves_nothing() -> None:
    other = declared_of(make_spec(SQL_C)).hash
    result = previewed(make_spec(SQL_B, approve=other), observed(SQL_A), adds_view())
    assert (result.step, result.reason) == (None, d.AWAITING_APPROVAL)


def test_an_approved_change_stops_without_force_to_keep_the_checkpoint() -> None:
    hash_ = declared_of(make_spec(SQL_B)).hash
    result = previewed(make_spec(SQL_B, approve=hash_), observed(SQL_A), adds_view())
    assert result.step == p.Stop(force=False)
    assert result.reason == d.UPDATING_PROGRAM
    assert result.holds_pipeline


def test_bootstrap_policy_allow_needs_no_approval() -> None:
    result = previewed(make_spec(SQL_B, policy="Allow"), observed(SQL_A), adds_view())
    assert result.step == p.Stop(force=False)


def test_bootstrap_policy_reject_refuses_a_change_that_needs_a_bootstrap() -> None:
    result = previewed(make_spec(SQL_B, policy="Reject"), observed(SQL_A), adds_view())
    assert (result.step, result.reason) == (None, d.BOOTSTRAP_REJECTED)
    assert d.BOOTSTRAP_REJECTED in d.STALLED_REASONS


@pytest.mark.parametrize("diff", [NO_DIFF, {"added_input_connectors": ["t1.kafka"]}])
def test_a_change_of_no_table_or_view_needs_no_bootstrap(diff: Mapping[str, Any]) -> None:
    result = previewed(make_spec(SQL_D), observed(SQL_A), diff)
    assert result.step == p.Stop(force=False)
    assert result.status is not None and result.status["pending"]["needsBootstrap"] is False


def test_enterprise_without_storage_in_use_needs_no_bootstrap() -> None:
    obs = observed(SQL_A, storage="Cleared")
    result = previewed(make_spec(SQL_B), obs, adds_view())
    assert result.step == p.Stop(force=True)  # no checkpoint to keep


def test_open_source_applies_with_force_and_says_it_loses_state() -> None:
    result = previewed(make_spec(SQL_B), observed(SQL_A), adds_view(), edition=OSS)
    assert result.step == p.Stop(force=True)
    assert result.status is not None
    assert result.status["pending"]["losesState"] is True
    assert result.status["pending"]["needsBootstrap"] is False
    assert "loses the pipeline's state" in result.message


def test_a_diff_feldera_cannot_compute_is_treated_as_needing_a_bootstrap() -> None:
    diff = {"program_diff": None, "program_diff_error": "old program has no dataflow info"}
    result = previewed(make_spec(SQL_B), observed(SQL_A), diff)
    assert result.reason == d.AWAITING_APPROVAL


def test_recreate_clears_storage_for_a_change_that_cannot_be_bootstrapped() -> None:
    diff = {"program_diff": None, "program_diff_error": "cannot compare"}
    spec = make_spec(SQL_B, strategy="Recreate")
    result = previewed(spec, observed(SQL_A), diff)
    assert result.step == p.Stop(force=True)
    assert result.status is not None
    assert result.status["pending"]["losesState"] is True
    stopped = run(spec, observed(SQL_A, status="Stopped"), previous=result.status)
    assert stopped.step == p.Clear()


def test_recreate_awaits_approval_like_restart_when_no_clearing_is_needed() -> None:
    result = previewed(make_spec(SQL_B, strategy="Recreate"), observed(SQL_A), adds_view())
    assert result.reason == d.AWAITING_APPROVAL


@pytest.mark.parametrize("status", ["Running", "Paused", "Initializing", "AwaitingApproval"])
def test_manual_never_stops_a_running_pipeline_and_says_the_update_is_pending(status: str) -> None:
    spec = make_spec(SQL_B, strategy="Manual", approve=declared_of(make_spec(SQL_B)).hash)
    result = previewed(spec, observed(SQL_A, status=status, desired="Running"), adds_view())
    assert result.step is None
    assert result.reason == d.UPDATE_PENDING
    assert result.status is not None
    assert result.status["pending"]["waitingFor"] == "Stop"
    assert result.status["pending"]["diff"]["views"]["added"] == ["v2"]
    assert "spec.stopped" in result.message


def test_manual_applies_once_the_pipeline_is_stopped() -> None:
    result = run(make_spec(SQL_B, strategy="Manual"), observed(SQL_A, status="Stopped"))
    assert isinstance(result.step, p.Patch)


def test_a_runtime_only_change_needs_no_preview_but_a_restart() -> None:
    spec = make_spec(SQL_A, runtime={"cpu_profiler": False})
    result = run(spec, observed(SQL_A))
    assert result.step == p.Stop(force=False)
    assert result.status is not None
    assert result.status["pending"]["changedFields"] == ["runtime_config.cpu_profiler"]
    assert result.status["pending"]["diff"] is None
    stopped = run(spec, observed(SQL_A, status="Stopped"))
    assert stopped.step == p.Patch(
        {"runtime_config": fill(RUNTIME_DEFAULTS, {"cpu_profiler": False})}
    )


def test_a_udf_change_needs_no_preview_but_a_restart() -> None:
    result = run(make_spec(SQL_A, udf_rust="fn f() {}"), observed(SQL_A))
    assert result.step == p.Stop(force=False)


@pytest.mark.parametrize("strategy", ["Restart", "Manual"])
@pytest.mark.parametrize("status", ["Running", "Stopped"])
def test_fields_refused_with_storage_in_use_stall_naming_them(strategy: str, status: str) -> None:
    spec = make_spec(SQL_A, runtime={"workers": 4, "resources": {"storage_class": "fast"}})
    spec = spec.model_copy(update={"updateStrategy": strategy})
    result = run(spec, observed(SQL_A, status=status))
    assert result.step is None
    assert result.reason == d.STORAGE_IN_USE
    assert "runtime_config.workers" in result.message
    assert "runtime_config.resources.storage_class" in result.message
    assert result.status is not None and result.status["pending"]["waitingFor"] == "StorageClear"
    assert not result.holds_pipeline


def test_fields_refused_with_storage_are_applied_once_storage_is_cleared() -> None:
    spec = make_spec(SQL_A, runtime={"workers": 4})
    result = run(spec, observed(SQL_A, status="Stopped", storage="Cleared"))
    assert result.step == p.Patch({"runtime_config": fill(RUNTIME_DEFAULTS, {"workers": 4})})


def test_recreate_stops_clears_and_patches_a_refused_change() -> None:
    spec = make_spec(SQL_A, runtime={"workers": 4}, strategy="Recreate")
    running = run(spec, observed(SQL_A))
    assert running.step == p.Stop(force=True)
    assert running.status is not None and running.status["pending"]["losesState"] is True
    assert run(spec, observed(SQL_A, status="Stopping", desired="Stopped")).step is None
    assert run(spec, observed(SQL_A, status="Stopped")).step == p.Clear()
    clearing = run(spec, observed(SQL_A, status="Stopped", storage="Clearing"))
    assert (clearing.step, clearing.reason) == (None, d.UPDATING_PROGRAM)
    assert clearing.holds_pipeline  # Feldera refuses a start while clearing
    cleared = run(spec, observed(SQL_A, status="Stopped", storage="Cleared"))
    assert isinstance(cleared.step, p.Patch)


@pytest.mark.parametrize(
    ("status", "desired"),
    [
        ("Running", "Stopped"),
        ("Stopping", "Stopped"),
        ("Paused", "Stopped"),
        ("Running", "Suspended"),
    ],
)
def test_after_stop_the_flow_waits_and_stops_nothing_again(status: str, desired: str) -> None:
    hash_ = declared_of(make_spec(SQL_B)).hash
    spec = make_spec(SQL_B, approve=hash_)
    first = previewed(spec, observed(SQL_A), adds_view())
    assert first.step == p.Stop(force=False)
    after = run(spec, observed(SQL_A, status=status, desired=desired), previous=first.status)
    assert after.step is None
    assert after.reason == d.UPDATING_PROGRAM
    assert not after.holds_pipeline
    # The pending change is still shown, from status: no second preview.
    assert after.status is not None and first.status is not None
    assert after.status["pending"] == first.status["pending"]


def test_after_patch_the_new_program_compiles_and_nothing_is_patched_again() -> None:
    spec = make_spec(SQL_B)
    obs = observed(SQL_B, status="Stopped", program_status="Pending", program_version=4)
    result = run(spec, obs)
    assert (result.step, result.reason) == (None, d.COMPILING)


def test_feldera_awaiting_approval_of_the_declared_program_is_approved_when_approved() -> None:
    spec = make_spec(SQL_B)
    waiting = observed(
        SQL_B, status="AwaitingApproval", desired="Running", approval_diff=adds_view()
    )
    result = run(spec, waiting)
    assert (result.step, result.reason) == (None, d.AWAITING_APPROVAL)
    assert result.status is not None
    assert result.status["pending"]["diff"]["views"]["added"] == ["v2"]
    assert result.status["pending"]["waitingFor"] == "Approval"
    approved = run(make_spec(SQL_B, approve=declared_of(spec).hash), waiting)
    assert approved.step == p.Approve()
    assert approved.holds_pipeline
    assert run(make_spec(SQL_B, policy="Allow"), waiting).step == p.Approve()
    rejected = run(make_spec(SQL_B, policy="Reject"), waiting)
    assert (rejected.step, rejected.reason) == (None, d.BOOTSTRAP_REJECTED)


def test_a_bootstrap_is_not_approved_for_a_pipeline_declared_stopped() -> None:
    spec = make_spec(SQL_B, stopped=True, policy="Allow")
    waiting = observed(
        SQL_B, status="AwaitingApproval", desired="Running", approval_diff=adds_view()
    )
    result = run(spec, waiting)
    assert (result.step, result.holds_pipeline) == (None, False)
    decision = decide_with(spec, waiting, result.outcome)
    assert decision.actions == (d.PipelineAction("stop"),)


def test_decide_starts_nothing_while_storage_is_cleared_for_a_change() -> None:
    spec = make_spec(SQL_A, runtime={"workers": 4}, strategy="Recreate")
    obs = observed(SQL_A, status="Stopped", storage="Clearing")
    assert decide_with(spec, obs, None).actions == (d.PipelineAction("start", "running"),)
    assert decide_with(spec, obs, run(spec, obs).outcome).actions == ()


def test_a_pending_start_of_an_uncompiled_old_program_is_cancelled_to_apply_the_change() -> None:
    obs = observed(SQL_A, status="Stopped", desired="Running", program_status="CompilingSql")
    assert run(make_spec(SQL_B), obs).step == p.Stop(force=True)
    manual = run(make_spec(SQL_B, strategy="Manual"), obs)
    assert (manual.step, manual.reason) == (None, d.PREVIEWING_CHANGE)


def test_a_pipeline_stopping_because_the_spec_says_so_is_left_to_decide() -> None:
    result = run(make_spec(SQL_B, stopped=True), observed(SQL_A))
    assert result.step is None
    assert not result.holds_pipeline  # decide() issues the stop


def test_a_preview_that_got_no_answer_is_retried_not_remembered() -> None:
    spec = make_spec(SQL_B)
    obs = observed(SQL_A)
    first = run(spec, obs)
    assert isinstance(first.step, p.Preview)
    failed = p.preview_refused(first.step, error_code="CompilerUnavailable", message="busy")
    result = run(spec, obs, preview=failed)
    assert (result.step, result.reason) == (None, d.PREVIEWING_CHANGE)
    assert "busy" in result.message
    assert isinstance(run(spec, obs, previous=result.status).step, p.Preview)


def test_a_preview_of_another_program_version_is_not_reused() -> None:
    spec = make_spec(SQL_B, approve=declared_of(make_spec(SQL_B)).hash)
    first = previewed(spec, observed(SQL_A, program_version=3), adds_view())
    assert first.status is not None and first.status["pending"]["fromVersion"] == 3
    changed = observed(SQL_C, program_version=4)  # someone else updated Feldera meanwhile
    result = run(spec, changed, previous=first.status)
    assert isinstance(result.step, p.Preview)
    assert result.step.from_version == 4


def test_unknown_keys_are_listed_and_never_patched_forever() -> None:
    spec = make_spec(SQL_A, runtime={"workers": 8, "turbo": True})
    result = run(spec, observed(SQL_A))
    assert (result.step, result.reason) == (None, d.CONVERGED)
    assert result.status is not None
    assert result.status["ignoredKeys"] == ["runtime_config.turbo"]


def test_applied_hash_is_kept_while_a_change_is_pending_and_dropped_when_it_is_false() -> None:
    spec_b = make_spec(SQL_B)
    applied = run(make_spec(SQL_A), observed(SQL_A)).status
    assert applied is not None
    pending = run(spec_b, observed(SQL_A), previous=applied)
    assert pending.status is not None
    assert pending.status["appliedHash"] == applied["hash"]
    # Feldera was changed behind our back: the declared hash is no longer what it holds.
    drifted = run(make_spec(SQL_A), observed(SQL_C, status="Stopped"), previous=applied)
    assert drifted.status is not None and drifted.status["appliedHash"] is None


# ----------------------------------------------------------------------------- ObserveOnly


@pytest.mark.parametrize(
    "obs",
    [
        None,
        observed(SQL_A, status="Stopped"),
        observed(SQL_B, status="Stopped"),
        observed(SQL_A, status="Stopped", storage="Cleared"),
        observed(SQL_B, status="AwaitingApproval", desired="Running", approval_diff=adds_view()),
    ],
)
def test_observe_only_decides_no_write(obs: p.ObservedProgram | None) -> None:
    spec = make_spec(SQL_B, management="ObserveOnly", policy="Allow", strategy="Recreate")
    result = run(spec, obs)
    assert result.step is None or not result.step.writes
    assert not result.holds_pipeline


@pytest.mark.parametrize(
    "obs",
    [
        observed(SQL_A, status="Stopping", desired="Stopped"),
        observed(SQL_A, status="Stopped", storage="Clearing"),
        observed(SQL_A, status="Stopped"),
    ],
)
def test_observe_only_never_says_a_change_will_be_applied(obs: p.ObservedProgram) -> None:
    spec = make_spec(SQL_B, management="ObserveOnly")
    result = run(spec, obs)
    if isinstance(result.step, p.Preview):  # a read: ObserveOnly may look
        result = run(spec, obs, preview=p.preview_answered(result.step, adds_view()))
        assert "views 1 added" in result.message
    assert (result.step, result.reason) == (None, d.OBSERVE_ONLY)
    assert "not applied" in result.message


def test_observe_only_reports_the_difference_with_the_preview() -> None:
    spec = make_spec(SQL_B, management="ObserveOnly")
    result = previewed(spec, observed(SQL_A), adds_view())
    assert (result.step, result.reason) == (None, d.OBSERVE_ONLY)
    assert result.status is not None
    assert result.status["pending"]["diff"]["views"]["added"] == ["v2"]


# ----------------------------------------------------------------------------- deletion


@pytest.mark.parametrize(
    ("obs", "step", "done"),
    [
        (None, None, True),
        (observed(SQL_A), p.Stop(force=True), False),
        (observed(SQL_A, status="Stopping", desired="Stopped"), None, False),
        (observed(SQL_A, status="Stopped"), p.Clear(), False),
        (observed(SQL_A, status="Stopped", storage="Clearing"), None, False),
        (observed(SQL_A, status="Stopped", storage="Cleared"), p.Delete(), False),
    ],
)
def test_deletion_policy_delete_stops_clears_and_deletes(
    obs: p.ObservedProgram | None, step: p.Step | None, done: bool
) -> None:
    spec = make_spec(SQL_A).model_copy(update={"deletionPolicy": "Delete"})
    result = p.decide_deletion(spec, obs)
    assert (result.step, result.done) == (step, done)


@pytest.mark.parametrize(("policy", "management"), [("Orphan", "Full"), ("Delete", "ObserveOnly")])
def test_deletion_does_nothing_unless_policy_delete_and_managed(
    policy: str, management: str
) -> None:
    spec = make_spec(SQL_A, management=management).model_copy(update={"deletionPolicy": policy})
    result = p.decide_deletion(spec, observed(SQL_A))
    assert (result.step, result.done) == (None, True)


# ============================================================================= with decide()


def pipeline_of(obs: p.ObservedProgram | None) -> d.Observation:
    if obs is None:
        return d.Problem(d.PIPELINE_NOT_FOUND, "Feldera has no such pipeline")
    deployed = obs.deployment_status in d.DEPLOYED
    return d.ObservedPipeline(
        deployment_status=obs.deployment_status,
        desired_status=obs.desired_status,
        program_status=obs.program_status,
        deployment_error=obs.deployment_error,
        inputs=() if deployed else None,
        outputs=() if deployed else None,
    )


def decide_with(
    spec: FelderaPipelineSpec,
    obs: p.ObservedProgram | None,
    outcome: d.ProgramOutcome | None,
    *,
    previous: Mapping[str, Any] | None = None,
    now: str = T0,
    observation: d.Observation | None = None,
) -> d.Decision:
    return d.decide(
        spec,
        generation=1,
        pipeline_name="orders",
        observed=observation if observation is not None else pipeline_of(obs),
        previous_status=previous,
        now=now,
        program=outcome,
    )


def conditions(decision: d.Decision) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in decision.status["conditions"]}


def assert_well_formed(decision: d.Decision) -> None:
    statuses = {c["type"]: c["status"] for c in decision.status["conditions"]}
    assert list(statuses) == ["Ready", "Synced", "Reconciling", "Stalled"]
    for c in decision.status["conditions"]:
        assert c["reason"] in CATALOGUE, c
        assert CAMEL_CASE.match(c["reason"]), c
        assert c["message"]
    assert (statuses["Ready"] == "True") is decision.ready
    if decision.ready:
        assert decision.ready_reason == d.CONVERGED and not decision.actions
        assert statuses == {
            "Ready": "True",
            "Synced": "True",
            "Reconciling": "False",
            "Stalled": "False",
        }
    assert (statuses["Stalled"] == "True") is (decision.ready_reason in d.STALLED_REASONS)
    if statuses["Reconciling"] == "False" and statuses["Stalled"] == "False":
        assert decision.ready
    if decision.status.get("program") is not None:
        FelderaPipelineStatus.model_validate({"program": decision.status["program"]})


def test_the_program_flow_holding_the_pipeline_keeps_decide_from_starting_it() -> None:
    spec = make_spec(SQL_B)
    obs = observed(SQL_A, status="Stopped")  # decide() alone would start the old program
    assert decide_with(spec, obs, None).actions == (d.PipelineAction("start", "running"),)
    result = run(spec, obs)
    assert isinstance(result.step, p.Patch)
    decision = decide_with(spec, obs, result.outcome)
    assert decision.actions == ()
    assert decision.ready_reason == d.UPDATING_PROGRAM
    assert conditions(decision)["Reconciling"] == ("True", d.UPDATING_PROGRAM)
    assert decision.in_progress
    assert decision.status["program"] == result.status
    assert_well_formed(decision)


def test_the_program_start_replaces_decides_start() -> None:
    spec = make_spec(SQL_B)
    obs = observed(SQL_B, status="Stopped")
    result = run(spec, obs)
    assert isinstance(result.step, p.Start)
    decision = decide_with(spec, obs, result.outcome)
    assert decision.actions == ()
    assert decision.ready_reason == d.STARTING


def test_a_person_stall_of_the_program_leaves_run_state_actions_to_decide() -> None:
    spec = make_spec(SQL_B, paused=True)
    obs = observed(SQL_A, status="Running")
    result = previewed(spec, obs, adds_view())
    assert result.reason == d.AWAITING_APPROVAL
    decision = decide_with(spec, obs, result.outcome)
    assert decision.actions == (d.PipelineAction("pause"),)
    assert decision.ready_reason == d.AWAITING_APPROVAL
    assert conditions(decision)["Stalled"] == ("True", d.AWAITING_APPROVAL)
    assert conditions(decision)["Reconciling"] == ("True", d.AWAITING_APPROVAL)
    assert_well_formed(decision)


@pytest.mark.parametrize("reason", sorted(d.WAITING_FOR_PERSON))
def test_waiting_for_a_person_is_stalled_not_in_progress(reason: str) -> None:
    assert reason in d.STALLED_REASONS
    spec = make_spec(SQL_B, strategy="Manual" if reason == d.UPDATE_PENDING else "Restart")
    obs = observed(SQL_A)
    result = previewed(spec, obs, adds_view())
    assert result.reason == reason
    decision = decide_with(spec, obs, result.outcome)
    assert conditions(decision) == {
        "Ready": ("False", reason),
        "Synced": ("True", d.SYNCED),
        "Reconciling": ("False", d.AS_EXPECTED),
        "Stalled": ("True", reason),
    }
    assert not decision.in_progress


def test_creating_a_missing_pipeline_is_reconciling_not_pipeline_not_found() -> None:
    spec = make_spec(SQL_B)
    result = run(spec, None)
    decision = decide_with(spec, None, result.outcome)
    assert conditions(decision)["Ready"] == ("False", d.CREATING_PIPELINE)
    assert conditions(decision)["Stalled"] == ("False", d.AS_EXPECTED)
    assert conditions(decision)["Synced"] == ("True", d.SYNCED)
    assert_well_formed(decision)


def test_feldera_unreachable_keeps_its_reason_and_the_last_program_status() -> None:
    spec = make_spec(SQL_B)
    kept = run(spec, observed(SQL_B)).status
    decision = decide_with(
        spec,
        None,
        p.unobservable_outcome(kept),
        observation=d.Problem(d.FELDERA_UNREACHABLE, "connection refused"),
    )
    assert decision.ready_reason == d.FELDERA_UNREACHABLE
    assert decision.status["program"] == kept
    assert conditions(decision)["Synced"] == ("False", d.FELDERA_UNREACHABLE)


def test_a_converged_program_leaves_decides_status_as_it_was_plus_program() -> None:
    spec = make_spec(SQL_B)
    obs = observed(SQL_B)
    result = run(spec, obs)
    with_program = decide_with(spec, obs, result.outcome)
    alone = decide_with(spec, obs, None)
    assert with_program.ready and alone.ready
    assert {k: v for k, v in with_program.status.items() if k != "program"} == alone.status
    assert with_program.status["program"] == result.status


def test_observe_only_withholds_run_state_actions_and_says_what_it_would_do() -> None:
    spec = FelderaPipelineSpec.model_validate(
        {
            "managementPolicy": "ObserveOnly",
            "paused": True,
            "inputs": [{"table": "orders", "connector": "live", "paused": True}],
        }
    )
    running = d.ObservedPipeline(
        "Running",
        "Running",
        "Success",
        inputs=(d.ObservedConnector("orders", "live", paused=False),),
        outputs=(),
    )
    decision = decide_with(spec, None, None, observation=running)
    assert decision.actions == ()
    assert decision.ready_reason == d.OBSERVE_ONLY
    assert "pause" in decision.ready_message
    assert decision.status["inputs"][0]["reason"] == d.OBSERVE_ONLY
    assert_well_formed(decision)
    as_declared = d.ObservedPipeline(
        "Paused",
        "Paused",
        "Success",
        inputs=(d.ObservedConnector("orders", "live", paused=True),),
        outputs=(),
    )
    assert decide_with(spec, None, None, observation=as_declared).ready


# ============================================================================= a model of Feldera


class Refused(Exception):
    """Feldera would refuse this call (400, 404, 501...)."""


def relations(sql: str) -> dict[str, str]:
    """The model's own reading of a program: relation name → its definition."""
    found = {}
    for statement in sql.split(";"):
        lines = [ln for ln in statement.strip().splitlines() if not ln.startswith("--")]
        text = " ".join(lines).strip()
        match = re.match(r"CREATE (TABLE|VIEW) (\w+)", text)
        if match:
            found[f"{match.group(1).lower()}:{match.group(2)}"] = text
    return found


def model_diff(old: str, new: str) -> dict[str, Any]:
    a, b = relations(old), relations(new)
    out: dict[str, list[str]] = {}
    for kind in ("table", "view"):
        names_a = {k.split(":")[1] for k in a if k.startswith(kind)}
        names_b = {k.split(":")[1] for k in b if k.startswith(kind)}
        out[f"added_{kind}s"] = sorted(names_b - names_a)
        out[f"removed_{kind}s"] = sorted(names_a - names_b)
        out[f"modified_{kind}s"] = sorted(
            n for n in names_a & names_b if a[f"{kind}:{n}"] != b[f"{kind}:{n}"]
        )
    return {"program_diff": out, "program_diff_error": None}


def dataflow_differs(old: str, new: str) -> bool:
    return relations(old) != relations(new)


def broken(sql: str) -> bool:
    return "SELEC oops" in sql


COMPILER_MESSAGE = [
    {"start_line_number": 3, "start_column": 19, "warning": False, "message": "Encountered oops"}
]
REFUSED_PATHS = (
    ("workers",),
    ("hosts",),
    ("fault_tolerance",),
    ("clock_timezone_offset",),
    ("resources", "storage_mb_max"),
    ("resources", "namespace"),
    ("resources", "storage_class"),
)
COMPILE_STEPS = ("Pending", "CompilingSql", "CompilingRust", "Success")


def at_path(config: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = config
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


@dataclass
class FelderaModel:
    """Just enough of Feldera's program management (feldera-api.md) to check the flow."""

    enterprise: bool
    exists: bool = False
    program_code: str = ""
    udf_rust: str = ""
    program_config: dict[str, Any] = field(default_factory=dict)
    runtime_config: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    program_version: int = 0
    program_status: str = "Pending"
    status: str = "Stopped"
    desired: str = "Stopped"
    storage: str = "Cleared"
    checkpoint: str | None = None  # the program a checkpoint was written by (Enterprise)
    start_policy: str = "await_approval"
    deployment_error: str | None = None
    clearing: int = 0
    calls: list[str] = field(default_factory=list)

    # -------------------------------------------------------------- reads
    def full(self) -> dict[str, Any] | None:
        if not self.exists:
            return None
        error = None
        if self.program_status == "SqlError":
            error = {"sql_compilation": {"exit_code": 1, "messages": COMPILER_MESSAGE}}
        approval = None
        if self.status == "AwaitingApproval":
            approval = {"approval_diff": model_diff(self.checkpoint or "", self.program_code)}
        return {
            "name": "orders",
            "version": self.version,
            "program_version": self.program_version,
            "program_status": self.program_status,
            "program_code": self.program_code,
            "udf_rust": self.udf_rust,
            "udf_toml": "",
            "program_config": copy.deepcopy(self.program_config),
            "runtime_config": copy.deepcopy(self.runtime_config),
            "program_error": error,
            "deployment_status": self.status,
            "deployment_desired_status": self.desired,
            "deployment_error": (
                {"error_code": "InitializationError", "message": self.deployment_error}
                if self.deployment_error
                else None
            ),
            "storage_status": self.storage,
            "deployment_runtime_status_details": approval,
        }

    def observe(self) -> p.ObservedProgram | None:
        full = self.full()
        return p.observed_program(full) if full is not None else None

    @property
    def settled_stopped(self) -> bool:
        return (self.status, self.desired) == ("Stopped", "Stopped")

    # -------------------------------------------------------------- writes
    def apply(self, step: p.Step) -> None:
        self.calls.append(type(step).__name__)
        if isinstance(step, p.Create):
            if self.exists:
                raise Refused("the flow creates only a missing pipeline")
            self.exists = True
            self.program_code = step.body["program_code"]
            self.udf_rust = step.body["udf_rust"]
            self._set_configs(step.body["program_config"], step.body["runtime_config"])
            self.version, self.program_version, self.program_status = 1, 1, "Pending"
        elif isinstance(step, p.Patch):
            self._patch(step.body)
        elif isinstance(step, p.Stop):
            if not step.force and not self.enterprise:
                raise Refused("501 EnterpriseFeature: stop?force=false")
            if self.settled_stopped:
                return
            if not step.force and self.status in ("Running", "Paused") and self.storage == "InUse":
                self.checkpoint = self.program_code  # suspend: checkpoint, then deprovision
            self.desired = "Stopped"
        elif isinstance(step, p.Start):
            if not self.settled_stopped:
                raise Refused("400 IllegalPipelineAction: start while not stopped")
            if self.program_status in ("SqlError", "RustError", "SystemError"):
                raise Refused("400 CannotStartWithCompilationError")
            if self.storage == "Clearing":
                raise Refused("400 CannotStartWhileClearingStorage")
            if self.deployment_error:
                raise Refused("the flow starts no pipeline stopped by an error")
            if (step.bootstrap_policy is not None) != self.enterprise:
                raise Refused(f"bootstrap_policy {step.bootstrap_policy} in this edition")
            self.desired = "Running" if step.initial == "running" else "Paused"
            self.start_policy = step.bootstrap_policy or "await_approval"
        elif isinstance(step, p.Approve):
            if self.status != "AwaitingApproval":
                raise Refused("approve while not awaiting approval")
            self.status = "Bootstrapping"  # 200 "Bootstrap approved": the pipeline goes on
        elif isinstance(step, p.Clear):
            if not self.settled_stopped:
                raise Refused("400 StorageStatusImmutableUnlessStopped")
            if self.storage == "InUse":
                self.storage = "Clearing"
        elif isinstance(step, p.Delete):
            if not self.settled_stopped or self.storage != "Cleared":
                raise Refused("400 DeleteRestrictedTo...")
            self.exists = False
        else:
            raise AssertionError(f"{step} is not a write the model takes")

    def preview(self, step: p.Preview) -> p.PreviewResult:
        self.calls.append("Preview")
        if self.program_status != "Success":
            raise Refused("404 ProgramNotCompiled")
        if broken(step.program_code):
            return p.preview_refused(
                step,
                error_code="InvalidNewProgramSql",
                message="The new program does not compile",
                details={"error": json.dumps(COMPILER_MESSAGE)},
            )
        return p.preview_answered(step, model_diff(self.program_code, step.program_code))

    def run_state(self, action: d.Action) -> None:
        """decide()'s actions (the model has no connectors)."""
        assert isinstance(action, d.PipelineAction), action
        self.calls.append(action.verb)
        if action.verb == "start":
            self.apply(
                p.Start(action.initial or "running", "await_approval" if self.enterprise else None)
            )
            self.calls.pop()
        elif action.verb in ("pause", "resume"):
            if self.status not in d.DEPLOYED or self.desired not in d.DEPLOYED:
                raise Refused(f"{action.verb} while {self.status}/{self.desired}")
            self.desired = "Paused" if action.verb == "pause" else "Running"
        elif action.verb == "stop":
            self.desired = "Stopped"
        elif action.verb == "dismiss_error":
            if not self.settled_stopped:
                raise Refused("dismiss_error while not stopped")
            self.deployment_error = None

    def _set_configs(self, program_config: Mapping[str, Any], runtime: Mapping[str, Any]) -> None:
        if (
            not self.enterprise
            and (fill(RUNTIME_DEFAULTS, runtime)["fault_tolerance"] or {}).get("model", "none")
            != "none"
        ):
            raise Refused("400 InvalidRuntimeConfig: fault tolerance needs Enterprise")
        self.program_config = fill(PROGRAM_CONFIG_DEFAULTS, program_config)
        self.runtime_config = fill(RUNTIME_DEFAULTS, runtime)

    def _patch(self, body: Mapping[str, Any]) -> None:
        if not self.settled_stopped:
            raise Refused("400 UpdateRestrictedToStopped")
        runtime = fill(RUNTIME_DEFAULTS, body.get("runtime_config", self.runtime_config))
        program_config = fill(
            PROGRAM_CONFIG_DEFAULTS, body.get("program_config", self.program_config)
        )
        if self.storage != "Cleared":
            refused = [
                ".".join(path)
                for path in REFUSED_PATHS
                if at_path(runtime, path) != at_path(self.runtime_config, path)
            ]
            if refused:
                raise Refused(f"400 EditRestrictedToClearedStorage: {refused}")
        program_changed = (
            body.get("program_code", self.program_code) != self.program_code
            or body.get("udf_rust", self.udf_rust) != self.udf_rust
            or program_config != self.program_config
        )
        core_changed = program_changed or runtime != self.runtime_config
        self.program_code = body.get("program_code", self.program_code)
        self.udf_rust = body.get("udf_rust", self.udf_rust)
        self._set_configs(program_config, runtime)
        if core_changed:
            self.version += 1
        if program_changed:
            self.program_version += 1
            self.program_status = "Pending"

    # -------------------------------------------------------------- time
    def settle(self) -> None:
        """One step of whatever is in flight: compilation, clearing, the deployment."""
        if self.exists and self.program_status in COMPILE_STEPS[:-1]:
            if broken(self.program_code) and self.program_status == "CompilingSql":
                self.program_status = "SqlError"
            else:
                self.program_status = COMPILE_STEPS[COMPILE_STEPS.index(self.program_status) + 1]
        if self.storage == "Clearing":
            self.clearing += 1  # clearing takes a while: the flow must see it in progress
            if self.clearing > 1:
                self.storage, self.checkpoint, self.clearing = "Cleared", None, 0
        if self.desired == "Stopped":
            if self.status == "Stopping":
                self.status = "Stopped"
            elif self.status != "Stopped":
                self.status = "Stopping"
        elif self.status == "Stopped":
            if self.program_status == "Success":
                self.status = "Provisioning"
            elif self.program_status in ("SqlError", "RustError", "SystemError"):
                self.desired, self.deployment_error = "Stopped", "the program does not compile"
        elif self.status == "Provisioning":
            self.status = "Initializing"
            self.storage = "InUse"  # at the first start, in every edition
        elif self.status == "Initializing":
            needs = (
                self.enterprise
                and self.checkpoint is not None
                and dataflow_differs(self.checkpoint, self.program_code)
            )
            if not needs:
                self.status = self.desired
            elif self.start_policy == "allow":
                self.status = "Bootstrapping"
            elif self.start_policy == "reject":
                self.status, self.desired = "Stopped", "Stopped"
                self.deployment_error = "Bootstrapping of the modified pipeline was rejected"
            else:
                self.status = "AwaitingApproval"
        elif self.status == "Bootstrapping":
            self.status = self.desired
        elif self.status in d.DEPLOYED and self.status != self.desired:
            self.status = self.desired


# ----------------------------------------------------------------------------- scenarios

PROGRAMS = (SQL_A, SQL_B, SQL_C, SQL_D)
RUNTIMES: tuple[dict[str, Any], ...] = (
    {},
    {"workers": 4},
    {"workers": 8},
    {"storage": True},
    {"cpu_profiler": False},
    {"resources": {"cpu_cores_max": 2}},
    {"resources": {"storage_mb_max": 1000}},
    {"turbo": 1},
    {"fault_tolerance": {}},
    {"fault_tolerance": None, "workers": 2},
)
PROGRAM_CONFIGS: tuple[dict[str, Any], ...] = ({}, {"profile": "optimized"}, {"cache": True})
UDFS = ("", "fn f() {}")
# (deployment_status, desired, program status): states Feldera can be found in.
STATES = (
    ("Stopped", "Stopped", "Success"),
    ("Stopped", "Stopped", "SqlError"),
    ("Stopped", "Stopped", "CompilingSql"),
    ("Stopped", "Running", "CompilingSql"),
    ("Stopped", "Running", "Success"),
    ("Provisioning", "Running", "Success"),
    ("Initializing", "Paused", "Success"),
    ("Running", "Running", "Success"),
    ("Running", "Paused", "Success"),
    ("Paused", "Paused", "Success"),
    ("Paused", "Running", "Success"),
    ("Running", "Stopped", "Success"),
    ("Stopping", "Stopped", "Success"),
    ("AwaitingApproval", "Running", "Success"),
)


@dataclass
class Scenario:
    spec: FelderaPipelineSpec
    model: FelderaModel
    edition: str


def oss_safe(runtime: Mapping[str, Any]) -> bool:
    return "fault_tolerance" not in runtime or runtime["fault_tolerance"] is None


@st.composite
def scenarios(
    draw: st.DrawFn,
    *,
    declared_programs: tuple[str, ...] = PROGRAMS,
    management: str = "Full",
    exists: bool | None = None,
    enterprise: bool | None = None,
    states: tuple[tuple[str, str, str], ...] = STATES,
) -> Scenario:
    if enterprise is None:
        enterprise = draw(st.booleans())
    runtimes = RUNTIMES if enterprise else tuple(r for r in RUNTIMES if oss_safe(r))
    model = FelderaModel(enterprise=enterprise)
    if exists if exists is not None else draw(st.integers(0, 9)) > 0:
        status, desired, program_status = draw(st.sampled_from(states))
        stored = BROKEN if program_status == "SqlError" else draw(st.sampled_from(PROGRAMS))
        model.exists = True
        model.program_code = stored
        model.udf_rust = draw(st.sampled_from(UDFS))
        model._set_configs(draw(st.sampled_from(PROGRAM_CONFIGS)), draw(st.sampled_from(runtimes)))
        model.version, model.program_version = 7, 3
        model.program_status, model.status, model.desired = program_status, status, desired
        ran = status != "Stopped" or draw(st.booleans())
        model.storage = "InUse" if ran else "Cleared"
        if enterprise and model.storage == "InUse":
            model.checkpoint = draw(st.sampled_from((stored, None, *PROGRAMS)))
        if status == "AwaitingApproval":
            if not enterprise:
                model.status = "Running"
            else:
                model.checkpoint = SQL_A if stored != SQL_A else SQL_B
        model.start_policy = "await_approval"
        if (status, desired) == ("Stopped", "Stopped") and draw(st.integers(0, 5)) == 0:
            model.deployment_error = "a fatal error"
    hash_pick = draw(st.sampled_from(("none", "mine", "other")))
    sql = draw(st.sampled_from(declared_programs))
    runtime = draw(st.sampled_from(runtimes))
    program_config = draw(st.sampled_from(PROGRAM_CONFIGS))
    udf = draw(st.sampled_from(UDFS))
    base = make_spec(sql, runtime=runtime, program_config=program_config, udf_rust=udf)
    approve = {
        "none": None,
        "mine": declared_of(base).hash,
        "other": declared_of(make_spec(SQL_C if sql != SQL_C else SQL_B)).hash,
    }[hash_pick]
    spec = make_spec(
        sql,
        runtime=runtime,
        program_config=program_config,
        udf_rust=udf,
        strategy=draw(st.sampled_from(("Restart", "Recreate", "Manual"))),
        policy=draw(st.sampled_from(("AwaitApproval", "Allow", "Reject"))),
        approve=approve,
        management=management,
        stopped=draw(st.integers(0, 4)) == 0,
        paused=draw(st.booleans()),
    )
    return Scenario(spec, model, ENT if enterprise else OSS)


# ----------------------------------------------------------------------------- driving


@dataclass
class Round:
    program: p.ProgramDecision
    decision: d.Decision
    previews: int


def decide_round(scenario: Scenario, previous: Mapping[str, Any] | None, now: str) -> Round:
    """Observe, decide the program (executing a Preview in the same round), decide the run state."""
    model, spec = scenario.model, scenario.spec
    previous_program = (previous or {}).get("program")
    obs = model.observe()
    result = p.decide_program(
        spec,
        declared_of(spec),
        obs,
        edition=scenario.edition,
        pipeline_name="orders",
        previous=previous_program,
    )
    previews = 0
    if isinstance(result.step, p.Preview):
        previews = 1
        answer = model.preview(result.step)
        result = p.decide_program(
            spec,
            declared_of(spec),
            obs,
            edition=scenario.edition,
            pipeline_name="orders",
            preview=answer,
            previous=previous_program,
        )
        assert not isinstance(result.step, p.Preview), "one preview answers the question"
    decision = d.decide(
        spec,
        generation=1,
        pipeline_name="orders",
        observed=pipeline_of(obs),
        previous_status=previous,
        now=now,
        program=result.outcome,
    )
    assert_well_formed(decision)
    if result.holds_pipeline:
        assert decision.actions == ()
    if spec.managementPolicy == "ObserveOnly":
        assert result.step is None or not result.step.writes
        assert decision.actions == ()
    return Round(result, decision, previews)


def execute(scenario: Scenario, rnd: Round) -> None:
    if rnd.program.step is not None:
        scenario.model.apply(rnd.program.step)
    for action in rnd.decision.actions:
        scenario.model.run_state(action)


# A person, told by the resource's reason what to do, does it.
def person_acts(scenario: Scenario, rnd: Round) -> bool:
    spec, reason = scenario.spec, rnd.decision.ready_reason
    status = rnd.program.status or {}
    pending = status.get("pending") or {}
    if reason == d.AWAITING_APPROVAL:
        assert scenario.edition == ENT
        bootstrap = spec.bootstrap
        assert bootstrap is None or bootstrap.policy == "AwaitApproval"
        assert bootstrap is None or bootstrap.approve != pending["hash"]
        assert pending["hash"] == declared_of(spec).hash
        new = {"policy": "AwaitApproval", "approve": pending["hash"]}
        scenario.spec = spec.model_copy(update={"bootstrap": type_bootstrap(new)})
        return True
    if reason == d.UPDATE_PENDING:
        assert spec.updateStrategy == "Manual"
        assert not scenario.model.settled_stopped
        scenario.spec = spec.model_copy(update={"stopped": True})
        return True
    if reason == d.STORAGE_IN_USE:
        assert spec.updateStrategy != "Recreate" and scenario.model.storage != "Cleared"
        scenario.spec = spec.model_copy(update={"updateStrategy": "Recreate"})
        return True
    if reason == d.BOOTSTRAP_REJECTED:
        assert spec.bootstrap is not None and spec.bootstrap.policy == "Reject"
        scenario.spec = spec.model_copy(update={"bootstrap": type_bootstrap({"policy": "Allow"})})
        return True
    if reason == d.DEPLOYMENT_FAILED:
        assert scenario.model.deployment_error
        scenario.spec = spec.model_copy(update={"stopped": True})  # dismisses the error
        return True
    return False


def type_bootstrap(body: Mapping[str, Any]) -> Any:
    from feldera_operator.models import Bootstrap

    return Bootstrap.model_validate(body)


def assert_no_step_repeated(scenario: Scenario, rnd: Round, status: Mapping[str, Any]) -> None:
    """An operator killed right after a step took effect, restarted, decides it not again."""
    step = rnd.program.step
    if step is None or not step.writes:
        return
    again = decide_round(scenario, status, "after-crash")
    assert again.program.step != step, f"{step} decided again after it took effect"
    assert again.previews == 0, f"a preview after {step}"


MAX_ROUNDS = 60


def drive(scenario: Scenario, *, people: bool = True) -> Round:
    """Rounds of observe → decide → execute → settle, until Ready (a person acting on stalls)."""
    previous: dict[str, Any] | None = None
    seen_previews: set[tuple[str, int | None]] = set()
    rnd: Round | None = None
    for n in range(MAX_ROUNDS):
        rnd = decide_round(scenario, previous, f"t{n}")
        if rnd.previews:
            key = (declared_of(scenario.spec).hash, scenario.model.program_version)
            assert key not in seen_previews, "the same change was previewed twice"
            seen_previews.add(key)
        if rnd.decision.ready:
            return rnd
        execute(scenario, rnd)
        previous = rnd.decision.status
        assert_no_step_repeated(scenario, rnd, previous)
        if rnd.program.step is None and not rnd.decision.actions and people:
            # Nothing moves unless Feldera is mid-transition: a stalled resource needs a person.
            if rnd.decision.ready_reason in d.STALLED_REASONS:
                assert person_acts(scenario, rnd), rnd.decision.ready_message
        scenario.model.settle()
    assert rnd is not None
    raise AssertionError(
        f"not Ready after {MAX_ROUNDS} rounds: {scenario.model.status}/{scenario.model.desired} "
        f"{scenario.model.program_status}, "
        f"{rnd.decision.ready_reason}: {rnd.decision.ready_message}"
    )


def assert_feldera_holds_the_declared_program(scenario: Scenario) -> None:
    """An oracle independent of program.py's comparison: what Feldera would store for the
    declared program, on the declared keys."""
    model, spec = scenario.model, scenario.spec
    declared = declared_of(spec)
    assert model.exists
    assert model.program_code == declared.sql
    assert model.udf_rust == declared.udf_rust
    assert model.program_status == "Success"
    wanted_runtime = fill(RUNTIME_DEFAULTS, declared.runtime_config)
    for key, value in declared.runtime_config.items():
        if key not in RUNTIME_DEFAULTS:
            continue  # Feldera drops it
        if isinstance(value, Mapping) and key not in ("fault_tolerance", "storage"):
            for sub in value:
                assert model.runtime_config[key][sub] == wanted_runtime[key][sub], (key, sub)
        elif key == "storage" and value is True:
            assert model.runtime_config[key] is not None
        else:
            assert model.runtime_config[key] == wanted_runtime[key], key
    wanted_pc = fill(PROGRAM_CONFIG_DEFAULTS, declared.program_config)
    for key in declared.program_config:
        assert model.program_config[key] == wanted_pc[key], key
    if spec.stopped:
        assert model.settled_stopped
    else:
        assert model.status == model.desired == ("Paused" if spec.paused else "Running")


PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(scenarios())
def test_any_state_converges_on_both_editions_repeating_no_step(scenario: Scenario) -> None:
    last = drive(scenario)
    assert_feldera_holds_the_declared_program(scenario)
    assert last.program.status is not None
    assert last.program.status["appliedHash"] == declared_of(scenario.spec).hash
    assert last.program.status["pending"] is None
    # Converged is a fixed point: no step, no action, no status write, observation after
    # observation.
    previous = last.decision.status
    calls = len(scenario.model.calls)
    for t in ("later", "much-later"):
        scenario.model.settle()
        again = decide_round(scenario, previous, t)
        assert again.decision.ready
        assert again.program.step is None and again.decision.actions == ()
        assert not d.status_changed(previous, again.decision.status)
        previous = again.decision.status
    assert len(scenario.model.calls) == calls


def _running_scenarios(declared: tuple[str, ...]) -> st.SearchStrategy[Scenario]:
    def running(s: Scenario) -> bool:
        m = s.model
        return m.exists and m.status in d.DEPLOYED and m.desired == m.status

    return scenarios(declared_programs=declared, exists=True).filter(running)


@PROPERTY_SETTINGS
@given(_running_scenarios((BROKEN,)))
def test_a_broken_commit_never_stops_anything(scenario: Scenario) -> None:
    # Only the SQL (and maybe UDFs or program config) changes: nothing else can stall first.
    declared = scenario.spec.program
    assert declared is not None
    program = declared.model_copy(update={"runtimeConfig": None})
    scenario.spec = scenario.spec.model_copy(update={"stopped": False, "program": program})
    model = scenario.model
    before = (model.program_code, model.version)
    previous: dict[str, Any] | None = None
    for n in range(8):
        rnd = decide_round(scenario, previous, f"t{n}")
        step = rnd.program.step
        assert not isinstance(step, (p.Stop, p.Patch, p.Clear, p.Start, p.Approve, p.Create))
        execute(scenario, rnd)
        previous = rnd.decision.status
        model.settle()
    assert rnd.decision.ready_reason == d.PROGRAM_ERROR
    assert "3:19: Encountered oops" in rnd.decision.ready_message
    assert rnd.decision.status["program"]["errors"][0]["line"] == 3
    assert (model.program_code, model.version) == before
    assert model.status in d.DEPLOYED
    assert model.calls.count("Preview") == 1
    # The commit that fixes it goes through.
    scenario.spec = make_spec(SQL_B, approve=None, policy="Allow")
    drive(scenario)
    assert_feldera_holds_the_declared_program(scenario)


RUNNING = tuple(s for s in STATES if s[0] in d.DEPLOYED and s[1] == s[0])
# Enterprise pipelines running from a checkpoint: where bootstraps and approvals happen.
checkpointed_scenarios = scenarios(enterprise=True, exists=True, states=RUNNING)


@PROPERTY_SETTINGS
@given(checkpointed_scenarios)
def test_enterprise_pipelines_running_from_a_checkpoint_converge_through_approvals(
    scenario: Scenario,
) -> None:
    drive(scenario)
    assert_feldera_holds_the_declared_program(scenario)


DATAFLOW_CHANGES = tuple(
    (old, new) for old in PROGRAMS for new in PROGRAMS if dataflow_differs(old, new)
)


@PROPERTY_SETTINGS
@given(
    st.sampled_from(DATAFLOW_CHANGES),
    st.sampled_from(RUNNING),
    st.sampled_from(("Restart", "Recreate")),
    st.sampled_from((None, "other", "stale")),
)
def test_a_change_needing_a_bootstrap_waits_for_its_own_hash_then_restarts_once(
    change: tuple[str, str], state: tuple[str, str, str], strategy: str, wrong: str | None
) -> None:
    old, new = change
    model = FelderaModel(enterprise=True, exists=True, program_code=old, checkpoint=old)
    model._set_configs({}, {})
    model.version, model.program_version, model.storage = 4, 2, "InUse"
    model.status, model.desired, model.program_status = state
    hash_new = declared_of(make_spec(new)).hash
    approve = {
        None: None,
        "other": declared_of(make_spec(SQL_D if new != SQL_D else SQL_A)).hash,
        # Approved, then edited again: the approval was of the program before the edit.
        "stale": declared_of(make_spec(new, udf_rust="fn f() {}")).hash,
    }[wrong]
    paused = state[0] == "Paused"
    scenario = Scenario(
        make_spec(new, strategy=strategy, approve=approve, paused=paused), model, ENT
    )
    previous: dict[str, Any] | None = None
    for n in range(6):
        rnd = decide_round(scenario, previous, f"t{n}")
        execute(scenario, rnd)
        previous = rnd.decision.status
        model.settle()
    assert rnd.decision.ready_reason == d.AWAITING_APPROVAL
    assert hash_new in rnd.decision.ready_message
    pending = rnd.decision.status["program"]["pending"]
    assert (pending["hash"], pending["needsBootstrap"], pending["waitingFor"]) == (
        hash_new,
        True,
        "Approval",
    )
    assert (model.program_code, model.status, model.desired) == (old, state[0], state[1])
    assert model.calls == ["Preview"]
    # The reviewed approval: exactly this hash. One restart, and state comes from the checkpoint.
    scenario.spec = make_spec(new, strategy=strategy, approve=hash_new, paused=paused)
    del model.calls[:]
    drive(scenario)
    assert_feldera_holds_the_declared_program(scenario)
    assert model.calls.count("Stop") == 1 and model.calls.count("Start") == 1
    assert "Clear" not in model.calls and "Approve" not in model.calls
    assert model.storage == "InUse"


@PROPERTY_SETTINGS
@given(st.one_of(scenarios(), checkpointed_scenarios), st.data())
def test_an_approval_only_ever_matches_its_own_hash(
    scenario: Scenario, data: st.DataObject
) -> None:
    """No step that applies a change needing a bootstrap (or approves one) under AwaitApproval
    runs unless spec.bootstrap.approve is the hash of the program it applies."""
    spec = scenario.spec
    other = declared_of(make_spec(data.draw(st.sampled_from(PROGRAMS)), runtime={"hosts": 3})).hash
    scenario.spec = spec.model_copy(update={"bootstrap": type_bootstrap({"approve": other})})
    previous: dict[str, Any] | None = None
    for n in range(30):
        rnd = decide_round(scenario, previous, f"t{n}")
        pending = (rnd.program.status or {}).get("pending") or {}
        if isinstance(rnd.program.step, p.Approve):
            raise AssertionError("approved with another hash")
        if isinstance(rnd.program.step, p.Stop) and pending.get("needsBootstrap"):
            raise AssertionError("stopped for a bootstrap that nobody approved")
        if isinstance(rnd.program.step, p.Start):
            assert rnd.program.step.bootstrap_policy != "allow"
        if rnd.decision.ready_reason == d.AWAITING_APPROVAL:
            assert pending["hash"] == declared_of(scenario.spec).hash != other
        execute(scenario, rnd)
        previous = rnd.decision.status
        scenario.model.settle()


@PROPERTY_SETTINGS
@given(scenarios(management="ObserveOnly"))
def test_observe_only_never_decides_a_write(scenario: Scenario) -> None:
    model = scenario.model
    previous: dict[str, Any] | None = None
    for n in range(12):
        rnd = decide_round(scenario, previous, f"t{n}")  # asserts no write, no action
        if rnd.program.reason not in (d.CONVERGED, d.PIPELINE_NOT_FOUND, d.COMPILING):
            if model.exists and rnd.program.status and rnd.program.status["pending"]:
                assert rnd.program.status["pending"]["hash"] == declared_of(scenario.spec).hash
        execute(scenario, rnd)
        previous = rnd.decision.status
        model.settle()
    assert all(call in ("Preview",) for call in model.calls), model.calls


@PROPERTY_SETTINGS
@given(scenarios())
def test_the_same_observation_twice_gives_the_same_decision_and_no_status_write(
    scenario: Scenario,
) -> None:
    first = decide_round(scenario, None, "t1")
    if first.previews:
        return  # the second would see a remembered preview: covered by the drive
    second = decide_round(scenario, first.decision.status, "t2")
    assert second.program == first.program
    assert not d.status_changed(first.decision.status, second.decision.status)
