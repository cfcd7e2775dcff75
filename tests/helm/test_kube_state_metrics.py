"""docs/kube-state-metrics.yaml, the kube-state-metrics CustomResourceState configuration for the
feldera.dev resources: its shape is what kube-state-metrics reads (the field names of its config
structs), and every path it reads exists in the CRD schema of its kind (crds/*.yaml)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from .conftest import ROOT

CONFIG = ROOT / "docs" / "kube-state-metrics.yaml"
# kube-state-metrics' pkg/customresourcestate config structs, by yaml tag.
RESOURCE_KEYS = {"groupVersionKind", "metricNamePrefix", "resourcePlural", "metrics", "errorLogV"}
LABELS_KEYS = {"commonLabels", "labelsFromPath"}
GENERATOR_KEYS = {"name", "help", "each", "errorLogV"} | LABELS_KEYS
EACH = {
    "Gauge": ("gauge", {"path", "labelsFromPath", "labelFromKey", "valueFrom", "nilIsZero"}),
    "StateSet": ("stateSet", {"path", "labelsFromPath", "list", "labelName", "valueFrom"}),
    "Info": ("info", {"path", "labelsFromPath", "labelFromKey"}),
}
# Served by every object, not in a CRD's schema (metadata is `type: object` there).
OBJECT_META = {
    "name": "string",
    "namespace": "string",
    "uid": "string",
    "generation": "integer",
    "creationTimestamp": "string",
    "labels": "object",
    "annotations": "object",
}
_SELECT = re.compile(r"^\[(\w+)=(.+)\]$")


def crd_schemas() -> dict[tuple[str, str, str], dict[str, Any]]:
    out = {}
    for path in (ROOT / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            key = (crd["spec"]["group"], version["name"], crd["spec"]["names"]["kind"])
            out[key] = version["schema"]["openAPIV3Schema"]
    return out


def resolve(schema: dict[str, Any], path: list[str]) -> dict[str, Any]:
    """The schema node `path` reaches, as kube-state-metrics walks it: names, list indexes and
    [key=value] selections of list elements. Raises KeyError naming the first missing step."""
    node = schema
    for i, step in enumerate(path):
        where = ".".join(path[: i + 1])
        if node is schema and step == "metadata" and len(path) > i + 1:
            if path[i + 1] not in OBJECT_META:
                raise KeyError(f"{where}.{path[i + 1]}: not an ObjectMeta field")
            return {"type": OBJECT_META[path[i + 1]]}
        selected = _SELECT.match(step)
        if selected or step.isdigit():
            if node.get("type") != "array":
                raise KeyError(f"{where}: selects an element of a non-list")
            node = node["items"]
            if selected and selected.group(1) not in node.get("properties", {}):
                raise KeyError(f"{where}: list elements have no {selected.group(1)!r}")
            continue
        properties = node.get("properties") or {}
        if step not in properties:
            raise KeyError(f"{where}: not in the schema")
        node = properties[step]
    return node


def paths_read(resource: dict[str, Any]) -> list[tuple[str, list[str], list[str], str]]:
    """(metric, base path, path relative to it, what is read there: label, path or value) for
    every path the configuration reads."""
    out = [("*", [], p, "label") for p in resource.get("labelsFromPath", {}).values()]
    for metric in resource["metrics"]:
        name, each = metric["name"], metric["each"]
        body = each[EACH[each["type"]][0]]
        base = body.get("path", [])
        labels = {**metric.get("labelsFromPath", {}), **body.get("labelsFromPath", {})}
        out += [(name, base, p, "label") for p in labels.values()]
        if each["type"] == "Gauge":
            # The value: valueFrom in each element, or what the path itself reaches.
            out.append(
                (name, *((base, body["valueFrom"]) if "valueFrom" in body else ([], base)), "value")
            )
        elif base:
            out.append((name, [], base, "path"))
    return out


def relative(schema: dict[str, Any], base: list[str], path: list[str]) -> dict[str, Any]:
    node = resolve(schema, base)
    if base and node.get("type") == "array":
        node = node["items"]  # one metric per element; its paths start at the element
    return resolve(node, path)


def config() -> dict[str, Any]:
    result: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return result


def test_the_configuration_has_the_shape_kube_state_metrics_reads() -> None:
    document = config()
    assert document["kind"] == "CustomResourceStateMetrics"
    assert set(document) == {"kind", "spec"}
    for resource in document["spec"]["resources"]:
        assert set(resource) <= RESOURCE_KEYS | LABELS_KEYS, set(resource)
        for metric in resource["metrics"]:
            assert set(metric) <= GENERATOR_KEYS, metric["name"]
            assert re.fullmatch(r"[a-z][a-z0-9_]*", metric["name"]), metric["name"]
            each = metric["each"]
            key, allowed = EACH[each["type"]]
            assert set(each) == {"type", key}, metric["name"]
            assert set(each[key]) <= allowed, (metric["name"], set(each[key]) - allowed)


def test_it_covers_readiness_reason_state_paused_and_connectors() -> None:
    (pipelines,) = [
        r
        for r in config()["spec"]["resources"]
        if r["groupVersionKind"]["kind"] == "FelderaPipeline"
    ]
    names = {m["name"] for m in pipelines["metrics"]}
    assert {
        "ready",
        "state",
        "paused",
        "input_connector_active",
        "output_connector_active",
    } <= names
    ready = next(m for m in pipelines["metrics"] if m["name"] == "ready")
    assert "reason" in ready["each"]["gauge"]["labelsFromPath"]


@pytest.mark.parametrize(
    "resource",
    config()["spec"]["resources"],
    ids=lambda r: r["groupVersionKind"]["kind"],
)
def test_every_path_it_reads_exists_in_the_crd_schema(resource: dict[str, Any]) -> None:
    gvk = resource["groupVersionKind"]
    schema = crd_schemas()[(gvk["group"], gvk["version"], gvk["kind"])]
    for metric, base, path, role in paths_read(resource):
        try:
            node = relative(schema, base, path)
        except KeyError as e:
            pytest.fail(f"{gvk['kind']} metric {metric}: {'.'.join(base + path)}: {e}")
        if role == "value":
            # A number, a boolean, or a condition's status ("True" is 1, anything else 0).
            assert node.get("type") in ("integer", "number", "boolean") or (
                node.get("enum") == ["True", "False", "Unknown"]
            ), (metric, node)


def test_the_check_can_fail_on_a_path_the_crd_does_not_have() -> None:
    schema = crd_schemas()[("feldera.dev", "v1alpha1", "FelderaPipeline")]
    assert relative(schema, ["status", "inputs"], ["active"])["type"] == "boolean"
    with pytest.raises(KeyError, match=r"status\.colour: not in the schema"):
        resolve(schema, ["status", "colour"])
    with pytest.raises(KeyError, match="list elements have no 'kind'"):
        resolve(schema, ["status", "conditions", "[kind=Ready]", "status"])
    with pytest.raises(KeyError, match="not in the schema"):
        relative(schema, ["status", "outputs"], ["table"])  # outputs have views, not tables
