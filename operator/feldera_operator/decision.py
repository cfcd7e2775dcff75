"""The decision: desired spec + observed Feldera state → actions to issue and the status to write.

Pure functions, no I/O: everything the operator thinks lives here and is tested exhaustively. The
kopf wiring (`handlers.py`) observes Feldera, calls `decide()`, issues the actions, and patches the
status only when it differs from what is already on the resource.

Rules (see the README for the user-facing catalogue of reasons):
- Observe before acting; act only where observed differs from desired, so a converged system
  decides no action at all.
- Pipeline actions follow Feldera's state machine: start only from a settled Stopped,
  pause/resume only while Running or Paused, stop (force) unless already heading to Stopped.
- Connector actions only while the pipeline is Running or Paused (Feldera answers 503 otherwise),
  and only for connectors the spec lists; the others are reported, never touched.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from feldera_operator.models import FelderaPipelineSpec

# ----------------------------------------------------------------------------- reason catalogue

CONVERGED = "Converged"
SYNCED = "Synced"
AS_EXPECTED = "AsExpected"

# Problems that only a person (or the world outside the operator) can fix: Stalled=True.
INSTANCE_NOT_FOUND = "InstanceNotFound"
SECRET_NOT_FOUND = "SecretNotFound"
# A FelderaInstance's Secret without the opt-in label: never read (see instance_connection.py).
SECRET_NOT_LABELLED = "SecretNotLabelled"
CREDENTIALS_REJECTED = "CredentialsRejected"
PERMISSION_DENIED = "PermissionDenied"
PIPELINE_NOT_FOUND = "PipelineNotFound"
PROGRAM_ERROR = "ProgramError"
DEPLOYMENT_FAILED = "DeploymentFailed"
CONNECTOR_NOT_FOUND = "ConnectorNotFound"
OUTPUT_PAUSE_UNSUPPORTED = "OutputPauseUnsupported"
INVALID_SPEC = "InvalidSpec"
# Two spec entries that Kubernetes tells apart and Feldera does not (`orders`, `"orders"`).
DUPLICATE_CONNECTOR = "DuplicateConnector"
# An older FelderaPipeline names the same Feldera pipeline: this one is never acted on.
PIPELINE_CLAIMED = "PipelineClaimed"
# Feldera waits for a person to approve a bootstrap (Enterprise).
AWAITING_APPROVAL = "AwaitingApproval"
# Started as a standby by someone else: waits to be activated, which the operator never does.
PIPELINE_STANDBY = "PipelineStandby"

# The URL leads nowhere Feldera answers (a wrong path prefix, a redirect): only a person can fix
# it, and retrying as if Feldera had failed would hide that.
INVALID_URL = "InvalidURL"
# TLS to Feldera failed: an unknown CA, an expired certificate, another host's certificate.
TLS_ERROR = "TLSError"

# Transient trouble talking to Feldera: Synced=False, retried with backoff.
FELDERA_UNREACHABLE = "FelderaUnreachable"
FELDERA_ERROR = "FelderaError"

# Deleting with deletionPolicy Stop, and the stop cannot be made yet (the message says why).
DELETION_BLOCKED = "DeletionBlocked"

# Progress: Reconciling=True while Feldera follows an action or finishes a transition.
COMPILING = "Compiling"
STARTING = "Starting"
STOPPING = "Stopping"
PAUSING = "Pausing"
RESUMING = "Resuming"
TRANSITIONING = "Transitioning"
PIPELINE_NOT_DEPLOYED = "PipelineNotDeployed"
CONNECTORS_PENDING = "ConnectorsPending"
# Feldera lost the pipeline's runner and brings it back by itself.
PIPELINE_UNAVAILABLE = "PipelineUnavailable"
# Someone else stopped the pipeline (a deploy tool updating its program): it is started again
# after a grace, or once a new program version compiled.
EXTERNAL_STOP_GRACE = "ExternalStopGrace"

# The declared program (spec.program; its flow is decided in program.py).
CREATING_PIPELINE = "CreatingPipeline"  # Reconciling: PUT issued, Feldera compiles it next
PREVIEWING_CHANGE = "PreviewingChange"  # Reconciling: POST .../diff of the new SQL
UPDATING_PROGRAM = "UpdatingProgram"  # Reconciling: stop, clear, patch or approve in flight
# A person must act for the change to go on: approve its hash, or stop the pipeline. Stalled
# (kstatus has no "Suspended"): nothing will progress by itself, so `kubectl wait` and Flux
# report it at once with the message saying what to do, instead of timing out on "in progress".
# Argo CD's health check maps these two to Suspended rather than Degraded: they wait on a
# person by design, and nothing is broken (the old program keeps running).
AWAITING_APPROVAL = "AwaitingApproval"
UPDATE_PENDING = "UpdatePending"
WAITING_FOR_PERSON = frozenset({AWAITING_APPROVAL, UPDATE_PENDING})
BOOTSTRAP_REJECTED = "BootstrapRejected"
STORAGE_IN_USE = "StorageInUse"
CONFIGMAP_NOT_FOUND = "ConfigMapNotFound"
CONFIGMAP_NOT_LABELLED = "ConfigMapNotLabelled"
# managementPolicy ObserveOnly and Feldera differs from the spec: reported, never acted on.
OBSERVE_ONLY = "ObserveOnly"
PROGRAM_PROGRESS_REASONS = frozenset({CREATING_PIPELINE, PREVIEWING_CHANGE, UPDATING_PROGRAM})

STALLED_REASONS = frozenset(
    {
        INSTANCE_NOT_FOUND,
        SECRET_NOT_FOUND,
        SECRET_NOT_LABELLED,
        CREDENTIALS_REJECTED,
        PERMISSION_DENIED,
        PIPELINE_NOT_FOUND,
        PROGRAM_ERROR,
        DEPLOYMENT_FAILED,
        CONNECTOR_NOT_FOUND,
        OUTPUT_PAUSE_UNSUPPORTED,
        INVALID_SPEC,
        AWAITING_APPROVAL,
        UPDATE_PENDING,
        BOOTSTRAP_REJECTED,
        STORAGE_IN_USE,
        CONFIGMAP_NOT_FOUND,
        CONFIGMAP_NOT_LABELLED,
        OBSERVE_ONLY,
        DUPLICATE_CONNECTOR,
        PIPELINE_CLAIMED,
        PIPELINE_STANDBY,
        INVALID_URL,
        TLS_ERROR,
    }
)
# Reasons that mean the round trip to Feldera failed (Synced=False).
SYNC_FAILURE_REASONS = frozenset(
    {
        INSTANCE_NOT_FOUND,
        SECRET_NOT_FOUND,
        SECRET_NOT_LABELLED,
        CREDENTIALS_REJECTED,
        PERMISSION_DENIED,
        FELDERA_UNREACHABLE,
        FELDERA_ERROR,
        INVALID_URL,
        TLS_ERROR,
    }
)

CONDITION_TYPES = ("Ready", "Synced", "Reconciling", "Stalled")

# ----------------------------------------------------------------------------- Feldera vocabulary

DEPLOYED = frozenset({"Running", "Paused"})
PROGRAM_FAILED = frozenset({"SqlError", "RustError", "SystemError"})
PROGRAM_READY = "Success"
# Settled states from which `start` is accepted (with desired status the same). Not Suspended:
# Feldera then moves the desired status to Stopped by itself, and refuses start while stopping
# (400 IllegalPipelineAction); its lifecycle reference: "Suspended can only be cleared by
# stop-and-start".
STARTABLE = frozenset({"Stopped"})


# ----------------------------------------------------------------------------- observations


@dataclass(frozen=True)
class ObservedConnector:
    """One connector as Feldera's /stats reports it."""

    relation: str  # table or view, as Feldera spells it in endpoint_name
    connector: str
    paused: bool | None
    end_of_input: bool | None = None
    health: str | None = None
    fatal_error: str | None = None


