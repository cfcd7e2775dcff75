"""Managing a pipeline's program on the Feldera emulator as feldera-api.md describes it: PUT and
PATCH, what they may change and what they bump, stored configurations, compilation as a timed
state machine, `/diff` and `/validate_program`."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from feldera_sandbox.feldera_emulator import FelderaEmulator

from .feldera_http import (
    Call,
    error,
    everything,
    put,
    status_of,
    wait_for,
)

SQL = """
CREATE TABLE orders (id BIGINT, amount INT) WITH ('connectors' = '[
  {"name": "live", "paused": true, "transport": {"name": "kafka_input", "config": {}}}]');
CREATE MATERIALIZED VIEW big AS SELECT * FROM orders WHERE amount > 10;
"""
MORE = SQL + "CREATE VIEW small AS SELECT * FROM orders WHERE amount < 10;\n"
BAD = "CREATE TABLE orders (id BIGINT,);"


async def running(call: Call, name: str, sql: str = SQL, **extra: Any) -> None:
    assert (await put(call, name, sql, **extra))[0] in (200, 201)
    assert (await call("POST", f"/v0/pipelines/{name}/start"))[0] == 202
    await wait_for(call, name, "deployment_status", "Running")


async def stopped(call: Call, name: str) -> None:
    assert (await call("POST", f"/v0/pipelines/{name}/stop?force=true"))[0] == 202
    await wait_for(call, name, "deployment_status", "Stopped")


def versions(body: dict[str, Any]) -> tuple[int, int, int]:
    return body["version"], body["program_version"], body["refresh_version"]


# ---------------------------------------------------------------------------- PUT and PATCH


async def test_put_creates_then_updates_and_patch_changes_only_the_fields_it_gives(
    call: Call,
) -> None:
    code, body = await put(call, "p1", SQL, description="d", runtime_config={"workers": 4})
    assert code == 201
    code, body = await put(call, "p1", SQL, description="d", runtime_config={"workers": 4})
    assert code == 200
    code, body = await call("PATCH", "/v0/pipelines/p1", json={"program_code": MORE})
    assert code == 200 and body["program_code"] == MORE
    assert body["description"] == "d" and body["runtime_config"]["workers"] == 4
    # `runtime_config` is replaced whole, not merged: what it leaves out is back to default.
    patch = {"runtime_config": {"cpu_profiler": False}}
    code, body = await call("PATCH", "/v0/pipelines/p1", json=patch)
    assert code == 200
    assert (
        body["runtime_config"]["workers"] == 8 and body["runtime_config"]["cpu_profiler"] is False
    )
    # A PUT resets what it omits.
    code, body = await put(call, "p1", MORE)
    assert code == 200 and body["description"] == "" and body["runtime_config"]["cpu_profiler"]


async def test_core_and_program_changes_bump_their_versions_and_nothing_else_does(
    emulator: FelderaEmulator, call: Call
) -> None:
    _, created = await put(call, "p1", SQL)
    assert versions(created)[:2] == (1, 1)
    _, same = await put(call, "p1", SQL)
    assert versions(same) == versions(created)
    # runtime_config alone: a core change that does not recompile.
    code, body = await call("PATCH", "/v0/pipelines/p1", json={"runtime_config": {"workers": 2}})
    assert code == 200 and versions(body)[:2] == (2, 1)
    assert body["program_status"] == "Success" and body["refresh_version"] > same["refresh_version"]
    # Metadata: no bump at all.
    code, meta = await call("PATCH", "/v0/pipelines/p1", json={"tags": ["a"], "description": "x"})
    assert code == 200 and versions(meta) == versions(body)
    # A program change: back to Pending, program_info and program_error cleared.
    emulator.compile_delay = 10.0
    code, changed = await call("PATCH", "/v0/pipelines/p1", json={"program_code": MORE})
    assert code == 200 and versions(changed)[:2] == (3, 2)
    assert changed["program_status"] == "Pending" and changed["program_info"] is None
    assert changed["program_error"] == {
        "sql_compilation": None,
        "rust_compilation": None,
        "system_error": None,
    }


async def test_a_feldera_upgrade_makes_an_identical_put_a_program_change_but_not_a_patch(
    emulator: FelderaEmulator, call: Call
) -> None:
    await running(call, "p1")
    code, settings = await call("PATCH", "/_emulator/settings", json={"platform_version": "1.0.0"})
    assert code == 200 and settings["platform_version"] == "1.0.0" == emulator.version
    assert (await call("GET", "/v0/config"))[1]["version"] == "1.0.0"
    body = await everything(call, "p1")
    assert body["platform_version"] == "0.369.0"
    # PATCH with the same program is no change; the same PUT recompiles, so it needs a stop.
    assert (await call("PATCH", "/v0/pipelines/p1", json={"program_code": SQL}))[0] == 200
    error(*await put(call, "p1", SQL), 400, "UpdateRestrictedToStopped")
    await stopped(call, "p1")
    code, body = await put(call, "p1", SQL)
    assert code == 200 and body["program_version"] == 2 and body["platform_version"] == "1.0.0"
    # `/update_runtime` is the explicit way; now a no-op.
    code, again = await call("POST", "/v0/pipelines/p1/update_runtime")
    assert code == 200 and again["program_version"] == 2


async def test_core_change_is_refused_from_start_until_fully_stopped(
    emulator: FelderaEmulator, call: Call
) -> None:
    await put(call, "p1", SQL)
    emulator.delay = 10.0  # the start is recorded, provisioning has not begun
    assert (await call("POST", "/v0/pipelines/p1/start"))[0] == 202
    body = await status_of(call, "p1")
    assert (body["deployment_status"], body["deployment_desired_status"]) == ("Stopped", "Running")
    body = error(*await put(call, "p1", MORE), 400, "UpdateRestrictedToStopped")
    assert body["details"] is None
    patch = {"runtime_config": {"workers": 1}}
    error(*await call("PATCH", "/v0/pipelines/p1", json=patch), 400, "UpdateRestrictedToStopped")
    # What changes nothing is accepted in any state.
    assert (await put(call, "p1", SQL))[0] == 200


async def test_storage_bound_edits_are_refused_until_storage_is_cleared(call: Call) -> None:
    await running(call, "p1")
    await stopped(call, "p1")
    assert (await status_of(call, "p1"))["storage_status"] == "InUse"
    patch = {"runtime_config": {"workers": 2, "fault_tolerance": None, "cpu_profiler": False}}
    body = error(
        *await call("PATCH", "/v0/pipelines/p1", json=patch), 400, "EditRestrictedToClearedStorage"
    )
    assert body["details"] == {"not_allowed": ["`runtime_config.workers`"]}
    assert body["message"] == (
        "The following pipeline edits are not allowed while storage is not cleared: "
        "`runtime_config.workers`"
    )
    body = error(
        *await call("PATCH", "/v0/pipelines/p1", json={"name": "p2"}),
        400,
        "EditRestrictedToClearedStorage",
    )
    assert body["details"] == {"not_allowed": ["`name`"]}
    # Program edits, and runtime_config fields not bound to storage, are allowed.
    assert (await call("PATCH", "/v0/pipelines/p1", json={"program_code": MORE}))[0] == 200
    allowed = {"runtime_config": {"cpu_profiler": False}}
    assert (await call("PATCH", "/v0/pipelines/p1", json=allowed))[0] == 200
    assert (await call("POST", "/v0/pipelines/p1/clear"))[0] == 202
    code, body = await call("PATCH", "/v0/pipelines/p1", json={"name": "p2", **patch})
    assert code == 200 and body["name"] == "p2" and body["runtime_config"]["workers"] == 2


async def test_rename_to_a_taken_name_is_a_conflict_and_a_put_cannot_rename_a_missing_one(
    call: Call,
) -> None:
    await put(call, "p1", SQL)
    await put(call, "p2", SQL)
    error(*await call("PATCH", "/v0/pipelines/p1", json={"name": "p2"}), 409, "DuplicateName")
    body = {"name": "other", "program_code": SQL}
    error(
        *await call("PUT", "/v0/pipelines/missing", json=body),
        400,
        "CannotRenameNonExistingPipeline",
    )
    bad = {"name": "x" * 64, "program_code": SQL}
    error(*await call("POST", "/v0/pipelines", json=bad), 400, "TooLongName")


async def test_configs_are_stored_with_defaults_and_without_unknown_keys(call: Call) -> None:
    extra = {"runtime_config": {"workers": 3, "nonsense": True}, "program_config": {"x": 1}}
    body = await put(call, "p1", SQL, **extra)
    stored = body[1]["runtime_config"]
    assert "nonsense" not in stored and stored["workers"] == 3
    assert (stored["hosts"], stored["cpu_profiler"], stored["clock_resolution_usecs"]) == (
        1,
        True,
        1_000_000,
    )
    assert stored["fault_tolerance"] == {"model": "none", "checkpoint_interval_secs": 60}
    assert stored["storage"]["backend"] == {"name": "default"}
    assert body[1]["program_config"] == {
        "profile": None,
        "cache": True,
        "runtime_version": None,
        "use_platform_compiler": False,
    }


async def test_open_source_refuses_fault_tolerance(emulator: FelderaEmulator, call: Call) -> None:
    ft = {"runtime_config": {"fault_tolerance": {"model": "exactly_once"}}}
    body = error(*await put(call, "p1", SQL, **ft), 400, "InvalidRuntimeConfig")
    assert body["details"]["error"] == {"EnterpriseFeature": "fault tolerance"}
    assert "enterprise feature: fault tolerance" in body["message"]
    wrong = {"runtime_config": {"workers": "many"}}
    error(*await put(call, "p1", SQL, **wrong), 400, "InvalidRuntimeConfig")
    emulator.edition = "enterprise"
    code, created = await put(call, "p1", SQL, **ft)
    assert code == 201 and created["runtime_config"]["fault_tolerance"]["model"] == "exactly_once"


# ------------------------------------------------------------------------------ compilation


async def test_compilation_goes_through_its_steps_in_order(
    emulator: FelderaEmulator, call: Call
) -> None:
    emulator.compile_delay = 0.02
    code, body = await put(call, "p1", SQL)
    assert code == 201 and body["program_status"] == "Pending"
    seen: list[str] = []
    info_when_sql_compiled: list[Any] = []
    deadline = time.monotonic() + 5
    while not seen or seen[-1] != "Success":
        body = await everything(call, "p1")
        if not seen or seen[-1] != body["program_status"]:
            seen.append(body["program_status"])
            if body["program_status"] in ("SqlCompiled", "CompilingRust"):
                info_when_sql_compiled.append(body["program_info"])
        assert time.monotonic() < deadline, seen
        await asyncio.sleep(0.003)
    order = ["Pending", "CompilingSql", "SqlCompiled", "CompilingRust", "Success"]
    assert seen == [s for s in order if s in seen] and seen[0] == "Pending"
    # The connectors are known once the SQL compiled, before the Rust is built.
    assert all("orders.live" in info["input_connectors"] for info in info_when_sql_compiled)


async def test_start_during_compilation_is_accepted_and_waits_for_it(
    emulator: FelderaEmulator, call: Call
) -> None:
    emulator.compile_delay = 0.05
    await put(call, "p1", SQL)
    assert (await call("POST", "/v0/pipelines/p1/start"))[0] == 202
    body = await status_of(call, "p1")
    assert body["program_status"] != "Success" and body["deployment_status"] == "Stopped"
    await wait_for(call, "p1", "deployment_status", "Running")


async def test_start_during_a_compilation_that_fails_ends_stopped_with_an_error(
    emulator: FelderaEmulator, call: Call
) -> None:
    emulator.compile_delay = 0.02
    await put(call, "p1", BAD)
    assert (await call("POST", "/v0/pipelines/p1/start"))[0] == 202
    body = await wait_for(call, "p1", "deployment_desired_status", "Stopped")
    assert body["deployment_error"]["error_code"] == "StartFailedDueToFailedCompilation"
    assert body["program_status"] == "SqlError" and body["deployment_status"] == "Stopped"
    body = error(
        *await call("POST", "/v0/pipelines/p1/start"), 400, "CannotStartWithCompilationError"
    )
    assert body["details"] is None


async def test_sql_error_has_the_compilers_message_shape(call: Call) -> None:
    code, body = await put(call, "p1", "CREATE TABLE t (x INT);\nCREATE VIEW v AS SELECT * FROM u;")
    assert code == 201 and body["program_status"] == "SqlError" and body["program_info"] is None
    (message,) = body["program_error"]["sql_compilation"]["messages"]
    assert message == {
        "start_line_number": 2,
        "start_column": 32,
        "end_line_number": 2,
        "end_column": 32,
        "warning": False,
        "error_type": "Error in SQL statement",
        "message": "Object 'u' not found",
        "snippet": "    1|CREATE TABLE t (x INT);\n"
        "    2|CREATE VIEW v AS SELECT * FROM u;\n"
        "                                     ^\n",
    }
    assert body["program_error"]["sql_compilation"]["exit_code"] == 1
    # The status selector leaves the errors out.
    assert "program_error" not in await status_of(call, "p1")


async def test_udf_that_does_not_build_is_a_rust_error(call: Call) -> None:
    sql = "CREATE FUNCTION f(x INT) RETURNS INT;\n" + SQL
    code, body = await put(call, "p1", sql, udf_rust="pub fn f(x: Option<i32>) -> Option<i32> {")
    assert code == 201 and body["program_status"] == "RustError"
    rust = body["program_error"]["rust_compilation"]
    assert rust["exit_code"] != 0 and "unclosed delimiter" in rust["stderr"]
    assert body["program_info"] is not None  # the SQL compiled
    error(*await call("POST", "/v0/pipelines/p1/start"), 400, "CannotStartWithCompilationError")
    fixed = {"udf_rust": "pub fn f(x: Option<i32>) -> Option<i32> { x }"}
    code, body = await call("PATCH", "/v0/pipelines/p1", json=fixed)
    assert code == 200 and body["program_status"] == "Success"


async def test_a_runtime_version_needing_an_unstable_feature_is_a_system_error(call: Call) -> None:
    config = {"program_config": {"runtime_version": "v0.300.0"}}
    code, body = await put(call, "p1", SQL, **config)
    assert code == 201 and body["program_status"] == "SystemError"
    assert "runtime_version" in body["program_error"]["system_error"]


# ------------------------------------------------------------------------------------ diff


async def test_diff_previews_a_change_without_touching_the_pipeline(call: Call) -> None:
    await running(call, "p1")
    before = await everything(call, "p1")
    code, diff = await call("POST", "/v0/pipelines/p1/diff", json={"program_code": MORE})
    assert code == 200
    assert diff == {
        "program_diff": {
            "added_tables": [],
            "removed_tables": [],
            "modified_tables": [],
            "added_views": ["small"],
            "removed_views": [],
            "modified_views": [],
        },
        "program_diff_error": None,
        "added_input_connectors": [],
        "modified_input_connectors": [],
        "removed_input_connectors": [],
        "added_output_connectors": [],
        "modified_output_connectors": [],
        "removed_output_connectors": [],
    }
    after = await everything(call, "p1")
    assert versions(after) == versions(before) and after["deployment_status"] == "Running"
    # No program given: the current one, so no change.
    code, same = await call("POST", "/v0/pipelines/p1/diff", json={})
    assert code == 200 and not any(same["program_diff"].values())


async def test_diff_of_sql_that_does_not_compile_carries_the_compiler_messages(
    call: Call,
) -> None:
    await put(call, "p1", SQL)
    body = error(
        *await call("POST", "/v0/pipelines/p1/diff", json={"program_code": BAD}),
        400,
        "InvalidNewProgramSql",
    )
    messages = json.loads(body["details"]["error"])
    assert messages[0]["start_line_number"] == 1 and messages[0]["start_column"] == 32
    assert body["message"].startswith("The proposed new SQL program has compilation errors: ")


async def test_diff_needs_a_compiled_current_program(emulator: FelderaEmulator, call: Call) -> None:
    await put(call, "p1", BAD)
    body = error(
        *await call("POST", "/v0/pipelines/p1/diff", json={"program_code": SQL}),
        404,
        "ProgramNotCompiled",
    )
    assert body["details"] == {"pipeline_name": "p1"}
    emulator.compile_delay = 10.0
    await put(call, "p2", SQL)
    error(*await call("POST", "/v0/pipelines/p2/diff", json={}), 404, "ProgramNotCompiled")
    error(*await call("POST", "/v0/pipelines/nope/diff", json={}), 404, "UnknownPipelineName")


async def test_diff_refuses_a_change_to_a_program_with_lateness(call: Call) -> None:
    late = SQL + "LATENESS orders.id 10;\n"
    await put(call, "p1", late)
    body = error(
        *await call(
            "POST",
            "/v0/pipelines/p1/diff",
            json={"program_code": late + "CREATE VIEW w AS SELECT 1 AS one;"},
        ),
        400,
        "BootstrapNotAllowed",
    )
    assert "lateness" in body["details"]["error"]


async def test_validate_program_always_answers_200(call: Call) -> None:
    code, body = await call("POST", "/v0/validate_program", json={"program_code": SQL})
    assert code == 200 and set(body) == {"Success"}
    info = body["Success"]["program_info"]
    assert "orders.live" in info["input_connectors"] and info["dataflow"] is None
    assert "main_rust" not in info
    code, body = await call("POST", "/v0/validate_program", json={"program_code": SQL, "ir": True})
    assert code == 200 and body["Success"]["program_info"]["dataflow"] is not None
    code, body = await call("POST", "/v0/validate_program", json={"program_code": BAD})
    assert code == 200 and body["SqlError"]["info"]["exit_code"] == 1
    assert body["SqlError"]["info"]["messages"][0]["error_type"] == "Error parsing SQL"
    custom = {"program_code": SQL, "runtime_version": "v0.300.0"}
    code, body = await call("POST", "/v0/validate_program", json=custom)
    assert code == 200 and "runtime_version" in body["SystemError"]["error"]
    malformed = {"program_code": SQL, "runtime_version": "latest"}
    error(*await call("POST", "/v0/validate_program", json=malformed), 400, "InvalidRuntimeVersion")
