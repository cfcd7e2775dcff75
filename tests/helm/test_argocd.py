"""The Argo CD health check of the feldera.dev resources, in Argo CD's own layout
(resource_customizations/feldera.dev/_/: health.lua, health_test.yaml, testdata/) so that it can
be proposed upstream, and run as Argo CD runs it: Lua 5.1 with only the libraries Argo CD opens
(tests/helm/argocd.py). docs/argocd.md installs exactly this script."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa.lua51 import LuaError

from feldera_sandbox.sandbox import Sandbox

from .argocd import CUSTOMIZATIONS, HEALTH_DIR, HEALTH_SCRIPT, health, load_manifest, run
from .conftest import ROOT

DOC = ROOT / "docs" / "argocd.md"


def cases() -> list[tuple[Path, dict[str, Any]]]:
    """Every case of every health_test.yaml under resource_customizations/, as upstream's
    util/lua/health_test.go walks them."""
    out = []
    for script in sorted(CUSTOMIZATIONS.rglob("health.lua")):
        tests = yaml.safe_load((script.parent / "health_test.yaml").read_text())["tests"]
        out += [(script.parent, case) for case in tests]
    return out


@pytest.mark.parametrize(
    "directory, case",
    cases(),
    ids=lambda c: Path(c["inputPath"]).stem if isinstance(c, dict) else "",
)
def test_health_test_yaml_case(directory: Path, case: dict[str, Any]) -> None:
    obj = load_manifest(directory / case["inputPath"])
    assert health(obj, directory / "health.lua") == {
        "status": case["healthStatus"]["status"],
        "message": case["healthStatus"].get("message", ""),
    }


def test_the_layout_is_upstream_s() -> None:
    # resource_customizations/<group>/<kind>/, `_` a wildcard: feldera.dev/_ is feldera.dev/*.
    assert [p.relative_to(CUSTOMIZATIONS) for p in CUSTOMIZATIONS.rglob("health.lua")] == [
        Path("feldera.dev/_/health.lua")
    ]
    used = {Path(c["inputPath"]).name for _, c in cases()}
    present = {p.name for p in (HEALTH_DIR / "testdata").glob("*.yaml")}
    assert used == present, "every testdata file has a case, every case a file"
    for path in (HEALTH_DIR / "testdata").glob("*.yaml"):
        manifest = load_manifest(path)
        assert manifest["apiVersion"] == "feldera.dev/v1alpha1", path.name
        assert manifest["kind"] in ("FelderaPipeline", "FelderaInstance"), path.name
        assert {"metadata", "spec"} <= set(manifest), path.name


def test_every_health_status_is_reached_for_both_kinds() -> None:
    statuses = {c["healthStatus"]["status"] for _, c in cases()}
    assert statuses == {"Healthy", "Progressing", "Degraded", "Suspended"}
    kinds = {load_manifest(HEALTH_DIR / c["inputPath"])["kind"] for _, c in cases()}
    assert kinds == {"FelderaPipeline", "FelderaInstance"}


# ----------------------------------------------------------------------- rules beside the cases


def sample(name: str) -> dict[str, Any]:
    return load_manifest(HEALTH_DIR / "testdata" / f"{name}.yaml")


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj["status"]["conditions"]}


def test_a_program_error_is_degraded_even_before_the_operator_says_stalled() -> None:
    obj = sample("pipeline-program-error")
    conditions(obj)["Stalled"].update(status="False", reason="AsExpected")
    assert health(obj)["status"] == "Degraded"


def test_a_stopped_pipeline_is_not_called_paused() -> None:
    obj = sample("pipeline-paused-as-declared")
    obj["spec"]["stopped"] = True
    assert health(obj)["message"].startswith("Converged: ")


def test_a_resource_without_generation_is_judged_by_its_conditions() -> None:
    obj = sample("pipeline-running")
    del obj["metadata"]["generation"]
    assert health(obj)["status"] == "Healthy"


def test_stalled_without_a_ready_reason_says_the_stalled_one() -> None:
    obj = sample("pipeline-connector-not-found")
    conditions(obj)["Ready"].update(reason="", message="")
    assert health(obj) == {
        "status": "Degraded",
        "message": "ConnectorNotFound: " + conditions(obj)["Stalled"]["message"],
    }


def test_paused_counts_connectors_of_both_directions() -> None:
    obj = sample("pipeline-paused-as-declared")
    obj["status"]["inputs"][0]["active"] = True
    obj["status"]["outputs"][0]["active"] = True
    assert health(obj)["message"] == "paused as declared, 2/4 connectors active"
    del obj["status"]["outputs"]
    assert health(obj)["message"] == "paused as declared, 1/3 connectors active"


# ----------------------------------------------------------------------- Argo CD's sandbox


@pytest.mark.parametrize(
    "script",
    [
        'return string.format("%d", 1)',
        'return ("x"):upper()',
        "return math.floor(1.5)",
        'return io.open("/etc/passwd")',
        'return os.execute("true")',
        'return require("string")',
    ],
)
def test_the_sandbox_refuses_what_argo_cd_does_not_open(script: str) -> None:
    """So a script that passes here cannot lean on a library Argo CD would not give it."""
    with pytest.raises(LuaError, match=r"a nil value|attempt to index a string value|not found"):
        run(script, {})


def test_the_sandbox_opens_what_argo_cd_opens() -> None:
    script = "local t = {} table.insert(t, os.time() > 0) return {n = #t, s = tostring(1) .. 'x'}"
    result = run(script, {})
    assert (result["n"], result["s"]) == (1, "1x")


# ----------------------------------------------------------------------- docs/argocd.md


def argocd_cm() -> dict[str, Any]:
    """The argocd-cm ConfigMap docs/argocd.md tells users to merge."""
    block = DOC.read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
    result: dict[str, Any] = yaml.safe_load(block)
    return result


def test_docs_install_exactly_this_script_for_every_feldera_kind() -> None:
    cm = argocd_cm()
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    customizations = yaml.safe_load(cm["data"]["resource.customizations"])
    # A wildcard works only in the resource.customizations key (ConfigMap keys cannot hold '*').
    assert customizations == {"feldera.dev/*": {"health.lua": HEALTH_SCRIPT.read_text()}}


def test_the_docs_config_map_is_accepted_by_the_api_server(cluster: Sandbox) -> None:
    cm = copy.deepcopy(argocd_cm())
    cm["metadata"]["namespace"] = "default"
    ok = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(cm), check=False)
    assert ok.returncode == 0, ok.stderr
    # The check can fail: the per-kind key style with a wildcard is refused by Kubernetes.
    wrong = copy.deepcopy(cm)
    wrong["data"] = {"resource.customizations.health.feldera.dev_*": HEALTH_SCRIPT.read_text()}
    refused = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(wrong), check=False
    )
    assert refused.returncode != 0
    assert "a valid config key must consist of alphanumeric characters" in refused.stderr
