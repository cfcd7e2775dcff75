"""The program flow's shell (spec.program), driven through the real Reconciler against fakes of its
two edges: which Feldera calls each situation costs, in which order, what is written to
Kubernetes, and what is read from ConfigMaps. program.py's own decisions are test_program.py's."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from feldera_operator.feldera_client import (
    FelderaBadRequest,
    FelderaServerError,
)
from feldera_operator.program import PROGRAM_LABEL
from feldera_operator.reconciler import Reconciler

from .reconciler_fakes import (
    FakeFeldera,
    FakeKube,
    add_pipeline,
    close_all,
    condition,
    deliver,
    make_reconciler,
    observe_pass,
    pipeline_body,
    ready,
    until,
)

PLURAL = "felderapipelines"
FINALIZER = "feldera.dev/stop-pipeline"
SQL_A = "CREATE TABLE t (x INT);\nCREATE VIEW v AS SELECT * FROM t;\n"
SQL_B = SQL_A + "CREATE VIEW v2 AS SELECT x FROM t;\n"
FROM_CM = {"sqlFrom": {"configMapKeyRef": {"name": "orders-sql", "key": "p.sql"}}}


@pytest.fixture(autouse=True)
async def close_reconcilers() -> AsyncIterator[None]:
    yield
    await close_all()


def status(kube: FakeKube, name: str = "orders") -> dict[str, Any]:
    return kube.status_of(PLURAL, name)


def is_ready(kube: FakeKube, name: str = "orders") -> bool:
    return ready(status(kube, name)).get("status") == "True"


async def edit(r: Reconciler, kube: FakeKube, name: str = "orders", **spec: Any) -> None:
    """What `kubectl apply` of a changed spec does: a new generation, and its watch event."""
    obj = kube.objects[(PLURAL, "default", name)]
    obj["spec"].update(spec)
    obj["metadata"]["generation"] += 1
    await deliver(r, kube, name)


async def delete(r: Reconciler, kube: FakeKube, name: str = "orders") -> None:
    kube.objects[(PLURAL, "default", name)]["metadata"]["deletionTimestamp"] = "2026-01-02T00:00Z"
    await deliver(r, kube, name)


def reasons(kube: FakeKube, name: str = "orders") -> list[str]:
    return [e.reason for e in kube.events_of(name)]


def running(feldera: FakeFeldera, sql: str = SQL_A, **kw: Any) -> None:
    """A pipeline that ran (storage in use), running `sql`."""
    feldera.add(
        "orders",
        status="Running",
        desired="Running",
        program_code=sql,
        storage_status="InUse",
        **kw,
    )


async def configmap_event(
    r: Reconciler, kube: FakeKube, event: str | None, sql: str, labelled: bool = True
) -> None:
    labels = {PROGRAM_LABEL: "true"} if labelled else {}
    body = kube.add_configmap("default", "orders-sql", {"p.sql": sql}, labels)
    await r.on_configmap_event(event, body)


# ----------------------------------------------------------------------------- creating


async def test_a_missing_pipeline_is_created_then_started_as_declared_once_compiled() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders", program={"sql": SQL_A}, paused=True))
    await until(lambda: is_ready(kube), what="Ready")
    assert feldera.actions() == [("put", "orders"), ("start", "orders", "paused")]
    pipeline = feldera.pipelines["orders"]
    assert (pipeline.program_code, pipeline.status) == (SQL_A, "Paused")
    program = status(kube)["program"]
    assert program["appliedHash"] == program["hash"] and program.get("pending") is None
    assert reasons(kube) == ["PipelineCreated", "PipelineStarted"]
    created = kube.events_of("orders")[0].message
    assert created == f"Created the pipeline with program {program['hash'][:19]}"


async def test_a_converged_program_costs_no_full_read_no_preview_and_no_write() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    r = make_reconciler(kube, feldera)
    await configmap_event(r, kube, None, SQL_A)  # the watch's start-up listing
    await add_pipeline(r, kube, pipeline_body("orders", program=FROM_CM))
    await until(lambda: is_ready(kube), what="Ready")
    await observe_pass(r)
    reads, writes, calls = feldera.count("get_all"), kube.status_writes("orders"), len(kube.calls)
    for _ in range(3):
        await observe_pass(r)
    assert feldera.count("get_all") == reads
    assert feldera.count("diff") == 0
    assert feldera.actions() == [("put", "orders"), ("start", "orders", "running")]
    assert kube.status_writes("orders") == writes
    assert kube.calls[calls:] == []  # not even a read of the ConfigMap: the watch holds it


async def test_the_full_pipeline_is_read_again_when_feldera_changed_it() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    running(feldera)
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders", program={"sql": SQL_A}))
    await until(lambda: is_ready(kube), what="Ready")
    reads = feldera.count("get_all")
    # Someone edits the runtime configuration in Feldera: `version` moves, the copy is stale.
    feldera.pipelines["orders"].runtime_config = {"workers": 2}
    feldera.pipelines["orders"].version += 1
    await observe_pass(r)
    assert feldera.count("get_all") == reads + 1
    assert is_ready(kube)  # an undeclared key: not the resource's


async def test_a_settled_program_changed_in_feldera_behind_its_back_is_put_back() -> None:
    """Converged passes decide nothing again; a program PATCHed in Feldera by someone else moves
    the listing's `version`, so the flow runs again and restores the declared one."""
    kube, feldera = FakeKube(), FakeFeldera()
    running(feldera)
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders", program={"sql": SQL_A}))
    await until(lambda: is_ready(kube), what="Ready")
    for _ in range(2):
        await observe_pass(r)
    feldera.pipelines["orders"].program_code = SQL_B
    feldera.pipelines["orders"].version += 1

    async def restored() -> bool:
        await observe_pass(r)
        feldera.settle()
        return feldera.pipelines["orders"].program_code == SQL_A

    for _ in range(20):
        if await restored():
            break
    assert feldera.pipelines["orders"].program_code == SQL_A
    assert ("patch", "orders", "program_code") in feldera.actions()


