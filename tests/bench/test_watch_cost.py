"""The ConfigMap watch at a small scale (`feldera-operator watch-cost`, docs/performance.md has the
5,000 run): request counts and what the API server sends, never timings or memory, which are
printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from feldera_sandbox import watch_cost
from feldera_sandbox.sandbox import Sandbox

UNRELATED = 500
PIPELINES = 3


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_unrelated_configmaps_are_never_listed_watched_or_read_by_the_operator(
    tmp_path: Path,
) -> None:
    sb = Sandbox(tmp_path)
    try:
        sb.start_kubernetes()
        sb.start_feldera()
        sb.install_crds()
        sb.install_operator_identity()
        runs = [watch_cost.measure(sb, unrelated=0, pipelines=PIPELINES, periods=2, tag="a")]
        watch_cost.create_unrelated(sb, UNRELATED, "default")
        runs.append(
            watch_cost.measure(sb, unrelated=UNRELATED, pipelines=PIPELINES, periods=2, tag="b")
        )
        print("\n" + watch_cost.table(runs))
    finally:
        sb.stop()
    for run in runs:
        # One list and one watch, of the labelled ConfigMaps alone; none read by name.
        assert run.requests.get("list configmaps") == 1
        assert run.requests.get("watch configmaps") == 1
        assert run.requests.get("get configmaps", 0) == 0
        assert run.selectors == {"feldera.dev/program=true"}
        assert run.listed == PIPELINES
    assert runs[1].unfiltered >= UNRELATED + PIPELINES
    # Everything else the operator asked of Kubernetes did not grow with the unrelated ones.
    assert runs[1].requests.keys() == runs[0].requests.keys()
