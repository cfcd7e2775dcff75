"""The pure decision: desired spec + observed Feldera state → actions and the whole status.

Three layers:
- example tests that pin each rule (pipeline state machine, connectors, names, conditions,
  problems, status_changed / is_drift), written against feldera-api.md and design.md rather than
  against the code;
- an exhaustive table over every (deployment_status, desired_status, paused, stopped) that an
  independent oracle in this file predicts;
- property tests: a small pure model of Feldera (`FelderaModel`) that follows feldera-api.md and
  refuses what Feldera refuses, driven by decide() from any generated state until it converges.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feldera_operator import decision as d
from feldera_operator.decision import (
    ConnectorAction,
    Decision,
    ObservedConnector,
    ObservedPipeline,
    PipelineAction,
    Problem,
    decide,
    is_drift,
    status_changed,
)
from feldera_operator.models import FelderaPipelineSpec

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:01:00Z"
T2 = "2026-01-01T00:02:00Z"

# feldera-api.md
DEPLOYMENT_STATUSES = (
    "Stopped",
    "Provisioning",
    "Unavailable",
    "Standby",
    "AwaitingApproval",
    "Initializing",
    "Bootstrapping",
    "ConcurrentBootstrapping",
    "Synchronizing",
    "Replaying",
    "Paused",
    "Running",
    "Suspended",
    "Stopping",
)
DESIRED_STATUSES = ("Stopped", "Unavailable", "Standby", "Paused", "Running", "Suspended")
PROGRAM_STATUSES = (
    "Pending",
    "CompilingSql",
    "SqlCompiled",
    "CompilingRust",
    "Success",
    "SqlError",
    "RustError",
    "SystemError",
)
PROGRAM_FAILED = ("SqlError", "RustError", "SystemError")
PROGRAM_COMPILING = ("Pending", "CompilingSql", "SqlCompiled", "CompilingRust")
DEPLOYED = ("Running", "Paused")
# Neither deployed nor settled: Feldera refuses pause/resume/connector actions, and start.
IN_TRANSITION = tuple(s for s in DEPLOYMENT_STATUSES if s not in ("Stopped", *DEPLOYED))

CONDITION_TYPES = ["Ready", "Synced", "Reconciling", "Stalled"]

# The reason catalogue, as the module declares it: every status reason must come from here.
CATALOGUE = frozenset(
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
        d.PIPELINE_UNAVAILABLE,
        d.EXTERNAL_STOP_GRACE,
    }
    | d.STALLED_REASONS
    | d.SYNC_FAILURE_REASONS
)
# CamelCase, acronyms kept whole (InvalidURL, TLSError), as Kubernetes' own reasons.
CAMEL_CASE = re.compile(r"^(?:[A-Z][a-z0-9]+|[A-Z]+(?=[A-Z][a-z]|$))+$")
BUILTIN_EXCEPTION_NAMES = frozenset(
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
)


# ----------------------------------------------------------------------------- helpers


def make_spec(
    *,
    paused: bool = False,
    stopped: bool = False,
    inputs: Sequence[tuple[str, str, bool]] = (),
    outputs: Sequence[tuple[str, str, bool]] = (),
) -> FelderaPipelineSpec:
    return FelderaPipelineSpec.model_validate(
        {
            "paused": paused,
            "stopped": stopped,
            "inputs": [{"table": t, "connector": c, "paused": p} for t, c, p in inputs],
            "outputs": [{"view": v, "connector": c, "paused": p} for v, c, p in outputs],
        }
    )


def conn(relation: str, connector: str, paused: bool | None, **kw: Any) -> ObservedConnector:
    return ObservedConnector(relation=relation, connector=connector, paused=paused, **kw)


def pipeline(
    status: str = "Running",
    desired: str | None = None,
    *,
    program: str | None = "Success",
    program_error: str | None = None,
    deployment_error: str | None = None,
    inputs: Sequence[ObservedConnector] | None = None,
    outputs: Sequence[ObservedConnector] | None = None,
    outputs_pausable: bool = True,
    stats_problem: Problem | None = None,
) -> ObservedPipeline:
    """An observation; /stats is read (empty by default) only while deployed, as handlers do."""
    deployed = status in DEPLOYED
    return ObservedPipeline(
        deployment_status=status,
        desired_status=desired if desired is not None else status,
        program_status=program,
        program_error=program_error,
        deployment_error=deployment_error,
        inputs=tuple(inputs) if inputs is not None else (() if deployed else None),
        outputs=tuple(outputs) if outputs is not None else (() if deployed else None),
        outputs_pausable=outputs_pausable,
        stats_problem=stats_problem,
    )


def run(
    spec: FelderaPipelineSpec,
    observed: ObservedPipeline | Problem,
    *,
    previous: Mapping[str, Any] | None = None,
    generation: int = 1,
    now: str = T0,
) -> Decision:
    return decide(
        spec,
        generation=generation,
        pipeline_name="orders-main",
        observed=observed,
        previous_status=previous,
        now=now,
    )


def cond(decision: Decision, ctype: str) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = decision.status["conditions"]
    (found,) = [c for c in conditions if c["type"] == ctype]
    return found


def cond_status(decision: Decision) -> dict[str, str]:
    return {c["type"]: c["status"] for c in decision.status["conditions"]}


def pipeline_actions(decision: Decision) -> list[PipelineAction]:
    return [a for a in decision.actions if isinstance(a, PipelineAction)]


def connector_actions(decision: Decision) -> list[ConnectorAction]:
    return [a for a in decision.actions if isinstance(a, ConnectorAction)]


def entry(decision: Decision, direction: str, relation: str, connector: str) -> dict[str, Any]:
    key = "table" if direction == "input" else "view"
    entries: list[dict[str, Any]] = decision.status[f"{direction}s"]
    (found,) = [e for e in entries if e[key] == relation and e["connector"] == connector]
    return found


def kstatus(conditions: Sequence[Mapping[str, Any]]) -> str:
    """What kstatus computes from the standard conditions (cli-utils checkGenericProperties)."""
    for c in conditions:
        if c["type"] == "Reconciling" and c["status"] == "True":
            return "InProgress"
        if c["type"] == "Stalled" and c["status"] == "True":
            return "Failed"
    return "Current"


def assert_well_formed(decision: Decision, generation: int = 1) -> None:
    """What every decision must satisfy, whatever it observed."""
    conditions = decision.status["conditions"]
    assert [c["type"] for c in conditions] == CONDITION_TYPES
    assert decision.status["observedGeneration"] == generation
    for c in conditions:
        assert c["status"] in ("True", "False")
        assert c["observedGeneration"] == generation
        assert c["reason"] in CATALOGUE, c
        assert CAMEL_CASE.match(c["reason"]), c
        assert c["reason"] not in BUILTIN_EXCEPTION_NAMES
        assert isinstance(c["message"], str) and c["message"]
        assert c["lastTransitionTime"]
    # The status lists are list-maps keyed by (table|view, connector): the API server refuses a
    # status holding a key twice (422), and the old status would stay.
    for field_name, relation in (("inputs", "table"), ("outputs", "view")):
        keys = [(e[relation], e["connector"]) for e in decision.status[field_name]]
        assert len(keys) == len(set(keys)), keys
    for e in [*decision.status["inputs"], *decision.status["outputs"]]:
        if e.get("reason") is not None:
            assert e["reason"] in CATALOGUE, e
        assert e["state"] in ("Running", "Paused", "Unknown")
    statuses = cond_status(decision)
    assert (statuses["Ready"] == "True") is decision.ready
    assert cond(decision, "Ready")["reason"] == decision.ready_reason
    if decision.ready:
        assert decision.ready_reason == d.CONVERGED
        assert not decision.actions
        assert statuses == {
            "Ready": "True",
            "Synced": "True",
            "Reconciling": "False",
            "Stalled": "False",
        }
    if statuses["Stalled"] == "True":
        assert decision.ready_reason in d.STALLED_REASONS
    # kstatus (Flux, kpt, Config Sync) reads only Reconciling and Stalled: neither True means
    # Current. design.md: "Current when Ready, Failed when Stalled, in progress otherwise".
    # (Stalled with an action still in flight for another connector reads InProgress until that
    # action is done, then Failed.)
    assert (kstatus(decision.status["conditions"]) == "Current") is decision.ready
    if statuses["Reconciling"] == "False":
        assert cond(decision, "Reconciling")["reason"] == d.AS_EXPECTED
    if statuses["Stalled"] == "False":
        assert cond(decision, "Stalled")["reason"] == d.AS_EXPECTED


# ============================================================================= pipeline


@pytest.mark.parametrize("spec_paused", [False, True])
def test_settled_stopped_compiled_pipeline_is_started_with_initial_from_spec_paused(
    spec_paused: bool,
) -> None:
    decision = run(make_spec(paused=spec_paused), pipeline("Stopped", "Stopped"))
    initial: Literal["running", "paused"] = "paused" if spec_paused else "running"
    assert decision.actions == (PipelineAction("start", initial=initial),)
    assert decision.actions[0].describe() == f"start?initial={initial}"
    assert decision.ready_reason == d.STARTING
    assert cond_status(decision) == {
        "Ready": "False",
        "Synced": "True",
        "Reconciling": "True",
        "Stalled": "False",
    }
    assert_well_formed(decision)


@pytest.mark.parametrize("desired", ["Running", "Paused"])
def test_start_is_not_repeated_while_stopped_pipeline_already_heads_for_deployment(
    desired: str,
) -> None:
    decision = run(make_spec(), pipeline("Stopped", desired))
    assert decision.actions == ()
    assert decision.ready_reason == d.STARTING
    assert cond(decision, "Reconciling")["status"] == "True"


@pytest.mark.parametrize("status", ["Provisioning", "Initializing"])
@pytest.mark.parametrize("desired", ["Running", "Paused"])
@pytest.mark.parametrize("spec_paused", [False, True])
def test_no_pipeline_action_while_provisioning_or_initializing(
    status: str, desired: str, spec_paused: bool
) -> None:
    decision = run(make_spec(paused=spec_paused), pipeline(status, desired))
    assert decision.actions == ()
    assert decision.ready_reason == d.STARTING
    assert not decision.ready
    assert cond(decision, "Reconciling")["status"] == "True"
    assert cond(decision, "Stalled")["status"] == "False"


@pytest.mark.parametrize("status", ["Bootstrapping", "Replaying", "Synchronizing"])
def test_no_pipeline_action_while_transitioning(status: str) -> None:
    decision = run(make_spec(paused=True), pipeline(status, "Running"))
    assert decision.actions == ()
    assert decision.ready_reason == d.TRANSITIONING
    assert cond(decision, "Reconciling")["status"] == "True"


@pytest.mark.parametrize(
    ("status", "reason", "stalled", "says"),
    [
        # Waits for a person to approve the bootstrap: only they can move it on.
        ("AwaitingApproval", d.AWAITING_APPROVAL, True, "approve"),
        # Waits to be activated by whoever started it as a standby.
        ("Standby", d.PIPELINE_STANDBY, True, "activate"),
        # Feldera lost its runner and is bringing it back by itself.
        ("Unavailable", d.PIPELINE_UNAVAILABLE, False, "runner"),
    ],
)
@pytest.mark.parametrize("desired", ["Running", "Paused", "Standby", "Unavailable"])
def test_a_pipeline_waiting_on_something_says_what_it_waits_for(
    status: str, reason: str, stalled: bool, says: str, desired: str
) -> None:
    decision = run(make_spec(), pipeline(status, desired))
    assert decision.actions == ()
    assert decision.ready_reason == reason
    assert says in decision.ready_message
    assert cond_status(decision)["Stalled"] == ("True" if stalled else "False")
    assert cond_status(decision)["Reconciling"] == ("False" if stalled else "True")
    assert_well_formed(decision)


@pytest.mark.parametrize("status", ["Running", "Paused", "Stopping", "Provisioning", "Suspended"])
def test_pipeline_heading_to_stopped_is_left_to_stop_before_it_is_started(status: str) -> None:
    decision = run(make_spec(), pipeline(status, "Stopped"))
    assert decision.actions == ()
    assert decision.ready_reason == d.STOPPING
    assert cond(decision, "Reconciling")["status"] == "True"


def test_running_pipeline_is_paused_when_spec_pauses() -> None:
    decision = run(make_spec(paused=True), pipeline("Running", "Running"))
    assert decision.actions == (PipelineAction("pause"),)
    assert decision.ready_reason == d.PAUSING
    assert decision.in_progress


def test_paused_pipeline_is_resumed_when_spec_unpauses() -> None:
    decision = run(make_spec(paused=False), pipeline("Paused", "Paused"))
    assert decision.actions == (PipelineAction("resume"),)
    assert decision.ready_reason == d.RESUMING


@pytest.mark.parametrize(
    ("status", "desired", "spec_paused", "reason"),
    [
        ("Running", "Paused", True, d.PAUSING),  # pause issued, not yet followed
        ("Paused", "Running", False, d.RESUMING),  # resume issued, not yet followed
    ],
)
def test_pause_or_resume_is_not_repeated_once_desired_status_matches(
    status: str, desired: str, spec_paused: bool, reason: str
) -> None:
    decision = run(make_spec(paused=spec_paused), pipeline(status, desired))
    assert decision.actions == ()
    assert decision.ready_reason == reason
    assert cond(decision, "Reconciling")["status"] == "True"


@pytest.mark.parametrize(
    ("status", "desired", "spec_paused", "verb"),
    [
        ("Running", "Paused", False, "resume"),  # someone paused it; spec says running
        ("Paused", "Running", True, "pause"),  # someone resumed it; spec says paused
    ],
)
def test_pause_or_resume_is_issued_when_desired_status_differs_from_spec(
    status: str, desired: str, spec_paused: bool, verb: str
) -> None:
    decision = run(make_spec(paused=spec_paused), pipeline(status, desired))
    assert decision.actions == (PipelineAction(verb),)  # type: ignore[arg-type]


@pytest.mark.parametrize(("status", "spec_paused"), [("Running", False), ("Paused", True)])
def test_pipeline_as_declared_is_ready_and_decides_nothing(status: str, spec_paused: bool) -> None:
    decision = run(make_spec(paused=spec_paused), pipeline(status, status))
    assert decision.actions == ()
    assert decision.ready
    assert not decision.in_progress
    assert_well_formed(decision)


@pytest.mark.parametrize("status", [s for s in DEPLOYMENT_STATUSES if s != "Stopped"])
@pytest.mark.parametrize("desired", [s for s in DESIRED_STATUSES if s != "Stopped"])
def test_stop_is_issued_when_spec_stopped_and_pipeline_not_heading_to_stopped(
    status: str, desired: str
) -> None:
    decision = run(make_spec(stopped=True), pipeline(status, desired))
    assert decision.actions == (PipelineAction("stop"),)
    assert decision.ready_reason == d.STOPPING


@pytest.mark.parametrize("status", [s for s in DEPLOYMENT_STATUSES if s != "Stopped"])
def test_stop_is_not_repeated_while_pipeline_heads_to_stopped(status: str) -> None:
    decision = run(make_spec(stopped=True), pipeline(status, "Stopped"))
    assert decision.actions == ()
    assert decision.ready_reason == d.STOPPING
    assert cond(decision, "Reconciling")["status"] == "True"


@pytest.mark.parametrize("desired", ["Running", "Paused"])
def test_stop_is_issued_when_spec_stopped_and_a_start_is_still_pending(desired: str) -> None:
    # Stopped with desired Running: a start was accepted (e.g. waiting for compilation) and will
    # deploy the pipeline. "Stopped as declared" would be a lie; stop (always accepted) cancels it.
    decision = run(make_spec(stopped=True), pipeline("Stopped", desired))
    assert decision.actions == (PipelineAction("stop"),)
    assert not decision.ready


@pytest.mark.parametrize("spec_paused", [False, True])
def test_spec_stopped_with_pipeline_stopped_is_ready(spec_paused: bool) -> None:
    spec = make_spec(stopped=True, paused=spec_paused, inputs=[("orders", "live", False)])
    decision = run(spec, pipeline("Stopped", "Stopped"))
    assert decision.actions == ()
    assert decision.ready
    # The connector cannot be read while stopped, and need not be.
    e = entry(decision, "input", "orders", "live")
    assert e["state"] == "Unknown" and e["active"] is False
    assert_well_formed(decision)


@pytest.mark.parametrize("program", PROGRAM_FAILED)
def test_compile_error_is_program_error_and_stalled_without_start(program: str) -> None:
    observed = pipeline(
        "Stopped", "Stopped", program=program, program_error="error: no table FOO\nat line 3"
    )
    decision = run(make_spec(), observed)
    assert decision.actions == ()
    assert decision.ready_reason == d.PROGRAM_ERROR
    assert program in decision.ready_message
    assert "no table FOO" in decision.ready_message
    assert "line 3" not in decision.ready_message  # first line only
    assert cond_status(decision) == {
        "Ready": "False",
        "Synced": "True",
        "Reconciling": "False",
        "Stalled": "True",
    }
    assert cond(decision, "Stalled")["reason"] == d.PROGRAM_ERROR
    assert_well_formed(decision)


def test_compile_error_without_error_text_still_says_the_sql_does_not_compile() -> None:
    decision = run(make_spec(), pipeline("Stopped", "Stopped", program="SqlError"))
    assert decision.ready_reason == d.PROGRAM_ERROR
    assert "does not compile" in decision.ready_message


@pytest.mark.parametrize("program", [*PROGRAM_COMPILING, None])
def test_compiling_program_waits_with_reason_compiling(program: str | None) -> None:
    decision = run(make_spec(), pipeline("Stopped", "Stopped", program=program))
    assert decision.actions == ()
    assert decision.ready_reason == d.COMPILING
    assert cond_status(decision)["Reconciling"] == "True"
    assert cond_status(decision)["Stalled"] == "False"
    assert_well_formed(decision)


def test_deployment_error_while_stopped_is_deployment_failed_without_restart() -> None:
    observed = pipeline(
        "Stopped", "Stopped", deployment_error="worker panicked\nbacktrace: ...", inputs=None
    )
    decision = run(make_spec(), observed)
    assert decision.actions == ()  # no restart loop
    assert decision.ready_reason == d.DEPLOYMENT_FAILED
    assert "worker panicked" in decision.ready_message
    assert "backtrace" not in decision.ready_message
    assert cond_status(decision)["Stalled"] == "True"
    assert cond_status(decision)["Reconciling"] == "False"
    assert decision.status["deploymentError"] == "worker panicked\nbacktrace: ..."
    # Asking again (the periodic re-observation) still does not restart it.
    again = run(make_spec(), observed, previous=decision.status, now=T1)
    assert again.actions == ()
    assert not status_changed(decision.status, again.status)
    assert_well_formed(again)


def test_program_error_takes_precedence_over_deployment_error() -> None:
    observed = pipeline("Stopped", "Stopped", program="RustError", deployment_error="boom")
    assert run(make_spec(), observed).ready_reason == d.PROGRAM_ERROR


def test_spec_stopped_with_deployment_error_is_ready_as_stopped() -> None:
    decision = run(make_spec(stopped=True), pipeline("Stopped", "Stopped", deployment_error="x"))
    # Declaring it stopped acknowledges the error: the only action is dismissing it, and the
    # resource is Ready once Feldera reports no error (a Ready resource decides no action).
    assert not decision.ready and decision.ready_reason == d.TRANSITIONING
    assert decision.actions == (d.PipelineAction("dismiss_error"),)
    after = run(make_spec(stopped=True), pipeline("Stopped", "Stopped"), previous=decision.status)
    assert after.ready and not after.actions


def test_long_error_first_line_is_truncated() -> None:
    observed = pipeline("Stopped", "Stopped", program="SqlError", program_error="x" * 1000)
    decision = run(make_spec(), observed)
    assert len(decision.ready_message) < 400
    assert decision.ready_message.endswith("…")


def test_status_reports_observed_pipeline_fields() -> None:
    observed = pipeline("Paused", "Running", program="Success")
    decision = run(make_spec(), observed, generation=7)
    assert decision.status["state"] == "Paused"
    assert decision.status["desiredState"] == "Running"
    assert decision.status["programStatus"] == "Success"
    assert decision.status["deploymentError"] is None
    assert decision.status["pipelineName"] == "orders-main"
    assert decision.status["observedGeneration"] == 7


# ----------------------------------------------------------------------------- exhaustive table


def oracle_pipeline_action(
    status: str, desired: str, *, paused: bool, stopped: bool
) -> PipelineAction | None:
    """The pipeline action the brief and feldera-api.md call for, independently of decision.py."""
    if stopped:
        # stop unless already heading to (or settled in) Stopped
        return None if desired == "Stopped" else PipelineAction("stop")
    if status == "Stopped" and desired == "Stopped":
        return PipelineAction("start", initial="paused" if paused else "running")
    if status in DEPLOYED and desired not in ("Stopped", "Suspended"):
        want = "Paused" if paused else "Running"
        if desired != want:  # including a desired status that is neither, e.g. Unavailable
            return PipelineAction("pause" if paused else "resume")
    return None


def oracle_ready(status: str, desired: str, *, paused: bool, stopped: bool) -> bool:
    want = "Stopped" if stopped else ("Paused" if paused else "Running")
    return status == want and desired == want


@pytest.mark.parametrize("status", DEPLOYMENT_STATUSES)
@pytest.mark.parametrize("desired", DESIRED_STATUSES)
@pytest.mark.parametrize(
    ("paused", "stopped"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_pipeline_action_for_every_state_pair_and_spec_matches_the_state_machine(
    status: str, desired: str, paused: bool, stopped: bool
) -> None:
    decision = run(make_spec(paused=paused, stopped=stopped), pipeline(status, desired))
    expected = oracle_pipeline_action(status, desired, paused=paused, stopped=stopped)
    assert pipeline_actions(decision) == ([expected] if expected else [])
    assert connector_actions(decision) == []
    assert decision.ready is oracle_ready(status, desired, paused=paused, stopped=stopped)
    # Compiled program, no error: never Stalled, either Ready or in progress; except a pipeline
    # that waits for someone else (approval, activation) while the spec wants it deployed.
    waits_for_someone = (
        not stopped
        and status in ("AwaitingApproval", "Standby")
        and desired not in ("Stopped", "Suspended")
    )
    assert cond_status(decision)["Stalled"] == ("True" if waits_for_someone else "False")
    assert cond_status(decision)["Reconciling"] == (
        "False" if decision.ready or waits_for_someone else "True"
    )
    assert_well_formed(decision)


# ============================================================================= connectors


def test_paused_connector_is_started_when_spec_unpauses() -> None:
    spec = make_spec(inputs=[("orders", "live", False)])
    decision = run(spec, pipeline(inputs=[conn("orders", "live", True)]))
    assert decision.actions == (ConnectorAction("input", "orders", "live", "start"),)
    e = entry(decision, "input", "orders", "live")
    assert e["reason"] == d.STARTING
    assert e["declared"] is True and e["desiredPaused"] is False and e["paused"] is True
    assert decision.ready_reason == d.CONNECTORS_PENDING
    assert "orders.live" in decision.ready_message
    assert cond_status(decision)["Reconciling"] == "True"
    assert_well_formed(decision)


def test_running_connector_is_paused_when_spec_pauses() -> None:
    spec = make_spec(inputs=[("orders", "live", True)])
    decision = run(spec, pipeline(inputs=[conn("orders", "live", False)]))
    assert decision.actions == (ConnectorAction("input", "orders", "live", "pause"),)
    assert entry(decision, "input", "orders", "live")["reason"] == d.PAUSING
    assert decision.actions[0].describe() == "input connector orders.live: pause"


def test_connectors_as_declared_are_ready_and_decide_nothing() -> None:
    spec = make_spec(inputs=[("orders", "live", True), ("orders", "backfill", False)])
    observed = pipeline(inputs=[conn("orders", "live", True), conn("orders", "backfill", False)])
    decision = run(spec, observed)
    assert decision.actions == ()
    assert decision.ready
    assert "reason" not in entry(decision, "input", "orders", "live")
    assert_well_formed(decision)


def test_only_differing_declared_connectors_are_acted_on() -> None:
    spec = make_spec(
        inputs=[("orders", "a", False), ("orders", "b", True), ("orders", "c", False)],
        outputs=[("big", "x", True), ("big", "y", False)],
    )
    observed = pipeline(
        inputs=[conn("orders", "a", True), conn("orders", "b", True), conn("orders", "c", False)],
        outputs=[conn("big", "x", False), conn("big", "y", False)],
    )
    decision = run(spec, observed)
    assert decision.actions == (
        ConnectorAction("input", "orders", "a", "start"),
        ConnectorAction("output", "big", "x", "pause"),
    )


def test_connector_and_pipeline_actions_are_decided_in_the_same_round() -> None:
    spec = make_spec(paused=True, inputs=[("orders", "live", True)])
    decision = run(spec, pipeline("Running", inputs=[conn("orders", "live", False)]))
    assert decision.actions == (
        PipelineAction("pause"),
        ConnectorAction("input", "orders", "live", "pause"),
    )


@pytest.mark.parametrize("undeclared_paused", [False, True])
def test_undeclared_connectors_are_reported_and_never_acted_on(undeclared_paused: bool) -> None:
    spec = make_spec(inputs=[("orders", "live", False)])
    observed = pipeline(
        inputs=[conn("orders", "live", False), conn("orders", "other", undeclared_paused)],
        outputs=[conn("big", "sink", undeclared_paused)],
    )
    decision = run(spec, observed)
    assert decision.actions == ()
    assert decision.ready  # undeclared connectors do not count against Ready
    other = entry(decision, "input", "orders", "other")
    assert other["declared"] is False
    assert other["paused"] is undeclared_paused
    assert "desiredPaused" not in other and "reason" not in other
    assert entry(decision, "output", "big", "sink")["declared"] is False
    # Declared first, in spec order, then the others in Feldera's order.
    assert [e["connector"] for e in decision.status["inputs"]] == ["live", "other"]


@pytest.mark.parametrize(
    ("relation", "connector"),
    [("orders", "api-ingress-3f2a9c"), ("big", "api-9b1c2d3e-0000-4000-8000-000000000000")],
)
def test_temporary_http_connectors_are_ignored(relation: str, connector: str) -> None:
    spec = make_spec(inputs=[("orders", "live", False)])
    temp = conn(relation, connector, True)
    observed = pipeline(inputs=[conn("orders", "live", False), temp], outputs=[temp])
    decision = run(spec, observed)
    assert decision.actions == ()
    assert decision.ready
    names = [e["connector"] for e in [*decision.status["inputs"], *decision.status["outputs"]]]
    assert names == ["live"]
    assert decision.status["connectors"] == "1/1 active"


def test_declared_connector_named_with_api_prefix_is_not_mistaken_for_a_temporary_one() -> None:
    # Connector names are `^[a-zA-Z0-9_-]+$`: a user may call one `api-orders`. Declared, it is
    # the user's connector, and must be observed and acted on like any other.
    spec = make_spec(inputs=[("orders", "api-orders", False)])
    decision = run(spec, pipeline(inputs=[conn("orders", "api-orders", True)]))
    assert decision.actions == (ConnectorAction("input", "orders", "api-orders", "start"),)
    assert decision.ready_reason == d.CONNECTORS_PENDING


def test_declared_connector_missing_is_connector_not_found_naming_it() -> None:
    spec = make_spec(
        inputs=[("orders", "live", False), ("orders", "typo", False)],
        outputs=[("big", "gone", True)],
    )
    decision = run(spec, pipeline(inputs=[conn("orders", "live", True)]))
    assert decision.ready_reason == d.CONNECTOR_NOT_FOUND
    assert "orders.typo" in decision.ready_message
    assert "big.gone" in decision.ready_message
    assert "orders.live" not in decision.ready_message
    assert cond_status(decision) == {
        "Ready": "False",
        "Synced": "True",
        "Reconciling": "True",  # the start for orders.live is in flight
        "Stalled": "True",
    }
    assert decision.problems == (d.CONNECTOR_NOT_FOUND, d.CONNECTOR_NOT_FOUND)
    missing = entry(decision, "input", "orders", "typo")
    assert missing == {
        "table": "orders",
        "connector": "typo",
        "declared": True,
        "desiredPaused": False,
        "paused": None,
        "state": "Unknown",
        "active": False,
        "reason": d.CONNECTOR_NOT_FOUND,
    }
    # The connector that exists is still corrected.
    assert decision.actions == (ConnectorAction("input", "orders", "live", "start"),)
    assert_well_formed(decision)


def test_declared_connector_missing_alone_is_stalled_not_reconciling() -> None:
    spec = make_spec(inputs=[("orders", "typo", False)])
    decision = run(spec, pipeline())
    assert cond_status(decision) == {
        "Ready": "False",
        "Synced": "True",
        "Reconciling": "False",
        "Stalled": "True",
    }


@pytest.mark.parametrize(
    ("status", "desired"),
    [
        ("Stopped", "Stopped"),
        ("Stopped", "Running"),
        ("Provisioning", "Running"),
        ("Initializing", "Paused"),
        ("Stopping", "Stopped"),
    ],
)
def test_connectors_wait_for_an_undeployed_pipeline_with_reason_pipeline_not_deployed(
    status: str, desired: str
) -> None:
    spec = make_spec(inputs=[("orders", "live", False)], outputs=[("big", "sink", True)])
    decision = run(spec, pipeline(status, desired))
    assert connector_actions(decision) == []
    for direction, rel, name in [("input", "orders", "live"), ("output", "big", "sink")]:
        e = entry(decision, direction, rel, name)
        assert e["reason"] == d.PIPELINE_NOT_DEPLOYED
        assert e["state"] == "Unknown" and e["paused"] is None and e["active"] is False
    assert not decision.ready
    assert cond_status(decision)["Stalled"] == "False"
    assert_well_formed(decision)


def test_connector_differing_while_pipeline_is_being_stopped_is_not_acted_on() -> None:
    spec = make_spec(inputs=[("orders", "live", False)])
    observed = pipeline("Running", "Stopped", inputs=[conn("orders", "live", True)])
    decision = run(spec, observed)
    assert decision.actions == ()
    assert entry(decision, "input", "orders", "live")["reason"] == d.PIPELINE_NOT_DEPLOYED


def test_connector_differing_is_not_acted_on_when_spec_stops_the_pipeline() -> None:
    spec = make_spec(stopped=True, inputs=[("orders", "live", False)])
    decision = run(spec, pipeline("Running", inputs=[conn("orders", "live", True)]))
    assert decision.actions == (PipelineAction("stop"),)


@pytest.mark.parametrize(
    ("pipeline_status", "connector_paused", "active"),
    [
        ("Paused", True, False),
        ("Paused", False, False),
        ("Running", True, False),
        ("Running", False, True),
    ],
)
def test_active_column_is_pipeline_running_and_connector_running(
    pipeline_status: str, connector_paused: bool, active: bool
) -> None:
    observed = pipeline(
        pipeline_status,
        inputs=[conn("orders", "live", connector_paused)],
        outputs=[conn("big", "sink", connector_paused)],
    )
    decision = run(make_spec(paused=pipeline_status == "Paused"), observed)
    for e in [*decision.status["inputs"], *decision.status["outputs"]]:
        assert e["active"] is active
        assert e["state"] == ("Paused" if connector_paused else "Running")
    n = 2 if active else 0
    assert decision.status["connectors"] == f"{n}/2 active"


@pytest.mark.parametrize("spec_table", ["Orders", "ORDERS", "orders"])
def test_unquoted_spec_table_matches_lowercased_reported_name_and_action_keeps_spec_spelling(
    spec_table: str,
) -> None:
    spec = make_spec(inputs=[(spec_table, "live", False)])
    decision = run(spec, pipeline(inputs=[conn("orders", "live", True)]))
    assert decision.actions == (ConnectorAction("input", spec_table, "live", "start"),)
    # Status shows Feldera's spelling, once: no ConnectorNotFound, no duplicate undeclared entry.
    assert decision.status["inputs"] == [
        {
            "table": "orders",
            "connector": "live",
            "declared": True,
            "desiredPaused": False,
            "paused": True,
            "state": "Paused",
            "active": False,
            "reason": d.STARTING,
        }
    ]


@pytest.mark.parametrize("reported", ["MyTable", '"MyTable"'])
def test_quoted_spec_table_matches_reported_name_with_or_without_quotes(reported: str) -> None:
    spec = make_spec(inputs=[('"MyTable"', "live", True)])
    decision = run(spec, pipeline(inputs=[conn(reported, "live", False)]))
    assert decision.actions == (ConnectorAction("input", '"MyTable"', "live", "pause"),)
    assert len(decision.status["inputs"]) == 1
    assert decision.status["inputs"][0]["declared"] is True


def test_quoted_spec_table_is_case_sensitive() -> None:
    spec = make_spec(inputs=[('"MyTable"', "live", False)])
    decision = run(spec, pipeline(inputs=[conn("mytable", "live", False)]))
    assert decision.ready_reason == d.CONNECTOR_NOT_FOUND
    assert entry(decision, "input", "mytable", "live")["declared"] is False


def test_unquoted_spec_table_does_not_match_a_quoted_mixed_case_table() -> None:
    # CREATE TABLE "Orders" is reported as Orders; spec `Orders` (unquoted) means table orders.
    spec = make_spec(inputs=[("Orders", "live", False)])
    decision = run(spec, pipeline(inputs=[conn('"Orders"', "live", False)]))
    assert decision.ready_reason == d.CONNECTOR_NOT_FOUND


def test_a_case_sensitive_table_beside_an_unquoted_entry_keeps_status_keys_unique() -> None:
    # CREATE TABLE "Orders" is reported as Orders; the spec's unquoted `Orders` means `orders`.
    # Both entries would be keyed (Orders, live): written as is, the status is refused (422).
    spec = make_spec(inputs=[("Orders", "live", False)])
    decision = run(spec, pipeline(inputs=[conn("Orders", "live", True)]))
    assert decision.actions == ()
    declared = entry(decision, "input", "Orders", "live")
    assert declared["declared"] is True and declared["reason"] == d.CONNECTOR_NOT_FOUND
    # The undeclared one is shown as a spec would have to name it: quoted.
    undeclared = entry(decision, "input", '"Orders"', "live")
    assert undeclared["declared"] is False and undeclared["paused"] is True
    assert decision.ready_reason == d.CONNECTOR_NOT_FOUND
    assert """table: '"Orders"'""" in decision.ready_message
    assert_well_formed(decision)


def test_two_entries_for_one_connector_are_reported_and_the_others_still_reconciled() -> None:
    # `orders` and `"orders"` are two list-map keys to Kubernetes and one connector to Feldera.
    spec = make_spec(
        inputs=[
            ("orders", "live", False),
            ('"orders"', "live", True),
            ("orders", "backfill", False),
        ]
    )
    decision = run(
        spec,
        pipeline(inputs=[conn("orders", "live", True), conn("orders", "backfill", True)]),
    )
    assert decision.actions == (ConnectorAction("input", "orders", "backfill", "start"),)
    for relation, paused in (("orders", False), ('"orders"', True)):
        e = entry(decision, "input", relation, "live")
        assert e["reason"] == d.DUPLICATE_CONNECTOR
        assert e["declared"] is True and e["desiredPaused"] is paused and e["paused"] is True
    assert decision.ready_reason == d.DUPLICATE_CONNECTOR
    assert "spec.inputs[0]" in decision.ready_message
    assert "spec.inputs[1]" in decision.ready_message
    assert cond_status(decision)["Stalled"] == "True"
    assert_well_formed(decision)


def test_connector_names_match_exactly() -> None:
    spec = make_spec(inputs=[("orders", "Live", False)])
    decision = run(spec, pipeline(inputs=[conn("orders", "live", False)]))
    assert decision.ready_reason == d.CONNECTOR_NOT_FOUND


@pytest.mark.parametrize(("spec_view", "reported"), [("Big", "big"), ('"Big"', '"Big"')])
def test_output_connectors_match_names_and_are_acted_on_like_inputs(
    spec_view: str, reported: str
) -> None:
    spec = make_spec(outputs=[(spec_view, "sink", True)])
    decision = run(spec, pipeline(outputs=[conn(reported, "sink", False)]))
    assert decision.actions == (ConnectorAction("output", spec_view, "sink", "pause"),)
    e = decision.status["outputs"][0]
    assert e["view"] == reported and "table" not in e
    assert e["reason"] == d.PAUSING


def test_output_connector_paused_as_declared_is_ready() -> None:
    spec = make_spec(outputs=[("big", "sink", True)])
    decision = run(spec, pipeline(outputs=[conn("big", "sink", True)]))
    assert decision.ready
    assert decision.status["connectors"] == "0/1 active"


@pytest.mark.parametrize("declared_paused", [False, True])
def test_outputs_without_paused_flag_are_output_pause_unsupported(declared_paused: bool) -> None:
    spec = make_spec(outputs=[("big", "sink", declared_paused)])
    observed = pipeline(outputs=[conn("big", "sink", None)], outputs_pausable=False)
    decision = run(spec, observed)
    assert decision.actions == ()
    assert decision.ready_reason == d.OUTPUT_PAUSE_UNSUPPORTED
    assert "big.sink" in decision.ready_message
    assert "0.369" in decision.ready_message
    e = entry(decision, "output", "big", "sink")
    assert e["state"] == "Unknown" and e["paused"] is None
    assert e["reason"] == d.OUTPUT_PAUSE_UNSUPPORTED
    assert cond_status(decision)["Stalled"] == "True"
    assert_well_formed(decision)


def test_old_feldera_outputs_are_fine_when_the_spec_declares_none() -> None:
    spec = make_spec(inputs=[("orders", "live", False)])
    observed = pipeline(
        inputs=[conn("orders", "live", False)],
        outputs=[conn("big", "sink", None)],
        outputs_pausable=False,
    )
    decision = run(spec, observed)
    assert decision.ready
    assert entry(decision, "output", "big", "sink")["state"] == "Unknown"


def test_summary_counts_active_over_all_reported_connectors() -> None:
    spec = make_spec(inputs=[("orders", "a", False), ("orders", "missing", False)])
    observed = pipeline(
        "Running",
        inputs=[conn("orders", "a", False), conn("orders", "b", True), conn("t2", "c", False)],
        outputs=[conn("big", "sink", False)],
    )
    decision = run(spec, observed)
    # a, c, sink active; b paused: 3 of the 4 Feldera reports. A declared connector Feldera
    # does not have is no connector: said apart, so the column never counts what is not there.
    assert decision.status["connectors"] == "3/4 active, 1 missing"


def test_summary_with_no_connectors_is_zero_of_zero() -> None:
    assert run(make_spec(), pipeline()).status["connectors"] == "0/0 active"


def test_connector_entries_carry_end_of_input_health_and_fatal_error() -> None:
    spec = make_spec(inputs=[("orders", "live", False)])
    observed = pipeline(
        inputs=[
            conn(
                "orders", "live", False, end_of_input=True, health="Unhealthy", fatal_error="boom"
            ),
            conn("orders", "quiet", False),
        ]
    )
    decision = run(spec, observed)
    e = entry(decision, "input", "orders", "live")
    assert (e["endOfInput"], e["health"], e["fatalError"]) == (True, "Unhealthy", "boom")
    quiet = entry(decision, "input", "orders", "quiet")
    assert not {"endOfInput", "health", "fatalError"} & quiet.keys()


def test_stats_problem_on_deployed_pipeline_is_synced_false_with_its_reason() -> None:
    spec = make_spec(inputs=[("orders", "live", False)])
    problem = Problem(d.FELDERA_UNREACHABLE, "GET /stats timed out")
    observed = replace(pipeline("Running"), inputs=None, outputs=None, stats_problem=problem)
    decision = run(spec, observed)
    assert decision.actions == ()
    assert decision.ready_reason == d.FELDERA_UNREACHABLE
    assert cond(decision, "Synced") == {
        **cond(decision, "Synced"),
        "status": "False",
        "reason": d.FELDERA_UNREACHABLE,
        "message": "GET /stats timed out",
    }
    # Retried: in progress for kstatus, not Current (and not Stalled).
    assert cond_status(decision)["Reconciling"] == "True"
    assert cond(decision, "Reconciling")["reason"] == d.FELDERA_UNREACHABLE
    assert not decision.in_progress  # no per-object follow-up; the instance loop retries
    e = entry(decision, "input", "orders", "live")
    assert e["state"] == "Unknown" and e["paused"] is None and e["active"] is False
    assert_well_formed(decision)


def test_pipeline_progress_outranks_connector_problems_in_ready_reason() -> None:
    spec = make_spec(paused=True, inputs=[("orders", "typo", False)])
    decision = run(spec, pipeline("Running"))
    assert decision.ready_reason == d.PAUSING
    assert decision.problems == (d.CONNECTOR_NOT_FOUND,)


# ============================================================================= conditions


def test_every_decision_has_the_four_conditions_with_observed_generation() -> None:
    decision = run(make_spec(), pipeline(), generation=42)
    assert_well_formed(decision, generation=42)
    assert {c["lastTransitionTime"] for c in decision.status["conditions"]} == {T0}


def test_last_transition_time_is_kept_when_status_does_not_flip() -> None:
    spec = make_spec(inputs=[("orders", "live", False)])
    first = run(spec, pipeline(inputs=[conn("orders", "live", True)]))
    # Same statuses, different reason (still not Ready, now waiting on the pipeline).
    second = run(
        spec,
        pipeline("Running", "Stopped", inputs=[conn("orders", "live", True)]),
        previous=first.status,
        now=T1,
        generation=2,
    )
    assert cond_status(first) == cond_status(second)
    assert cond(first, "Ready")["reason"] != cond(second, "Ready")["reason"]
    for ctype in CONDITION_TYPES:
        assert cond(second, ctype)["lastTransitionTime"] == T0
        assert cond(second, ctype)["observedGeneration"] == 2


def test_last_transition_time_moves_only_for_the_conditions_that_flip() -> None:
    spec = make_spec(inputs=[("orders", "live", False)])
    pending = run(spec, pipeline(inputs=[conn("orders", "live", True)]))
    ready = run(
        spec, pipeline(inputs=[conn("orders", "live", False)]), previous=pending.status, now=T1
    )
    assert cond(ready, "Ready")["lastTransitionTime"] == T1  # False → True
    assert cond(ready, "Reconciling")["lastTransitionTime"] == T1  # True → False
    assert cond(ready, "Synced")["lastTransitionTime"] == T0  # True throughout
    assert cond(ready, "Stalled")["lastTransitionTime"] == T0  # False throughout
    again = run(
        spec, pipeline(inputs=[conn("orders", "live", False)]), previous=ready.status, now=T2
    )
    assert again.status == ready.status
    assert not status_changed(ready.status, again.status)


def test_previous_conditions_that_are_malformed_are_ignored() -> None:
    previous = {"conditions": ["junk", {"type": "Ready"}, {"status": "True"}]}
    decision = run(make_spec(), pipeline(), previous=previous, now=T1)
    assert {c["lastTransitionTime"] for c in decision.status["conditions"]} == {T1}


SYNC_FAILURES = [
    (d.FELDERA_UNREACHABLE, False),
    (d.FELDERA_ERROR, False),
    (d.CREDENTIALS_REJECTED, True),
    (d.PERMISSION_DENIED, True),
    (d.SECRET_NOT_FOUND, True),
    (d.INSTANCE_NOT_FOUND, True),
]


def converged_status(spec: FelderaPipelineSpec) -> dict[str, Any]:
    observed = pipeline(inputs=[conn("orders", "live", False), conn("orders", "other", True)])
    decision = run(spec, observed)
    assert decision.ready
    return decision.status


@pytest.mark.parametrize(("reason", "stalled"), SYNC_FAILURES)
def test_problem_observation_is_synced_false_keeps_observed_fields_and_decides_nothing(
    reason: str, stalled: bool
) -> None:
    spec = make_spec(inputs=[("orders", "live", False)])
    before = converged_status(spec)
    decision = run(
        spec, Problem(reason, f"{reason}: details"), previous=before, generation=2, now=T1
    )
    assert decision.actions == ()
    assert not decision.ready
    assert decision.ready_reason == reason
    # Either a person must act (Stalled) or it is retried (Reconciling): never kstatus Current.
    assert cond_status(decision) == {
        "Ready": "False",
        "Synced": "False",
        "Reconciling": "False" if stalled else "True",
        "Stalled": "True" if stalled else "False",
    }
    assert cond(decision, "Synced")["reason"] == reason
    assert cond(decision, "Ready")["message"] == f"{reason}: details"
    for key in ("state", "desiredState", "programStatus", "deploymentError", "connectors"):
        assert decision.status[key] == before[key]
    assert decision.status["inputs"] == before["inputs"]
    assert decision.status["outputs"] == before["outputs"]
    assert decision.status["observedGeneration"] == 2
    assert decision.status["pipelineName"] == "orders-main"
    # Times move only for the conditions that flipped (from a converged status).
    assert cond(decision, "Ready")["lastTransitionTime"] == T1
    assert cond(decision, "Synced")["lastTransitionTime"] == T1
    assert cond(decision, "Reconciling")["lastTransitionTime"] == (T0 if stalled else T1)
    assert cond(decision, "Stalled")["lastTransitionTime"] == (T1 if stalled else T0)
    assert_well_formed(decision, generation=2)


@pytest.mark.parametrize(("reason", "stalled"), SYNC_FAILURES)
def test_problem_observation_without_previous_status_has_empty_fields(
    reason: str, stalled: bool
) -> None:
    decision = run(make_spec(), Problem(reason, "x"))
    assert decision.status["state"] is None
    assert decision.status["inputs"] == [] and decision.status["outputs"] == []
    assert cond_status(decision)["Stalled"] == ("True" if stalled else "False")
    assert_well_formed(decision)


def test_pipeline_not_found_is_synced_ready_false_stalled_and_forgets_observed_fields() -> None:
    spec = make_spec(inputs=[("orders", "live", False)], outputs=[("big", "sink", True)])
    before = converged_status(make_spec(inputs=[("orders", "live", False)]))
    problem = Problem(d.PIPELINE_NOT_FOUND, "Feldera has no such pipeline")
    decision = run(spec, problem, previous=before, now=T1)
    assert decision.actions == ()
    assert cond_status(decision) == {
        "Ready": "False",
        "Synced": "True",
        "Reconciling": "False",
        "Stalled": "True",
    }
    assert cond(decision, "Synced")["reason"] == d.SYNCED
    assert cond(decision, "Stalled")["reason"] == d.PIPELINE_NOT_FOUND
    for key in ("state", "desiredState", "programStatus", "deploymentError"):
        assert decision.status[key] is None
    # Only the declared connectors, each Unknown because the pipeline is gone.
    assert [(e["table"], e["connector"]) for e in decision.status["inputs"]] == [("orders", "live")]
    assert decision.status["outputs"][0]["view"] == "big"
    for e in [*decision.status["inputs"], *decision.status["outputs"]]:
        assert e["reason"] == d.PIPELINE_NOT_FOUND
        assert e["state"] == "Unknown" and e["active"] is False
    assert decision.status["connectors"] == "0/0 active, 2 missing"
    assert_well_formed(decision)


# ========================================================================== status_changed, drift


def test_status_changed_is_false_for_equal_statuses() -> None:
    status = converged_status(make_spec(inputs=[("orders", "live", False)]))
    assert not status_changed(status, dict(status))
    assert not status_changed({}, {})
    assert not status_changed(None, {})


def test_status_changed_treats_null_and_absent_as_the_same() -> None:
    assert not status_changed({"a": 1}, {"a": 1, "b": None})
    assert not status_changed({"a": 1, "b": None}, {"a": 1})
    assert not status_changed({"x": {"a": 1}}, {"x": {"a": 1, "b": None}})
    assert not status_changed({"l": [{"a": 1}]}, {"l": [{"a": 1, "b": None}]})
    assert not status_changed(None, {"state": None})


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (None, {"state": "Running"}),
        ({"state": "Running"}, {"state": "Paused"}),
        ({"state": "Running"}, {}),
        ({"l": [1, 2]}, {"l": [2, 1]}),
        ({"l": [{"a": 1}]}, {"l": [{"a": 2}]}),
        ({"c": [{"status": "True"}]}, {"c": [{"status": "False"}]}),
        ({"n": 1}, {"n": 2}),
    ],
)
def test_status_changed_is_true_for_any_change(
    old: dict[str, Any] | None, new: dict[str, Any]
) -> None:
    assert status_changed(old, new)


def test_status_changed_detects_a_condition_flip() -> None:
    spec = make_spec(inputs=[("orders", "live", False)])
    ready = run(spec, pipeline(inputs=[conn("orders", "live", False)]))
    drifted = run(spec, pipeline(inputs=[conn("orders", "live", True)]), previous=ready.status)
    assert status_changed(ready.status, drifted.status)


def test_drift_is_actions_for_a_generation_already_seen_ready() -> None:
    spec = make_spec(inputs=[("orders", "live", False)])
    drifted = run(spec, pipeline(inputs=[conn("orders", "live", True)]), generation=3)
    assert drifted.actions
    assert is_drift(drifted, ready_generation=3, generation=3)
    assert not is_drift(drifted, ready_generation=2, generation=3)  # a spec change, not drift
    assert not is_drift(drifted, ready_generation=None, generation=3)
    converged = run(spec, pipeline(inputs=[conn("orders", "live", False)]), generation=3)
    assert not is_drift(converged, ready_generation=3, generation=3)


# ============================================================================= other statuses


def test_failed_action_turns_the_decided_status_not_ready_with_the_problem() -> None:
    spec = make_spec(inputs=[("orders", "live", False)])
    decided = run(spec, pipeline(inputs=[conn("orders", "live", True)]), generation=4)
    problem = Problem(d.FELDERA_UNREACHABLE, "POST .../start timed out")
    status = d.with_problem(decided.status, problem, generation=4, now=T1)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert [c["type"] for c in status["conditions"]] == CONDITION_TYPES
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["reason"] == d.FELDERA_UNREACHABLE
    assert conditions["Synced"]["status"] == "False"
    assert conditions["Synced"]["message"] == "POST .../start timed out"
    assert conditions["Reconciling"]["status"] == "True"  # it will be retried
    assert conditions["Stalled"]["status"] == "False"
    assert all(c["observedGeneration"] == 4 for c in status["conditions"])
    # What was observed is kept; the decided status itself is not modified.
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        k: v for k, v in decided.status.items() if k != "conditions"
    }
    assert decided.status["conditions"] != status["conditions"]


@pytest.mark.parametrize(
    ("reason", "synced", "stalled"),
    [
        (d.CREDENTIALS_REJECTED, "False", "True"),
        (d.PERMISSION_DENIED, "False", "True"),
        (d.FELDERA_ERROR, "False", "False"),
        (d.CONNECTOR_NOT_FOUND, "True", "True"),
        (d.PIPELINE_NOT_DEPLOYED, "True", "False"),
    ],
)
def test_failed_action_reason_decides_synced_and_stalled(
    reason: str, synced: str, stalled: str
) -> None:
    decided = run(make_spec(paused=True), pipeline("Running"))
    status = d.with_problem(decided.status, Problem(reason, "x"), generation=1, now=T1)
    got = {c["type"]: c["status"] for c in status["conditions"]}
    assert got["Ready"] == "False"
    assert got["Synced"] == synced
    assert got["Stalled"] == stalled
    assert got["Reconciling"] == ("False" if stalled == "True" else "True")


def test_invalid_spec_status_is_stalled_and_keeps_what_was_observed() -> None:
    before = converged_status(make_spec(inputs=[("orders", "live", False)]))
    status = d.invalid_spec_status(
        "spec.inputs[0].table: bad name", generation=9, previous_status=before, now=T1
    )
    got = {c["type"]: c for c in status["conditions"]}
    assert [c["type"] for c in status["conditions"]] == CONDITION_TYPES
    assert {t: c["status"] for t, c in got.items()} == {
        "Ready": "False",
        "Synced": "True",
        "Reconciling": "False",
        "Stalled": "True",
    }
    assert got["Ready"]["reason"] == d.INVALID_SPEC
    assert got["Stalled"]["message"] == "spec.inputs[0].table: bad name"
    assert got["Synced"]["lastTransitionTime"] == T0
    assert got["Ready"]["lastTransitionTime"] == T1
    assert status["observedGeneration"] == 9
    assert all(c["observedGeneration"] == 9 for c in status["conditions"])
    for key in ("state", "inputs", "outputs", "connectors", "pipelineName"):
        assert status[key] == before[key]
    assert before["observedGeneration"] == 1  # the previous status is not modified


def test_invalid_spec_status_without_previous_status() -> None:
    status = d.invalid_spec_status("bad", generation=1, previous_status=None, now=T0)
    assert status["observedGeneration"] == 1
    assert [c["reason"] for c in status["conditions"]] == [
        d.INVALID_SPEC,
        d.SYNCED,
        d.AS_EXPECTED,
        d.INVALID_SPEC,
    ]


def test_instance_status_when_the_api_answers() -> None:
    status = d.instance_status(
        None,
        generation=2,
        server={"version": "0.369.0", "edition": "Open source"},
        pipelines=3,
        previous_status=None,
        now=T0,
    )
    assert status["reachable"] is True
    assert (status["version"], status["edition"], status["pipelines"]) == (
        "0.369.0",
        "Open source",
        3,
    )
    assert status["observedGeneration"] == 2
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "Synced": "True",
        "Reconciling": "False",
        "Stalled": "False",
    }
    assert all(c["reason"] in CATALOGUE for c in status["conditions"])


@pytest.mark.parametrize(
    ("reason", "reachable", "stalled"),
    [
        (d.FELDERA_UNREACHABLE, False, "False"),
        (d.FELDERA_ERROR, False, "False"),
        (d.INSTANCE_NOT_FOUND, False, "True"),
        (d.TLS_ERROR, False, "True"),
        (d.INVALID_URL, False, "True"),
        (d.CREDENTIALS_REJECTED, True, "True"),
        (d.PERMISSION_DENIED, True, "True"),
    ],
)
def test_instance_status_on_a_problem_says_what_is_known_of_the_server(
    reason: str, reachable: bool, stalled: str
) -> None:
    before = d.instance_status(
        None,
        generation=1,
        server={"version": "0.369.0", "edition": "Enterprise"},
        pipelines=5,
        previous_status=None,
        now=T0,
    )
    status = d.instance_status(
        Problem(reason, "it failed"),
        generation=1,
        server={},
        pipelines=None,
        previous_status=before,
        now=T1,
    )
    assert status["reachable"] is reachable
    # A server that answered (a rejected key) is still that version; one that does not answer
    # is of no known version: VERSION must not show a dead URL's last version as current.
    known = ("0.369.0", "Enterprise", 5) if reachable else (None, None, None)
    assert (status["version"], status["edition"], status["pipelines"]) == known
    got = {c["type"]: c for c in status["conditions"]}
    assert got["Ready"]["status"] == "False" and got["Ready"]["reason"] == reason
    assert got["Ready"]["lastTransitionTime"] == T1
    assert got["Synced"]["status"] == "False"
    assert got["Stalled"]["status"] == stalled
    assert got["Reconciling"]["status"] == ("False" if stalled == "True" else "True")
    assert kstatus(status["conditions"]) != "Current"


def test_decide_is_deterministic_and_does_not_modify_its_inputs() -> None:
    spec = make_spec(inputs=[("orders", "live", False)])
    observed = pipeline(inputs=[conn("orders", "live", True), conn("orders", "x", False)])
    previous = converged_status(spec)
    snapshot = repr(previous), spec.model_dump()
    first = run(spec, observed, previous=previous, now=T1)
    second = run(spec, observed, previous=previous, now=T1)
    assert first == second
    assert (repr(previous), spec.model_dump()) == snapshot


def test_declaring_stopped_dismisses_a_deployment_error_and_running_again_starts_it() -> None:
    failed_obs = pipeline("Stopped", "Stopped", deployment_error="worker panicked")
    failed = run(make_spec(), failed_obs, generation=1)
    assert failed.ready_reason == d.DEPLOYMENT_FAILED and not failed.actions
    assert "spec.stopped to true" in failed.ready_message
    # Re-observing never restarts it by itself (no crash loop).
    assert not run(make_spec(), failed_obs, generation=1, previous=failed.status).actions
    stopped = run(make_spec(stopped=True), failed_obs, generation=2, previous=failed.status)
    assert stopped.actions == (d.PipelineAction("dismiss_error"),)
    dismissed = pipeline("Stopped", "Stopped")
    settled = run(make_spec(stopped=True), dismissed, generation=2, previous=stopped.status)
    assert settled.ready and not settled.actions
    again = run(make_spec(), dismissed, generation=3, previous=settled.status)
    assert again.actions == (d.PipelineAction("start", initial="running"),)


# ============================================================================= names


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("orders.live", ("orders", "live")),
        ('"my.table".live', ('"my.table"', "live")),
        ("orders.api-ingress-1a2b", ("orders", "api-ingress-1a2b")),
    ],
)
def test_endpoint_name_splits_at_the_last_dot(endpoint: str, expected: tuple[str, str]) -> None:
    assert d.split_endpoint_name(endpoint) == expected


def test_canonical_names_lowercase_unquoted_and_strip_quotes() -> None:
    assert d.canonical_spec_relation("Orders") == "orders"
    assert d.canonical_spec_relation('"MyTable"') == "MyTable"
    assert d.canonical_reported_relation("orders") == "orders"
    assert d.canonical_reported_relation('"MyTable"') == "MyTable"
    assert d.canonical_reported_relation("MyTable") == "MyTable"


# ============================================================================= a model of Feldera


class Refused(Exception):
    """Feldera would refuse this call (400 IllegalPipelineAction, 503 NotDeployed, 404...)."""


def model_key(relation: str) -> str:
    """The model's own SQL name rule: quoted → exact, unquoted → lower case."""
    if relation.startswith('"') and relation.endswith('"'):
        return relation[1:-1]
    return relation.lower()


