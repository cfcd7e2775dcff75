"""The declared program's part of one FelderaPipeline's reconcile (spec.program): the SQL resolved,
the pipeline read whole only when `needs_full_read()` says so, `decide_program()`, a preview
executed and decided again, and the one step it decides executed, with its Event.

`program.py`'s docstring is the contract this shell follows; `pipeline_reconcile.py` calls it
under the resource's lock and merges its outcome into the conditions with `decision.decide()`.
Nothing is remembered here but the last full read (on the record): the preview's answer lives in
status.program, which the caller writes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from feldera_operator import decision as d
from feldera_operator import metrics
from feldera_operator import program as p
from feldera_operator.events import program_step_done, program_step_failed
from feldera_operator.feldera_client import FelderaClientClosed, FelderaError, FelderaNotFound
from feldera_operator.instance_connection import FelderaApi
from feldera_operator.kube import KubeError
from feldera_operator.records import PipelineRecord, instance_label

if TYPE_CHECKING:
    from feldera_operator.reconciler import Reconciler

log = logging.getLogger(__name__)

# Parts of a full read the decision never looks at, and the largest: not kept on the record.
_NOT_KEPT = frozenset({"program_info", "deployment_config"})


@dataclass(frozen=True)
class ProgramRound:
    """The program flow's part of one reconcile."""

    decision: p.ProgramDecision | None  # None: nothing decided (Feldera could not be read)
    outcome: d.ProgramOutcome  # what decision.decide() takes
    problem: d.Problem | None = None  # why Feldera could not be read, when it could not

    @property
    def step(self) -> p.Step | None:
        """The step to execute this round (never a Preview: that was executed already)."""
        step = self.decision.step if self.decision is not None else None
        return None if isinstance(step, p.Preview) else step

    @property
    def hash(self) -> str:
        """The declared program's hash ("" when it could not be resolved)."""
        status = self.decision.status if self.decision is not None else None
        return str((status or {}).get("hash") or "")


