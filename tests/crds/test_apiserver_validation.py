"""The CRDs as kube-apiserver itself judges them: accepted as structural with every CEL rule
compiled within its cost budget and every pattern compiled by Go's regexp, and each rule enforced
on create and update with a 422 naming the field. (tests/unit/test_crds.py checks the same
schemas offline, with jsonschema, where the apiserver is not needed.)"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from itertools import count

import pytest
import yaml
from unit.test_crds import (
    CRD_DIR,
    INVALID_INSTANCES,
    INVALID_PIPELINES,
    Node,
    instance_sample,
    pipeline_sample,
)

from feldera_sandbox.sandbox import Sandbox

_names = count(1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(tmp_path_factory.mktemp("crds"))
    try:
        sb.start_kubernetes()
        sb.install_crds()
        yield sb
    finally:
        sb.stop()


def create(sb: Sandbox, obj: Node) -> tuple[int, str]:
    """Create as the admin, with strict field validation as kubectl asks for it by default;
    (HTTP status, message)."""
    assert sb.plane is not None
    plural = "felderapipelines" if obj["kind"] == "FelderaPipeline" else "felderainstances"
    obj = copy.deepcopy(obj)
    obj.setdefault("metadata", {})["namespace"] = "default"
    path = f"/apis/feldera.dev/v1alpha1/namespaces/default/{plural}?fieldValidation=Strict"
    status, body = sb.plane.request("POST", path, obj)
    return status, json.loads(body).get("message", "")


def replace_spec(sb: Sandbox, name: str, spec: Node) -> tuple[int, str]:
    assert sb.plane is not None
    path = f"/apis/feldera.dev/v1alpha1/namespaces/default/felderapipelines/{name}"
    status, body = sb.plane.request(
        "PATCH",
        path,
        [{"op": "replace", "path": "/spec", "value": spec}],
        "application/json-patch+json",
    )
    return status, json.loads(body).get("message", "")


def named(obj: Node, prefix: str = "v") -> Node:
    obj = copy.deepcopy(obj)
    obj["metadata"]["name"] = f"{prefix}{next(_names)}"
    return obj


def test_the_crds_are_established_structural_and_their_rules_compiled(cluster: Sandbox) -> None:
    for crd in cluster.kubectl_json("get", "crd", "-l", "app.kubernetes.io/part-of!=x")["items"]:
        if crd["spec"]["group"] != "feldera.dev":
            continue
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", crd["metadata"]["name"]
        assert conditions.get("NonStructuralSchema", "False") == "False"


def test_the_check_can_fail_a_pattern_go_cannot_compile_is_refused(cluster: Sandbox) -> None:
    crd = yaml.safe_load((CRD_DIR / "feldera.dev_felderainstances.yaml").read_text())
    crd = copy.deepcopy(crd)
    crd["metadata"]["name"] = "lookaheads.example.dev"
    crd["spec"]["group"] = "example.dev"
    crd["spec"]["names"] = {"kind": "Lookahead", "plural": "lookaheads", "singular": "lookahead"}
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["url"]["pattern"] = "^(?=http)"
    result = cluster.kubectl("apply", "-f", "-", input=json.dumps(crd), check=False)
    assert result.returncode != 0
    assert "pattern" in result.stderr


def test_the_samples_are_accepted(cluster: Sandbox) -> None:
    for sample in (pipeline_sample(), instance_sample()):
        status, message = create(cluster, named(sample))
        assert status == 201, message


def field_named(mutate: Callable[[Node], None]) -> str:
    """The last name in the path a mutation changed (`spec.inputs.0.table` -> `table`)."""
    path: str = mutate.field  # type: ignore[attr-defined]
    return [part for part in path.split(".") if not part.isdigit()][-1]


@pytest.mark.parametrize("mutate", [pytest.param(m, id=i) for i, m, _ in INVALID_PIPELINES])
def test_invalid_pipelines_are_refused_naming_the_field(
    cluster: Sandbox, mutate: Callable[[Node], None]
) -> None:
    obj = named(pipeline_sample())
    mutate(obj)
    status, message = create(cluster, obj)
    # 422 Invalid; 400 for a field the schema does not know (strict decoding).
    assert status in (400, 422), message
    assert field_named(mutate) in message, message


@pytest.mark.parametrize("mutate", [pytest.param(m, id=i) for i, m in INVALID_INSTANCES])
def test_invalid_instances_are_refused_naming_the_field(
    cluster: Sandbox, mutate: Callable[[Node], None]
) -> None:
    obj = named(instance_sample())
    mutate(obj)
    status, message = create(cluster, obj)
    assert status in (400, 422), message
    assert field_named(mutate) in message, message


@pytest.mark.parametrize(
    ("program", "allowed"),
    [
        ({"sql": "CREATE TABLE t (x INT);"}, True),
        ({"sql": ""}, True),
        ({"sqlFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}, True),
        ({"sql": "x", "sqlFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}, False),
        ({}, False),
        ({"udfRust": "fn f() {}"}, False),
    ],
)
def test_exactly_one_of_sql_and_sql_from(cluster: Sandbox, program: Node, allowed: bool) -> None:
    obj = named(pipeline_sample())
    obj["spec"]["program"] = program
    status, message = create(cluster, obj)
    if allowed:
        assert status == 201, message
    else:
        assert status == 422
        assert "spec.program: set exactly one of sql and sqlFrom." in message


@pytest.mark.parametrize(
    ("old", "new", "allowed"),
    [
        ({"pipelineName": "a"}, {"pipelineName": "a", "paused": True}, True),
        ({}, {"paused": True}, True),
        ({"pipelineName": "a"}, {"pipelineName": "b"}, False),
        ({}, {"pipelineName": "a"}, False),
        ({"pipelineName": "a"}, {}, False),
        ({"instanceRef": {"name": "x"}}, {"instanceRef": {"name": "y"}}, False),
        ({}, {"instanceRef": {"name": "x"}}, False),
        ({"instanceRef": {"name": "x"}}, {}, False),
        ({"instanceRef": {"name": "x"}}, {"instanceRef": {"name": "x"}, "stopped": True}, True),
    ],
)
def test_pipeline_name_and_instance_ref_are_immutable(
    cluster: Sandbox, old: Node, new: Node, allowed: bool
) -> None:
    obj = named({"apiVersion": "feldera.dev/v1alpha1", "kind": "FelderaPipeline", "metadata": {}})
    obj["spec"] = old
    status, message = create(cluster, obj)
    assert status == 201, message
    status, message = replace_spec(cluster, obj["metadata"]["name"], new)
    if allowed:
        assert status == 200, message
    else:
        assert status == 422, message
        assert "immutable" in message or "cannot be added or removed" in message, message


@pytest.mark.parametrize(
    ("name", "spec", "allowed"),
    [
        ("orders", {}, True),
        ("orders.eu", {}, False),
        ("orders.eu", {"pipelineName": "orders_eu"}, True),
        ("p" * 63, {}, True),
        ("p" * 64, {}, False),
    ],
)
def test_metadata_name_must_do_as_pipeline_name_when_spec_has_none(
    cluster: Sandbox, name: str, spec: Node, allowed: bool
) -> None:
    suffix = next(_names)
    name = (
        name[: len(name) - len(str(suffix))] + str(suffix) if len(name) > 10 else f"{name}{suffix}"
    )
    obj = {
        "apiVersion": "feldera.dev/v1alpha1",
        "kind": "FelderaPipeline",
        "metadata": {"name": name},
        "spec": spec,
    }
    status, message = create(cluster, obj)
    if allowed:
        assert status == 201, message
    else:
        assert status == 422, message
        assert "set spec.pipelineName" in message, message


def test_a_resource_at_every_bound_is_stored(cluster: Sandbox) -> None:
    """The size limits keep a resource at its bounds under etcd's request limit, as stored."""
    from unit.test_crds import at_every_bound

    obj = named(at_every_bound())
    obj.pop("status", None)
    status, message = create(cluster, obj)
    assert status == 201, message
