"""Kubernetes Events on the operator's resources: what it did, in sentences, with reasons from a
fixed catalogue (the README lists them)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from feldera_operator import decision as d
from feldera_operator import metrics
from feldera_operator import program as p
from feldera_operator.kube import KubeClient

log = logging.getLogger(__name__)


EVENTS_IN_FLIGHT = 100


class EventRecorder:
    """Posts Events, at most `limit` at a time: beyond, they are dropped and counted
    (`feldera_operator_events_dropped_total`). An Event is a courtesy; a slow API server or a
    storm of actions must not pile up posts without end."""

    def __init__(self, kube: KubeClient, *, limit: int = EVENTS_IN_FLIGHT) -> None:
        self._kube = kube
        self._limit = limit
        self._pending = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def post(
        self, involved: Mapping[str, Any], *, reason: str, message: str, warning: bool = False
    ) -> None:
        """Post and wait for it (the poster never raises: an Event is a courtesy)."""
        if not self._admit(involved, reason):
            return
        try:
            await self._kube.post_event(involved, reason=reason, message=message, warning=warning)
        finally:
            self._pending -= 1

    def _admit(self, involved: Mapping[str, Any], reason: str) -> bool:
        if self._pending >= self._limit:
            metrics.EVENTS_DROPPED.inc()
            meta = involved.get("metadata") or {}
            log.debug("Event %s on %s dropped: %d in flight", reason, meta.get("name"), self._limit)
            return False
        self._pending += 1
        return True

    def post_aside(
        self, involved: Mapping[str, Any], *, reason: str, message: str, warning: bool = False
    ) -> None:
        """Post without waiting: what comes next need not wait on the Kubernetes API."""
        if not self._admit(involved, reason):
            return

        async def post() -> None:
            try:
                await self._kube.post_event(
                    involved, reason=reason, message=message, warning=warning
                )
            finally:
                self._pending -= 1

        task = asyncio.create_task(post())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def action_reason(action: d.Action) -> str:
    if isinstance(action, d.PipelineAction):
        return {
            "start": "PipelineStarted",
            "pause": "PipelinePaused",
            "resume": "PipelineResumed",
            "stop": "PipelineStopped",
            "dismiss_error": "DeploymentErrorDismissed",
        }[action.verb]
    return "ConnectorStarted" if action.verb == "start" else "ConnectorPaused"


_DONE = {
    "start": "started",
    "pause": "paused",
    "resume": "resumed",
    "stop": "stopped",
    "dismiss_error": "dismissed",
}


def action_object(action: d.Action) -> str:
    """What an action acts on, as a sentence names it: "the pipeline (running)", "input
    connector orders.live"."""
    if isinstance(action, d.PipelineAction):
        if action.verb == "dismiss_error":
            return "the pipeline's deployment error"
        return f"the pipeline ({action.initial})" if action.initial else "the pipeline"
    return f"{action.direction} connector {action.relation}.{action.connector}"


def action_done(action: d.Action) -> str:
    """The action, done: "Started the pipeline (paused)", "Paused input connector orders.live"."""
    return f"{_DONE[action.verb].capitalize()} {action_object(action)}"


def action_failed(action: d.Action, why: str) -> str:
    verb = "dismiss" if action.verb == "dismiss_error" else action.verb
    return f"Could not {verb} {action_object(action)}: {why}"


def drift_corrected(action: d.Action) -> str:
    return f"Feldera no longer matched the spec: {_DONE[action.verb]} {action_object(action)}"


# ----------------------------------------------------------------------------- the program's steps


def short_hash(program_hash: str) -> str:
    """A program's hash as messages show it: `sha256:` and its first 12 hex digits."""
    return program_hash[: len("sha256:") + 12]