@dataclass
class ModelConnector:
    direction: Literal["input", "output"]
    relation: str  # canonical (what the model matches by)
    reported: str  # as /stats spells it in endpoint_name
    name: str
    paused: bool
    sql_paused: bool  # the `paused` in the SQL: what an SQL-reset restart restores
    temporary: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.direction, self.relation, self.name)


@dataclass
class FelderaModel:
    """Just enough of Feldera (feldera-api.md) to check that decide() drives it home."""

    status: str
    desired: str
    connectors: list[ModelConnector]
    checkpoint_restore: bool  # restart keeps the flags (checkpoint) or resets them to the SQL's
    touched: set[tuple[str, str, str]] = field(default_factory=set)

    def observe(self) -> ObservedPipeline:
        deployed = self.status in DEPLOYED  # /stats answers 503 otherwise

        def stats(direction: str) -> tuple[ObservedConnector, ...] | None:
            if not deployed:
                return None
            return tuple(
                conn(c.reported, c.name, c.paused)
                for c in self.connectors
                if c.direction == direction
            )

        return ObservedPipeline(
            deployment_status=self.status,
            desired_status=self.desired,
            program_status="Success",
            inputs=stats("input"),
            outputs=stats("output"),
        )

    def apply(self, action: PipelineAction | ConnectorAction) -> None:
        if isinstance(action, PipelineAction):
            self._pipeline(action)
        else:
            self._connector(action)

    def _pipeline(self, action: PipelineAction) -> None:
        if action.verb == "start":
            # IllegalPipelineAction while stopping; start needs a settled Stopped here.
            if not (self.status == "Stopped" and self.desired == "Stopped"):
                raise Refused(f"start while {self.status}/{self.desired}")
            if action.initial not in ("running", "paused"):
                raise Refused(f"start?initial={action.initial}")
            self.desired = "Running" if action.initial == "running" else "Paused"
        elif action.verb in ("pause", "resume"):
            if self.status not in DEPLOYED or self.desired not in DEPLOYED:
                raise Refused(f"{action.verb} while {self.status}/{self.desired}")
            self.desired = "Paused" if action.verb == "pause" else "Running"
        elif action.verb == "stop":
            self.desired = "Stopped"  # stop?force=true is always accepted
        else:  # pragma: no cover
            raise AssertionError(action)

    def _connector(self, action: ConnectorAction) -> None:
        if self.status not in DEPLOYED:
            raise Refused(f"connector action while {self.status}: 503 NotDeployed")
        key = (action.direction, model_key(action.relation), action.connector)
        matches = [c for c in self.connectors if c.key == key]
        if not matches:
            raise Refused(f"404 unknown endpoint {key}")
        (target,) = matches
        target.paused = action.verb == "pause"
        self.touched.add(key)

    def settle(self) -> None:
        """One step of whatever transition is in flight."""
        if self.desired == "Stopped":
            if self.status == "Stopping":
                self.status = "Stopped"
            elif self.status != "Stopped":
                self.status = "Stopping"
        elif self.desired == "Suspended":
            if self.status == "Suspended":
                self.desired = "Stopped"  # suspension detected: resources are released
            else:
                self.status = "Suspended"
        elif self.status == "Stopped":
            self.status = "Provisioning"
        elif self.status == "Provisioning":
            self.status = "Initializing"
        elif self.status == "Initializing":
            self.status = self.desired
            if not self.checkpoint_restore:
                for c in self.connectors:
                    c.paused = c.sql_paused
        elif self.status != self.desired:  # Running ⇄ Paused, Unavailable → desired
            self.status = self.desired

    def settled(self) -> bool:
        before = (self.status, self.desired)
        probe = FelderaModel(self.status, self.desired, [], self.checkpoint_restore)
        probe.settle()
        return (probe.status, probe.desired) == before

    def flags(self) -> dict[tuple[str, str, str], bool]:
        return {c.key: c.paused for c in self.connectors}


