"""The declared pipeline (spec.program) end to end: the real operator, kubectl, kube-apiserver's
audit log and the Feldera emulator in both editions, one test per behaviour.

Two sandboxes serve the module, one per edition, their operators with a 3 s period (so that
"at once" and "at the next period" can be told apart) and a 60 s external-stop grace (so that its
absence for program-managed pipelines shows). Each test uses pipelines of its own and deletes its
resources at the end (deletionPolicy Orphan leaves Feldera's pipelines, which then cost nothing),
so that the cost test sees only its own.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from leaks import assert_no_leaks

from feldera_operator.program import program_hash
from feldera_sandbox.processes import Process

from .conftest import (
    API_KEY,
    E2E,
    condition,
    is_ready,
    operator_defaults,
    pipeline_manifest,
    start_sandbox,
    unique,
)

pytestmark = pytest.mark.e2e

PERIOD = 3.0
OPERATOR_ARGS = ("--period", str(PERIOD), "--external-stop-grace", "60")

# A materialized table: a view added over it can be bootstrapped from a checkpoint (Enterprise).
TABLE = """CREATE TABLE orders (id BIGINT, amount INT) WITH ('materialized' = 'true',
  'connectors' = '[{"name": "live", "paused": true,
                    "transport": {"name": "datagen", "config": {}}}]');
