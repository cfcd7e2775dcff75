"""Kubernetes misbehaving under a running operator, as only a real API server shows it.

An admission policy refusing the operator's Events, or its status writes for a while; someone
else writing the status; a field manager owning one connector entry by server-side apply; the
finalizer added while others update the object; kube-apiserver killed and restarted; etcd
compacted so that watches resume into `410 Gone` and a resource deleted meanwhile. Each time: no
Feldera action is repeated or lost, the statuses end up right, and nothing crashes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from e2e.conftest import E2E, condition, is_ready, operator_defaults, start_sandbox, unique
from e2e.test_ha import HA_VALUES, second_replica
from e2e.test_operator import INPUT_ACTION, PIPELINE_ACTIONS, standard
from e2e.test_program import (
    V1,
    V2,
    edit,
    hash_of,
    kill_after,
    program_pipeline,
    program_status,
    running_program,
    verbs,
)

from feldera_sandbox.controlplane import request_key
from feldera_sandbox.feldera_emulator import ANY_ROUTE

from .conftest import PERIOD, Faults
from .test_feldera_faults import ready_pipeline

pytestmark = pytest.mark.faults

LIVE_ON = [{"op": "replace", "path": "/spec/inputs/1/paused", "value": False}]


def actions(f: Faults) -> int:
    """Every action the operator sent to Feldera so far."""
    return sum(f.count(k) for k in (INPUT_ACTION, *PIPELINE_ACTIONS))


def passes(f: Faults, n: int) -> None:
    """Wait for `n` more observation passes of the default instance."""
    start = f.count("GET /v0/pipelines")
    f.wait(
        lambda: f.count("GET /v0/pipelines") >= start + n,
        f"{n} more observation passes",
        timeout=n * PERIOD + 15,
    )


def test_events_refused_by_an_admission_policy_are_logged_and_delay_nothing(
    faults: Faults,
) -> None:
    name = ready_pipeline(faults, "noevents")
    with faults.refuse("", "events", "CREATE", probe=("create", "event")):
        faults.patch(name, LIVE_ON, "json")
        faults.wait(lambda: faults.flags(name)["orders.live"] is False, "live started")
        faults.wait_ready(name)
        faults.wait(lambda: faults.refused("create events") >= 1, "an Event refused")
    assert "could not post Event" in faults.operator_log()


def test_status_writes_refused_for_a_while_then_land_and_no_action_is_repeated(
    faults: Faults,
) -> None:
    name = ready_pipeline(faults, "nostatus")
    before = actions(faults)
    with faults.refuse(
        "feldera.dev", "felderapipelines/status", "UPDATE", probe=("patch-status", name)
    ):
        faults.patch(name, LIVE_ON, "json")
        faults.wait(lambda: faults.flags(name)["orders.live"] is False, "live started")
        faults.wait(
            lambda: faults.refused("patch felderapipelines/status") >= 2,
            "status writes refused and retried",
        )
        assert not is_ready(faults.get(name))  # the old status stays, for the old generation
    obj = faults.wait_ready(name)
    assert obj["status"]["connectors"] == "4/4 active"
    assert actions(faults) - before == 1  # one connector start, never repeated


def test_a_status_written_by_someone_else_is_put_right(faults: Faults) -> None:
    name = ready_pipeline(faults, "foreign")
    right = faults.get(name)["status"]
    wrong = {"status": {"state": "Stopped", "connectors": "0/4 active"}}
    faults.sb.kubectl(
        "patch", "fpl", name, "--subresource=status", "--type=merge", "-p", json.dumps(wrong)
    )
    faults.wait(
        lambda: faults.get(name)["status"]["state"] == right["state"],
        "the operator's status back",
        timeout=3 * PERIOD + 10,
    )
    assert faults.get(name)["status"]["connectors"] == right["connectors"]


def test_the_finalizer_lands_while_others_update_the_object(faults: Faults) -> None:
    """The finalizer patch carries the resourceVersion it read: updates racing it make it a
    real 409, retried with the next version until the finalizer is on."""
    name = unique("race")
    faults.create_pipeline(name)
    faults.apply(standard(name, deletionPolicy="Stop"))
    for i in range(15):
        faults.sb.kubectl("label", "fpl", name, f"race={i}", "--overwrite")
    faults.wait(
        lambda: "feldera.dev/stop-pipeline" in faults.get(name)["metadata"].get("finalizers", []),
        "the finalizer on",
    )
    faults.wait_ready(name)


SSA = ("apply", "--server-side", "-f", "-")


def one_entry(name: str, paused: bool) -> str:
    return json.dumps(
        {
            "apiVersion": "feldera.dev/v1alpha1",
            "kind": "FelderaPipeline",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"inputs": [{"table": "orders", "connector": "live", "paused": paused}]},
        }
    )


def test_a_field_manager_owns_one_connector_entry_while_the_operator_writes_status(
    faults: Faults,
) -> None:
    """The README's recipe on a resource applied server-side (Argo CD with ServerSideApply,
    Flux, `kubectl apply --server-side`): real managedFields, no entry lost, no conflict with
    the operator's status writes."""
    name = unique("ssa")
    faults.create_pipeline(name)
    faults.sb.kubectl(*SSA, "--field-manager=gitops", input=json.dumps(standard(name)))
    faults.wait_ready(name)
    # gitops declared `live` paused: taking the field over is explicit.
    faults.sb.kubectl(
        *SSA, "--field-manager=oncall", "--force-conflicts", input=one_entry(name, False)
    )
    faults.wait(lambda: faults.flags(name)["orders.live"] is False, "live started")
    obj = faults.wait_ready(name)

    managers = {m["manager"]: m for m in obj["metadata"]["managedFields"]}
    key = 'k:{"connector":"live","table":"orders"}'
    assert "f:paused" in managers["oncall"]["fieldsV1"]["f:spec"]["f:inputs"][key]
    assert "f:paused" not in managers["gitops"]["fieldsV1"]["f:spec"]["f:inputs"][key]
    status_writers = [m for m in managers.values() if m.get("subresource") == "status"]
    assert status_writers and all("f:status" in m["fieldsV1"] for m in status_writers)
    # The other entries are still there, as declared; the operator's status writes took none.
    declared = {(i["table"], i["connector"]): i["paused"] for i in obj["spec"]["inputs"]}
    assert declared == {("orders", "backfill"): False, ("orders", "live"): False}
    # Ownership is real: another manager changing that field without forcing is refused.
    refused = faults.sb.kubectl(
        *SSA, "--field-manager=gitops", input=one_entry(name, True), check=False
    )
    assert refused.returncode != 0 and "oncall" in refused.stderr, refused.stderr