# States Feldera can be found in (deployment_status, deployment_desired_status).
MODEL_STATES: tuple[tuple[str, str], ...] = (
    ("Stopped", "Stopped"),
    ("Stopped", "Running"),  # start accepted, not yet picked up (or waiting for compilation)
    ("Stopped", "Paused"),
    ("Provisioning", "Running"),
    ("Provisioning", "Paused"),
    ("Provisioning", "Stopped"),
    ("Initializing", "Running"),
    ("Initializing", "Paused"),
    ("Initializing", "Stopped"),
    ("Running", "Running"),
    ("Running", "Paused"),
    ("Running", "Stopped"),
    ("Running", "Suspended"),
    ("Paused", "Paused"),
    ("Paused", "Running"),
    ("Paused", "Stopped"),
    ("Paused", "Suspended"),
    ("Unavailable", "Running"),
    ("Unavailable", "Paused"),
    ("Unavailable", "Stopped"),
    ("Suspended", "Suspended"),
    ("Suspended", "Stopped"),  # suspension detected, stop under way
    ("Stopping", "Stopped"),
)
# The longest path: Running→Suspended, →(desired Stopped), →Stopping, →Stopped, start,
# →Provisioning, →Initializing, →Running, connector actions, then the Ready observation.
MAX_ROUNDS = 10


