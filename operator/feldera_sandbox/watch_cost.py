"""`feldera-operator watch-cost`: what the operator's ConfigMap watch costs in a cluster that holds
many ConfigMaps that are none of its business.

The operator watches only the ConfigMaps labelled feldera.dev/program: "true" (spec.program
sqlFrom), the API server filtering them by label. This measures that promise on a local control
plane: the same program pipelines (each with its labelled ConfigMap) reconciled by a fresh
operator twice, first with no other ConfigMap in the cluster, then with `--unrelated` unlabelled
ones. For each run it prints the operator's memory once converged (VmRSS, and the peak VmHWM),
every Kubernetes request it made from its start to a few periods after convergence (from the API
server's audit log), and how much the API server answers to the operator's ConfigMap list against
what an unfiltered one would get. Numbers, not verdicts: docs/performance.md records them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pykube

from feldera_sandbox.controlplane import request_key
from feldera_sandbox.processes import wait_for
from feldera_sandbox.sandbox import Sandbox, is_ready

PROGRAM_LABEL = "feldera.dev/program"
SQL = (
    "CREATE TABLE t{i} (x INT) WITH ('materialized' = 'true');\n"
    "CREATE MATERIALIZED VIEW v{i} AS SELECT * FROM t{i};\n"
)
# An unrelated ConfigMap: some application's settings, a few hundred bytes.
UNRELATED_DATA = {"settings.json": json.dumps({"feature": "x" * 200, "retries": 3})}


@dataclass
class Run:
    unrelated: int
    pipelines: int
    converged_s: float = 0.0
    rss_mb: float = 0.0
    peak_mb: float = 0.0
    requests: dict[str, int] = field(default_factory=dict)
    listed: int = 0  # ConfigMaps the operator's label selector returns
    listed_bytes: int = 0
    unfiltered: int = 0  # what a list of every ConfigMap returns
    unfiltered_bytes: int = 0
    selectors: set[str] = field(default_factory=set)  # of its ConfigMap lists and watches


def _memory_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _list_size(sb: Sandbox, selector: str | None) -> tuple[int, int]:
    """(items, bytes) of a list of every namespace's ConfigMaps, with or without a selector."""
    params = {"labelSelector": selector} if selector else {}
    response = sb.kube.get(version="v1", url="configmaps", params=params)
    response.raise_for_status()
    return len(response.json()["items"]), len(response.content)


def create_unrelated(sb: Sandbox, count: int, namespace: str) -> None:
    """`count` unlabelled ConfigMaps, created 8 at a time (one HTTP client per thread)."""

    def create(indexes: range) -> None:
        client = pykube.HTTPClient(pykube.KubeConfig.from_file(str(sb.kubeconfig)))
        for i in indexes:
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"app-settings-{i}", "namespace": namespace},
                "data": UNRELATED_DATA,
            }
            response = client.post(
                version="v1", namespace=namespace, url="configmaps", data=json.dumps(body)
            )
            if response.status_code != 409:  # already there from an earlier run: fine
                response.raise_for_status()

    chunks = [range(start, count, 8) for start in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(create, chunks))


def _apply_pipelines(sb: Sandbox, tag: str, count: int) -> list[str]:
    names = [f"{tag}-{i}" for i in range(count)]
    objects: list[dict[str, Any]] = []
    for i, name in enumerate(names):
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"{name}-sql", "labels": {PROGRAM_LABEL: "true"}},
                "data": {"program.sql": SQL.format(i=i)},
            }
        )
        objects.append(
            {
                "apiVersion": "feldera.dev/v1alpha1",
                "kind": "FelderaPipeline",
                "metadata": {"name": name},
                "spec": {
                    "program": {
                        "sqlFrom": {
                            "configMapKeyRef": {"name": f"{name}-sql", "key": "program.sql"}
                        }
                    }
                },
            }
        )
    sb.apply([{**o, "metadata": {**o["metadata"], "namespace": "default"}} for o in objects])
    return names