def test_readme_warning_a_client_side_applied_resource_loses_entries_to_the_ssa_recipe(
    faults: Faults,
) -> None:
    """Why the README sends users of client-side `kubectl apply` to the JSON patch instead:
    kubectl's server-side apply migrates the client-side manager's fields to the new manager,
    which then owns the whole list and drops every entry it did not apply."""
    name = ready_pipeline(faults, "csa")  # kubectl apply, client side
    faults.sb.kubectl(
        *SSA, "--field-manager=oncall", "--force-conflicts", input=one_entry(name, False)
    )
    entries = [(i["table"], i["connector"]) for i in faults.get(name)["spec"]["inputs"]]
    assert entries == [("orders", "live")]


def test_kube_apiserver_killed_and_restarted(faults: Faults) -> None:
    """While Kubernetes is down the operator still holds Feldera to the spec it last saw (it
    needs Kubernetes only to learn of changes and to report); afterwards its watches resume, a
    new change is acted on, and every status is right. No action twice, no false alarm."""
    plane = faults.sb.plane
    assert plane is not None
    drifted, changed = ready_pipeline(faults, "kdown"), ready_pipeline(faults, "kdown")
    log_before = len(faults.operator_log())
    plane.kill_apiserver()
    try:
        faults.feldera("POST", f"/v0/pipelines/{drifted}/tables/orders/connectors/backfill/pause")
        before = faults.count(INPUT_ACTION)  # the test's own pause counted
        faults.wait(
            lambda: faults.flags(drifted)["orders.backfill"] is False,
            "drift corrected with Kubernetes down",
            timeout=3 * PERIOD + 10,
        )
    finally:
        plane.restart_apiserver()
    faults.patch(changed, {"spec": {"paused": True}})
    faults.wait(
        lambda: faults.pipeline(changed)["deployment_status"] == "Paused",
        "a change made after the restart acted on",
        timeout=30,
    )
    for name in (drifted, changed):
        faults.wait_ready(name, timeout=30)
    assert faults.count(INPUT_ACTION) - before == 1  # the drift, corrected once
    since = faults.operator_log()[log_before:]
    assert "SecretNotFound" not in since, since[-3000:]
    assert not [e for e in faults.events(drifted) if e["reason"] == "SecretNotFound"]