@dataclass(frozen=True)
class ConnectorSlot:
    """A connector the model's pipeline has, and the ways a spec may spell its relation."""

    direction: Literal["input", "output"]
    relation: str  # canonical
    name: str
    spec_spellings: tuple[str, ...]
    reported_spellings: tuple[str, ...]


SLOTS = (
    ConnectorSlot("input", "orders", "live", ("orders", "Orders", "ORDERS"), ("orders",)),
    ConnectorSlot("input", "orders", "backfill", ("orders", '"orders"'), ("orders",)),
    ConnectorSlot("input", "MyTable", "c1", ('"MyTable"',), ("MyTable", '"MyTable"')),
    ConnectorSlot("output", "big_orders", "sink", ("big_orders", "Big_Orders"), ("big_orders",)),
    ConnectorSlot("output", "Audit", "s3", ('"Audit"',), ("Audit", '"Audit"')),
)
TEMPORARY = (
    ConnectorSlot("input", "orders", "api-ingress-7f3e2a", (), ("orders",)),
    ConnectorSlot(
        "output", "big_orders", "api-0c5e4c1e-7a35-4c1b-9d0e-1f2a3b4c5d6e", (), ("big_orders",)
    ),
)


@dataclass
class Scenario:
    spec: FelderaPipelineSpec
    model: FelderaModel
    declared: frozenset[tuple[str, str, str]]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    status, desired = draw(st.sampled_from(MODEL_STATES))
    connectors: list[ModelConnector] = []
    inputs: list[tuple[str, str, bool]] = []
    outputs: list[tuple[str, str, bool]] = []
    declared: set[tuple[str, str, str]] = set()
    for slot in (*SLOTS, *TEMPORARY):
        temporary = slot in TEMPORARY
        mc = ModelConnector(
            slot.direction,
            slot.relation,
            draw(st.sampled_from(slot.reported_spellings)),
            slot.name,
            paused=draw(st.booleans()),
            sql_paused=draw(st.booleans()),
            temporary=temporary,
        )
        connectors.append(mc)
        if temporary or not draw(st.booleans()):
            continue  # undeclared
        spelling = draw(st.sampled_from(slot.spec_spellings))
        target = inputs if slot.direction == "input" else outputs
        target.append((spelling, slot.name, draw(st.booleans())))
        declared.add(mc.key)
    spec = make_spec(
        paused=draw(st.booleans()), stopped=draw(st.booleans()), inputs=inputs, outputs=outputs
    )
    model = FelderaModel(status, desired, connectors, checkpoint_restore=draw(st.booleans()))
    return Scenario(spec, model, frozenset(declared))