@dataclass(frozen=True)
class ObservedPipeline:
    """One pipeline as Feldera reports it: its status, and its connectors when deployed."""

    deployment_status: str
    desired_status: str
    program_status: str | None = None
    program_error: str | None = None
    deployment_error: str | None = None
    program_version: int | None = None
    # None when /stats was not read (pipeline not deployed, or the call failed).
    inputs: tuple[ObservedConnector, ...] | None = None
    outputs: tuple[ObservedConnector, ...] | None = None
    # Feldera < 0.369 reports no `paused` on outputs and cannot pause them.
    outputs_pausable: bool = True
    # Why /stats could not be read although the pipeline is deployed (a Problem), if so.
    stats_problem: Problem | None = None


@dataclass(frozen=True)
class Problem:
    """Why the pipeline could not be observed: a catalogue reason and a message for people."""

    reason: str
    message: str


Observation = ObservedPipeline | Problem


# ----------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class PipelineAction:
    verb: Literal["start", "pause", "resume", "stop", "dismiss_error"]
    initial: Literal["running", "paused"] | None = None  # for start

    def describe(self) -> str:
        return f"{self.verb}?initial={self.initial}" if self.initial else self.verb


@dataclass(frozen=True)
class ConnectorAction:
    direction: Literal["input", "output"]
    relation: str  # as written in the spec (quotes kept: the client URL-encodes them)
    connector: str
    verb: Literal["start", "pause"]

    def describe(self) -> str:
        return f"{self.direction} connector {self.relation}.{self.connector}: {self.verb}"


Action = PipelineAction | ConnectorAction


@dataclass(frozen=True)
class ProgramOutcome:
    """The declared program's part of a reconcile, as `program.decide_program()` decides it."""

    status: Mapping[str, Any] | None  # status.program
    reason: str  # CONVERGED when Feldera holds the declared program as it should
    message: str
    # The program flow owns the pipeline's lifecycle this round (it stops, patches, starts it):
    # run-state actions wait, so that nothing starts a pipeline stopped to be updated.
    holds_pipeline: bool = False
    acting: bool = False  # a program step was decided this round


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    status: dict[str, Any]
    ready: bool
    ready_reason: str
    ready_message: str
    in_progress: bool = False
    problems: tuple[str, ...] = field(default=())


# ----------------------------------------------------------------------------- names


def manages_program(spec: FelderaPipelineSpec) -> bool:
    """Whether the resource declares the pipeline's program (spec.program). Where it does not, a
    tool deploys it its own way, and a stop by someone else is given a grace before the pipeline
    is started again."""
    return getattr(spec, "program", None) is not None