# ----------------------------------------------------------------------------- changing


async def test_a_sql_change_is_previewed_and_its_diff_written_before_anything_stops() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    running(feldera)
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders", program={"sql": SQL_A}))
    await until(lambda: is_ready(kube), what="Ready")
    at_stop: list[dict[str, Any]] = []
    feldera.on_call = lambda call: (
        at_stop.append(copy.deepcopy(status(kube))) if call[0] == "stop" else None
    )
    await edit(r, kube, program={"sql": SQL_B})
    await until(lambda: is_ready(kube) and feldera.pipelines["orders"].program_code == SQL_B)
    pending = at_stop[0]["program"]["pending"]
    assert pending["diff"]["views"]["added"] == ["v2"]
    assert pending["losesState"] is True  # open source: every restart starts empty
    assert [c[0] for c in feldera.calls if c[0] in ("diff", "stop", "patch", "start")] == [
        "diff",
        "stop",
        "patch",
        "start",
    ]
    assert ("patch", "orders", "program_code") in feldera.calls
    assert "ProgramPreviewed" in reasons(kube)


async def test_new_sql_that_does_not_compile_stops_nothing_and_says_where() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    running(feldera)
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders", program={"sql": SQL_A}))
    await until(lambda: is_ready(kube), what="Ready")
    messages = [
        {"start_line_number": 3, "start_column": 7, "message": "Unknown table 'nope'"},
        {"start_line_number": 4, "start_column": 1, "message": "second", "warning": False},
    ]
    feldera.fail(
        "diff",
        FelderaBadRequest(
            "The new SQL does not compile",
            endpoint="POST /v0/pipelines/orders/diff",
            status=400,
            error_code="InvalidNewProgramSql",
            details={"error": json.dumps(messages)},
        ),
    )
    await edit(r, kube, program={"sql": SQL_B + "SELECT * FROM nope;"})
    now = status(kube)
    assert ready(now)["reason"] == "ProgramError"
    assert "3:7: Unknown table 'nope'" in ready(now)["message"]
    assert condition(now, "Stalled")["status"] == "True"
    assert [e["line"] for e in now["program"]["errors"]] == [3, 4]
    assert ("ProgramError", True) in [(e.reason, e.warning) for e in kube.events_of("orders")]
    for _ in range(2):
        await observe_pass(r)
    assert feldera.count("diff") == 1  # remembered in status.program, not asked again
    assert feldera.actions() == []
    assert feldera.pipelines["orders"].program_code == SQL_A


async def test_enterprise_stops_with_a_checkpoint_and_starts_with_the_approved_bootstrap() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.edition = "Enterprise"
    running(feldera)
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders", program={"sql": SQL_A}))
    await until(lambda: is_ready(kube), what="Ready")
    await edit(r, kube, program={"sql": SQL_B})
    pending = status(kube)["program"]["pending"]
    assert ready(status(kube))["reason"] == "AwaitingApproval"
    assert pending["needsBootstrap"] is True and pending["waitingFor"] == "Approval"
    assert feldera.actions() == []
    await edit(r, kube, bootstrap={"approve": pending["hash"]})
    await until(lambda: is_ready(kube) and feldera.pipelines["orders"].program_code == SQL_B)
    assert feldera.actions() == [
        ("stop", "orders", "force=false"),
        ("patch", "orders", "program_code"),
        ("start", "orders", "running", "bootstrap_policy=allow"),
    ]