def assert_model_matches_spec(scenario: Scenario) -> None:
    """Ready must mean it: Feldera is in the declared state, settled, flags as declared."""
    model, spec = scenario.model, scenario.spec
    assert model.settled(), (model.status, model.desired)
    if spec.stopped:
        assert model.status == "Stopped"
        return
    assert model.status == ("Paused" if spec.paused else "Running")
    wanted = {("input", model_key(c.table), c.connector): c.paused for c in spec.inputs} | {
        ("output", model_key(c.view), c.connector): c.paused for c in spec.outputs
    }
    flags = model.flags()
    for key, paused in wanted.items():
        assert flags[key] == paused, key


def assert_action_is_legal(decision: Decision, scenario: Scenario) -> None:
    observed = scenario.model
    for action in decision.actions:
        if isinstance(action, ConnectorAction):
            key = (action.direction, model_key(action.relation), action.connector)
            assert key in scenario.declared, f"acted on an undeclared connector: {action}"
            assert observed.status in DEPLOYED and observed.desired in DEPLOYED
        elif action.verb == "start":
            assert (observed.status, observed.desired) == ("Stopped", "Stopped")
        elif action.verb in ("pause", "resume"):
            assert observed.status in DEPLOYED
        else:
            assert observed.desired != "Stopped"