def canonical_spec_relation(name: str) -> str:
    """A table/view name as written in a spec → the key Feldera matches it by.

    Unquoted SQL names are case-insensitive (Feldera lower-cases them); quoted names are exact.
    """
    if len(name) >= 2 and name.startswith('"') and name.endswith('"'):
        return name[1:-1]
    return name.lower()


def canonical_reported_relation(name: str) -> str:
    """A table/view name as Feldera reports it → the same key (Feldera already normalised it)."""
    if len(name) >= 2 and name.startswith('"') and name.endswith('"'):
        return name[1:-1]
    return name


def split_endpoint_name(endpoint_name: str) -> tuple[str, str]:
    """`table.connector` → (table, connector). Connector names cannot hold a dot; tables can."""
    relation, _, connector = endpoint_name.rpartition(".")
    return relation, connector


def is_temporary_connector(connector: str) -> bool:
    """Connectors Feldera creates for HTTP ingress/egress; they come and go, so they are ignored."""
    return connector.startswith("api-ingress-") or connector.startswith("api-")


# ----------------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class _ConnectorVerdict:
    entry: dict[str, Any]
    action: ConnectorAction | None
    problem: str | None  # catalogue reason when not as declared
    pending: bool  # waits on the pipeline or on an issued action
    note: str | None = None  # what the Ready message adds about this connector


def decide(
    spec: FelderaPipelineSpec,
    *,
    generation: int,
    pipeline_name: str,
    observed: Observation,
    previous_status: Mapping[str, Any] | None,
    now: str,
    program: ProgramOutcome | None = None,
    start_held_for: float | None = None,
) -> Decision:
    """Decide the actions for one FelderaPipeline and the whole status to write.

    `program` is the program flow's outcome when the spec declares a program (program.py): its
    status goes to status.program, its reason leads Ready's while the program is not as declared,
    and while it holds the pipeline no run-state action is decided. ObserveOnly decides none.
    `start_held_for`: seconds a start is still held back (someone else stopped the pipeline, see
    the reconciler's external-stop grace); None when nothing holds it.
    """
    decision = _decide_run_state(
        spec,
        generation=generation,
        pipeline_name=pipeline_name,
        observed=observed,
        previous_status=previous_status,
        now=now,
        start_held_for=start_held_for,
    )
    if program is None and spec.managementPolicy == "Full":
        return decision
    return _with_program_and_policy(
        decision, spec, observed, program, previous_status, generation=generation, now=now
    )


def _with_program_and_policy(
    decision: Decision,
    spec: FelderaPipelineSpec,
    observed: Observation,
    program: ProgramOutcome | None,
    previous_status: Mapping[str, Any] | None,
    *,
    generation: int,
    now: str,
) -> Decision:
    """The run-state decision, with the program flow's outcome and managementPolicy laid over."""
    status = dict(decision.status)
    actions = decision.actions
    reason, message = decision.ready_reason, decision.ready_message
    if program is not None and program.holds_pipeline:
        actions = ()
    if spec.managementPolicy == "ObserveOnly" and actions:
        status["inputs"], status["outputs"] = (
            _observe_only_entries(status.get(key) or [], actions, direction)
            for key, direction in (("inputs", "input"), ("outputs", "output"))
        )
        if not _is_sync_failure(observed):
            reason = OBSERVE_ONLY
            message = (
                "managementPolicy ObserveOnly: Feldera differs from the spec and is left as it "
                f"is (would: {'; '.join(a.describe() for a in actions)})"
            )
        actions = ()
    if program is not None:
        status["program"] = program.status
        if program.reason != CONVERGED and not _is_sync_failure(observed):
            reason, message = program.reason, program.message
    if (reason, message, actions) == (
        decision.ready_reason,
        decision.ready_message,
        decision.actions,
    ):
        return replace(decision, status=status)

    synced = next(
        c for c in decision.status["conditions"] if isinstance(c, Mapping) and c["type"] == "Synced"
    )
    ready = reason == CONVERGED
    stalled = reason in STALLED_REASONS
    acting = bool(actions) or (program is not None and program.acting)
    status["conditions"] = _conditions(
        (previous_status or {}).get("conditions"),
        generation=generation,
        now=now,
        ready=(ready, reason, message),
        synced=(synced["status"] == "True", synced["reason"], synced["message"]),
        reconciling=((not ready and not stalled) or acting, reason, message),
        stalled=(stalled, reason, message),
    )
    return Decision(
        actions=actions,
        status=status,
        ready=ready,
        ready_reason=reason,
        ready_message=message,
        in_progress=acting or (not ready and not stalled and reason not in SYNC_FAILURE_REASONS),
        problems=decision.problems,
    )


def _is_sync_failure(observed: Observation) -> bool:
    """Feldera could not be read: what the program flow or ObserveOnly say cannot be known."""
    return isinstance(observed, Problem) and observed.reason != PIPELINE_NOT_FOUND


