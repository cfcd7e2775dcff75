"""Bad input: refused by `kubectl apply` with a message naming the field when the schema can tell;
otherwise (references that look valid but lead nowhere) a specific reason on the resource, and
the operator keeps running. And names Feldera treats specially: quoted case-sensitive tables,
unquoted tables written in another case, unnamed connectors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from e2e.conftest import connector_entry, pipeline_manifest, unique
from e2e.test_operator import INPUT_ACTION, OUTPUT_ACTION, PIPELINE_ACTIONS, standard

from .conftest import Faults, cond_message, cond_status

pytestmark = pytest.mark.faults

GOOD_INPUT = {"table": "orders", "connector": "live", "paused": True}


def refused(f: Faults, manifest: dict[str, Any]) -> str:
    """kubectl apply's complaint (it must fail)."""
    result = f.sb.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert result.returncode != 0, f"accepted: {json.dumps(manifest)}\n{result.stdout}"
    return result.stderr


def with_spec(**spec: Any) -> dict[str, Any]:
    return pipeline_manifest(unique("bad"), **spec)


# (id, spec, what the message must name)
BAD_SPECS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("pipeline name with a dot", {"pipelineName": "orders.v2"}, ["spec.pipelineName"]),
    ("pipeline name too long", {"pipelineName": "p" * 64}, ["spec.pipelineName"]),
    ("pipeline name ends with -", {"pipelineName": "orders-"}, ["spec.pipelineName"]),
    (
        "connector name with a dot",
        {"inputs": [{"table": "orders", "connector": "a.b"}]},
        ["spec.inputs[0].connector"],
    ),
    (
        "connector name with a space",
        {"outputs": [{"view": "v", "connector": "a b"}]},
        ["spec.outputs[0].connector"],
    ),
    (
        "table name that is no SQL identifier",
        {"inputs": [{"table": "my table", "connector": "c"}]},
        ["spec.inputs[0].table"],
    ),
    ("input without table", {"inputs": [{"connector": "live"}]}, ["spec.inputs[0].table"]),
    ("input without connector", {"inputs": [{"table": "orders"}]}, ["spec.inputs[0].connector"]),
    ("output without view", {"outputs": [{"connector": "sink"}]}, ["spec.outputs[0].view"]),
    (
        "duplicate input entries",
        {"inputs": [GOOD_INPUT, {**GOOD_INPUT, "paused": False}]},
        ["spec.inputs[1]", "Duplicate"],
    ),
    ("paused as a string", {"paused": "yes"}, ["spec.paused", "boolean"]),
    (
        "connector paused as a number",
        {"inputs": [{**GOOD_INPUT, "paused": 1}]},
        ["spec.inputs[0].paused", "boolean"],
    ),
    ("inputs as a map", {"inputs": {"orders": "live"}}, ["spec.inputs"]),
    ("unknown spec field", {"pause": True}, ['unknown field "spec.pause"']),
    (
        "unknown connector field",
        {"inputs": [{**GOOD_INPUT, "state": "Running"}]},
        ['unknown field "spec.inputs[0].state"'],
    ),
    ("unknown deletion policy", {"deletionPolicy": "Destroy"}, ["spec.deletionPolicy"]),
]


@pytest.mark.parametrize(
    ("spec", "named"), [(s, n) for _, s, n in BAD_SPECS], ids=[i for i, _, _ in BAD_SPECS]
)
def test_bad_spec_is_refused_at_apply_time_naming_the_field(
    faults: Faults, spec: dict[str, Any], named: list[str]
) -> None:
    message = refused(faults, with_spec(**spec))
    for part in named:
        assert part in message, message


def test_metadata_name_that_is_no_pipeline_name_needs_pipeline_name(faults: Faults) -> None:
    message = refused(faults, pipeline_manifest("orders.v2"))
    assert "spec.pipelineName" in message, message
    # With a pipelineName the same resource is fine.
    faults.apply(pipeline_manifest("orders.v2", pipelineName="orders-v2"))


@pytest.mark.parametrize(
    ("before", "after", "named"),
    [
        ({"pipelineName": "id-a"}, {"pipelineName": "id-b"}, "pipelineName is immutable"),
        ({}, {"pipelineName": "id-c"}, "pipelineName cannot be added or removed"),
        ({"pipelineName": "id-d"}, {}, "pipelineName cannot be added or removed"),
        (
            {"instanceRef": {"name": "a"}},
            {"instanceRef": {"name": "b"}},
            "instanceRef is immutable",
        ),
        ({}, {"instanceRef": {"name": "a"}}, "instanceRef cannot be added or removed"),
    ],
    ids=[
        "pipelineName changed",
        "pipelineName added",
        "pipelineName removed",
        "instanceRef changed",
        "instanceRef added",
    ],
)
def test_identity_fields_cannot_change(
    faults: Faults, before: dict[str, Any], after: dict[str, Any], named: str
) -> None:
    manifest = pipeline_manifest(unique("ident"), **before)
    faults.apply(manifest)
    message = refused(faults, {**manifest, "spec": after})
    assert named in message, message


