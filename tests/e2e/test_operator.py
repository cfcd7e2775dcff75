"""The operator end to end: real `feldera-operator run` (kopf), real kubectl, both emulators.

Each test uses its own Feldera pipeline and FelderaPipeline, so they share one sandbox.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from feldera_sandbox.sandbox import EXAMPLES_DIR

from .conftest import (
    E2E,
    PERIOD,
    SQL,
    condition,
    connector_entry,
    is_ready,
    needs_local_plane,
    operator_defaults,
    pipeline_manifest,
    start_sandbox,
    unique,
)

pytestmark = pytest.mark.e2e

INPUT_ACTION = "POST /v0/pipelines/{pipeline}/tables/{table}/connectors/{connector}/{action}"
OUTPUT_ACTION = "POST /v0/pipelines/{pipeline}/views/{view}/connectors/{connector}/{action}"
PIPELINE_ACTIONS = [
    f"POST /v0/pipelines/{{pipeline}}/{verb}" for verb in ("start", "pause", "resume", "stop")
]


def standard(name: str, *, live: bool = True, **spec: object) -> dict[str, object]:
    """A FelderaPipeline for the SQL in conftest: backfill running, live paused, sink running."""
    return pipeline_manifest(
        name,
        inputs=[
            {"table": "orders", "connector": "backfill", "paused": False},
            {"table": "orders", "connector": "live", "paused": live},
        ],
        outputs=[{"view": "big_orders", "connector": "sink", "paused": False}],
        **spec,
    )


def test_examples_apply_as_they_are_and_declared_paused_connector_is_paused(
    tmp_path: Path,
) -> None:
    # Its own sandbox, with Feldera listening where the examples' FelderaInstance points.
    sb = start_sandbox(tmp_path, examples=True)
    try:
        e2e = E2E(sb)
        e2e.create_pipeline("orders", (EXAMPLES_DIR / "orders.sql").read_text())
        sb.kubectl("apply", "-f", str(EXAMPLES_DIR))
        # kubectl wait returns only for Ready=True of the current generation.
        sb.kubectl("wait", "--for=condition=Ready", "--timeout=30s", "fpl/orders")
        obj = e2e.get("orders")
        live = connector_entry(obj, "orders", "live")
        assert live is not None
        assert live["state"] == "Paused" and live["active"] is False and live["declared"] is True
        assert e2e.flags("orders")["orders.live"] is True
        assert e2e.pipeline("orders")["deployment_status"] == "Running"
        sb.kubectl("wait", "--for=condition=Ready", "--timeout=30s", "fi/local")
        assert sb.kubectl_json("get", "fi", "local")["status"]["version"] == "0.369.0"
        # The pipeline declared whole: created from its ConfigMap's SQL, compiled, started.
        sb.kubectl("wait", "--for=condition=Ready", "--timeout=60s", "fpl/order-totals")
        (configmap, _) = yaml.safe_load_all((EXAMPLES_DIR / "order-totals.yaml").read_text())
        totals = e2e.feldera("GET", "/v0/pipelines/order-totals?selector=all")
        assert totals["program_code"] == configmap["data"]["program.sql"]
        assert totals["runtime_config"]["workers"] == 2
        assert totals["deployment_status"] == "Running"
    finally:
        sb.stop()


def test_unpausing_a_connector_starts_it_and_active_follows_the_pipeline(e2e: E2E) -> None:
    name = unique("unpause")
    e2e.create_pipeline(name)
    e2e.apply(standard(name))
    e2e.wait_ready(name)
    assert e2e.flags(name)["orders.live"] is True

    e2e.patch(name, [{"op": "replace", "path": "/spec/inputs/1/paused", "value": False}], "json")
    e2e.wait(lambda: e2e.flags(name)["orders.live"] is False, "live started in Feldera")
    obj = e2e.wait_ready(name)
    assert connector_entry(obj, "orders", "live")["active"] is True

    # Pipeline Paused + connector Running: not active (the seed's table).
    e2e.patch(name, {"spec": {"paused": True}})
    e2e.wait(lambda: e2e.pipeline(name)["deployment_status"] == "Paused", "pipeline paused")
    obj = e2e.wait_ready(name)
    live = connector_entry(obj, "orders", "live")
    assert live["state"] == "Running" and live["active"] is False
    assert obj["status"]["connectors"] == "0/4 active"

    # Output connectors the same way.
    e2e.patch(name, {"spec": {"paused": False}})
    e2e.patch(name, [{"op": "replace", "path": "/spec/outputs/0/paused", "value": True}], "json")
    e2e.wait(
        lambda: e2e.flags(name, "outputs")["big_orders.sink"] is True, "sink paused in Feldera"
    )
    obj = e2e.wait_ready(name)
    sink = connector_entry(obj, "big_orders", "sink", "outputs")
    assert sink["state"] == "Paused" and sink["active"] is False
    assert connector_entry(obj, "orders", "live")["active"] is True


def test_pipeline_pause_resume_stop_and_start_paused(e2e: E2E) -> None:
    name = unique("lifecycle")
    e2e.create_pipeline(name)
    e2e.apply(standard(name))
    e2e.wait_ready(name)

    e2e.patch(name, {"spec": {"paused": True}})
    e2e.wait(lambda: e2e.pipeline(name)["deployment_status"] == "Paused", "paused")
    e2e.wait_ready(name)
    e2e.patch(name, {"spec": {"paused": False}})
    e2e.wait(lambda: e2e.pipeline(name)["deployment_status"] == "Running", "resumed")
    e2e.wait_ready(name)

    e2e.patch(name, {"spec": {"stopped": True}})
    e2e.wait(lambda: e2e.pipeline(name)["deployment_status"] == "Stopped", "stopped")
    obj = e2e.wait_ready(name)
    assert obj["status"]["state"] == "Stopped"

    # From Stopped with paused: true the operator uses start?initial=paused, so the pipeline
    # comes up Paused and is never resumed.
    e2e.patch(name, {"spec": {"stopped": False, "paused": True}})
    e2e.wait(lambda: e2e.pipeline(name)["deployment_status"] == "Paused", "started paused")
    e2e.wait_ready(name)
    wanted = {
        ("PipelineStopped", "Stopped the pipeline"),
        ("PipelineStarted", "Started the pipeline (paused)"),
    }
    events = e2e.wait_events(
        name, lambda evs: wanted <= {(e["reason"], e["message"]) for e in evs}, "their Events"
    )
    messages = [(e["reason"], e["message"]) for e in events]
    # the earlier explicit resume
    assert messages.count(("PipelineResumed", "Resumed the pipeline")) == 1


def test_connector_paused_behind_the_operators_back_is_started_again(e2e: E2E) -> None:
    name = unique("drift")
    e2e.create_pipeline(name)
    e2e.apply(standard(name))
    e2e.wait_ready(name)

    started = time.monotonic()
    e2e.feldera("POST", f"/v0/pipelines/{name}/tables/orders/connectors/backfill/pause")
    e2e.wait(
        lambda: e2e.flags(name)["orders.backfill"] is False,
        "backfill started again",
        timeout=3 * PERIOD + 5,
    )
    assert time.monotonic() - started < 2 * PERIOD + 2  # within about one period
    e2e.wait(
        lambda: any(e["reason"] == "DriftCorrected" for e in e2e.events(name)),
        "a DriftCorrected Event",
    )


def test_restart_restoring_other_flags_is_corrected_and_undeclared_are_untouched(
    e2e: E2E,
) -> None:
    name = unique("restart")
    e2e.create_pipeline(name)
    # `live` is paused in the SQL; declare it running. `extra` is not declared at all.
    e2e.apply(standard(name, live=False))
    e2e.wait(lambda: e2e.flags(name)["orders.live"] is False, "live started")
    e2e.wait_ready(name)
    # Somebody pauses the undeclared connector: the operator must leave it so.
    e2e.feldera("POST", f"/v0/pipelines/{name}/tables/orders/connectors/extra/pause")

    # A restart that takes flags from the SQL (open-source stop?force=true) brings live back
    # paused: the operator corrects it.
    e2e.feldera("PATCH", "/_emulator/settings", {"restore": "sql"})
    try:
        e2e.feldera("POST", f"/v0/pipelines/{name}/stop?force=true")
        e2e.wait(lambda: e2e.pipeline(name)["deployment_status"] == "Stopped", "stopped")
    finally:
        e2e.feldera("PATCH", "/_emulator/settings", {"restore": "checkpoint"})
    e2e.wait(
        lambda: e2e.pipeline(name)["deployment_status"] == "Running", "restarted by the operator"
    )
    e2e.wait(lambda: e2e.flags(name)["orders.live"] is False, "live corrected after restart")
    obj = e2e.wait_ready(name)
    extra = connector_entry(obj, "orders", "extra")
    assert extra is not None and extra["declared"] is False
    # `extra` came back from the SQL unpaused; whatever it is, the operator never acted on it.
    before = e2e.flags(name)["orders.extra"]
    e2e.feldera("POST", f"/v0/pipelines/{name}/tables/orders/connectors/extra/pause")
    lists = e2e.sb.feldera_counts().get("GET /v0/pipelines", 0)
    e2e.wait(
        lambda: e2e.sb.feldera_counts().get("GET /v0/pipelines", 0) >= lists + 4,
        "two more observation periods",
    )
    assert e2e.flags(name)["orders.extra"] is True, f"undeclared connector touched ({before})"


def test_unknown_connector_is_named_and_recovers_when_it_appears(e2e: E2E) -> None:
    name = unique("unknown")
    e2e.create_pipeline(name)
    manifest = standard(name)
    manifest["spec"]["inputs"].append(  # type: ignore[index]
        {"table": "orders", "connector": "later", "paused": False}
    )
    e2e.apply(manifest)

    def not_found() -> dict[str, object] | None:
        obj = e2e.get(name)
        ready = condition(obj, "Ready")
        return obj if ready and ready["reason"] == "ConnectorNotFound" else None

    obj = e2e.wait(not_found, "ConnectorNotFound")
    assert "orders.later" in condition(obj, "Ready")["message"]
    assert condition(obj, "Stalled")["status"] == "True"
    assert connector_entry(obj, "orders", "later")["reason"] == "ConnectorNotFound"

    # The team adds the connector to the SQL the way deploy tools do (Feldera's dbt adapter):
    # stop, poll until Stopped, PATCH the program. The operator does not start the pipeline
    # again meanwhile (it was stopped by someone else: --external-stop-grace), so the PATCH is
    # not refused with UpdateRestrictedToStopped; once the new version compiled it starts it.
    sql = SQL.replace(
        '{"name": "extra",',
        '{"name": "later", "paused": true, "transport": {"name": "datagen", '
        '"config": {}}},\n  {"name": "extra",',
    )
    e2e.feldera("POST", f"/v0/pipelines/{name}/stop?force=true")
    e2e.wait(lambda: e2e.pipeline(name)["deployment_status"] == "Stopped", "stopped")
    e2e.feldera("PATCH", f"/v0/pipelines/{name}", {"program_code": sql})
    e2e.wait(lambda: e2e.pipeline(name)["deployment_status"] == "Running", "running again")
    e2e.wait(lambda: e2e.flags(name).get("orders.later") is False, "later started")
    e2e.wait_ready(name)


def test_connectors_of_an_undeployed_pipeline_wait_and_are_applied_when_it_runs(e2e: E2E) -> None:
    name = unique("waiting")
    e2e.create_pipeline(name)
    e2e.feldera("PATCH", "/_emulator/settings", {"delay": 1.0})
    try:
        e2e.apply(standard(name, live=False))

        def waiting() -> bool:
            entry = connector_entry(e2e.get(name), "orders", "live")
            return bool(entry and entry.get("reason") == "PipelineNotDeployed")

        e2e.wait(waiting, "live waiting for the pipeline")
        assert not is_ready(e2e.get(name))
    finally:
        e2e.feldera("PATCH", "/_emulator/settings", {"delay": 0.0})
    e2e.wait(lambda: e2e.flags(name)["orders.live"] is False, "live started once running")
    e2e.wait_ready(name)


def test_stale_status_never_satisfies_kubectl_wait(e2e: E2E) -> None:
    name = unique("stale")
    e2e.create_pipeline(name)
    e2e.apply(standard(name))
    e2e.wait_ready(name)
    e2e.feldera("PATCH", "/_emulator/settings", {"delay": 0.5})
    try:
        e2e.patch(name, {"spec": {"paused": True}})
        # Right after the change the old Ready=True describes the old generation.
        e2e.sb.kubectl("wait", "--for=condition=Ready", "--timeout=30s", f"fpl/{name}")
        assert e2e.pipeline(name)["deployment_status"] == "Paused"
    finally:
        e2e.feldera("PATCH", "/_emulator/settings", {"delay": 0.0})


def test_server_side_apply_of_one_connector_entry_leaves_the_others(e2e: E2E) -> None:
    name = unique("ssa")
    e2e.create_pipeline(name)
    e2e.apply(standard(name), "--server-side", "--field-manager=gitops")
    e2e.wait_ready(name)
    # A manifest holding only the one connector entry this field manager owns.
    one_entry = pipeline_manifest(
        name, inputs=[{"table": "orders", "connector": "live", "paused": False}]
    )
    e2e.apply(one_entry, "--server-side", "--field-manager=oncall", "--force-conflicts")
    e2e.wait(lambda: e2e.flags(name)["orders.live"] is False, "live started")
    spec = e2e.wait_ready(name)["spec"]
    assert {(i["connector"], i["paused"]) for i in spec["inputs"]} == {
        ("backfill", False),
        ("live", False),
    }
    assert spec["outputs"] == [{"view": "big_orders", "connector": "sink", "paused": False}]


def test_missing_pipeline_is_reported_and_recovers_when_created(e2e: E2E) -> None:
    name = unique("missing")
    e2e.apply(standard(name))

    def reason() -> str | None:
        ready = condition(e2e.get(name), "Ready")
        return ready["reason"] if ready else None

    e2e.wait(lambda: reason() == "PipelineNotFound", "PipelineNotFound")
    e2e.create_pipeline(name)
    e2e.wait_ready(name)


@needs_local_plane
def test_converged_steady_state_makes_no_actions_and_no_writes(tmp_path: Path) -> None:
    sb = start_sandbox(tmp_path, examples=False)
    try:
        e2e = E2E(sb)
        names = [f"steady-{i}" for i in range(4)]
        for name in names:
            e2e.create_pipeline(name)
            e2e.apply(standard(name))
        # One of them stopped as declared: no stats call for it.
        e2e.patch(names[-1], {"spec": {"stopped": True}})
        for name in names:
            e2e.wait_ready(name)
        # Past the first observation pass (which also reads GET /v0/config once).
        e2e.wait(
            lambda: sb.feldera_counts().get("GET /v0/pipelines", 0) >= 2,
            "a full observation pass",
            timeout=3 * PERIOD + 10,
        )
        e2e.feldera("DELETE", "/_emulator/requests")
        sb.reset_kube_counts()
        periods = 3
        e2e.wait(
            lambda: sb.feldera_counts().get("GET /v0/pipelines", 0) >= periods + 1,
            f"{periods + 1} observation periods",
            timeout=periods * PERIOD + 10,
        )
        feldera = sb.feldera_counts()
        kube = sb.kube_counts()
        lists = feldera.get("GET /v0/pipelines", 0)
        stats = feldera.get("GET /v0/pipelines/{pipeline}/stats", 0)
        assert lists == periods + 1 or lists == periods + 2  # at most one list per period
        deployed = len(names) - 1
        assert stats <= lists * deployed
        assert all(feldera.get(k, 0) == 0 for k in [INPUT_ACTION, OUTPUT_ACTION, *PIPELINE_ACTIONS])
        assert set(feldera) <= {
            "GET /v0/pipelines",
            "GET /v0/pipelines/{pipeline}/stats",
        }, feldera
        writes = {k: v for k, v in kube.items() if k.split()[0] not in ("get", "list", "watch")}
        assert writes == {}, writes
    finally:
        sb.stop()


def test_drift_while_the_operator_was_down_is_corrected_as_drift_on_start(e2e: E2E) -> None:
    name = unique("down")
    e2e.create_pipeline(name)
    e2e.apply(standard(name))
    e2e.wait_ready(name)
    e2e.sb.operators[-1].stop()
    e2e.feldera("POST", f"/v0/pipelines/{name}/tables/orders/connectors/backfill/pause")
    e2e.sb.start_operator(*operator_defaults(e2e.sb))
    e2e.wait(lambda: e2e.flags(name)["orders.backfill"] is False, "backfill started again")
    e2e.wait(
        lambda: any(e["reason"] == "DriftCorrected" for e in e2e.events(name)),
        "a DriftCorrected Event (not a plain ConnectorStarted)",
    )