def _observe_only_entries(
    entries: Sequence[Mapping[str, Any]], actions: Sequence[Action], direction: str
) -> list[dict[str, Any]]:
    """Connector entries whose action ObserveOnly withholds say so instead of Pausing/Starting."""
    withheld = {
        (canonical_spec_relation(a.relation), a.connector)
        for a in actions
        if isinstance(a, ConnectorAction) and a.direction == direction
    }
    relation_key = "table" if direction == "input" else "view"
    result = []
    for entry in entries:
        key = (canonical_reported_relation(str(entry.get(relation_key))), entry.get("connector"))
        result.append({**entry, "reason": OBSERVE_ONLY} if key in withheld else dict(entry))
    return result


def _decide_run_state(
    spec: FelderaPipelineSpec,
    *,
    generation: int,
    pipeline_name: str,
    observed: Observation,
    previous_status: Mapping[str, Any] | None,
    now: str,
    start_held_for: float | None = None,
) -> Decision:
    """The pipeline's run state and its connectors: the decision before spec.program existed."""
    previous_status = previous_status or {}
    if isinstance(observed, Problem):
        return _decide_unobservable(spec, generation, pipeline_name, observed, previous_status, now)

    actions: list[Action] = []
    pipeline_action, pipeline_reason, pipeline_message = _pipeline_step(spec, observed)
    if start_held_for is not None and pipeline_action and pipeline_action.verb == "start":
        pipeline_action, pipeline_reason = None, EXTERNAL_STOP_GRACE
        pipeline_message = (
            "the pipeline was stopped outside the operator (a tool deploying its program?): it "
            f"is started again in {math.ceil(start_held_for)} s, or as soon as a new program "
            "version has compiled; set spec.stopped: true to keep it stopped"
        )
    if pipeline_action is not None:
        actions.append(pipeline_action)

    connectors_settable = (
        observed.deployment_status in DEPLOYED
        and not spec.stopped
        and observed.desired_status in DEPLOYED
    )
    # A pipeline stopped as declared is Ready: its connectors cannot be read, and need not be.
    wait_for_deploy = not spec.stopped
    inputs = _connector_verdicts(
        "input",
        [(c.table, c.connector, c.paused) for c in spec.inputs],
        observed.inputs,
        observed,
        connectors_settable,
        pausable=True,
        wait_for_deploy=wait_for_deploy,
    )
    outputs = _connector_verdicts(
        "output",
        [(c.view, c.connector, c.paused) for c in spec.outputs],
        observed.outputs,
        observed,
        connectors_settable,
        pausable=observed.outputs_pausable,
        wait_for_deploy=wait_for_deploy,
    )
    verdicts = inputs + outputs
    actions.extend(v.action for v in verdicts if v.action is not None)

    stats_problem = observed.stats_problem
    connector_problems = [v.problem for v in verdicts if v.problem in STALLED_REASONS]

    # Ready's reason: the pipeline's own progress or problem first, then connector problems,
    # then connectors still following an action.
    if pipeline_reason != CONVERGED:
        reason, message = pipeline_reason, pipeline_message
    elif stats_problem is not None:
        reason, message = stats_problem.reason, stats_problem.message
    elif connector_problems:
        reason = connector_problems[0]
        names = [v.note or _entry_name(v.entry) for v in verdicts if v.problem == reason]
        message = _connector_problem_message(reason, list(dict.fromkeys(names)))
    elif any(v.pending for v in verdicts):
        reason = CONNECTORS_PENDING
        names = [_entry_name(v.entry) for v in verdicts if v.pending]
        message = f"waiting for Feldera to apply: {', '.join(names)}"
    else:
        reason = CONVERGED
        message = _converged_message(spec, observed, verdicts)

    ready = reason == CONVERGED
    in_progress = not ready and reason not in STALLED_REASONS and reason not in SYNC_FAILURE_REASONS
    synced_reason = stats_problem.reason if stats_problem else SYNCED
    synced_message = (
        stats_problem.message if stats_problem else "last round trip to Feldera succeeded"
    )

    status: dict[str, Any] = {
        "observedGeneration": generation,
        "pipelineName": pipeline_name,
        "state": observed.deployment_status,
        "desiredState": observed.desired_status,
        "programStatus": observed.program_status,
        "deploymentError": observed.deployment_error,
        "inputs": [v.entry for v in inputs],
        "outputs": [v.entry for v in outputs],
        "connectors": _summary([v.entry for v in verdicts]),
    }
    status["conditions"] = _conditions(
        previous_status.get("conditions"),
        generation=generation,
        now=now,
        ready=(ready, reason, message),
        synced=(synced_reason == SYNCED, synced_reason, synced_message),
        # kstatus reads only Reconciling and Stalled (neither True = Current): a sync failure being
        # retried is in progress, not Current. `in_progress` (follow-ups) is unchanged.
        reconciling=(
            (not ready and reason not in STALLED_REASONS) or bool(actions),
            reason,
            message,
        ),
        stalled=(reason in STALLED_REASONS, reason, message),
    )
    return Decision(
        actions=tuple(actions),
        status=status,
        ready=ready,
        ready_reason=reason,
        ready_message=message,
        in_progress=in_progress or bool(actions),
        problems=tuple(p for p in connector_problems if p is not None),
    )