"""
V1 = TABLE + "CREATE MATERIALIZED VIEW big AS SELECT * FROM orders WHERE amount > 100;\n"
V2 = V1 + "CREATE MATERIALIZED VIEW small AS SELECT * FROM orders WHERE amount < 10;\n"
V3 = V1 + "CREATE MATERIALIZED VIEW mid AS SELECT * FROM orders WHERE amount = 50;\n"
V4 = V3 + "CREATE MATERIALIZED VIEW tiny AS SELECT * FROM orders WHERE amount = 1;\n"
BROKEN = V2 + "CREATE VIEW oops AS SELECT * FROM nope;\n"  # line 6, column 35: 'nope'
STOP_ROUTE = "/v0/pipelines/{pipeline}/stop"


# ----------------------------------------------------------------------------- sandboxes


def _sandbox(tmp: Path, *feldera_args: str) -> Iterator[E2E]:
    sb = start_sandbox(tmp, *OPERATOR_ARGS, examples=False, feldera_args=feldera_args)
    try:
        yield E2E(sb)
        assert_no_leaks(sb, [API_KEY])
    finally:
        sb.stop()


@pytest.fixture(scope="module")
def oss(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    yield from _sandbox(tmp_path_factory.mktemp("program-oss"))


@pytest.fixture(scope="module")
def enterprise(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    yield from _sandbox(tmp_path_factory.mktemp("program-ent"), "--edition", "enterprise")


@pytest.fixture(params=["open-source", "enterprise"])
def edition(request: pytest.FixtureRequest) -> E2E:
    e2e: E2E = request.getfixturevalue("oss" if request.param == "open-source" else "enterprise")
    return e2e


# ----------------------------------------------------------------------------- vocabulary


def hash_of(sql: str, runtime: dict[str, Any] | None = None) -> str:
    return program_hash(
        sql=sql, udf_rust="", udf_toml="", program_config={}, runtime_config=runtime or {}
    )


def configmap(name: str, sql: str, *, labelled: bool = True) -> dict[str, Any]:
    labels = {"feldera.dev/program": "true"} if labelled else {}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "data": {"program.sql": sql},
    }


def program_pipeline(
    name: str,
    *,
    sql: str | None = None,
    from_configmap: str | None = None,
    runtime: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    program: dict[str, Any] = (
        {"sql": sql}
        if from_configmap is None
        else {"sqlFrom": {"configMapKeyRef": {"name": from_configmap, "key": "program.sql"}}}
    )
    if runtime is not None:
        program["runtimeConfig"] = runtime
    return pipeline_manifest(name, program=program, **spec)


def ready(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(condition(obj, "Ready") or {})


def program_status(e2e: E2E, name: str) -> dict[str, Any]:
    return dict((e2e.get(name).get("status") or {}).get("program") or {})


def wait_reason(e2e: E2E, name: str, reason: str, timeout: float = 30) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = e2e.get(name)
        current = obj["metadata"]["generation"] == (obj.get("status") or {}).get(
            "observedGeneration"
        )
        return obj if current and ready(obj).get("reason") == reason else None

    result: dict[str, Any] = e2e.wait(check, f"{name}: {reason}", timeout)
    return result


def stored(e2e: E2E, name: str) -> dict[str, Any]:
    result: dict[str, Any] = e2e.feldera("GET", f"/v0/pipelines/{name}?selector=all")
    return result


def running_program(e2e: E2E, name: str) -> str | None:
    """The SQL Feldera runs for `name`: compiled and Running (None otherwise)."""
    p = stored(e2e, name)
    if p["deployment_status"] != "Running" or p["program_status"] != "Success":
        return None
    return str(p["program_code"])


def actions(e2e: E2E, name: str, since: float = 0.0) -> list[dict[str, Any]]:
    """The state-changing calls Feldera got for pipeline `name` (oldest first)."""
    log = e2e.feldera("GET", "/_emulator/actions")["actions"]
    return [a for a in log if a["pipeline"] == name and a["wall"] >= since]


def verbs(e2e: E2E, name: str, since: float = 0.0) -> list[str]:
    return [a["action"] for a in actions(e2e, name, since)]


def listings(e2e: E2E) -> int:
    """Passes of the instance loop so far: each lists the pipelines once."""
    return int(e2e.sb.feldera_counts().get("GET /v0/pipelines", 0))


def next_passes(e2e: E2E, count: int = 1) -> None:
    """Wait until the instance loop has made `count` more passes."""
    target = listings(e2e) + count
    e2e.wait(lambda: listings(e2e) >= target, f"{count} pass(es)", timeout=PERIOD * count + 10)


def delete_resources(e2e: E2E, *names: str) -> None:
    e2e.sb.kubectl("delete", "fpl", *names, "--wait=true", "--timeout=60s")


def edit(e2e: E2E, name: str, **spec: Any) -> None:
    e2e.patch(name, {"spec": spec})


# ----------------------------------------------------------------------------- (1) creating


def test_a_missing_pipeline_is_created_from_its_configmap_or_inline_and_started_as_declared(
    edition: E2E,
) -> None:
    e2e = edition
    from_cm, inline = unique("create-cm"), unique("create-inline")
    e2e.apply(configmap(f"{from_cm}-sql", V1))
    live = [{"table": "orders", "connector": "live", "paused": False}]  # the SQL says paused
    e2e.apply(program_pipeline(from_cm, from_configmap=f"{from_cm}-sql", inputs=live))
    e2e.apply(program_pipeline(inline, sql=V1, paused=True))
    for name in (from_cm, inline):
        e2e.sb.kubectl("wait", "--for=condition=Ready", "--timeout=60s", f"fpl/{name}")
    for name, state in ((from_cm, "Running"), (inline, "Paused")):
        p = stored(e2e, name)
        assert (p["program_code"], p["program_status"]) == (V1, "Success")
        assert p["deployment_status"] == state
        program = program_status(e2e, name)
        assert program["hash"] == program["appliedHash"] == hash_of(V1)
        assert verbs(e2e, name)[:2] == ["put", "start"]
        e2e.wait_events(
            name,
            lambda evs: {"PipelineCreated", "PipelineStarted"} <= {ev["reason"] for ev in evs},
            "the Events of the creation and the start",
        )
    assert e2e.flags(from_cm)["orders.live"] is False
    delete_resources(e2e, from_cm, inline)


def test_a_configmap_edit_is_noticed_at_once_not_at_the_next_period(oss: E2E) -> None:
    e2e = oss
    name = unique("cm-edit")
    e2e.apply(configmap(f"{name}-sql", V1))
    e2e.apply(program_pipeline(name, from_configmap=f"{name}-sql"))
    e2e.wait_ready(name)
    next_passes(e2e)  # a pass just began: the next is a period away
    passes = listings(e2e)
    started = time.monotonic()
    e2e.apply(configmap(f"{name}-sql", V2))
    e2e.wait(lambda: program_status(e2e, name).get("hash") == hash_of(V2), "the edit noticed")
    noticed = time.monotonic() - started
    assert listings(e2e) == passes, "noticed through the ConfigMap's watch, before any pass"
    e2e.wait(lambda: running_program(e2e, name) == V2, "the new program running")
    running = time.monotonic() - started
    print(
        f"\nConfigMap edit (kubectl apply included) to the change noticed: {noticed:.2f} s; "
        f"to the new program running in Feldera (preview, stop, update, compile, start): "
        f"{running:.2f} s"
    )
    assert verbs(e2e, name)[2:] == ["stop", "patch", "start"]
    delete_resources(e2e, name)


# ----------------------------------------------------------------------------- (2) previewing


def test_a_change_is_previewed_before_anything_stops_and_broken_sql_stops_nothing(
    oss: E2E,
) -> None:
    e2e = oss
    name = unique("preview")
    e2e.apply(program_pipeline(name, sql=V1))
    e2e.wait_ready(name)
    # The stop's answer is held 3 s: a status written after it would come 3 s after it arrived.
    latency = 3.0
    e2e.feldera("POST", "/_emulator/faults", {"endpoint": STOP_ROUTE, "latency": latency})
    try:
        since = time.time()
        edit(e2e, name, program={"sql": V2})

        def previewed() -> float | None:
            pending = program_status(e2e, name).get("pending") or {}
            return time.time() if (pending.get("diff") or {}).get("views") else None

        seen = e2e.wait(previewed, "the preview's diff in status")
        assert e2e.pipeline(name)["deployment_desired_status"] == "Running"
        pending = program_status(e2e, name)["pending"]
        assert pending["hash"] == hash_of(V2)
        assert pending["diff"]["views"]["added"] == ["small"]
        assert pending["losesState"] is True  # open source: every restart starts empty
        assert pending["needsBootstrap"] is False
        e2e.wait(lambda: running_program(e2e, name) == V2, "the change applied")
        (stop,) = [a for a in actions(e2e, name, since) if a["action"] == "stop"]
        assert seen < stop["wall"] + latency / 2, "the diff was on the resource before the stop"
        assert verbs(e2e, name, since) == ["stop", "patch", "start"]
    finally:
        e2e.feldera("DELETE", "/_emulator/faults")
    e2e.wait_ready(name)

    since = time.time()
    edit(e2e, name, program={"sql": BROKEN})
    obj = wait_reason(e2e, name, "ProgramError")
    assert "6:35: Object 'nope' not found" in ready(obj)["message"]
    assert condition(obj, "Stalled")["status"] == "True"  # type: ignore[index]
    errors = obj["status"]["program"]["errors"]
    assert errors[0]["line"] == 6 and errors[0]["column"] == 35
    events = e2e.wait_events(
        name, lambda evs: any(ev["reason"] == "ProgramError" for ev in evs), "the Event"
    )
    program_error = [ev for ev in events if ev["reason"] == "ProgramError"]
    assert program_error[0]["type"] == "Warning"
    next_passes(e2e, 2)
    assert running_program(e2e, name) == V2  # the running program is untouched
    assert verbs(e2e, name, since) == []
    delete_resources(e2e, name)


# ----------------------------------------------------------------------------- (3) approvals


def test_a_bootstrap_waits_for_its_own_approval_and_reject_or_allow_decide(
    enterprise: E2E,
) -> None:
    e2e = enterprise
    name = unique("approve")
    e2e.apply(program_pipeline(name, sql=V1))
    e2e.wait_ready(name)  # started once: its storage is in use, a stop writes a checkpoint
    since = time.time()
    edit(e2e, name, program={"sql": V2})
    obj = wait_reason(e2e, name, "AwaitingApproval")
    pending = obj["status"]["program"]["pending"]
    assert (pending["hash"], pending["needsBootstrap"]) == (hash_of(V2), True)
    assert pending["waitingFor"] == "Approval" and pending["losesState"] is False
    assert hash_of(V2) in ready(obj)["message"]
    # A later edit makes another program pending: an approval of the first approves nothing.
    edit(e2e, name, program={"sql": V3})
    e2e.wait(
        lambda: (program_status(e2e, name).get("pending") or {}).get("hash") == hash_of(V3),
        "the new edit pending",
    )
    edit(e2e, name, bootstrap={"approve": hash_of(V2)})
    obj = wait_reason(e2e, name, "AwaitingApproval")
    assert obj["status"]["program"]["pending"]["hash"] == hash_of(V3)
    next_passes(e2e)
    assert running_program(e2e, name) == V1 and verbs(e2e, name, since) == []

    edit(e2e, name, bootstrap={"approve": hash_of(V3)})
    e2e.wait(lambda: running_program(e2e, name) == V3, "the approved change running")
    e2e.wait_ready(name)
    assert verbs(e2e, name, since) == ["stop", "patch", "start"]
    events = e2e.wait_events(
        name,
        lambda evs: any("bootstrap_policy=allow" in ev["message"] for ev in evs),
        "the start's Event",
    )
    messages = [ev["message"] for ev in events]
    assert any(m.startswith("Stopped the pipeline (with a checkpoint)") for m in messages)

    since = time.time()
    edit(e2e, name, program={"sql": V4}, bootstrap={"policy": "Reject"})
    obj = wait_reason(e2e, name, "BootstrapRejected")
    assert condition(obj, "Stalled")["status"] == "True"  # type: ignore[index]
    next_passes(e2e)
    assert running_program(e2e, name) == V3 and verbs(e2e, name, since) == []
    edit(e2e, name, bootstrap={"policy": "Allow"})
    e2e.wait(lambda: running_program(e2e, name) == V4, "the change allowed")
    e2e.wait_ready(name)
    delete_resources(e2e, name)


# ----------------------------------------------------------------------------- (4) Manual


def test_manual_never_stops_a_running_pipeline_and_applies_the_change_once_stopped(
    oss: E2E,
) -> None:
    e2e = oss
    name = unique("manual")
    e2e.apply(program_pipeline(name, sql=V1, updateStrategy="Manual"))
    e2e.wait_ready(name)
    since = time.time()
    edit(e2e, name, program={"sql": V2})
    obj = wait_reason(e2e, name, "UpdatePending")
    pending = obj["status"]["program"]["pending"]
    assert pending["waitingFor"] == "Stop"
    assert pending["diff"]["views"]["added"] == ["small"]
    next_passes(e2e, 2)
    assert running_program(e2e, name) == V1 and verbs(e2e, name, since) == []

    edit(e2e, name, stopped=True)
    e2e.wait(
        lambda: stored(e2e, name)["program_code"] == V2 and is_ready(e2e.get(name)),
        "updated while stopped",
    )
    assert stored(e2e, name)["deployment_status"] == "Stopped"
    edit(e2e, name, stopped=False)
    e2e.wait(lambda: running_program(e2e, name) == V2, "started with the new program")
    assert verbs(e2e, name, since) == ["stop", "patch", "start"]
    delete_resources(e2e, name)


# ----------------------------------------------------------------------------- (5) storage


def test_a_runtime_change_refused_with_storage_in_use_stalls_until_recreate_clears_it(
    oss: E2E,
) -> None:
    e2e = oss
    name = unique("storage")
    e2e.apply(program_pipeline(name, sql=V1, runtime={"workers": 4}))
    e2e.wait_ready(name)
    assert stored(e2e, name)["storage_status"] == "InUse"
    since = time.time()
    edit(e2e, name, program={"sql": V1, "runtimeConfig": {"workers": 2}})
    obj = wait_reason(e2e, name, "StorageInUse")
    assert "runtime_config.workers" in ready(obj)["message"]
    assert obj["status"]["program"]["pending"]["waitingFor"] == "StorageClear"
    next_passes(e2e)
    assert verbs(e2e, name, since) == [] and running_program(e2e, name) == V1

    edit(e2e, name, updateStrategy="Recreate")
    e2e.wait(
        lambda: (
            running_program(e2e, name) == V1 and stored(e2e, name)["runtime_config"]["workers"] == 2
        ),
        "recreated with 2 workers",
    )
    e2e.wait_ready(name)
    assert verbs(e2e, name, since) == ["stop", "clear", "patch", "start"]
    e2e.wait_events(
        name, lambda evs: "StorageCleared" in {ev["reason"] for ev in evs}, "the clear's Event"
    )
    delete_resources(e2e, name)


# ----------------------------------------------------------------------------- (6) ObserveOnly


def test_observe_only_reports_the_differences_and_writes_nothing_to_feldera(oss: E2E) -> None:
    e2e = oss
    name, missing = unique("observe"), unique("observe-missing")
    e2e.create_pipeline(name, V1)
    e2e.feldera("POST", f"/v0/pipelines/{name}/start?initial=running")
    e2e.wait(lambda: running_program(e2e, name) == V1, "running in Feldera")
    since = time.time()
    spec = {"managementPolicy": "ObserveOnly", "runtime": {"workers": 3}}
    e2e.apply(program_pipeline(name, sql=V2, **spec))
    e2e.apply(program_pipeline(missing, sql=V2, **spec))
    obj = wait_reason(e2e, name, "ObserveOnly")
    pending = obj["status"]["program"]["pending"]
    assert pending["diff"]["views"]["added"] == ["small"]
    assert {"program_code", "runtime_config.workers"} <= set(pending["changedFields"])
    assert "not applied" in ready(obj)["message"]
    wait_reason(e2e, missing, "PipelineNotFound")
    next_passes(e2e, 2)
    assert verbs(e2e, name, since) == verbs(e2e, missing, since) == []
    assert running_program(e2e, name) == V1
    delete_resources(e2e, name, missing)


# ----------------------------------------------------------------------------- (7) crash safety


def test_an_operator_killed_after_the_stop_and_after_the_update_finishes_each_step_once(
    tmp_path: Path,
) -> None:
    sb = start_sandbox(tmp_path, "--period", "1", examples=False)
    try:
        e2e = E2E(sb)
        name = unique("crash")
        e2e.apply(program_pipeline(name, sql=V1))
        e2e.wait_ready(name)
        # Slow enough that the killed operator cannot have taken the next step: a stop takes
        # 1.5 s to settle, a compilation 4 x 0.5 s.
        e2e.feldera("PATCH", "/_emulator/settings", {"delay": 1.5, "compile_delay": 0.5})
        since = time.time()
        edit(e2e, name, program={"sql": V2})
        kill_after(e2e, name, since, "stop")
        sb.start_operator(*operator_defaults(sb), name="operator-2")
        kill_after(e2e, name, since, "patch")
        sb.start_operator(*operator_defaults(sb), name="operator-3")
        e2e.wait(lambda: running_program(e2e, name) == V2, "the update finished", timeout=60)
        e2e.wait_ready(name)
        assert verbs(e2e, name, since) == ["stop", "patch", "start"]
        assert sb.feldera_counts()["POST /v0/pipelines/{pipeline}/diff"] == 1
    finally:
        sb.stop()


def kill_after(
    e2e: E2E, name: str, since: float, action: str, operator: Process | None = None
) -> None:
    """SIGKILL `operator` (the running one by default) as soon as Feldera has answered its
    `action`."""
    e2e.wait(lambda: action in verbs(e2e, name, since), f"the {action}", timeout=30)
    operator = operator or next(p for p in reversed(e2e.sb.operators) if p.running)
    operator.signal(signal.SIGKILL)
    e2e.wait(lambda: not operator.running, "the operator gone")


# ----------------------------------------------------------------------------- (8) deletion


def test_deletion_policy_delete_removes_the_pipeline_from_feldera_then_the_finalizer(
    edition: E2E,
) -> None:
    e2e = edition
    name = unique("delete")
    e2e.apply(program_pipeline(name, sql=V1, deletionPolicy="Delete"))
    e2e.wait_ready(name)
    assert "feldera.dev/stop-pipeline" in e2e.get(name)["metadata"]["finalizers"]
    e2e.sb.kubectl("delete", "fpl", name, "--wait=false")
    e2e.wait(lambda: e2e.sb.get("felderapipelines", name) is None, "the resource gone")
    gone_at = time.time()
    with pytest.raises(RuntimeError, match="404"):
        stored(e2e, name)
    steps = actions(e2e, name)
    assert [a["action"] for a in steps][-3:] == ["stop", "clear", "delete"]
    assert steps[-1]["wall"] < gone_at
    e2e.wait_events(
        name,
        lambda evs: (
            {"PipelineStopped", "StorageCleared", "PipelineDeleted"} <= {ev["reason"] for ev in evs}
        ),
        "the deletion's Events",
    )


# ----------------------------------------------------------------------------- (9) cost


def test_a_converged_program_costs_no_extra_feldera_call_and_no_kubernetes_write(
    edition: E2E,
) -> None:
    e2e = edition
    from_cm, inline = unique("cost-cm"), unique("cost-inline")
    e2e.apply(configmap(f"{from_cm}-sql", V1))
    e2e.apply(program_pipeline(from_cm, from_configmap=f"{from_cm}-sql"))
    e2e.apply(program_pipeline(inline, sql=V1, runtime={"workers": 2}))
    for name in (from_cm, inline):
        e2e.wait_ready(name)
    next_passes(e2e)
    e2e.feldera("DELETE", "/_emulator/requests")
    e2e.sb.reset_kube_counts()
    next_passes(e2e, 3)
    counts = e2e.sb.feldera_counts()
    # Per pass: the listing, and /stats of each deployed pipeline. No full read, no preview.
    assert set(counts) <= {"GET /v0/pipelines", "GET /v0/pipelines/{pipeline}/stats"}, counts
    writes = [e for e in e2e.sb.operator_requests() if e["verb"] not in ("get", "list", "watch")]
    assert writes == [], writes
    reads = {
        (e["verb"], (e.get("objectRef") or {}).get("resource")) for e in e2e.sb.operator_requests()
    }
    assert ("get", "configmaps") not in reads  # the watch holds the ConfigMap
    delete_resources(e2e, from_cm, inline)


def test_only_configmaps_labelled_for_programs_are_listed_and_watched(oss: E2E) -> None:
    plane = oss.sb.plane
    assert plane is not None
    user = oss.sb.operator_user

    def requests() -> list[dict[str, Any]]:
        return [
            event
            for event in map(json.loads, plane.audit_log.read_text().split("\n")[:-1])
            if (event.get("user") or {}).get("username") == user
            and (event.get("objectRef") or {}).get("resource") == "configmaps"
            and event.get("verb") in ("list", "watch")
        ]

    oss.wait(lambda: {e["verb"] for e in requests()} == {"list", "watch"}, "the watch begun")
    for event in requests():
        query = parse_qs(urlsplit(event["requestURI"]).query)
        assert query["labelSelector"] == ["feldera.dev/program=true"], event["requestURI"]


# ----------------------------------------------------------------------------- (10) external stops


def test_a_program_managed_pipeline_stopped_by_someone_else_is_started_again_without_grace(
    oss: E2E,
) -> None:
    e2e = oss
    name = unique("stopped-outside")
    e2e.apply(program_pipeline(name, sql=V1))
    e2e.wait_ready(name)
    e2e.feldera("POST", f"/v0/pipelines/{name}/stop?force=true")
    e2e.wait(lambda: stored(e2e, name)["deployment_status"] == "Stopped", "stopped outside")
    # The grace is 60 s here: started again within a few periods means no grace applied.
    e2e.wait(lambda: running_program(e2e, name) == V1, "started again", timeout=4 * PERIOD)
    assert f"default/{name}: the pipeline was stopped outside" not in e2e.operator_log()
    delete_resources(e2e, name)
