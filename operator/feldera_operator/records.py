"""What the operator remembers between watch events: one record per FelderaPipeline, one state per
Feldera instance. Plain data; the modules that act on them say what they do."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from feldera_operator.models import FelderaPipelineSpec

ObjKey = tuple[str, str]  # (namespace, name)
DEFAULT_INSTANCE: ObjKey = ("", "")
FOLLOWUP_FIRST = 0.1  # seconds before re-observing a resource after an action
BACKOFF_FIRST = 1.0  # seconds before retrying an instance that failed


def instance_label(key: ObjKey) -> str:
    """The instance as metrics name it: `<namespace>/<name>`, or `default`."""
    return "default" if key == DEFAULT_INSTANCE else f"{key[0]}/{key[1]}"


@dataclass
class PipelineRecord:
    """What the operator knows of one FelderaPipeline between watch events."""

    key: ObjKey
    ref: dict[str, Any]  # apiVersion, kind, metadata{name, namespace, uid}: for Events
    generation: int = 0
    spec: FelderaPipelineSpec | None = None
    spec_error: str | None = None
    pipeline_name: str = ""
    instance: ObjKey = DEFAULT_INSTANCE
    status: dict[str, Any] = field(default_factory=dict)
    resource_version: int = 0
    reconciled_generation: int | None = None
    ready_generation: int | None = None
    last_reconciled: float = 0.0  # monotonic; 0 = never
    registered: float = field(default_factory=time.monotonic)  # when first seen
    created: str = ""  # metadata.creationTimestamp: the older of two claimants wins
    followup: asyncio.TimerHandle | None = None
    followup_delay: float = FOLLOWUP_FIRST
    retry_after: float = 0.0  # Feldera's Retry-After on the last failed call: wait at least that
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The last body seen with a deletionTimestamp: the resource is being deleted, and is no
    # longer reconciled; with the finalizer, the stop is retried until it is done.
    deleting: Mapping[str, Any] | None = None
    deletion_retry: asyncio.TimerHandle | None = None
    deletion_backoff: float = BACKOFF_FIRST
    deletion_cause: str | None = None  # why the stop on deletion waits, as last logged
    # Someone else stopped the pipeline: (when it was seen, the program version then). A start
    # waits for the grace or a new program version (see pipeline_reconcile.start_hold).
    external_stop: tuple[float, int | None] | None = None
    last_desired: str | None = None  # Feldera's desired status at the last observation
    stop_issued: bool = False  # the operator stopped it itself (no grace for its own stop)
    # The actions and reasons of the last ActionFailed Events (one a line): not posted again
    # while they recur.
    failure_reported: str | None = None
    # The cause of the last failed status write, as logged (once per cause; cleared on success).
    write_problem: str | None = None
    # spec.program: the pipeline as last read whole (selector=all), and the declared hash it was
    # read for. Read again only when Feldera's `version` or the hash changed (needs_full_read).
    program_copy: Mapping[str, Any] | None = None
    program_copy_hash: str | None = None
    # Since when a status saying only "an action is in flight" waits to be written (monotonic).
    transient_since: float | None = None
    # What the last reconcile decided from, when it settled (no action, nothing in flight, the
    # status as written): (generation, observation, result, status object, program inputs). The
    # same again needs no decision.
    settled: tuple[int, Any, str, dict[str, Any], Any] | None = None

    @property
    def label(self) -> str:
        return f"{self.key[0]}/{self.key[1]}"

    @property
    def claim(self) -> Claim | None:
        """The Feldera pipeline this resource declares (None while its spec is unusable)."""
        return (self.instance, self.pipeline_name) if self.spec is not None else None

    @property
    def sql_source(self) -> ObjKey | None:
        """The ConfigMap spec.program.sqlFrom names, as (namespace, name); None without one."""
        program = self.spec.program if self.spec is not None else None
        if program is None or program.sqlFrom is None:
            return None
        return (self.key[0], program.sqlFrom.configMapKeyRef.name)

    @property
    def seniority(self) -> tuple[str, ObjKey]:
        return (self.created, self.key)


Claim = tuple[ObjKey, str]  # (instance, pipeline name)


@dataclass
class InstanceState:
    """One Feldera instance: its observation loop and what the last pass saw."""

    key: ObjKey
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    connected: bool = False
    backoff: float = BACKOFF_FIRST
    retry_after: float = 0.0  # Feldera's Retry-After on the last failed pass
    server: dict[str, Any] = field(default_factory=dict)  # version, edition
    status: dict[str, Any] = field(default_factory=dict)  # last written FelderaInstance status
    problem_logged: str | None = None  # the reason last logged for the whole instance
    up: bool | None = None  # whether the last pass's round trip succeeded (None: no pass yet)
    problem: str | None = None  # the reason of the instance's problem, while it holds
    write_problem: str | None = None  # the cause of the last failed status write, as logged
    observed: int = 0  # the pipelines the last pass read `/stats` of
    behind: bool = False  # whether passes take longer than the period (said once)

    @property
    def label(self) -> str:
        return "default instance" if self.key == DEFAULT_INSTANCE else "/".join(self.key)