def _decide_unobservable(
    spec: FelderaPipelineSpec,
    generation: int,
    pipeline_name: str,
    problem: Problem,
    previous_status: Mapping[str, Any],
    now: str,
) -> Decision:
    """No observation: act on nothing, say why, and keep what was last seen (marked by Synced)."""
    status: dict[str, Any] = {
        key: previous_status.get(key)
        for key in (
            "state",
            "desiredState",
            "programStatus",
            "deploymentError",
            "connectors",
        )
    }
    status["inputs"] = list(previous_status.get("inputs") or [])
    status["outputs"] = list(previous_status.get("outputs") or [])
    if problem.reason == PIPELINE_NOT_FOUND:
        # The pipeline is gone: what was seen of it no longer exists.
        status.update(state=None, desiredState=None, programStatus=None, deploymentError=None)
        status["inputs"], status["outputs"] = _unknown_entries(spec, PIPELINE_NOT_FOUND)
        status["connectors"] = _summary(status["inputs"] + status["outputs"])
    status["observedGeneration"] = generation
    status["pipelineName"] = pipeline_name
    status["conditions"] = _problem_conditions(
        previous_status.get("conditions"), problem, generation=generation, now=now
    )
    return Decision(
        actions=(),
        status=status,
        ready=False,
        ready_reason=problem.reason,
        ready_message=problem.message,
    )


def _pipeline_step(
    spec: FelderaPipelineSpec, observed: ObservedPipeline
) -> tuple[PipelineAction | None, str, str]:
    """The pipeline-level action (if any) and the pipeline's contribution to Ready."""
    status = observed.deployment_status
    desired = observed.desired_status

    if spec.stopped:
        # Stopped with desired Running/Paused is a start Feldera has accepted and will carry out:
        # not "Stopped as declared" (the stop below cancels it; stop is always accepted).
        if status == "Stopped" and desired == "Stopped":
            if observed.deployment_error:
                # Declaring it stopped acknowledges the error that stopped it: dismiss it, so
                # that declaring it running again starts it.
                return (
                    PipelineAction("dismiss_error"),
                    TRANSITIONING,
                    "pipeline Stopped as declared; dismissing its deployment error",
                )
            return None, CONVERGED, "pipeline Stopped as declared"
        if desired == "Stopped":
            return None, STOPPING, f"pipeline is {status}, stopping"
        return PipelineAction("stop"), STOPPING, f"pipeline is {status}; stopping it"

    want = "Paused" if spec.paused else "Running"
    if status in STARTABLE and desired in STARTABLE:
        if observed.program_status in PROGRAM_FAILED:
            return (
                None,
                PROGRAM_ERROR,
                f"program status {observed.program_status}: "
                f"{_first_line(observed.program_error) or 'the SQL does not compile'}",
            )
        if observed.deployment_error:
            # A fatal error stopped it: restarting by itself could loop, so a person decides.
            # Declaring it stopped dismisses the error (above); running again then starts it.
            return (
                None,
                DEPLOYMENT_FAILED,
                f"pipeline stopped with an error: {_first_line(observed.deployment_error)}; "
                "set spec.stopped to true (dismisses the error), then false, to start it again",
            )
        if observed.program_status != PROGRAM_READY:
            return None, COMPILING, f"program status {observed.program_status}; waiting to start"
        initial: Literal["running", "paused"] = "paused" if spec.paused else "running"
        return (
            PipelineAction("start", initial=initial),
            STARTING,
            f"pipeline is {status}; starting it {initial}",
        )
    if desired in ("Stopped", "Suspended"):
        # Stopping or suspending (by someone else): start is refused until it settles.
        return None, STOPPING, f"pipeline is {status} on its way to {desired}; will start it after"
    if status in DEPLOYED:
        if desired != want:
            verb: Literal["pause", "resume"] = "pause" if want == "Paused" else "resume"
            reason = PAUSING if verb == "pause" else RESUMING
            return PipelineAction(verb), reason, f"pipeline is {status}; {verb} issued"
        if status != want:
            reason = PAUSING if want == "Paused" else RESUMING
            return None, reason, f"pipeline is {status}, becoming {want}"
        return None, CONVERGED, f"pipeline {status} as declared"
    # Not deployed yet: pause/resume are refused until it is; wait, and say for what.
    if status == "AwaitingApproval":
        return (
            None,
            AWAITING_APPROVAL,
            "pipeline is AwaitingApproval: Feldera waits for a person to approve its bootstrap "
            "(the web console, or POST /v0/pipelines/{name}/approve)",
        )
    if status == "Standby":
        return (
            None,
            PIPELINE_STANDBY,
            "pipeline is in Standby: it waits for whoever started it as a standby to activate "
            "it (POST /v0/pipelines/{name}/activate); the operator does not",
        )
    if status == "Unavailable":
        return (
            None,
            PIPELINE_UNAVAILABLE,
            f"pipeline is Unavailable (desired {desired}): Feldera cannot reach its runner and "
            "is bringing it back; waiting",
        )
    # Provisioning, Initializing, Bootstrapping, Replaying...
    reason = STARTING if status in ("Stopped", "Provisioning", "Initializing") else TRANSITIONING
    return None, reason, f"pipeline is {status} (desired {desired}); waiting"