def drive(scenario: Scenario, *, rounds: int = MAX_ROUNDS) -> tuple[int, Decision]:
    """observe → decide → apply → settle one step, until Ready. Returns (rounds used, decision)."""
    model = scenario.model
    previous: dict[str, Any] | None = None
    for n in range(1, rounds + 1):
        decision = run(scenario.spec, model.observe(), previous=previous, now=f"t{n}")
        assert_well_formed(decision)
        assert_action_is_legal(decision, scenario)
        if decision.ready:
            return n, decision
        for action in decision.actions:
            model.apply(action)  # raises Refused if Feldera would refuse it
        model.settle()
        previous = decision.status
    raise AssertionError(
        f"not Ready after {rounds} rounds: {model.status}/{model.desired}, "
        f"last reason {decision.ready_reason}: {decision.ready_message}"
    )


PROPERTY_SETTINGS = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(scenarios())
def test_any_state_converges_to_ready_with_only_legal_actions(scenario: Scenario) -> None:
    model = scenario.model
    undeclared_before = {k: v for k, v in model.flags().items() if k not in scenario.declared}
    _, decision = drive(scenario)

    assert_model_matches_spec(scenario)
    assert model.touched <= scenario.declared
    if model.checkpoint_restore or model.status not in DEPLOYED:
        # Nothing but the operator changed flags here, and it never touches undeclared ones.
        undeclared_after = {k: v for k, v in model.flags().items() if k not in scenario.declared}
        assert undeclared_after == undeclared_before
    temporary = [c for c in model.connectors if c.temporary]
    assert all(c.key not in model.touched for c in temporary)

    # Converged is a fixed point: Feldera does not move, decide() asks for nothing, the status
    # stays byte-for-byte equal (no Kubernetes write), re-observation after re-observation.
    previous = decision.status
    for t in ("later", "much-later"):
        model.settle()
        again = run(scenario.spec, model.observe(), previous=previous, now=t)
        assert again.ready
        assert again.actions == ()
        assert not status_changed(previous, again.status)
        previous = again.status