def operator_actions_on(f: Faults, pipeline: str) -> int:
    """State-changing calls to one pipeline since the action log was reset (the test's own
    drift included; the operator's are the rest)."""
    return sum(
        1 for a in f.sb.feldera("GET", "/_emulator/actions")["actions"] if a["pipeline"] == pipeline
    )


def test_watches_resumed_into_410_gone_resync_without_a_burst(faults: Faults) -> None:
    """etcd compacted while kube-apiserver was down: kopf's watches resume from a version that
    no longer exists, get 410 Gone and list again. kopf tells nobody what the new listing lacks,
    so a resource deleted meanwhile (from etcd: no watch ever saw it) is forgotten at its first
    status write, which Kubernetes answers 404: its pipeline gets at most the one correction
    decided before that write, then nothing more."""
    plane = faults.sb.plane
    assert plane is not None
    kept, ghost = ready_pipeline(faults, "resync"), ready_pipeline(faults, "ghost")
    plane.kill_apiserver()
    try:
        assert plane.etcd_delete(f"/registry/feldera.dev/felderapipelines/default/{ghost}") == 1
        plane.compact_etcd()
        faults.sb.reset_kube_counts()
        before = actions(faults)
    finally:
        plane.restart_apiserver()
    faults.wait(
        lambda: faults.sb.kube_counts().get("list felderapipelines", 0) >= 1,
        "the operator listing FelderaPipelines again",
        timeout=60,
    )
    faults.sb.feldera("DELETE", "/_emulator/actions")
    pause = f"/v0/pipelines/{ghost}/tables/orders/connectors/backfill/pause"
    faults.feldera("POST", pause)
    faults.patch(kept, LIVE_ON, "json")
    faults.wait(lambda: faults.flags(kept)["orders.live"] is False, "a new change acted on")
    faults.wait_ready(kept)
    passes(faults, 3)
    assert operator_actions_on(faults, ghost) - 1 <= 1  # the test's pause, one correction at most
    faults.wait(
        lambda: "is gone; forgetting it" in faults.operator_log(), "the deleted resource forgotten"
    )
    faults.feldera("POST", pause)  # drift again: nobody corrects it now
    passes(faults, 3)
    assert faults.flags(ghost)["orders.backfill"] is True, "a forgotten resource was acted on"
    assert actions(faults) - before <= 3  # the new change, the test's pauses; no burst
    # Writes to the two resources of this test (other tests' resources share the cluster): the
    # change's status, one write or two; nothing for the ghost, no burst.
    ours = [
        e
        for e in faults.sb.operator_requests()
        if e.get("verb") not in ("get", "list", "watch", "create")
        and (e.get("objectRef") or {}).get("name") in (kept, ghost)
    ]
    assert len(ours) <= 2, [(request_key(e), e["objectRef"]["name"]) for e in ours]


