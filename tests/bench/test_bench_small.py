"""The benchmark's code path at 20 x 5 with a 1 s period: exact call counts, never timings.

The timings of a CI machine say nothing; the counts are the design: a converged system costs one
status list plus one `/stats` per deployed pipeline per period, no action calls, no Kubernetes
writes, and a restarted operator acts on nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from feldera_operator import cli

PIPELINES = 20
CONNECTORS = 5


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_small_bench_counts_are_the_design(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--pipelines", str(PIPELINES), "--connectors", str(CONNECTORS)]
    argv += ["--period", "1", "--steady-periods", "3", "--flips", "20", "--workdir", str(tmp_path)]
    assert cli.main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    name, *pairs = last.split(" ")
    assert name == "BENCH"
    fields = dict(pair.split("=", 1) for pair in pairs)
    assert list(fields) == [
        "pipelines",
        "connectors",
        "flip_p50_ms",
        "flip_p99_ms",
        "cold_converge_s",
        "restart_actions",
        "steady_feldera_calls_per_period",
        "steady_action_calls",
        "steady_k8s_writes_per_period",
        "rss_mb",
    ]
    assert fields["pipelines"] == str(PIPELINES)
    assert fields["connectors"] == str(PIPELINES * CONNECTORS)
    # Every pipeline runs: one status list plus one /stats each, every period.
    assert fields["steady_feldera_calls_per_period"] == str(PIPELINES + 1)
    assert fields["steady_action_calls"] == "0"
    assert fields["steady_k8s_writes_per_period"] == "0"
    assert fields["restart_actions"] == "0"
    # Every flip's action arrived (a latency exists for each), whatever it measured.
    assert float(fields["flip_p99_ms"]) >= float(fields["flip_p50_ms"]) > 0
    assert float(fields["rss_mb"]) > 0