def program_step_done(
    step: p.Step, program_hash: str, *, preview: p.PreviewResult | None = None
) -> str:
    """A step of the program flow, done: "Updated program_code of the pipeline to program
    sha256:0123456789ab", "Previewed program sha256:...: views 1 added"."""
    program = f"program {short_hash(program_hash)}"
    if isinstance(step, p.Create):
        return f"Created the pipeline with {program}"
    if isinstance(step, p.Preview):
        if preview is not None and preview.errors:
            first = next((e for e in preview.errors if not e.warning), preview.errors[0])
            return f"Previewed {program}: it does not compile: {first.describe()}"
        summary = preview.diff.summary() if preview is not None and preview.diff else "no answer"
        return f"Previewed {program}: {summary}"
    if isinstance(step, p.Stop):
        how = "" if step.force else " (with a checkpoint)"
        return f"Stopped the pipeline{how} to apply {program}"
    if isinstance(step, p.Patch):
        return f"Updated {', '.join(sorted(step.body))} of the pipeline to {program}"
    if isinstance(step, p.Clear):
        return f"Cleared the pipeline's storage (its state is lost) to apply {program}"
    if isinstance(step, p.Start):
        how = step.initial
        if step.bootstrap_policy is not None:
            how += f", bootstrap_policy={step.bootstrap_policy}"
        return f"Started the pipeline ({how}) with {program}"
    if isinstance(step, p.Approve):
        return f"Approved the bootstrap of {program}"
    return "Deleted the pipeline"


def program_step_failed(step: p.Step, why: str) -> str:
    """The step, failed: "Could not stop the pipeline: ...", "Could not update program_code of
    the pipeline: ..."."""
    if isinstance(step, p.Patch):
        what = f"update {', '.join(sorted(step.body))} of the pipeline"
    elif isinstance(step, p.Start):
        what = f"start the pipeline ({step.initial})"
    elif isinstance(step, p.Stop):
        what = "stop the pipeline"
    elif isinstance(step, p.Clear):
        what = "clear the pipeline's storage"
    else:
        what = step.describe()  # create the pipeline, approve the bootstrap, delete the pipeline
    return f"Could not {what}: {why}"


def deletion_step_done(step: p.Step) -> str:
    """A step of deletionPolicy Delete, done: "Stopped the pipeline", "Cleared the pipeline's
    storage", "Deleted the pipeline"."""
    if isinstance(step, p.Stop):
        return "Stopped the pipeline"
    if isinstance(step, p.Clear):
        return "Cleared the pipeline's storage"
    return "Deleted the pipeline"


# Connector names one Event lists before it says how many more there are.
NAMES_IN_EVENT = 10


def actions_done(actions: Sequence[d.Action], *, drift: bool = False) -> tuple[str, str]:
    """(reason, message) of one Event for every action a reconcile issued: "Paused input
    connectors t.c0, t.c3 and t.c6". The reason is the first action's (or DriftCorrected); the
    message says each of them, connectors of one verb and direction together."""
    parts: list[str | tuple[str, str, list[str]]] = []
    groups: dict[tuple[str, str], list[str]] = {}
    for action in actions:
        if isinstance(action, d.PipelineAction):
            parts.append(action_done(action))
            continue
        names = groups.get((action.verb, action.direction))
        if names is None:
            names = groups[(action.verb, action.direction)] = []
            parts.append((action.verb, action.direction, names))
        names.append(f"{action.relation}.{action.connector}")
    sentences = []
    for part in parts:
        if isinstance(part, str):
            sentences.append(part)
        else:
            verb, direction, names = part
            noun = "connector" if len(names) == 1 else "connectors"
            sentences.append(f"{_DONE[verb].capitalize()} {direction} {noun} {_names(names)}")
    message = "; ".join([sentences[0], *(_lower_first(x) for x in sentences[1:])])
    if drift:
        return "DriftCorrected", f"Feldera no longer matched the spec: {_lower_first(message)}"
    return action_reason(actions[0]), message


def _names(names: list[str]) -> str:
    if len(names) > NAMES_IN_EVENT:
        shown = names[: NAMES_IN_EVENT - 1]
        return f"{', '.join(shown)} and {len(names) - len(shown)} more"
    if len(names) == 1:
        return names[0]
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