@PROPERTY_SETTINGS
@given(scenarios(), st.data())
def test_restart_that_restores_different_flags_is_corrected_in_one_round(
    scenario: Scenario, data: st.DataObject
) -> None:
    drive(scenario)
    model = scenario.model
    if model.status not in DEPLOYED:
        return  # spec.stopped: connectors are not observable, nothing can drift
    converged = run(scenario.spec, model.observe(), generation=5)
    assert converged.ready
    # A restart (or someone in the console) sets every flag to anything.
    for c in model.connectors:
        c.paused = data.draw(st.booleans(), label=f"{c.relation}.{c.name}")
    undeclared_before = {k: v for k, v in model.flags().items() if k not in scenario.declared}

    decision = run(scenario.spec, model.observe(), generation=5, previous=converged.status)
    assert_action_is_legal(decision, scenario)
    assert is_drift(decision, ready_generation=5, generation=5) is bool(decision.actions)
    for action in decision.actions:
        assert isinstance(action, ConnectorAction)
        model.apply(action)
    after = run(scenario.spec, model.observe(), generation=5, previous=decision.status)
    assert after.ready
    assert after.actions == ()
    assert_model_matches_spec(scenario)
    assert {k: v for k, v in model.flags().items() if k not in scenario.declared} == (
        undeclared_before
    )