def _connector_verdicts(
    direction: Literal["input", "output"],
    declared: Sequence[tuple[str, str, bool]],
    observed: tuple[ObservedConnector, ...] | None,
    pipeline: ObservedPipeline,
    settable: bool,
    *,
    pausable: bool,
    wait_for_deploy: bool,
) -> list[_ConnectorVerdict]:
    relation_key = "table" if direction == "input" else "view"
    field_name = f"{direction}s"
    running = pipeline.deployment_status == "Running"
    # Declared entries by the key Feldera matches them by; more than one entry for one key is a
    # spec that contradicts itself (`orders` and `"orders"`): those entries are never acted on.
    groups: dict[tuple[str, str], list[tuple[int, str, bool]]] = {}
    for index, (rel, conn, paused) in enumerate(declared):
        groups.setdefault((canonical_spec_relation(rel), conn), []).append((index, rel, paused))
    seen: dict[tuple[str, str], ObservedConnector] = {}
    for reported in observed or ():
        key = (canonical_reported_relation(reported.relation), reported.connector)
        # A user may name a connector `api-...`: one the spec declares is never a temporary one.
        if is_temporary_connector(reported.connector) and key not in groups:
            continue
        seen[key] = reported

    verdicts: list[_ConnectorVerdict] = []
    # Declared connectors first, in spec order, then the others in Feldera's order.
    for key, group in groups.items():
        if len(group) > 1:
            verdicts.extend(
                _duplicate_verdicts(field_name, relation_key, key, group, seen.get(key), running)
            )
            continue
        _, spec_relation, want_paused = group[0]
        oc = seen.get(key)
        entry: dict[str, Any] = {
            relation_key: oc.relation if oc else spec_relation,
            "connector": key[1],
            "declared": True,
            "desiredPaused": want_paused,
        }
        if observed is None:
            entry.update(paused=None, state="Unknown", active=False)
            entry["reason"] = PIPELINE_NOT_DEPLOYED
            verdicts.append(_ConnectorVerdict(entry, None, None, pending=wait_for_deploy))
            continue
        if oc is None:
            entry.update(paused=None, state="Unknown", active=False, reason=CONNECTOR_NOT_FOUND)
            note = _quoting_hint(relation_key, spec_relation, key[1], seen)
            verdicts.append(
                _ConnectorVerdict(entry, None, CONNECTOR_NOT_FOUND, pending=False, note=note)
            )
            continue
        _fill_observed(entry, oc, running)
        if oc.paused is None or not pausable:
            entry["reason"] = OUTPUT_PAUSE_UNSUPPORTED
            verdicts.append(_ConnectorVerdict(entry, None, OUTPUT_PAUSE_UNSUPPORTED, pending=False))
            continue
        if oc.paused == want_paused:
            verdicts.append(_ConnectorVerdict(entry, None, None, pending=False))
            continue
        verb: Literal["start", "pause"] = "pause" if want_paused else "start"
        if not settable:
            entry["reason"] = PIPELINE_NOT_DEPLOYED
            verdicts.append(_ConnectorVerdict(entry, None, None, pending=wait_for_deploy))
            continue
        entry["reason"] = PAUSING if want_paused else STARTING
        action = ConnectorAction(direction, spec_relation, key[1], verb)
        verdicts.append(_ConnectorVerdict(entry, action, None, pending=True))

    declared_keys = {(v.entry[relation_key], v.entry["connector"]) for v in verdicts}
    for key, oc in seen.items():
        if key in groups:
            continue
        relation = oc.relation
        if (relation, oc.connector) in declared_keys and not relation.startswith('"'):
            # A case-sensitive table beside an unquoted declared entry spelt the same (`"Orders"`
            # reported as Orders, spec `Orders` meaning `orders`): shown as a spec must name it.
            relation = f'"{relation}"'
        if (relation, oc.connector) in declared_keys:
            continue  # never two status entries with one list-map key (the write would be 422)
        entry = {relation_key: relation, "connector": oc.connector, "declared": False}
        _fill_observed(entry, oc, running)
        verdicts.append(_ConnectorVerdict(entry, None, None, pending=False))
    return verdicts


def _duplicate_verdicts(
    field_name: str,
    relation_key: str,
    key: tuple[str, str],
    group: Sequence[tuple[int, str, bool]],
    oc: ObservedConnector | None,
    running: bool,
) -> list[_ConnectorVerdict]:
    """Entries that name one connector twice: reported, each under its own spelling, never acted
    on; the Ready message names them by position."""
    where = " and ".join(f"spec.{field_name}[{i}] ({rel}.{key[1]})" for i, rel, _ in group)
    note = f"{where} name the same connector (unquoted SQL names are case-insensitive)"
    verdicts = []
    for _, rel, paused in group:
        entry: dict[str, Any] = {
            relation_key: rel,
            "connector": key[1],
            "declared": True,
            "desiredPaused": paused,
        }
        if oc is None:
            entry.update(paused=None, state="Unknown", active=False)
        else:
            _fill_observed(entry, oc, running)
        entry["reason"] = DUPLICATE_CONNECTOR
        verdicts.append(_ConnectorVerdict(entry, None, DUPLICATE_CONNECTOR, False, note=note))
    return verdicts