async def test_a_step_whose_status_cannot_be_written_waits_for_it() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    running(feldera)
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders", program={"sql": SQL_A}))
    await until(lambda: is_ready(kube), what="Ready")
    at_stop: list[dict[str, Any]] = []
    feldera.on_call = lambda call: (
        at_stop.append(copy.deepcopy(status(kube))) if call[0] == "stop" else None
    )
    kube.fail("patch_status", 503, count=2)  # the API server refuses two writes
    await edit(r, kube, program={"sql": SQL_B})
    assert feldera.count("diff") == 1 and feldera.actions() == []  # previewed, nothing stopped
    await until(lambda: feldera.pipelines["orders"].program_code == SQL_B, what="applied")
    assert at_stop[0]["program"]["pending"]["hash"] == status(kube)["program"]["hash"]
    # The preview lives in the status alone: one not written is made again (it only reads).
    assert feldera.count("diff") == 3 and feldera.count("stop") == 1


async def test_the_edition_is_read_before_a_first_pass_of_the_instance_decides_a_stop() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    feldera.edition = "Enterprise"
    running(feldera)
    r = make_reconciler(kube, feldera)  # no pass of the instance's loop has run
    spec = {"program": {"sql": SQL_B}, "bootstrap": {"policy": "Allow"}}
    await add_pipeline(r, kube, pipeline_body("orders", **spec))
    assert feldera.count("config") == 1
    assert ("stop", "orders", "force=false") in feldera.calls  # the checkpoint is kept


async def test_a_failing_step_is_an_action_failed_event_once_and_retried() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    error = FelderaServerError("boom", endpoint="PUT /v0/pipelines/orders", status=500)
    feldera.fail("put", error, count=3)
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders", program={"sql": SQL_A}))
    assert ready(status(kube))["reason"] == "FelderaError"
    assert condition(status(kube), "Synced")["status"] == "False"
    await until(lambda: is_ready(kube), within=5, what="created after the failures")
    assert feldera.count("put") == 4
    failed = [e for e in kube.events_of("orders") if e.reason == "ActionFailed"]
    assert len(failed) == 1 and failed[0].message.startswith("Could not create the pipeline")


async def test_a_failing_full_read_decides_no_run_state_action_either() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    # Stopped to be updated (by an operator that crashed since): started now, it would run the
    # old program and be stopped again.
    feldera.add("orders", program_code=SQL_A, storage_status="InUse")
    feldera.fail("get_all", FelderaServerError("boom", endpoint="GET", status=500))
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders", program={"sql": SQL_B}))
    assert ready(status(kube))["reason"] == "FelderaError"
    assert feldera.actions() == []
    await until(lambda: is_ready(kube), what="updated once the read works")
    assert feldera.actions() == [
        ("patch", "orders", "program_code"),
        ("start", "orders", "running"),
    ]


async def test_an_operator_restarted_after_the_stop_patches_and_repeats_nothing() -> None:
    kube, feldera = FakeKube(), FakeFeldera(instant=False)
    running(feldera)
    first = make_reconciler(kube, feldera)
    await add_pipeline(first, kube, pipeline_body("orders", program={"sql": SQL_A}))
    await edit(first, kube, program={"sql": SQL_B})
    assert feldera.actions() == [("stop", "orders")]
    await first.close()  # killed right after the stop
    feldera.settle()
    second = make_reconciler(kube, feldera)
    stored = kube.objects[(PLURAL, "default", "orders")]
    await second.on_pipeline_event(None, copy.deepcopy(stored))  # its start-up listing
    await observe_pass(second)
    assert feldera.actions() == [("stop", "orders"), ("patch", "orders", "program_code")]
    await until(lambda: feldera.count("start") == 1, what="started")
    feldera.settle()
    await until(lambda: is_ready(kube), what="Ready")
    assert feldera.count("diff") == 1 and feldera.count("stop") == 1


# ----------------------------------------------------------------------------- ObserveOnly


async def test_observe_only_reads_and_previews_and_never_writes() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    running(feldera)
    r = make_reconciler(kube, feldera)
    spec = {
        "managementPolicy": "ObserveOnly",
        "program": {"sql": SQL_B, "runtimeConfig": {"workers": 4}},
    }
    await add_pipeline(r, kube, pipeline_body("orders", **spec))
    await add_pipeline(r, kube, pipeline_body("missing", **spec))
    for _ in range(2):
        await observe_pass(r)
    assert ready(status(kube))["reason"] == "ObserveOnly"
    assert status(kube)["program"]["pending"]["diff"]["views"]["added"] == ["v2"]
    assert ready(status(kube, "missing"))["reason"] == "PipelineNotFound"
    assert feldera.actions() == []