# ----------------------------------------------------------------------------- any observation


observed_connectors = st.lists(
    st.builds(
        ObservedConnector,
        relation=st.sampled_from(["orders", "MyTable", '"MyTable"', "big_orders", "Other"]),
        connector=st.sampled_from(["live", "backfill", "c1", "sink", "api-ingress-1", "api-x"]),
        paused=st.one_of(st.none(), st.booleans()),
        end_of_input=st.one_of(st.none(), st.booleans()),
        health=st.sampled_from([None, "Healthy", "Unhealthy"]),
        fatal_error=st.sampled_from([None, "", "broken"]),
    ),
    max_size=5,
)
any_observation = st.builds(
    ObservedPipeline,
    deployment_status=st.sampled_from(DEPLOYMENT_STATUSES),
    desired_status=st.sampled_from(DESIRED_STATUSES),
    program_status=st.one_of(st.none(), st.sampled_from(PROGRAM_STATUSES)),
    program_error=st.sampled_from([None, "", "bad SQL\nmore"]),
    deployment_error=st.sampled_from([None, "panic"]),
    inputs=st.one_of(st.none(), observed_connectors.map(tuple)),
    outputs=st.one_of(st.none(), observed_connectors.map(tuple)),
    outputs_pausable=st.booleans(),
    stats_problem=st.sampled_from([None, Problem(d.FELDERA_ERROR, "stats failed")]),
)
any_problem = st.builds(
    Problem,
    reason=st.sampled_from(sorted(d.SYNC_FAILURE_REASONS | {d.PIPELINE_NOT_FOUND})),
    message=st.just("something went wrong"),
)
any_spec = st.builds(
    make_spec,
    paused=st.booleans(),
    stopped=st.booleans(),
    inputs=st.lists(
        st.tuples(
            st.sampled_from(["orders", "Orders", '"MyTable"']),
            st.sampled_from(["live", "backfill", "api-ingress-1"]),
            st.booleans(),
        ),
        max_size=3,
        unique_by=lambda t: (model_key(t[0]), t[1]),
    ),
    outputs=st.lists(
        st.tuples(st.sampled_from(["big_orders", '"Big"']), st.just("sink"), st.booleans()),
        max_size=1,
    ),
)


def declared_keys(spec: FelderaPipelineSpec) -> set[tuple[str, str, str]]:
    return {("input", model_key(c.table), c.connector) for c in spec.inputs} | {
        ("output", model_key(c.view), c.connector) for c in spec.outputs
    }


@PROPERTY_SETTINGS
@given(
    any_spec,
    st.one_of(any_observation, any_problem),
    st.one_of(st.none(), any_observation, any_problem),
)
def test_any_observation_gives_a_well_formed_status_and_only_permitted_actions(
    spec: FelderaPipelineSpec,
    observed: ObservedPipeline | Problem,
    observed_before: ObservedPipeline | Problem | None,
) -> None:
    previous = (
        run(spec, observed_before, generation=3).status if observed_before is not None else None
    )
    decision = run(spec, observed, previous=previous, generation=4, now=T1)
    assert_well_formed(decision, generation=4)
    # The same observation again, later: the same status, so no Kubernetes write (design.md).
    again = run(spec, observed, previous=decision.status, generation=4, now=T2)
    assert again.status == decision.status
    assert not status_changed(decision.status, again.status)
    # The lastTransitionTime rule, for every condition.
    if previous is not None:
        before = {c["type"]: c for c in previous["conditions"]}
        for c in decision.status["conditions"]:
            old = before[c["type"]]
            expected_time = old["lastTransitionTime"] if old["status"] == c["status"] else T1
            assert c["lastTransitionTime"] == expected_time
    if isinstance(observed, Problem):
        assert decision.actions == ()
        if previous is not None and observed.reason != d.PIPELINE_NOT_FOUND:
            kept = ("state", "desiredState", "programStatus", "deploymentError", "connectors")
            for key in (*kept, "inputs", "outputs"):
                assert decision.status[key] == previous[key]
        return
    status, desired = observed.deployment_status, observed.desired_status
    declared = declared_keys(spec)
    for action in decision.actions:
        if isinstance(action, ConnectorAction):
            assert status in DEPLOYED and desired in DEPLOYED and not spec.stopped
            assert (action.direction, model_key(action.relation), action.connector) in declared
        elif action.verb == "start":
            assert (status, desired) == ("Stopped", "Stopped")
            assert observed.program_status == "Success" and not observed.deployment_error
            assert action.initial == ("paused" if spec.paused else "running")
        elif action.verb in ("pause", "resume"):
            assert status in DEPLOYED and not spec.stopped
            assert desired not in ("Stopped", "Suspended")
            assert desired != ("Paused" if action.verb == "pause" else "Running")
        elif action.verb == "dismiss_error":
            assert spec.stopped and (status, desired) == ("Stopped", "Stopped")
            assert observed.deployment_error
        else:
            assert spec.stopped and desired != "Stopped"
    assert len(pipeline_actions(decision)) <= 1
    # One entry per declared connector, and one per other reported, non-temporary connector.
    for direction, reported in (("input", observed.inputs), ("output", observed.outputs)):
        mine = {(rel, name) for dir_, rel, name in declared if dir_ == direction}
        others = {
            (c.relation.strip('"'), c.connector)
            for c in reported or ()
            if not c.connector.startswith("api-")
        } - mine
        entries = decision.status[f"{direction}s"]
        assert sum(1 for e in entries if e["declared"]) == len(mine)
        assert len(entries) == len(mine) + len(others)


# ============================================================================= external stop grace


def test_a_start_held_after_an_external_stop_says_why_and_how_long() -> None:
    spec = make_spec()
    decision = decide(
        spec,
        generation=1,
        pipeline_name="orders-main",
        observed=pipeline("Stopped", "Stopped"),
        previous_status=None,
        now=T0,
        start_held_for=42.3,
    )
    assert decision.actions == ()
    assert decision.ready_reason == d.EXTERNAL_STOP_GRACE
    assert "43 s" in decision.ready_message and "spec.stopped" in decision.ready_message
    assert cond_status(decision)["Reconciling"] == "True"
    assert cond_status(decision)["Stalled"] == "False"
    assert decision.in_progress
    assert_well_formed(decision)


def test_a_held_start_changes_nothing_else() -> None:
    # Only a start is held: a stop the spec asks for, or a pipeline already running, go on.
    stopped = decide(
        make_spec(stopped=True),
        generation=1,
        pipeline_name="p",
        observed=pipeline("Running", "Running"),
        previous_status=None,
        now=T0,
        start_held_for=10,
    )
    assert stopped.actions == (PipelineAction("stop"),)
    running = decide(
        make_spec(paused=True),
        generation=1,
        pipeline_name="p",
        observed=pipeline("Running", "Running"),
        previous_status=None,
        now=T0,
        start_held_for=10,
    )
    assert running.actions == (PipelineAction("pause"),)


def test_whether_the_program_is_managed_is_read_from_the_spec() -> None:
    # No spec.program yet: every pipeline's program is managed elsewhere.
    assert d.manages_program(make_spec()) is False
