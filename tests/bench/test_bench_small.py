"""The benchmark's code path at 20 x 5 with a 1 s period: exact call counts, never timings.

The timings of a CI machine say nothing; the counts are the design: a converged system costs one
status list per instance plus one `/stats` per deployed pipeline per pass, no action calls, no
Kubernetes writes, every instance stays within its request budget, and a restarted operator acts
on nothing. Run with one instance and with two, and with the programs declared on the resources
(created in Feldera by the operator; converged, they cost no extra call and no write either).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from feldera_operator import cli

PIPELINES = 20
CONNECTORS = 5
FIELDS = [
    "pipelines",
    "connectors",
    "instances",
    "shards",
    "feldera_rps_budget",
    "programs",
    "flip_p50_ms",
    "flip_p99_ms",
    "cold_converge_s",
    "restart_actions",
    "steady_feldera_calls_per_period",
    "steady_action_calls",
    "steady_k8s_writes_per_period",
    "rss_mb",
    "max_feldera_rps_per_instance",
    "drift_p99_s",
    "operator_cpu_ms_per_flip",
    "cold_k8s_writes_per_pipeline",
    "steady_cpu_pct",
]


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("instances", "programs"), [(1, False), (2, False), (2, True)], ids=["1", "2", "2-programs"]
)
def test_small_bench_counts_are_the_design(
    instances: int, programs: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--pipelines", str(PIPELINES), "--connectors", str(CONNECTORS)]
    argv += ["--instances", str(instances), "--period", "1", "--steady-periods", "3"]
    argv += ["--flips", "20", "--drift-samples", "5", "--workdir", str(tmp_path)]
    argv += ["--programs"] if programs else []
    assert cli.main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    name, *pairs = last.split(" ")
    assert name == "BENCH"
    fields = dict(pair.split("=", 1) for pair in pairs)
    assert list(fields) == FIELDS
    assert fields["pipelines"] == str(PIPELINES)
    assert fields["connectors"] == str(PIPELINES * CONNECTORS)
    assert fields["instances"] == str(instances)
    assert fields["programs"] == str(int(programs))
    # Every pipeline runs: one status list per instance plus one /stats each, every pass.
    assert fields["steady_feldera_calls_per_period"] == str(PIPELINES + instances)
    assert fields["steady_action_calls"] == "0"
    assert fields["steady_k8s_writes_per_period"] == "0"
    assert fields["restart_actions"] == "0"
    # Actions and spread observation together never exceed any instance's budget.
    assert int(fields["max_feldera_rps_per_instance"]) <= float(fields["feldera_rps_budget"])
    # Every flip's action and every drift correction arrived, whatever it measured.
    assert float(fields["flip_p99_ms"]) >= float(fields["flip_p50_ms"]) > 0
    assert float(fields["drift_p99_s"]) > 0
    assert float(fields["rss_mb"]) > 0
