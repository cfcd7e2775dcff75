"""Kubernetes Events on the operator's resources: what it did, in sentences, with reasons from a
fixed catalogue (the README lists them)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from feldera_operator import decision as d
from feldera_operator.kube import KubeClient

log = logging.getLogger(__name__)


class EventRecorder:
    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube
        self._tasks: set[asyncio.Task[None]] = set()

    async def post(
        self, involved: Mapping[str, Any], *, reason: str, message: str, warning: bool = False
    ) -> None:
        """Post and wait for it (the poster never raises: an Event is a courtesy)."""
        await self._kube.post_event(involved, reason=reason, message=message, warning=warning)

    def post_aside(
        self, involved: Mapping[str, Any], *, reason: str, message: str, warning: bool = False
    ) -> None:
        """Post without waiting: what comes next need not wait on the Kubernetes API."""
        task = asyncio.create_task(
            self.post(involved, reason=reason, message=message, warning=warning)
        )
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
