"""The Argo CD health checks, run as Argo CD runs them: Lua 5.1 (gopher-lua's dialect), the
resource as the global `obj`, the script returning {status=..., message=...}."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lupa.lua51 as lua
import pytest

from .conftest import CHART_DIR, ROOT

SCRIPTS = {
    "FelderaPipeline": CHART_DIR / "argocd" / "health-felderapipeline.lua",
    "FelderaInstance": CHART_DIR / "argocd" / "health-felderainstance.lua",
}


def to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, v) for v in value])
    return value


def health(script: Path, obj: dict[str, Any]) -> tuple[str, str]:
    runtime = lua.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = to_lua(runtime, obj)
    result = runtime.execute(script.read_text())
    return result["status"], result["message"]


def condition(ctype: str, status: str, reason: str, message: str = "", gen: int = 2) -> dict:
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": gen,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def resource(kind: str, *conditions: dict[str, Any], observed: int | None = 2) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "feldera.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "orders", "namespace": "default", "generation": 2},
        "spec": {"paused": True},
    }
    if observed is not None:
        obj["status"] = {"observedGeneration": observed, "conditions": list(conditions)}
    return obj


READY = condition("Ready", "True", "Converged", "Feldera matches the spec")
NOT_READY_STALLED = condition("Ready", "False", "ConnectorNotFound", "orders.live not reported")
STALLED = condition("Stalled", "True", "ConnectorNotFound", "orders.live not reported")
NOT_STALLED = condition("Stalled", "False", "Converged")
RECONCILING = condition("Reconciling", "True", "Starting", "pipeline starting")
NOT_READY_STARTING = condition("Ready", "False", "Starting", "pipeline starting")

CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "no status": (
        {"observed": None},
        "Progressing",
        "Waiting for the operator to observe generation 2",
    ),
    "status of an older generation": (
        {"conditions": [READY], "observed": 1},
        "Progressing",
        "Waiting for the operator to observe generation 2",
    ),
    "no Ready condition yet": (
        {"conditions": []},
        "Progressing",
        "Waiting for the Ready condition",
    ),
    "Ready of an older generation": (
        {"conditions": [{**READY, "observedGeneration": 1}]},
        "Progressing",
        "Waiting for the Ready condition of generation 2",
    ),
    # Paused as declared is Ready: Healthy, not Suspended, so later sync waves go on.
    "ready (paused as declared)": (
        {"conditions": [READY, NOT_STALLED]},
        "Healthy",
        "Converged: Feldera matches the spec",
    ),
    "stalled": (
        {"conditions": [NOT_READY_STALLED, STALLED]},
        "Degraded",
        "ConnectorNotFound: orders.live not reported",
    ),
    "stalled, Ready says nothing": (
        {"conditions": [condition("Ready", "False", ""), STALLED]},
        "Degraded",
        "ConnectorNotFound: orders.live not reported",
    ),
    "in progress": (
        {"conditions": [NOT_READY_STARTING, RECONCILING, NOT_STALLED]},
        "Progressing",
        "Starting: pipeline starting",
    ),
    "not ready, nothing else said": (
        {"conditions": [condition("Ready", "False", "FelderaUnreachable")]},
        "Progressing",
        "FelderaUnreachable",
    ),
}


@pytest.mark.parametrize("kind", sorted(SCRIPTS))
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_health(kind: str, case: tuple[dict[str, Any], str, str]) -> None:
    shape, status, message = case
    obj = resource(kind, *shape.get("conditions", []), observed=shape.get("observed", 2))
    assert health(SCRIPTS[kind], copy.deepcopy(obj)) == (status, message)


def test_both_kinds_run_one_logic() -> None:
    """Argo CD takes one script per kind; both kinds' conditions mean the same, so the scripts
    differ only in their header comment."""

    def body(script: Path) -> list[str]:
        return [line for line in script.read_text().splitlines() if not line.startswith("--")]

    assert body(SCRIPTS["FelderaPipeline"]) == body(SCRIPTS["FelderaInstance"])


def test_a_resource_without_generation_is_judged_by_its_conditions() -> None:
    obj = resource("FelderaPipeline", READY)
    del obj["metadata"]["generation"]
    assert health(SCRIPTS["FelderaPipeline"], obj)[0] == "Healthy"


def test_docs_install_exactly_these_scripts() -> None:
    """docs/argocd.md's argocd-cm snippet embeds each script as it is in the chart."""
    doc = (ROOT / "docs" / "argocd.md").read_text()
    for kind, script in SCRIPTS.items():
        key = f"resource.customizations.health.feldera.dev_{kind}: |"
        assert key in doc, key
        block = doc.split(key, 1)[1]
        indented = "".join(
            f"    {line}" if line.strip() else "\n" for line in script.read_text().splitlines(True)
        )
        assert block.startswith("\n" + indented), f"{kind}: docs/argocd.md differs from {script}"