def test_unknown_pipeline_and_connector_are_named_and_other_connectors_still_reconciled(
    faults: Faults,
) -> None:
    nowhere = unique("nowhere")
    faults.apply(standard(nowhere))
    obj = faults.wait_reason(nowhere, "PipelineNotFound")
    assert nowhere in cond_message(obj, "Ready") and cond_status(obj, "Stalled") == "True"

    name = unique("unknownconn")
    faults.create_pipeline(name)
    manifest = standard(name, live=False)
    manifest["spec"]["inputs"].append({"table": "orders", "connector": "nope", "paused": False})
    manifest["spec"]["outputs"].append({"view": "no_view", "connector": "sink", "paused": True})
    faults.apply(manifest)
    obj = faults.wait_reason(name, "ConnectorNotFound")
    message = cond_message(obj, "Ready")
    assert "orders.nope" in message and "no_view.sink" in message, message
    # The connectors that exist are reconciled all the same.
    faults.wait(lambda: faults.flags(name)["orders.live"] is False, "live started")
    obj = faults.wait(
        lambda: (
            (o := faults.get(name))
            and (connector_entry(o, "orders", "live") or {}).get("state") == "Running"
            and o
        ),
        "status shows live running",
    )
    assert connector_entry(obj, "no_view", "sink", "outputs")["reason"] == "ConnectorNotFound"


def test_two_entries_naming_one_connector_in_different_case_are_reported_the_rest_applied(
    faults: Faults,
) -> None:
    """`Orders` and `orders` are one table to Feldera, so these entries contradict each other;
    the list-map key is case-sensitive, so the schema cannot see it: the operator must. The
    other entries are still reconciled."""
    name = unique("samecase")
    faults.create_pipeline(name)
    faults.apply(
        pipeline_manifest(
            name,
            inputs=[
                {"table": "Orders", "connector": "live", "paused": False},
                {"table": "orders", "connector": "live", "paused": True},
                {"table": "orders", "connector": "backfill", "paused": True},
            ],
        )
    )
    obj = faults.wait_reason(name, "DuplicateConnector")
    message = cond_message(obj, "Ready")
    assert "spec.inputs[0]" in message and "spec.inputs[1]" in message
    assert cond_status(obj, "Stalled") == "True"
    faults.wait(lambda: faults.flags(name).get("orders.backfill") is True, "backfill paused")
    assert connector_entry(obj, "Orders", "live")["reason"] == "DuplicateConnector"


QUIRKY_SQL = """
CREATE TABLE "MyTable" (id BIGINT) WITH ('connectors' = '[
  {"name": "feed", "paused": true, "transport": {"name": "datagen", "config": {}}}]');
CREATE TABLE orders (id BIGINT) WITH ('connectors' = '[
  {"transport": {"name": "datagen", "config": {}}},
  {"paused": true, "transport": {"name": "datagen", "config": {}}}]');
CREATE VIEW "BigOnes" WITH ('connectors' = '[
  {"transport": {"name": "kafka_output", "config": {}}}]') AS SELECT * FROM orders;
"""


def test_quoted_case_sensitive_names_other_case_and_unnamed_connectors(faults: Faults) -> None:
    name = unique("names")
    faults.create_pipeline(name, QUIRKY_SQL)
    faults.apply(
        pipeline_manifest(
            name,
            inputs=[
                {"table": '"MyTable"', "connector": "feed", "paused": False},
                {"table": "Orders", "connector": "unnamed-0", "paused": True},
                {"table": "ORDERS", "connector": "unnamed-1", "paused": False},
            ],
            outputs=[{"view": '"BigOnes"', "connector": "unnamed-0", "paused": True}],
        )
    )
    faults.wait(
        lambda: (
            faults.flags(name)
            == {"MyTable.feed": False, "orders.unnamed-0": True, "orders.unnamed-1": False}
        ),
        "inputs as declared in Feldera",
    )
    faults.wait(
        lambda: faults.flags(name, "outputs") == {"BigOnes.unnamed-0": True},
        "output as declared in Feldera",
    )
    obj = faults.wait_ready(name)
    # One status entry per connector, each declared: no phantom entries from the spelling.
    entries = obj["status"]["inputs"] + obj["status"]["outputs"]
    assert len(entries) == 4 and all(e["declared"] for e in entries), entries
    # Converged means converged: no action is repeated over further periods.
    acts = [INPUT_ACTION, OUTPUT_ACTION, *PIPELINE_ACTIONS]
    before = {k: faults.count(k) for k in acts}
    lists = faults.count("GET /v0/pipelines")
    faults.wait(lambda: faults.count("GET /v0/pipelines") >= lists + 2, "two more passes")
    assert {k: faults.count(k) for k in acts} == before