# ----------------------------------------------------------------------------- ConfigMaps


async def test_a_configmap_edit_reconciles_the_resources_reading_it_and_no_other() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    r = make_reconciler(kube, feldera)
    await configmap_event(r, kube, None, SQL_A)
    feldera.add("other", status="Running", desired="Running")
    await add_pipeline(r, kube, pipeline_body("other"))
    await add_pipeline(r, kube, pipeline_body("orders", program=FROM_CM))
    await until(lambda: is_ready(kube) and is_ready(kube, "other"), what="both Ready")
    others = sum(1 for c in feldera.calls if c[1:2] == ("other",))
    await configmap_event(r, kube, "MODIFIED", SQL_B)
    # The event's own reconcile previewed, stopped and updated it.
    assert feldera.count("diff") == 1 and feldera.count("stop") == 1
    await until(lambda: is_ready(kube) and feldera.pipelines["orders"].program_code == SQL_B)
    assert sum(1 for c in feldera.calls if c[1:2] == ("other",)) == others
    assert kube.count("get_configmap") == 0
    # An edit that leaves the data as it is (a label, an annotation) costs nothing.
    calls = len(feldera.calls)
    await configmap_event(r, kube, "MODIFIED", SQL_B)
    assert len(feldera.calls) == calls


async def test_a_missing_then_unlabelled_configmap_is_said_so_and_labelling_it_applies() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    r = make_reconciler(kube, feldera)
    await add_pipeline(r, kube, pipeline_body("orders", program=FROM_CM))
    assert ready(status(kube))["reason"] == "ConfigMapNotFound"
    assert condition(status(kube), "Stalled")["status"] == "True"
    kube.add_configmap("default", "orders-sql", {"p.sql": SQL_A})  # not labelled: no event
    await observe_pass(r)
    message = ready(status(kube))["message"]
    assert ready(status(kube))["reason"] == "ConfigMapNotLabelled"
    assert "kubectl label configmap orders-sql -n default feldera.dev/program=true" in message
    assert feldera.actions() == []
    await configmap_event(r, kube, "ADDED", SQL_A)  # labelled: the watch delivers it
    await until(lambda: is_ready(kube), what="created once labelled")
    assert feldera.pipelines["orders"].program_code == SQL_A


async def test_a_configmap_that_loses_its_label_is_no_longer_read_from_the_watch() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    r = make_reconciler(kube, feldera)
    await configmap_event(r, kube, None, SQL_A)
    await add_pipeline(r, kube, pipeline_body("orders", program=FROM_CM))
    await until(lambda: is_ready(kube), what="Ready")
    body = kube.add_configmap("default", "orders-sql", {"p.sql": SQL_A})  # label removed
    await r.on_configmap_event("DELETED", body)  # as a label-selected watch tells it
    assert ready(status(kube))["reason"] == "ConfigMapNotLabelled"
    assert r.configmaps == {}


# ----------------------------------------------------------------------------- deletion


async def test_deletion_policy_delete_stops_clears_deletes_then_releases_the_resource() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    r = make_reconciler(kube, feldera)
    spec = {"program": {"sql": SQL_A}, "deletionPolicy": "Delete"}
    await add_pipeline(r, kube, pipeline_body("orders", **spec))
    await until(lambda: is_ready(kube), what="Ready")
    assert kube.objects[(PLURAL, "default", "orders")]["metadata"]["finalizers"] == [FINALIZER]
    before = len(feldera.actions())
    await delete(r, kube)
    await until(lambda: (PLURAL, "default", "orders") not in kube.objects, what="released")
    assert feldera.actions()[before:] == [
        ("stop", "orders"),
        ("clear", "orders"),
        ("delete", "orders"),
    ]
    assert "orders" not in feldera.pipelines
    assert reasons(kube)[-3:] == ["PipelineStopped", "StorageCleared", "PipelineDeleted"]
    assert kube.events_of("orders")[-1].message == "Deleted the pipeline (deletionPolicy: Delete)"


async def test_deletion_policy_delete_of_an_observe_only_resource_touches_nothing() -> None:
    kube, feldera = FakeKube(), FakeFeldera()
    running(feldera)
    r = make_reconciler(kube, feldera)
    spec = {"managementPolicy": "ObserveOnly", "deletionPolicy": "Delete"}
    await add_pipeline(r, kube, pipeline_body("orders", **spec))
    await delete(r, kube)
    await until(lambda: (PLURAL, "default", "orders") not in kube.objects, what="released")
    assert feldera.actions() == []