def _quoting_hint(
    relation_key: str, spec_relation: str, connector: str, seen: Mapping[Any, ObservedConnector]
) -> str | None:
    """For a declared connector not found: Feldera's case-sensitive relation it probably means."""
    if spec_relation.startswith('"'):
        return None
    for (relation, name), _ in seen.items():
        if (
            name == connector
            and relation != relation.lower()
            and relation.lower() == (spec_relation.lower())
        ):
            return (
                f"{spec_relation}.{connector} (Feldera has {relation}.{connector}, declared with "
                f"quotes: write {relation_key}: '\"{relation}\"')"
            )
    return None


def _fill_observed(entry: dict[str, Any], oc: ObservedConnector, pipeline_running: bool) -> None:
    entry["paused"] = oc.paused
    entry["state"] = "Unknown" if oc.paused is None else ("Paused" if oc.paused else "Running")
    # A connector moves data only when the pipeline AND the connector run (feldera-api.md).
    entry["active"] = pipeline_running and oc.paused is False
    if oc.end_of_input is not None:
        entry["endOfInput"] = oc.end_of_input
    if oc.health is not None:
        entry["health"] = oc.health
    if oc.fatal_error:
        entry["fatalError"] = oc.fatal_error


def _unknown_entries(
    spec: FelderaPipelineSpec, reason: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    base = {"declared": True, "paused": None, "state": "Unknown", "active": False, "reason": reason}
    inputs = [
        {"table": c.table, "connector": c.connector, "desiredPaused": c.paused, **base}
        for c in spec.inputs
    ]
    outputs = [
        {"view": c.view, "connector": c.connector, "desiredPaused": c.paused, **base}
        for c in spec.outputs
    ]
    return inputs, outputs


def _entry_name(entry: Mapping[str, Any]) -> str:
    relation = entry.get("table", entry.get("view"))
    return f"{relation}.{entry['connector']}"


def _connector_problem_message(reason: str, names: Sequence[str]) -> str:
    listed = ", ".join(names)
    if reason == CONNECTOR_NOT_FOUND:
        return f"Feldera does not report declared connector(s): {listed}"
    if reason == OUTPUT_PAUSE_UNSUPPORTED:
        return f"this Feldera cannot pause output connectors (needs 0.369+): {listed}"
    if reason == DUPLICATE_CONNECTOR:
        return f"{'; '.join(names)}: remove one; the other entries are reconciled"
    return f"{reason}: {listed}"


def _converged_message(
    spec: FelderaPipelineSpec, observed: ObservedPipeline, verdicts: Sequence[_ConnectorVerdict]
) -> str:
    declared = sum(1 for v in verdicts if v.entry.get("declared"))
    return (
        f"pipeline {observed.deployment_status} as declared; "
        f"{declared} declared connector(s) as declared"
    )


def _summary(entries: Iterable[Mapping[str, Any]]) -> str:
    """`active/connectors active`, over the connectors that exist; declared ones Feldera does
    not have are said apart (`, 2 missing`), never counted as connectors."""
    entries = list(entries)
    missing = sum(
        1 for e in entries if e.get("reason") in (CONNECTOR_NOT_FOUND, PIPELINE_NOT_FOUND)
    )
    active = sum(1 for e in entries if e.get("active"))
    summary = f"{active}/{len(entries) - missing} active"
    return f"{summary}, {missing} missing" if missing else summary


def _first_line(text: str | None, limit: int = 300) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


# ----------------------------------------------------------------------------- conditions


def _conditions(
    previous: Any,
    *,
    generation: int,
    now: str,
    ready: tuple[bool, str, str],
    synced: tuple[bool, str, str],
    reconciling: tuple[bool, str, str],
    stalled: tuple[bool, str, str],
) -> list[dict[str, Any]]:
    """The four conditions, whole; lastTransitionTime moves only when a status flips."""
    before = {c.get("type"): c for c in previous or [] if isinstance(c, Mapping)}
    result = []
    for ctype, (value, reason, message) in zip(
        CONDITION_TYPES, (ready, synced, reconciling, stalled), strict=True
    ):
        status = "True" if value else "False"
        if ctype == "Reconciling" and not value:
            reason, message = AS_EXPECTED, "nothing in flight"
        if ctype == "Stalled" and not value:
            reason, message = AS_EXPECTED, "no problem that needs a person"
        old = before.get(ctype)
        since = old.get("lastTransitionTime") if old and old.get("status") == status else None
        result.append(
            {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": since or now,
                "observedGeneration": generation,
            }
        )
    return result


def ready_condition(status: Mapping[str, Any]) -> Mapping[str, Any]:
    """The Ready condition of a written status ({} when it has none)."""
    for condition in status.get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            return condition
    return {}


def status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether writing `new` would change anything (absent and null count as the same)."""
    return bool(_strip_nulls(dict(old or {})) != _strip_nulls(dict(new)))


_SCALARS = (str, int, float, bool, type(None))


def _strip_nulls(value: Any) -> Any:
    # Runs on both statuses of every resource at every observation: scalars first, sparing them
    # the slower ABC check against Mapping (113 -> 69 us for a status of 10 connectors).
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


def is_drift(decision: Decision, *, ready_generation: int | None, generation: int) -> bool:
    """Actions for a generation already seen Ready mean Feldera was changed behind our back."""
    return bool(decision.actions) and ready_generation == generation


def with_problem(
    status: Mapping[str, Any],
    problem: Problem,
    *,
    generation: int,
    now: str,
    previous_status: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The decided status, with conditions saying that issuing an action failed.

    Transition times come from `previous_status` (what is written on the resource), not from the
    just-decided conditions: those flip on every retry, and each flip would move the time."""
    result = dict(status)
    previous = status if previous_status is None else previous_status
    result["conditions"] = _problem_conditions(
        previous.get("conditions"), problem, generation=generation, now=now
    )
    return result


def _problem_conditions(
    previous: Any, problem: Problem, *, generation: int, now: str
) -> list[dict[str, Any]]:
    """Conditions when a problem stops the operator: never Ready; Stalled if a person must act,
    otherwise Reconciling (retried); Synced False when the round trip to Feldera failed."""
    synced = problem.reason not in SYNC_FAILURE_REASONS
    return _conditions(
        previous,
        generation=generation,
        now=now,
        ready=(False, problem.reason, problem.message),
        synced=(
            synced,
            SYNCED if synced else problem.reason,
            "last round trip to Feldera succeeded" if synced else problem.message,
        ),
        reconciling=(problem.reason not in STALLED_REASONS, problem.reason, problem.message),
        stalled=(problem.reason in STALLED_REASONS, problem.reason, problem.message),
    )


def invalid_spec_status(
    message: str, *, generation: int, previous_status: Mapping[str, Any] | None, now: str
) -> dict[str, Any]:
    """A spec the operator cannot act on: say so, act on nothing, keep what was observed."""
    return not_acted_on_status(
        INVALID_SPEC, message, generation=generation, previous_status=previous_status, now=now
    )


def not_acted_on_status(
    reason: str,
    message: str,
    *,
    generation: int,
    previous_status: Mapping[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    """A resource the operator will not act on until a person changes something (a spec it
    cannot act on, a pipeline another resource declares): Stalled with `reason`, nothing sent to
    Feldera, what was observed kept."""
    previous = dict(previous_status or {})
    previous["observedGeneration"] = generation
    previous["conditions"] = _conditions(
        previous.get("conditions"),
        generation=generation,
        now=now,
        ready=(False, reason, message),
        synced=(True, SYNCED, "nothing to send to Feldera"),
        reconciling=(False, reason, message),
        stalled=(True, reason, message),
    )
    return previous


def deletion_blocked_status(
    problem: Problem,
    *,
    generation: int,
    previous_status: Mapping[str, Any] | None,
    now: str,
    policy: str = "Stop",
) -> dict[str, Any]:
    """A resource being deleted whose pipeline cannot be stopped (deletionPolicy Stop) or
    deleted (Delete) yet: the deletion waits, retried; the status says on what. What was observed
    is kept."""
    previous = dict(previous_status or {})
    previous["observedGeneration"] = generation
    what = "be deleted" if policy == "Delete" else "stop"
    message = (
        f"deletion waits for the pipeline to {what} (deletionPolicy: {policy}): {problem.message}"
    )
    stalled = problem.reason in STALLED_REASONS
    synced = problem.reason not in SYNC_FAILURE_REASONS
    previous["conditions"] = _conditions(
        previous.get("conditions"),
        generation=generation,
        now=now,
        ready=(False, DELETION_BLOCKED, message),
        synced=(
            synced,
            SYNCED if synced else problem.reason,
            "last round trip to Feldera succeeded" if synced else problem.message,
        ),
        reconciling=(not stalled, DELETION_BLOCKED, message),
        stalled=(stalled, DELETION_BLOCKED, message),
    )
    return previous


def instance_status(
    problem: Problem | None,
    *,
    generation: int,
    server: Mapping[str, Any],
    pipelines: int | None,
    previous_status: Mapping[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    """A FelderaInstance's status: whether its API answered, and what it is."""
    previous = dict(previous_status or {})
    reachable = problem is None or problem.reason not in (
        FELDERA_UNREACHABLE,
        FELDERA_ERROR,
        INSTANCE_NOT_FOUND,
        TLS_ERROR,
        INVALID_URL,
    )
    if not reachable:
        # Nothing answers there now: what answered before is no longer known to be there.
        previous.update(version=None, edition=None, pipelines=None)
    if problem is None:
        ready = (True, CONVERGED, "the Feldera API answered")
        synced = (True, SYNCED, "last round trip to Feldera succeeded")
    else:
        ready = (False, problem.reason, problem.message)
        synced = (problem.reason not in SYNC_FAILURE_REASONS, problem.reason, problem.message)
    return {
        "observedGeneration": generation,
        "reachable": reachable,
        "version": (server.get("version") if reachable else None) or previous.get("version"),
        "edition": (server.get("edition") if reachable else None) or previous.get("edition"),
        "pipelines": pipelines if pipelines is not None else previous.get("pipelines"),
        "conditions": _conditions(
            previous.get("conditions"),
            generation=generation,
            now=now,
            ready=ready,
            synced=synced,
            reconciling=(
                problem is not None and problem.reason not in STALLED_REASONS,
                problem.reason if problem else AS_EXPECTED,
                problem.message if problem else "",
            ),
            stalled=(
                problem is not None and problem.reason in STALLED_REASONS,
                problem.reason if problem else AS_EXPECTED,
                problem.message if problem else "",
            ),
        ),
    }