class ProgramReconciler:
    def __init__(self, hub: Reconciler) -> None:
        self._hub = hub

    def unobservable(self, record: PipelineRecord) -> ProgramRound:
        """Feldera could not be read: status.program stays as it was, nothing is decided."""
        return ProgramRound(None, p.unobservable_outcome(record.status.get("program")))

    async def decide(
        self, record: PipelineRecord, client: FelderaApi, entry: Mapping[str, Any] | None
    ) -> ProgramRound:
        """Decide the program's next step from the status `entry` (the listing's, or a single
        GET's; None: Feldera has no such pipeline), executing a Preview on the way."""
        spec = record.spec
        assert spec is not None and spec.program is not None
        previous = record.status.get("program")
        source = await self.sql(record)
        if isinstance(source, p.SourceProblem):
            decision = p.decide_program(
                spec,
                source,
                None,
                edition="",
                pipeline_name=record.pipeline_name,
                previous=previous,
            )
            return ProgramRound(decision, decision.outcome)
        declared = p.declared_program(spec.program, source)
        try:
            observed = await self._observe(record, client, entry, declared.hash)
            edition = await self._edition(record, client)
        except FelderaClientClosed:
            raise
        except FelderaError as e:
            label = self._hub.instance_state(record.instance).label
            problem = self._hub.feldera_failed(record, e, instance=label, url=client.base_url)
            # Nothing known of the program's progress: no run-state action either (a start
            # now could start a pipeline stopped to be updated, with its old program).
            outcome = replace(p.unobservable_outcome(previous), holds_pipeline=True)
            return ProgramRound(None, outcome, problem)

        def decide(preview: p.PreviewResult | None = None) -> p.ProgramDecision:
            return p.decide_program(
                spec,
                declared,
                observed,
                edition=edition,
                pipeline_name=record.pipeline_name,
                preview=preview,
                previous=previous,
            )

        decision = decide()
        if isinstance(decision.step, p.Preview):
            decision = decide(await self._preview(record, client, decision.step))
        return ProgramRound(decision, decision.outcome)

    # ------------------------------------------------------------------ reading

    async def sql(self, record: PipelineRecord) -> str | p.SourceProblem:
        """The declared SQL: inline, or from the ConfigMap sqlFrom names. The labelled watch
        holds those the operator may read; one it does not hold is read by name, to tell a
        missing ConfigMap from an unlabelled one (resolve_sql says which)."""
        spec = record.spec
        assert spec is not None and spec.program is not None
        source = record.sql_source
        if source is None:
            return p.resolve_sql(spec.program, None)
        configmap = self._hub.configmaps.get(source)
        if configmap is None:
            try:
                configmap = await self._hub.kube.get_configmap(*source)
            except KubeError as e:
                return p.SourceProblem(
                    d.CONFIGMAP_NOT_FOUND,
                    f"cannot read ConfigMap {source[1]} (spec.program.sqlFrom): {e}",
                )
        return p.resolve_sql(spec.program, configmap)

    async def _observe(
        self,
        record: PipelineRecord,
        client: FelderaApi,
        entry: Mapping[str, Any] | None,
        declared_hash: str,
    ) -> p.ObservedProgram | None:
        """What Feldera stores: the copy read before with `entry`'s newer status fields, or a
        new full read when the copy may be stale."""
        if entry is None:
            record.program_copy = record.program_copy_hash = None
            return None
        copy, copy_hash = record.program_copy, record.program_copy_hash
        if copy is not None and not p.needs_full_read(
            entry, copy, declared_hash=declared_hash, copy_hash=copy_hash
        ):
            return p.observed_program(copy, latest=entry)
        try:
            full = await client.get_pipeline(record.pipeline_name, "all")
        except FelderaNotFound as e:
            if not e.is_pipeline:
                raise
            record.program_copy = record.program_copy_hash = None
            return None  # deleted since the status was read
        record.program_copy = {k: v for k, v in full.items() if k not in _NOT_KEPT}
        record.program_copy_hash = declared_hash
        return p.observed_program(full)  # read just now: newer than `entry`

    async def _edition(self, record: PipelineRecord, client: FelderaApi) -> str:
        """The edition ("Enterprise" or "Open source") from the instance's GET /v0/config, read
        now if its loop has not yet: the edition decides whether a stop keeps the checkpoint."""
        state = self._hub.instance_state(record.instance)
        if not state.server.get("edition"):
            state.server = dict(await client.config())
        return str(state.server.get("edition") or "")

    async def _preview(
        self, record: PipelineRecord, client: FelderaApi, step: p.Preview
    ) -> p.PreviewResult:
        """POST .../diff: read-only, the running pipeline is untouched."""
        try:
            answer = await client.diff(
                record.pipeline_name, step.program_code, step.runtime_version
            )
        except FelderaClientClosed:
            raise
        except FelderaError as e:
            result = p.preview_refused(
                step, error_code=e.error_code, message=e.message, details=e.details
            )
        else:
            result = p.preview_answered(step, answer)
        if result.problem is not None:
            log.info(
                "%s: the preview of %s got no answer: %s", record.label, step.hash, result.problem
            )
        else:
            message = program_step_done(step, step.hash, preview=result)
            log.info("%s: %s", record.label, message)
            self._hub.events.post_aside(record.ref, reason=step.event, message=message)
        return result

    # ------------------------------------------------------------------ acting

    async def execute(
        self, record: PipelineRecord, client: FelderaApi, step: p.Step, declared_hash: str
    ) -> d.Problem | None:
        """Execute one write step; the failure as a Problem (the next reconcile decides again)."""
        hub = self._hub
        spec = record.spec
        if step.writes and (spec is None or spec.managementPolicy != "Full"):
            # program.py never decides one for ObserveOnly; this is the promise kept twice.
            log.error("%s: %s withheld: managementPolicy is not Full", record.label, step)
            return None
        name = record.pipeline_name
        try:
            await call_step(client, name, step)
        except FelderaClientClosed:
            raise
        except FelderaError as e:
            problem = hub.feldera_failed(record, e, instance=client.base_url)
            message = program_step_failed(step, problem.message)
            log.warning("%s: %s", record.label, message)
            failure = f"{step.describe()}: {problem.reason}"
            if failure != record.failure_reported:  # once while it recurs, as for actions
                await hub.events.post(
                    record.ref, reason="ActionFailed", message=message, warning=True
                )
            record.failure_reported = failure
            return problem
        record.failure_reported = None
        metrics.ACTIONS.labels(instance=instance_label(record.instance), action=step.event).inc()
        message = program_step_done(step, declared_hash)
        log.info("%s: %s", record.label, message)
        hub.events.post_aside(record.ref, reason=step.event, message=message)
        return None


async def call_step(client: FelderaApi, name: str, step: p.Step) -> None:
    """The Feldera call of one step (program.py's Step docstrings name them)."""
    if isinstance(step, p.Create):
        await client.put_pipeline(name, step.body)
    elif isinstance(step, p.Patch):
        await client.patch_pipeline(name, step.body)
    elif isinstance(step, p.Stop):
        await client.stop(name, force=step.force)
    elif isinstance(step, p.Clear):
        await client.clear(name)
    elif isinstance(step, p.Start):
        await client.start(name, step.initial, step.bootstrap_policy)
    elif isinstance(step, p.Approve):
        await client.approve(name)
    elif isinstance(step, p.Delete):
        await client.delete_pipeline(name)
    else:  # a Preview is executed by ProgramReconciler.decide, never here
        raise TypeError(f"not a write step: {step!r}")
