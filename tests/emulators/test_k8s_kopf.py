"""A real `kopf run` operator against the Kubernetes emulator: create, update, delete.

The operator (fixtures/kopf_operator.py) runs as a subprocess with KUBECONFIG pointing at the
emulator; the test acts and asserts through the API only, as a user would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .test_k8s_emulator import (
    BASE,
    FIXTURES,
    Cluster,
    install_crd,
    pipeline,
    start_cluster,
    stop_cluster,
    wait_until,
)


@pytest.fixture
def operator_cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster, thread = start_cluster(tmp_path)
    install_crd(cluster)
    log = (tmp_path / "kopf.log").open("w")
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "--standalone",
            "--all-namespaces",
            "--verbose",
            str(FIXTURES / "kopf_operator.py"),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield cluster
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        stop_cluster(cluster, thread)
        output = (tmp_path / "kopf.log").read_text()
        assert "Traceback" not in output, output[-4000:]


def status_of(cluster: Cluster, name: str) -> dict[str, Any]:
    reply = cluster.api.request("GET", f"{BASE}/{name}")
    return dict(reply.body.get("status") or {}) if reply.status == 200 else {}


def test_kopf_operator_handles_create_update_and_delete(operator_cluster: Cluster) -> None:
    cluster = operator_cluster
    cluster.api.create(BASE, pipeline("watched", paused=False))
    wait_until(
        lambda: status_of(cluster, "watched").get("phase") == "Created",
        timeout=30,
        what="the create handler's status",
    )
    meta = cluster.api.get(f"{BASE}/watched")["metadata"]
    assert meta["finalizers"] == ["emulator.feldera.dev/kopf"]

    reply = cluster.api.merge(f"{BASE}/watched", {"spec": {"paused": True}})
    assert reply.status == 200, reply.body
    wait_until(
        lambda: status_of(cluster, "watched") == {"phase": "Updated", "seenPaused": True},
        timeout=30,
        what="the update handler's status",
    )

    assert cluster.api.request("DELETE", f"{BASE}/watched").status == 200
    wait_until(
        lambda: cluster.api.request("GET", f"{BASE}/watched").status == 404,
        timeout=30,
        what="kopf to release its finalizer",
    )
    events = cluster.api.get("/api/v1/namespaces/default/events")["items"]
    reasons = {(e["reason"], e["involvedObject"]["name"]) for e in events}
    assert ("Deleting", "watched") in reasons
    # kopf wrote the status through the status subresource, never through the main resource.
    counts = cluster.emulator.request_counts()
    assert counts.get("patch testpipelines/status", 0) >= 2
