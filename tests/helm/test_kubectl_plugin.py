"""`kubectl feldera`, run as users run it: kubectl finds `kubectl-feldera` on PATH and runs it as
a separate process, against the real API server. Changes are server-side applies under the
field manager `kubectl-feldera`: managedFields say who changed what, and what other managers own
stays theirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from feldera_sandbox.sandbox import Sandbox, kubectl_path

from .argocd import HEALTH_DIR, load_manifest

NAMESPACE = "team-plugin"
MANAGER = "kubectl-feldera"
BIN = Path(sys.executable).parent


def kubectl_feldera(
    sb: Sandbox, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`kubectl feldera ARGS`: kubectl's plugin mechanism, with the project's kubectl and the
    installed console script first on PATH, and no KUBECONFIG unless `env` gives one."""
    if not (BIN / "kubectl-feldera").exists():
        pytest.fail("kubectl-feldera is not installed: reinstall the project (pip install -e .)")
    base = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    base["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    base["HOME"] = str(sb.workdir)  # no ~/.kube/config of the machine's user
    return subprocess.run(
        [kubectl_path(), "feldera", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
        check=False,
    )


def plugin(sb: Sandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return kubectl_feldera(sb, *args, "-n", NAMESPACE, f"--kubeconfig={sb.kubeconfig}")


def get(sb: Sandbox, name: str) -> dict[str, Any]:
    result: dict[str, Any] = sb.kubectl_json(
        "get", "fpl", name, "-n", NAMESPACE, "--show-managed-fields"
    )
    return result


def managed(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """manager -> the fields it owns (Apply and Update entries merged by manager name)."""
    out: dict[str, dict[str, Any]] = {}
    for entry in obj["metadata"]["managedFields"]:
        out.setdefault(entry["manager"], {}).update(entry.get("fieldsV1") or {})
    return out


def entry(obj: dict[str, Any], direction: str, relation: str, connector: str) -> dict[str, Any]:
    key = "table" if direction == "inputs" else "view"
    return next(
        e for e in obj["spec"][direction] if e[key] == relation and e["connector"] == connector
    )


BACKFILL = 'k:{"connector":"backfill","table":"orders"}'
LIVE = 'k:{"connector":"live","table":"orders"}'


def create(sb: Sandbox, name: str) -> dict[str, Any]:
    """A FelderaPipeline as a GitOps tool applies it (server-side, field manager `gitops`), with
    the status the operator wrote for the same spec in a real run (Argo CD's testdata)."""
    sample = load_manifest(HEALTH_DIR / "testdata" / "pipeline-running.yaml")
    manifest = {
        "apiVersion": "feldera.dev/v1alpha1",
        "kind": "FelderaPipeline",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {k: sample["spec"][k] for k in ("paused", "inputs", "outputs")},
    }
    sb.kubectl(
        "apply", "--server-side", "--field-manager=gitops", "-f", "-", input=json.dumps(manifest)
    )
    status = {**sample["status"], "pipelineName": name}
    sb.kubectl(
        "patch",
        "fpl",
        name,
        "-n",
        NAMESPACE,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    return get(sb, name)


@pytest.fixture(scope="module")
def sb(cluster: Sandbox) -> Iterator[Sandbox]:
    cluster.kubectl("create", "namespace", NAMESPACE)
    yield cluster


def test_kubectl_finds_and_runs_the_plugin(sb: Sandbox) -> None:
    listed = kubectl_feldera(sb, "--help")
    assert listed.returncode == 0, listed.stderr
    assert "usage: kubectl feldera" in listed.stdout


def test_status_shows_state_conditions_and_every_connector(sb: Sandbox) -> None:
    create(sb, "shown")
    result = plugin(sb, "status", "shown")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"FelderaPipeline {NAMESPACE}/shown (Feldera pipeline shown)" in out
    assert "Declared: running   State: Running (desired Running)   Program: Success" in out
    rows = {tuple(line.split()[:7]) for line in out.splitlines()}
    assert ("Ready", "True", "Converged", "pipeline", "Running", "as", "declared;") in rows
    # IO, TABLE/VIEW, CONNECTOR, DECLARED, DESIRED, STATE, ACTIVE
    assert ("in", "orders", "backfill", "yes", "running", "Running", "yes") in rows
    assert ("in", "orders", "live", "yes", "paused", "Paused", "no") in rows
    assert ("in", "orders", "extra", "no", "-", "Running", "yes") in rows
    assert ("out", "big_orders", "sink", "yes", "running", "Running", "yes") in rows


def test_pausing_a_connector_applies_that_entry_alone_under_its_own_manager(sb: Sandbox) -> None:
    before = create(sb, "flip")
    # gitops set that connector's flag: taking it over is the user's explicit choice.
    refused = plugin(sb, "pause", "flip", "orders.backfill")
    assert refused.returncode == 1
    assert 'conflict with "gitops"' in refused.stderr and "--force-conflicts" in refused.stderr
    assert get(sb, "flip")["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    done = plugin(
        sb, "pause", "flip", "Orders.backfill", "--force-conflicts"
    )  # SQL: case-insensitive
    assert done.returncode == 0, done.stderr
    after = get(sb, "flip")
    assert entry(after, "inputs", "orders", "backfill")["paused"] is True
    # Everything else is as gitops left it, and still gitops'.
    assert entry(after, "inputs", "orders", "live") == entry(before, "inputs", "orders", "live")
    assert after["spec"]["outputs"] == before["spec"]["outputs"]
    assert after["spec"]["paused"] is False
    owners = managed(after)
    ours = owners[MANAGER]["f:spec"]
    assert ours == {
        "f:inputs": {BACKFILL: {".": {}, "f:connector": {}, "f:paused": {}, "f:table": {}}}
    }
    theirs = owners["gitops"]["f:spec"]
    assert "f:paused" not in theirs["f:inputs"][BACKFILL]  # taken over, and only that
    assert "f:paused" in theirs["f:inputs"][LIVE] and "f:paused" in theirs
    apply_entry = next(e for e in after["metadata"]["managedFields"] if e["manager"] == MANAGER)
    assert apply_entry["operation"] == "Apply"

    # Ours now: resuming needs no force.
    resumed = plugin(sb, "resume", "flip", "orders.backfill")
    assert resumed.returncode == 0, resumed.stderr
    assert entry(get(sb, "flip"), "inputs", "orders", "backfill")["paused"] is False


def test_pausing_the_pipeline_and_an_output_connector(sb: Sandbox) -> None:
    create(sb, "whole")
    assert plugin(sb, "pause", "whole", "--force-conflicts").returncode == 0
    assert plugin(sb, "pause", "whole", "big_orders.sink", "--force-conflicts").returncode == 0
    obj = get(sb, "whole")
    assert obj["spec"]["paused"] is True
    assert entry(obj, "outputs", "big_orders", "sink")["paused"] is True
    assert set(managed(obj)[MANAGER]["f:spec"]) == {"f:paused", "f:outputs"}


def test_unknown_names_are_clear_errors(sb: Sandbox) -> None:
    create(sb, "known")
    unknown = plugin(sb, "pause", "known", "orders.nope")
    assert unknown.returncode == 1
    assert "no connector 'orders.nope'" in unknown.stderr
    assert "orders.backfill" in unknown.stderr  # the known ones are listed
    missing = plugin(sb, "status", "absent")
    assert missing.returncode == 1
    assert f"FelderaPipeline {NAMESPACE}/absent not found" in missing.stderr
    assert "Traceback" not in unknown.stderr + missing.stderr


def test_namespace_and_kubeconfig_come_from_the_context_as_kubectl_s(
    sb: Sandbox, tmp_path: Path
) -> None:
    create(sb, "ctx")
    config = yaml.safe_load(sb.kubeconfig.read_text())
    team = {**config["contexts"][0], "name": "team"}
    team["context"] = {**team["context"], "namespace": NAMESPACE}
    config["contexts"].append(team)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    by_flag = kubectl_feldera(
        sb, "status", "ctx", f"--kubeconfig={kubeconfig}", "--context", "team"
    )
    assert by_flag.returncode == 0, by_flag.stderr
    by_env = kubectl_feldera(
        sb, "--context=team", "status", "ctx", env={"KUBECONFIG": str(kubeconfig)}
    )
    assert by_env.returncode == 0, by_env.stderr
    elsewhere = kubectl_feldera(sb, "status", "ctx", env={"KUBECONFIG": str(kubeconfig)})
    assert elsewhere.returncode == 1  # the current context's namespace is default
    assert "FelderaPipeline default/ctx not found" in elsewhere.stderr


def test_approve_refuses_when_nothing_is_pending(sb: Sandbox) -> None:
    create(sb, "calm")
    result = plugin(sb, "approve", "calm")
    assert result.returncode == 1
    assert "nothing to approve" in result.stderr and "status.program.pending" in result.stderr
    assert MANAGER not in managed(get(sb, "calm"))


HASH = "sha256:" + "9c" * 32


def test_approve_sets_the_pending_hash_under_its_own_manager(sb: Sandbox) -> None:
    create(sb, "pending")
    pending = {"hash": HASH, "needsBootstrap": True, "losesState": False, "waitingFor": "Approval"}
    sb.kubectl(
        "patch",
        "fpl",
        "pending",
        "-n",
        NAMESPACE,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"program": {"hash": HASH, "pending": pending}}}),
    )
    result = plugin(sb, "approve", "pending")
    assert result.returncode == 0, result.stderr
    obj = get(sb, "pending")
    assert obj["spec"]["bootstrap"]["approve"] == HASH
    assert managed(obj)[MANAGER]["f:spec"] == {"f:bootstrap": {"f:approve": {}}}
