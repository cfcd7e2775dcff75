"""The kopf wiring: watch events of both kinds, and of the ConfigMaps labelled
feldera.dev/program: "true", go to the Reconciler; nothing else lives here.

Only `@kopf.on.event` handlers are used: they cost no writes (no progress or diff-base
annotations) and no per-object timers; the Reconciler decides what each event means. kopf still
provides the watches, the per-object serialisation of events, the liveness endpoint and logging.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import kopf

from feldera_operator import leader, metrics, permissions
from feldera_operator.config import OperatorConfig
from feldera_operator.kube import KubeApi, load_api_client
from feldera_operator.models import GROUP, VERSION, FelderaInstance, FelderaPipeline
from feldera_operator.program import PROGRAM_LABEL
from feldera_operator.reconciler import Reconciler

log = logging.getLogger(__name__)


class _NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: only change handlers read it, and this operator has none.

    kopf still builds one for every watch event (a deep copy of the whole body, status included);
    at a burst of spec changes that was ~30% of the operator's CPU per change (docs/performance.md).
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # kopf's own credentials come from the same library and files as the operator's own calls.
    return kopf.login_via_client(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = memo.get("config") or OperatorConfig.from_env()
    # Level-based reconciling needs no handler progress or diff-base storage; event handlers
    # do not use them. Posting kopf's own events only for warnings keeps Events meaningful.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    # Memory at thousands of objects (design.md, docs/performance.md): the initial listing in
    # pages rather than one body of every object, and a per-object worker that ends soon after
    # its event instead of idling 5 s, at most 1,000 at once (no indices here, so no deadlock).
    settings.watching.chunk_size = 500
    settings.queueing.worker_limit = 1000
    settings.queueing.idle_timeout = 0.5
    if config.selector:
        # Server-side: objects of other shards never reach this process (nor its memory).
        for plural in (FelderaPipeline.PLURAL, FelderaInstance.PLURAL):
            settings.watching.label_selectors[GROUP, plural] = config.selector
    settings.persistence.diffbase_storage = _NoDiffBase()
    # Only the ConfigMaps that hold programs (spec.program.sqlFrom), filtered by the API server:
    # a cluster's other ConfigMaps are never listed, sent or held (docs/performance.md).
    settings.watching.label_selectors["v1", "configmaps"] = f"{PROGRAM_LABEL}=true"
    api_client = load_api_client()
    await permissions.check(api_client, config)  # names every missing grant, once
    kube = KubeApi(api_client, timeout=config.kube_request_timeout)
    memo["kube"] = kube
    reconciler = Reconciler(config, kube)
    memo["reconciler"] = reconciler
    if config.metrics_port:
        metrics.serve(
            config.metrics_port,
            metrics.StateCollector(
                reconciler.leading.is_set,
                reconciler.metric_resources,
                reconciler.metric_instances,
            ),
        )
    if config.leader_election is not None:
        memo["elector"] = leader.start(config.leader_election, reconciler.leading)
    else:
        reconciler.leading.set()
    log.info(
        "feldera-operator started: period %.1fs, %g requests/s per Feldera instance, default "
        "instance %s%s",
        config.period,
        config.feldera_rps,
        config.default_url or "(none)",
        f", serving {config.selector}" if config.selector else "",
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    reconciler: Reconciler | None = memo.get("reconciler")
    if reconciler is not None:
        await reconciler.close()
    # Only once nothing acts any more: a standby takes the lease at its next try (~2 s), not
    # after the lease expired.
    elector: leader.LeaderElector | None = memo.get("elector")
    if elector is not None:
        await asyncio.to_thread(elector.release)
    kube: KubeApi | None = memo.get("kube")
    if kube is not None:
        kube.close()


@kopf.on.event(GROUP, VERSION, FelderaPipeline.PLURAL)
async def pipeline_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    reconciler: Reconciler = memo["reconciler"]
    await reconciler.on_pipeline_event(event.get("type"), event["object"])


@kopf.on.event(GROUP, VERSION, FelderaInstance.PLURAL)
async def instance_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    reconciler: Reconciler = memo["reconciler"]
    await reconciler.on_instance_event(event.get("type"), event["object"])


# No client-side `labels=` filter: a ConfigMap whose label is removed comes as DELETED, without
# the label, and must still reach the reconciler.
@kopf.on.event("v1", "configmaps")
async def configmap_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    reconciler: Reconciler = memo["reconciler"]
    await reconciler.on_configmap_event(event.get("type"), event["object"])