def test_a_hung_api_server_makes_the_leader_step_down_not_hang(tmp_path: Path) -> None:
    """kube-apiserver frozen (SIGSTOP: connections accepted, never answered, as a half-open
    connection or a partition looks): every call of the operator is bounded, and the leader,
    unable to renew its Lease within the renew deadline, exits (a supervisor restarts it)
    rather than act on without proving it leads. Once the server answers again, a new process
    leads and acts."""
    sb = start_sandbox(tmp_path, examples=False, chart_values=HA_VALUES)
    try:
        e2e = E2E(sb)
        plane, leader = sb.plane, sb.operators[0]
        assert plane is not None
        e2e.wait(lambda: "leading (lease" in leader.log_text(), "the operator leads")
        name = unique("hung")
        e2e.create_pipeline(name)
        e2e.apply(standard(name))
        e2e.wait_ready(name)
        plane.freeze_apiserver()
        try:
            # Renew deadline 2 s (2/3 of the lease); a bounded call fails within it.
            e2e.wait(lambda: not leader.running, "the leader exits", timeout=15)
        finally:
            plane.thaw_apiserver()
        assert "lost the lease" in leader.log_text(), leader.log_tail(20)
        restarted = sb.start_operator(*operator_defaults(sb), name="operator-restarted")
        e2e.wait(lambda: "leading (lease" in restarted.log_text(), "the new process leads")
        e2e.patch(name, {"spec": {"paused": True}})
        e2e.wait(lambda: e2e.pipeline(name)["deployment_status"] == "Paused", "it acts")
    finally:
        sb.stop()


def test_the_leader_killed_while_feldera_is_down_each_action_once(tmp_path: Path) -> None:
    """Feldera down; a change is declared; the leader dies (SIGKILL) before it could act. The
    standby takes over and, once Feldera answers, applies the change exactly once."""
    sb = start_sandbox(tmp_path, examples=False, chart_values=HA_VALUES)
    try:
        e2e = E2E(sb)
        leader, standby = second_replica(e2e)
        names = [unique("failover") for _ in range(2)]
        for name in names:
            e2e.create_pipeline(name)
            e2e.apply(standard(name))
        for name in names:
            e2e.wait_ready(name)
        sb.feldera("DELETE", "/_emulator/actions")
        down = {"endpoint": ANY_ROUTE, "status": 503, "count": 0}
        sb.feldera("POST", "/_emulator/faults", down)
        for name in names:
            e2e.patch(name, {"spec": {"paused": True}})
        e2e.wait(
            lambda: all(
                (condition(e2e.get(n), "Synced") or {}).get("status") == "False" for n in names
            ),
            "the leader says Feldera is down",
        )
        leader.kill()
        e2e.wait(lambda: "leading (lease" in standby.log_text(), "the standby leads", timeout=20)
        sb.feldera("DELETE", "/_emulator/faults")
        for name in names:
            e2e.wait(lambda n=name: e2e.pipeline(n)["deployment_status"] == "Paused", "paused")
            e2e.wait_ready(name)
        pauses = [
            a for a in sb.feldera("GET", "/_emulator/actions")["actions"] if a["action"] == "pause"
        ]
        assert sorted(a["pipeline"] for a in pauses) == sorted(names)  # each exactly once
    finally:
        sb.stop()


def test_the_leader_killed_mid_program_update_the_standby_finishes_it_each_step_once(
    tmp_path: Path,
) -> None:
    """Two replicas; a program change is under way (the pipeline stopped for it); the leader dies
    (SIGKILL) before the PATCH. The standby takes over and finishes the update from where it
    stands: one stop, one PATCH, one start, one preview; the new program runs."""
    sb = start_sandbox(tmp_path, examples=False, chart_values=HA_VALUES)
    try:
        e2e = E2E(sb)
        leader, standby = second_replica(e2e)
        name = unique("failover-program")
        e2e.apply(program_pipeline(name, sql=V1))
        e2e.wait_ready(name)
        # A stop that takes 1.5 s to settle: the leader, killed when Feldera has answered the
        # stop, cannot have sent the PATCH yet.
        sb.feldera("PATCH", "/_emulator/settings", {"delay": 1.5, "compile_delay": 0.2})
        since = time.time()
        edit(e2e, name, program={"sql": V2})
        kill_after(e2e, name, since, "stop", leader)
        e2e.wait(lambda: "leading (lease" in standby.log_text(), "the standby leads", timeout=20)
        e2e.wait(lambda: running_program(e2e, name) == V2, "the update finished", timeout=60)
        e2e.wait_ready(name)
        assert verbs(e2e, name, since) == ["stop", "patch", "start"]
        assert sb.feldera_counts()["POST /v0/pipelines/{pipeline}/diff"] == 1
        assert program_status(e2e, name)["appliedHash"] == hash_of(V2)
    finally:
        sb.stop()
