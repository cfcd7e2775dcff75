"""End-to-end fixtures: the real operator process, a real kubectl, both emulators over HTTP."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from leaks import assert_no_leaks

from feldera_sandbox.sandbox import (
    EXAMPLE_FELDERA_PORT,
    EXAMPLES_DIR,
    Sandbox,
    condition,
    connector_entry,
    existing_cluster,
    is_ready,
    wait_for,
)

PERIOD = 1.0  # the operator's observation period in these tests
# What needs the local control plane (its audit log, killing it): not run on an existing cluster.
needs_local_plane = pytest.mark.skipif(
    existing_cluster(),
    reason="USE_EXISTING_CLUSTER: needs the local control plane (audit log, process control)",
)
# How long a pipeline stopped behind the operator's back stays stopped (default 60 s): short
# here, so tests that stop one see it started again soon.
EXTERNAL_STOP_GRACE = 2.0
API_KEY = next(
    doc["stringData"]["apiKey"]
    for doc in yaml.safe_load_all((EXAMPLES_DIR / "feldera-instance.yaml").read_text())
    if doc and doc.get("kind") == "Secret"
)

SQL = """
CREATE TABLE orders (id BIGINT, amount INT) WITH ('connectors' = '[
  {"name": "backfill", "transport": {"name": "datagen", "config": {}}},
  {"name": "live", "paused": true, "transport": {"name": "kafka_input", "config": {}}},
  {"name": "extra", "transport": {"name": "datagen", "config": {}}}]');
CREATE MATERIALIZED VIEW big_orders WITH ('connectors' = '[
  {"name": "sink", "transport": {"name": "kafka_output", "config": {}}}]')
AS SELECT * FROM orders WHERE amount > 100;
"""

_names = itertools.count(1)
# Every sandbox of the session: the e2e fixture searches them all for the API key at the end.
SANDBOXES: list[Sandbox] = []


class E2E:
    """The sandbox plus the few verbs the tests speak in."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox

    # Feldera side
    def feldera(self, method: str, path: str, body: Any = None) -> Any:
        return self.sb.feldera(method, path, body, api_key=API_KEY)

    def create_pipeline(self, name: str, sql: str = SQL) -> None:
        self.feldera("PUT", f"/v0/pipelines/{name}", {"name": name, "program_code": sql})

    def pipeline(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.feldera("GET", f"/v0/pipelines/{name}?selector=status")
        return result

    def flags(self, name: str, direction: str = "inputs") -> dict[str, bool]:
        stats = self.feldera("GET", f"/v0/pipelines/{name}/stats")
        return {e["endpoint_name"]: e.get("paused") for e in stats[direction]}

    # Kubernetes side
    def apply(self, manifest: dict[str, Any], *args: str) -> None:
        self.sb.kubectl("apply", *args, "-f", "-", input=json.dumps(manifest))

    def get(self, name: str, namespace: str = "default") -> dict[str, Any]:
        result = self.sb.get("felderapipelines", name, namespace)
        if result is None:
            raise LookupError(f"FelderaPipeline {namespace}/{name} not found")
        return result

    def patch(self, name: str, patch: Any, kind: str = "merge") -> None:
        self.sb.kubectl("patch", "fpl", name, f"--type={kind}", "-p", json.dumps(patch))

    def wait(self, check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        return wait_for(check, timeout=timeout, interval=0.05, what=what)

    def wait_ready(self, name: str, timeout: float = 30) -> dict[str, Any]:
        result: dict[str, Any] = self.wait(
            lambda: (obj := self.get(name)) and is_ready(obj) and obj, f"{name} Ready", timeout
        )
        return result

    def events(self, name: str, namespace: str = "default") -> list[dict[str, Any]]:
        items = self.sb.list_objects("events", namespace, version="v1")
        return [e for e in items if e.get("involvedObject", {}).get("name") == name]

    def wait_events(
        self,
        name: str,
        has: Callable[[list[dict[str, Any]]], bool],
        what: str,
        namespace: str = "default",
    ) -> list[dict[str, Any]]:
        """The resource's Events once `has(events)` holds: the operator posts Events apart from
        its status writes, so one may land just after the status that tells of it."""
        found: list[dict[str, Any]] = []

        def ready() -> bool:
            nonlocal found
            found = self.events(name, namespace)
            return has(found)

        self.wait(ready, what)
        return found

    def operator_log(self) -> str:
        return "\n".join(p.log_text() for p in self.sb.operators)


def pipeline_manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "feldera.dev/v1alpha1",
        "kind": "FelderaPipeline",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def operator_defaults(sb: Sandbox) -> list[str]:
    """The operator's flags in these tests, after the chart's own: a short period, readable
    logs, and the emulator as the default instance with the examples' Secret."""
    return [
        "--period",
        str(PERIOD),
        "--log-format",
        "text",
        "--external-stop-grace",
        str(EXTERNAL_STOP_GRACE),
        "--default-url",
        sb.feldera_url,
        "--default-api-key-secret",
        "default/feldera-api-key",
    ]


def start_sandbox(
    workdir: Path,
    *operator_args: str,
    examples: bool = True,
    chart_values: dict[str, Any] | None = None,
    operator: bool = True,
    feldera_args: tuple[str, ...] = (),
) -> Sandbox:
    """The control plane, the Feldera emulator and the operator, which runs with the identity
    and RBAC the chart renders for `chart_values` (all namespaces by default). With `examples`,
    Feldera listens where the examples' FelderaInstance points, and that instance and its Secret
    are applied as they are. `feldera_args` go to the emulator (`--edition enterprise`...)."""
    sb = Sandbox(workdir)
    SANDBOXES.append(sb)
    try:
        sb.start_kubernetes()
        port = EXAMPLE_FELDERA_PORT if examples else 0
        sb.start_feldera("--api-key", API_KEY, *feldera_args, port=port)
        sb.install_crds()
        sb.install_operator_identity(chart_values)
        if examples:
            sb.kubectl("apply", "-f", str(EXAMPLES_DIR / "feldera-instance.yaml"))
        else:
            secret = next(
                doc
                for doc in yaml.safe_load_all((EXAMPLES_DIR / "feldera-instance.yaml").read_text())
                if doc and doc.get("kind") == "Secret"
            )
            sb.kubectl("apply", "-f", "-", input=json.dumps(secret))
        if operator:
            sb.start_operator(*operator_defaults(sb), *operator_args)
    except BaseException:
        sb.stop()
        raise
    return sb


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    # Any free port: only the examples test needs Feldera where examples/ points (its own sandbox).
    sb = start_sandbox(tmp_path_factory.mktemp("e2e"), examples=False)
    yield E2E(sb)
    try:
        assert_no_leaks(sb, [API_KEY])  # logs, Events, statuses, metrics
    finally:
        sb.stop()
    for each in SANDBOXES:  # the tests' own sandboxes too, stopped by now: their logs
        assert_no_leaks(each, [API_KEY], live=False)


__all__ = ["E2E", "condition", "connector_entry", "is_ready", "pipeline_manifest", "unique"]