def measure(sb: Sandbox, *, unrelated: int, pipelines: int, periods: int, tag: str) -> Run:
    """A fresh operator over `pipelines` program pipelines of their own: converge, then
    `periods` quiet periods, then read its memory and its requests."""
    run = Run(unrelated=unrelated, pipelines=pipelines)
    names = _apply_pipelines(sb, tag, pipelines)
    sb.reset_kube_counts()
    started = time.monotonic()
    operator = sb.start_operator("--period", "1", "--default-url", sb.feldera_url, name=tag)
    try:

        def converged() -> bool:
            items = sb.list_objects("felderapipelines", "default")
            ready = {o["metadata"]["name"] for o in items if is_ready(o)}
            return ready >= set(names)

        wait_for(converged, timeout=300, interval=0.5, what=f"{pipelines} pipelines Ready")
        run.converged_s = time.monotonic() - started
        listings = sb.feldera_counts().get("GET /v0/pipelines", 0)
        wait_for(
            lambda: sb.feldera_counts().get("GET /v0/pipelines", 0) >= listings + periods,
            timeout=periods * 5 + 30,
            interval=0.2,
            what=f"{periods} periods",
        )
        pid = operator.popen.pid
        run.rss_mb, run.peak_mb = _memory_mb(pid, "VmRSS"), _memory_mb(pid, "VmHWM")
        requests = sb.operator_requests()
        run.requests = dict(Counter(request_key(e) for e in requests))
        run.selectors = {
            ",".join(parse_qs(urlsplit(e["requestURI"]).query).get("labelSelector", ["(none)"]))
            for e in requests
            if request_key(e) in ("list configmaps", "watch configmaps")
        }
        run.listed, run.listed_bytes = _list_size(sb, f"{PROGRAM_LABEL}=true")
        run.unfiltered, run.unfiltered_bytes = _list_size(sb, None)
    finally:
        operator.stop()
    sb.kubectl("delete", "fpl", *names, "--wait=true")
    sb.kubectl("delete", "configmap", *(f"{n}-sql" for n in names), "--wait=true")
    return run


def table(runs: list[Run]) -> str:
    watch = {"get configmaps", "list configmaps", "watch configmaps"}
    keys = sorted({k for r in runs for k in r.requests} | watch)
    rows = [("unrelated ConfigMaps in the cluster", [str(r.unrelated) for r in runs])]
    rows += [
        ("program pipelines (a labelled ConfigMap each)", [str(r.pipelines) for r in runs]),
        ("all Ready after the operator's start", [f"{r.converged_s:.1f} s" for r in runs]),
        ("its ConfigMap list and watch select", [",".join(sorted(r.selectors)) for r in runs]),
        ("operator VmRSS once converged", [f"{r.rss_mb:.0f} MB" for r in runs]),
        ("operator VmHWM (peak)", [f"{r.peak_mb:.0f} MB" for r in runs]),
        (
            "its ConfigMap list returns (label selector)",
            [f"{r.listed} items, {r.listed_bytes / 1024:.0f} KiB" for r in runs],
        ),
        (
            "an unfiltered list would return",
            [f"{r.unfiltered} items, {r.unfiltered_bytes / 1024:.0f} KiB" for r in runs],
        ),
    ]
    rows += [(f"requests: {k}", [str(r.requests.get(k, 0)) for r in runs]) for k in keys]
    width = max(len(label) for label, _ in rows)
    return "\n".join(
        f"{label:<{width}}  " + "  ".join(f"{v:>26}" for v in values) for label, values in rows
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--unrelated", type=int, default=5000, help="Unlabelled ConfigMaps (default 5000)."
    )
    parser.add_argument(
        "--pipelines", type=int, default=20, help="Program pipelines per run (default 20)."
    )
    parser.add_argument(
        "--periods", type=int, default=5, help="Quiet periods of 1 s after convergence (5)."
    )
    parser.add_argument("--workdir", help="Logs and kubeconfig (default: a temporary directory).")


def main(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="watch-cost-"))
    sb = Sandbox(workdir)
    try:
        sb.start_kubernetes()
        sb.start_feldera()
        sb.install_crds()
        sb.install_operator_identity()
        none = measure(sb, unrelated=0, pipelines=args.pipelines, periods=args.periods, tag="a")
        created = time.monotonic()
        create_unrelated(sb, args.unrelated, "default")
        print(
            f"created {args.unrelated} unlabelled ConfigMaps in {time.monotonic() - created:.0f} s"
        )
        many = measure(
            sb, unrelated=args.unrelated, pipelines=args.pipelines, periods=args.periods, tag="b"
        )
        print(table([none, many]), flush=True)
        return 0
    finally:
        sb.stop()
