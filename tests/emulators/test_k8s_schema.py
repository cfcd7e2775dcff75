"""The Kubernetes emulator's schema half: CRD checks, validation, defaults, pruning, tables."""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from feldera_sandbox.k8s_emulator import k8s_schema as ks

NAME_PATTERN = r"^([A-Za-z0-9][-A-Za-z0-9_]*)?[A-Za-z0-9]$"
RELATION_PATTERN = r'^([A-Za-z_][A-Za-z0-9_]*|"[^"]+")$'


def condition_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "status", "reason", "lastTransitionTime"],
        "properties": {
            "type": {"type": "string", "maxLength": 316},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string", "maxLength": 1024},
            "message": {"type": "string", "maxLength": 32768, "default": ""},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
        },
    }


def pipeline_schema() -> dict[str, Any]:
    """A FelderaPipeline-like schema with the features the project's CRDs use."""
    connector = {
        "type": "object",
        "required": ["table", "connector"],
        "properties": {
            "table": {"type": "string", "pattern": RELATION_PATTERN, "maxLength": 128},
            "connector": {"type": "string", "pattern": r"^[a-zA-Z0-9_-]+$", "maxLength": 100},
            "paused": {"type": "boolean", "default": False},
        },
    }
    return {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "x-kubernetes-validations": [
                    {
                        "rule": "!(self.stopped && self.paused)",
                        "message": "a stopped pipeline cannot also be paused",
                        "fieldPath": ".paused",
                    },
                    {
                        "rule": "has(self.pipelineName) == has(oldSelf.pipelineName)",
                        "message": "pipelineName cannot be added or removed",
                    },
                ],
                "properties": {
                    "pipelineName": {
                        "type": "string",
                        "pattern": NAME_PATTERN,
                        "maxLength": 63,
                        "nullable": True,
                        "x-kubernetes-validations": [
                            {"rule": "self == oldSelf", "message": "pipelineName is immutable"}
                        ],
                    },
                    "instanceRef": {
                        "type": "object",
                        "nullable": True,
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1, "maxLength": 253}
                        },
                        "x-kubernetes-validations": [
                            {
                                "rule": "self == oldSelf",
                                "messageExpression": (
                                    "'instanceRef is immutable (was ' + oldSelf.name + ')'"
                                ),
                            }
                        ],
                    },
                    "paused": {"type": "boolean", "default": False},
                    "stopped": {"type": "boolean", "default": False},
                    "deletionPolicy": {
                        "type": "string",
                        "enum": ["Orphan", "Stop"],
                        "default": "Orphan",
                    },
                    "replicas": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 10},
                    "inputs": {
                        "type": "array",
                        "maxItems": 256,
                        "default": [],
                        "items": connector,
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["table", "connector"],
                        "x-kubernetes-validations": [
                            {
                                "rule": "self.all(i, size(i.connector) > 0)",
                                "reason": "FieldValueForbidden",
                                "message": "connector names must not be empty",
                            }
                        ],
                    },
                    "tags": {
                        "type": "array",
                        "maxItems": 16,
                        "items": {"type": "string", "maxLength": 32},
                        "x-kubernetes-list-type": "set",
                    },
                    "labels": {
                        "type": "object",
                        "maxProperties": 4,
                        "additionalProperties": {"type": "string"},
                    },
                    "port": {"x-kubernetes-int-or-string": True},
                    "services": {
                        "type": "object",
                        "maxProperties": 8,
                        "additionalProperties": {
                            "type": "object",
                            "properties": {"replicas": {"type": "integer", "minimum": 1}},
                        },
                    },
                    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
            },
            "status": {
                "type": "object",
                "properties": {
                    "observedGeneration": {"type": "integer", "format": "int64"},
                    "state": {"type": "string"},
                    "connectors": {"type": "string"},
                    "conditions": {
                        "type": "array",
                        "maxItems": 8,
                        "items": condition_schema(),
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["type"],
                    },
                },
            },
        },
    }


COLUMNS = [
    {"name": "Pipeline", "type": "string", "jsonPath": ".status.pipelineName"},
    {"name": "State", "type": "string", "jsonPath": ".status.state"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Connectors", "type": "string", "jsonPath": ".status.connectors"},
    {
        "name": "Generation",
        "type": "integer",
        "jsonPath": ".status.observedGeneration",
        "priority": 1,
    },
    {"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def pipeline_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "felderapipelines.feldera.dev"},
        "spec": {
            "group": "feldera.dev",
            "scope": "Namespaced",
            "names": {
                "plural": "felderapipelines",
                "singular": "felderapipeline",
                "kind": "FelderaPipeline",
                "listKind": "FelderaPipelineList",
                "shortNames": ["fpl"],
                "categories": ["feldera", "all"],
            },
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": pipeline_schema()},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": copy.deepcopy(COLUMNS),
                }
            ],
        },
    }


def pipeline(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "feldera.dev/v1alpha1",
        "kind": "FelderaPipeline",
        "metadata": {"name": "p1", "namespace": "default"},
        "spec": spec,
    }


def check(
    obj: dict[str, Any], old: dict[str, Any] | None = None, schema: dict[str, Any] | None = None
) -> list[ks.Cause]:
    """Default then validate, in the apiserver's order."""
    schema = schema or pipeline_schema()
    return ks.validate(
        schema, ks.apply_defaults(schema, obj), ks.apply_defaults(schema, old) if old else None
    )


def fields(causes: list[ks.Cause]) -> list[tuple[str, str]]:
    return [(c.reason, c.field) for c in causes]


# --------------------------------------------------------------------------- check_structural


def test_realistic_crd_is_structural() -> None:
    assert ks.check_structural(pipeline_crd()) == []


def schema_problem(mutate: Any) -> list[str]:
    crd = pipeline_crd()
    mutate(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return ks.check_structural(crd)


def spec_props(schema: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = schema["properties"]["spec"]["properties"]
    return props


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda s: spec_props(s)["paused"].pop("type"),
            "[paused].type: Required value: must not be empty for specified object fields",
        ),
        (
            lambda s: spec_props(s)["tags"]["items"].pop("type"),
            "[tags].items.type: Required value: must not be empty for specified array items",
        ),
        (lambda s: spec_props(s).update(x={"$ref": "#/x"}), "properties[x].$ref: Forbidden"),
        (lambda s: spec_props(s).update(x={"type": "object", "$defs": {}}), "$defs: Forbidden"),
        (lambda s: spec_props(s).update(x={"type": "object", "definitions": {}}), "definitions"),
        (lambda s: s.update({"$schema": "x"}), "openAPIV3Schema.$schema: Forbidden"),
        (
            lambda s: spec_props(s).update(x={"type": "object", "patternProperties": {}}),
            "patternProperties: Forbidden",
        ),
        (
            lambda s: spec_props(s).update(
                x={"type": "array", "items": {"type": "string"}, "additionalItems": False}
            ),
            "additionalItems: Forbidden",
        ),
        (lambda s: spec_props(s).update(x={"type": "object", "dependencies": {}}), "dependencies"),
        (
            lambda s: spec_props(s).update(x={"anyOf": [{"type": "string"}, {"type": "null"}]}),
            "properties[x].anyOf[0].type: Forbidden: must be empty to be structural",
        ),
        (
            lambda s: spec_props(s).update(x={"type": "string", "allOf": [{"default": "a"}]}),
            "allOf[0].default: Forbidden",
        ),
        (
            lambda s: spec_props(s).update(
                x={"type": "string", "oneOf": [{"description": "d", "pattern": "a"}]}
            ),
            "oneOf[0].description: Forbidden",
        ),
        (
            lambda s: spec_props(s).update(x={"type": "string", "not": {"nullable": True}}),
            "not.nullable: Forbidden: must be false to be structural",
        ),
        (
            lambda s: spec_props(s).update(
                x={"type": "object", "anyOf": [{"additionalProperties": {"type": "string"}}]}
            ),
            "anyOf[0].additionalProperties: Forbidden",
        ),
        (
            lambda s: spec_props(s).update(
                x={
                    "type": "object",
                    "properties": {"a": {"type": "string"}},
                    "additionalProperties": {"type": "string"},
                }
            ),
            "properties[x].additionalProperties: Forbidden: additionalProperties and properties",
        ),
        (
            lambda s: s["properties"].update(
                metadata={"type": "object", "properties": {"labels": {"type": "object"}}}
            ),
            "properties[metadata]: Forbidden: must not specify anything other than name",
        ),
        (
            lambda s: spec_props(s)["deletionPolicy"].update(default="Never"),
            'properties[deletionPolicy].default: Unsupported value: "Never"',
        ),
        (
            lambda s: spec_props(s)["replicas"].update(default="three"),
            "properties[replicas].default: Invalid value",
        ),
        (
            lambda s: spec_props(s)["paused"].update(
                **{"x-kubernetes-validations": [{"rule": "self ==="}]}
            ),
            "properties[paused].x-kubernetes-validations[0].rule: Invalid value",
        ),
        (
            lambda s: spec_props(s)["paused"].update(
                **{"x-kubernetes-validations": [{"rule": "self == other"}]}
            ),
            "undeclared reference to 'other'",
        ),
        (
            lambda s: s["properties"]["spec"]["x-kubernetes-validations"].append(
                {"rule": "self.stoped == false"}
            ),
            "undefined field 'stoped'",
        ),
        (
            lambda s: s.update(
                **{"x-kubernetes-validations": [{"rule": "has(self.metadata.labels)"}]}
            ),
            "undefined field 'labels'",
        ),
        (
            lambda s: spec_props(s).update(
                names={
                    "type": "array",
                    "items": {"type": "string", "maxLength": 10},
                    "x-kubernetes-validations": [{"rule": "self.all(n, n != 'x')"}],
                }
            ),
            "estimated rule cost exceeds budget",
        ),
        (
            lambda s: spec_props(s).update(
                name={
                    "type": "string",
                    "x-kubernetes-validations": [{"rule": "self.matches('^a')"}],
                }
            ),
            "estimated rule cost exceeds budget",
        ),
        (
            lambda s: spec_props(s)["tags"].update(
                items={
                    "type": "string",
                    "maxLength": 32,
                    "x-kubernetes-validations": [{"rule": "self == oldSelf"}],
                }
            ),
            "oldSelf cannot be used on the uncorrelatable portion",
        ),
        (
            lambda s: spec_props(s)["inputs"].update(**{"x-kubernetes-list-map-keys": ["nope"]}),
            "entries must all be names of item properties",
        ),
        (
            lambda s: spec_props(s)["inputs"]["items"].update(required=["table"]),
            "properties[connector]: Required value: this property is in x-kubernetes-list-map-keys",
        ),
        (
            lambda s: spec_props(s)["tags"].update(uniqueItems=True),
            "uniqueItems: Forbidden",
        ),
        (lambda s: s.update(type="array"), "openAPIV3Schema.type: Required value: must be object"),
    ],
)
def test_structural_rejects_each_violation(mutate: Any, expected: str) -> None:
    problems = schema_problem(mutate)
    assert any(expected in p for p in problems), problems


def test_structural_checks_names_scope_storage_and_metadata_name() -> None:
    crd = pipeline_crd()
    crd["metadata"]["name"] = "pipelines.feldera.dev"
    crd["spec"]["scope"] = "Global"
    crd["spec"]["names"]["plural"] = "FelderaPipelines"
    crd["spec"]["names"]["shortNames"] = ["fpl", "fpl"]
    crd["spec"]["names"]["categories"] = ["Bad Category"]
    crd["spec"]["versions"].append(copy.deepcopy(crd["spec"]["versions"][0]))
    crd["spec"]["versions"][1]["name"] = "v1beta1"
    problems = "\n".join(ks.check_structural(crd))
    assert 'metadata.name: Invalid value: "pipelines.feldera.dev"' in problems
    assert 'spec.scope: Unsupported value: "Global"' in problems
    assert "spec.names.plural: Invalid value" in problems
    assert 'spec.names.shortNames[1]: Duplicate value: "fpl"' in problems
    assert "spec.names.categories[0]: Invalid value" in problems
    assert "must have exactly one version marked as storage version" in problems


def test_structural_checks_printer_columns() -> None:
    crd = pipeline_crd()
    crd["spec"]["versions"][0]["additionalPrinterColumns"] = [
        {"name": "X", "type": "text", "jsonPath": "status.x"}
    ]
    problems = "\n".join(ks.check_structural(crd))
    assert 'additionalPrinterColumns[0].type: Unsupported value: "text"' in problems
    assert "additionalPrinterColumns[0].jsonPath: Invalid value" in problems


def test_bounded_iteration_and_simple_immutability_pass_the_cost_check() -> None:
    crd = pipeline_crd()
    spec_props(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])["name"] = {
        "type": "string",
        "x-kubernetes-validations": [{"rule": "self == oldSelf"}],
    }
    assert ks.check_structural(crd) == []


# ------------------------------------------------------------------------------------ validate


def test_valid_object_has_no_causes() -> None:
    obj = pipeline(
        pipelineName="p-1",
        instanceRef={"name": "feldera"},
        inputs=[
            {"table": "t", "connector": "c", "paused": True},
            {"table": '"T"', "connector": "c"},
        ],
        tags=["a", "b"],
        labels={"x": "y"},
        port="http",
        extra={"anything": [1, {"goes": True}]},
    )
    assert check(obj) == []


def test_missing_field_read_by_a_rule_is_an_evaluation_error() -> None:
    causes = ks.validate(pipeline_schema(), pipeline(stopped=True))
    assert causes == [
        ks.Cause(
            "FieldValueInvalid",
            "spec",
            'spec: Invalid value: "object": no such key: paused evaluating rule: '
            "!(self.stopped && self.paused)",
        )
    ]


def test_pattern_cause_has_kubernetes_field_path_and_message() -> None:
    obj = pipeline(inputs=[{"table": "t", "connector": "c"}, {"table": "9x", "connector": "c"}])
    causes = check(obj)
    assert causes == [
        ks.Cause(
            "FieldValueInvalid",
            "spec.inputs[1].table",
            f'spec.inputs[1].table: Invalid value: "9x": spec.inputs[1].table in body should '
            f"match '{RELATION_PATTERN}'",
        )
    ]


@pytest.mark.parametrize(
    ("spec", "reason", "field", "text"),
    [
        (
            {"paused": "yes"},
            "FieldValueTypeInvalid",
            "spec.paused",
            'must be of type boolean: "string"',
        ),
        (
            {"deletionPolicy": "Never"},
            "FieldValueNotSupported",
            "spec.deletionPolicy",
            'Unsupported value: "Never": supported values: "Orphan", "Stop"',
        ),
        (
            {"pipelineName": "x" * 64},
            "FieldValueTooLong",
            "spec.pipelineName",
            "Too long: may not be more than 63 bytes",
        ),
        (
            {"instanceRef": {"name": ""}},
            "FieldValueInvalid",
            "spec.instanceRef.name",
            "should be at least 1 chars long",
        ),
        ({"instanceRef": {}}, "FieldValueRequired", "spec.instanceRef.name", "Required value"),
        (
            {"replicas": -1},
            "FieldValueInvalid",
            "spec.replicas",
            "should be greater than or equal to 0",
        ),
        (
            {"replicas": 11},
            "FieldValueInvalid",
            "spec.replicas",
            "should be less than or equal to 10",
        ),
        (
            {"replicas": 2.5},
            "FieldValueTypeInvalid",
            "spec.replicas",
            'must be of type integer: "number"',
        ),
        (
            {"inputs": [{"table": "t", "connector": "c"}] * 257},
            "FieldValueTooMany",
            "spec.inputs",
            "Too many: 257: must have at most 256 items",
        ),
        (
            {"inputs": [{"table": "t"}]},
            "FieldValueRequired",
            "spec.inputs[0].connector",
            "Required",
        ),
        (
            {"inputs": [{"table": "t", "connector": "c"}, {"table": "t", "connector": "c"}]},
            "FieldValueDuplicate",
            "spec.inputs[1]",
            'Duplicate value: map[string]interface {}{"connector":"c", "table":"t"}',
        ),
        ({"tags": ["a", "a"]}, "FieldValueDuplicate", "spec.tags[1]", 'Duplicate value: "a"'),
        (
            {"labels": {str(i): "v" for i in range(5)}},
            "FieldValueInvalid",
            "spec.labels",
            "should have at most 4 properties",
        ),
        ({"labels": {"a": 1}}, "FieldValueTypeInvalid", "spec.labels.a", "must be of type string"),
        (
            {"services": {"w": {"replicas": 0}}},
            "FieldValueInvalid",
            "spec.services.w.replicas",
            "should be greater than or equal to 1",
        ),
        ({"port": True}, "FieldValueTypeInvalid", "spec.port", "must be of type integer,string"),
        (
            {"paused": None},
            "FieldValueTypeInvalid",
            "spec.paused",
            'must be of type boolean: "null"',
        ),
    ],
)
def test_each_keyword_reports_its_cause(
    spec: dict[str, Any], reason: str, field: str, text: str
) -> None:
    causes = (
        check(pipeline(**spec))
        if spec.get("paused", 0) is not None
        else ks.validate(pipeline_schema(), pipeline(**spec))
    )
    assert (reason, field) in fields(causes), causes
    message = next(c.message for c in causes if c.field == field)
    assert message.startswith(f"{field}: ") and text in message, message


def test_nullable_field_accepts_null() -> None:
    assert check(pipeline(pipelineName=None, instanceRef=None)) == []


def test_formats_int32_and_date_time() -> None:
    schema = pipeline_schema()
    status_ok = {"conditions": [cond("Ready", "True")], "observedGeneration": 2**40}
    obj = pipeline() | {"status": status_ok}
    assert ks.validate(schema, ks.apply_defaults(schema, obj)) == []
    bad_time = cond("Ready", "True") | {"lastTransitionTime": "yesterday"}
    obj = pipeline(replicas=2**31) | {"status": {"conditions": [bad_time]}}
    got = fields(ks.validate(schema, obj))
    assert ("FieldValueTypeInvalid", "status.conditions[0].lastTransitionTime") in got
    # int32 range is checked before maximum; both are reported, as kube-openapi does.
    assert ("FieldValueTypeInvalid", "spec.replicas") in got


def test_cel_rule_with_field_path_and_message() -> None:
    causes = check(pipeline(stopped=True, paused=True))
    assert causes == [
        ks.Cause(
            "FieldValueInvalid",
            "spec.paused",
            'spec.paused: Invalid value: "object": a stopped pipeline cannot also be paused',
        )
    ]


def test_cel_rule_reason_forbidden() -> None:
    causes = check(pipeline(inputs=[{"table": "t", "connector": ""}]))
    assert ("FieldValueForbidden", "spec.inputs") in fields(causes)
    assert "spec.inputs: Forbidden: connector names must not be empty" in [
        c.message for c in causes
    ]


def test_transition_rules_fire_only_with_old_value() -> None:
    new = pipeline(pipelineName="b", instanceRef={"name": "other"})
    assert check(new) == []
    old = pipeline(pipelineName="a", instanceRef={"name": "feldera"})
    causes = check(new, old)
    assert causes == [
        ks.Cause(
            "FieldValueInvalid",
            "spec.pipelineName",
            'spec.pipelineName: Invalid value: "string": pipelineName is immutable',
        ),
        ks.Cause(
            "FieldValueInvalid",
            "spec.instanceRef",
            'spec.instanceRef: Invalid value: "object": instanceRef is immutable (was feldera)',
        ),
    ]
    assert check(old, old) == []


def test_transition_rule_skipped_when_old_lacks_the_field() -> None:
    # The field-level rule has no old value to compare; the spec-level rule does and fires.
    causes = check(pipeline(pipelineName="b"), pipeline())
    assert fields(causes) == [("FieldValueInvalid", "spec")]
    assert "pipelineName cannot be added or removed" in causes[0].message


def test_transition_rules_on_map_list_items_correlate_by_key() -> None:
    schema = pipeline_schema()
    spec_props(schema)["inputs"]["items"]["x-kubernetes-validations"] = [
        {"rule": "self.paused == oldSelf.paused || !oldSelf.paused", "message": "cannot unpause"}
    ]
    old = pipeline(inputs=[{"table": "a", "connector": "c", "paused": True}])
    new = pipeline(
        inputs=[
            {"table": "b", "connector": "c", "paused": False},
            {"table": "a", "connector": "c", "paused": False},
        ]
    )
    causes = check(new, old, schema)
    assert fields(causes) == [("FieldValueInvalid", "spec.inputs[1]")]


def test_optional_old_self_rules_run_on_create_too() -> None:
    schema = pipeline_schema()
    spec_props(schema)["replicas"]["x-kubernetes-validations"] = [
        {
            "rule": "!oldSelf.hasValue() || self >= oldSelf.value()",
            "optionalOldSelf": True,
            "message": "replicas cannot shrink",
        },
        {"rule": "self <= oldSelf.orValue(5)", "optionalOldSelf": True, "message": "too many"},
    ]
    assert check(pipeline(replicas=3), schema=schema) == []
    assert fields(check(pipeline(replicas=6), schema=schema)) == [
        ("FieldValueInvalid", "spec.replicas")
    ]
    causes = check(pipeline(replicas=2), pipeline(replicas=3), schema)
    assert [c.message for c in causes] == [
        'spec.replicas: Invalid value: "integer": replicas cannot shrink'
    ]


def test_formatted_strings_are_timestamps_and_durations_in_cel() -> None:
    schema = pipeline_schema()
    spec_props(schema)["timeout"] = {
        "type": "string",
        "format": "duration",
        "x-kubernetes-validations": [{"rule": "self <= duration('1h')"}],
    }
    schema["properties"]["status"]["properties"]["conditions"]["items"][
        "x-kubernetes-validations"
    ] = [{"rule": "self.lastTransitionTime > timestamp('2020-01-01T00:00:00Z')"}]
    ok = pipeline(timeout="30m") | {"status": {"conditions": [cond("Ready", "True")]}}
    assert check(ok, schema=schema) == []
    old_condition = cond("Ready", "True") | {"lastTransitionTime": "2019-12-31T23:59:59Z"}
    bad = pipeline(timeout="1h30m") | {"status": {"conditions": [old_condition]}}
    assert fields(check(bad, schema=schema)) == [
        ("FieldValueInvalid", "spec.timeout"),
        ("FieldValueInvalid", "status.conditions[0]"),
    ]


def test_cel_is_skipped_when_types_are_wrong() -> None:
    causes = ks.validate(pipeline_schema(), pipeline(stopped="yes", paused=True))
    assert fields(causes) == [
        ("FieldValueTypeInvalid", "spec.stopped"),
        ("FieldValueInvalid", "<nil>"),
    ]
    assert "some validation rules were not checked" in causes[1].message


def test_cel_is_skipped_after_unsupported_values_but_not_after_pattern_errors() -> None:
    causes = check(pipeline(deletionPolicy="Never", stopped=True, paused=True))
    assert fields(causes) == [
        ("FieldValueNotSupported", "spec.deletionPolicy"),
        ("FieldValueInvalid", "<nil>"),
    ]
    causes = check(pipeline(pipelineName="-x", stopped=True, paused=True))
    assert fields(causes) == [
        ("FieldValueInvalid", "spec.pipelineName"),
        ("FieldValueInvalid", "spec.paused"),
    ]


def test_unknown_fields_are_not_validation_errors() -> None:
    assert check(pipeline(nope=1)) == []


def test_rules_reading_nested_fields_see_them() -> None:
    # Rules are handed only the field chains they read; what they read must still be there.
    schema = pipeline_schema()
    schema["x-kubernetes-validations"] = [
        {
            "rule": (
                "!has(self.spec.instanceRef) || self.spec.instanceRef.name != self.metadata.name"
            ),
            "message": "a pipeline cannot refer to an instance of its own name",
        }
    ]
    assert check(pipeline(instanceRef={"name": "feldera"}), schema=schema) == []
    causes = check(pipeline(instanceRef={"name": "p1"}), schema=schema)
    assert [c.message for c in causes] == [
        '<nil>: Invalid value: "object": a pipeline cannot refer to an instance of its own name'
    ]


def test_root_rule_sees_metadata_name_only() -> None:
    schema = pipeline_schema()
    schema["x-kubernetes-validations"] = [
        {"rule": "self.metadata.name.startsWith('p') && !has(self.metadata.namespace)"}
    ]
    assert check(pipeline(), schema=schema) == []
    obj = pipeline()
    obj["metadata"]["name"] = "q"
    assert fields(check(obj, schema=schema)) == [("FieldValueInvalid", "<nil>")]


def test_unchanged_values_are_not_rechecked_by_plain_rules() -> None:
    # Ratcheting: a rule without oldSelf does not fail an update that leaves its value as it was.
    schema = pipeline_schema()
    stored = pipeline(stopped=True, paused=True)
    assert fields(check(stored)) == [("FieldValueInvalid", "spec.paused")]
    assert check(stored, stored) == []
    changed = pipeline(stopped=True, paused=True, deletionPolicy="Stop")
    assert fields(check(changed, stored, schema)) == [("FieldValueInvalid", "spec.paused")]


def test_unchanged_invalid_values_are_ratcheted() -> None:
    # A value stored before the schema was tightened does not block updates that keep it.
    schema = pipeline_schema()
    stored = pipeline(inputs=[{"table": "9bad", "connector": "c"}])
    assert fields(check(stored, schema=schema)) == [("FieldValueInvalid", "spec.inputs[0].table")]
    relabelled = pipeline(inputs=[{"table": "9bad", "connector": "c"}], deletionPolicy="Stop")
    assert check(relabelled, stored, schema) == []
    renamed = pipeline(inputs=[{"table": "9worse", "connector": "c"}])
    assert fields(check(renamed, stored, schema)) == [("FieldValueInvalid", "spec.inputs[0].table")]


def test_rules_report_parent_before_children() -> None:
    causes = check(
        pipeline(pipelineName="b", stopped=True, paused=True), pipeline(pipelineName="a")
    )
    assert fields(causes) == [
        ("FieldValueInvalid", "spec.paused"),
        ("FieldValueInvalid", "spec.pipelineName"),
    ]


REPO = Path(__file__).resolve().parents[2]


def test_project_crds_are_structural_and_examples_validate() -> None:
    crds = {}
    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        assert ks.check_structural(crd) == [], path.name
        crds[crd["spec"]["names"]["kind"]] = crd
    checked = 0
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text()):
            if not obj or obj.get("kind") not in crds:
                continue
            schema = crds[obj["kind"]]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            assert ks.unknown_fields(schema, obj) == [], path.name
            stored = ks.apply_defaults(schema, obj)
            assert ks.validate(schema, stored) == [], path.name
            assert ks.validate(schema, stored, stored) == [], path.name
            checked += 1
    assert checked >= 2


# ------------------------------------------------------------------- defaults, pruning, apply


def test_defaults_are_applied_recursively_including_list_items() -> None:
    obj = pipeline(inputs=[{"table": "t", "connector": "c"}], pipelineName=None)
    obj["spec"]["paused"] = None  # not nullable: replaced by the default
    out = ks.apply_defaults(pipeline_schema(), obj)
    assert out["spec"] == {
        "pipelineName": None,  # nullable: kept
        "inputs": [{"table": "t", "connector": "c", "paused": False}],
        "paused": False,
        "stopped": False,
        "deletionPolicy": "Orphan",
    }
    assert "paused" not in obj["spec"]["inputs"][0], "the input must not be modified"


def test_defaults_fill_absent_lists_and_drop_non_nullable_nulls() -> None:
    obj = pipeline()
    obj["spec"]["tags"] = None
    obj["status"] = {"conditions": [{"type": "Ready"}]}
    out = ks.apply_defaults(pipeline_schema(), obj)
    assert out["spec"]["inputs"] == []
    assert "tags" not in out["spec"]
    assert out["status"]["conditions"][0]["message"] == ""
    assert "status" not in ks.apply_defaults(pipeline_schema(), pipeline())


def test_unknown_fields_and_prune() -> None:
    obj = pipeline(
        inputs=[{"table": "t", "connector": "c", "bogus": 1}],
        nope={"a": 1},
        extra={"kept": True},
        labels={"k": "v"},
    )
    obj["spec"]["extra"]["deep"] = {"kept": 1}
    obj["spec"]["services"] = {"w": {"replicas": 1, "subType": "x"}}
    obj["metadata"]["labelz"] = {}
    obj["topLevel"] = 1
    assert ks.unknown_fields(pipeline_schema(), obj) == [
        ".metadata.labelz",
        ".spec.inputs[0].bogus",
        ".spec.nope",
        ".spec.services.w.subType",
        ".topLevel",
    ]
    pruned = ks.prune(pipeline_schema(), obj)
    assert pruned["spec"] == {
        "inputs": [{"table": "t", "connector": "c"}],
        "extra": {"kept": True, "deep": {"kept": 1}},
        "labels": {"k": "v"},
        "services": {"w": {"replicas": 1}},
    }
    assert "topLevel" not in pruned
    assert pruned["metadata"] == obj["metadata"], "metadata is left to the server"


def test_list_map_keys_and_list_type() -> None:
    schema = pipeline_schema()
    assert ks.list_map_keys(schema, ["spec", "inputs"]) == ["table", "connector"]
    assert ks.list_map_keys(schema, ["status", "conditions"]) == ["type"]
    assert ks.list_map_keys(schema, ["spec", "tags"]) is None
    assert ks.list_type(schema, ["spec", "tags"]) == "set"
    assert ks.list_type(schema, ["spec", "inputs"]) == "map"
    assert ks.list_type(schema, ["spec", "paused"]) is None
    assert ks.list_type(schema, ["spec", "nope"]) is None
    # A fresh schema: compiled schemas are cached by identity and treated as immutable.
    schema = pipeline_schema()
    spec_props(schema)["plain"] = {"type": "array", "items": {"type": "string"}}
    assert ks.list_type(schema, ["spec", "plain"]) == "atomic"
    assert ks.list_type(schema, ["spec", "inputs", 0, "table"]) is None


# -------------------------------------------------------------------------------------- OpenAPI


def test_openapi_document_shape() -> None:
    doc = ks.openapi_v3_document("feldera.dev", "v1alpha1", [pipeline_crd()])
    assert doc["openapi"] == "3.0.0"
    schemas = doc["components"]["schemas"]
    kind = schemas["dev.feldera.v1alpha1.FelderaPipeline"]
    assert kind["x-kubernetes-group-version-kind"] == [
        {"group": "feldera.dev", "version": "v1alpha1", "kind": "FelderaPipeline"}
    ]
    assert kind["properties"]["metadata"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    ]
    assert kind["properties"]["spec"] == pipeline_schema()["properties"]["spec"]
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in schemas
    assert "dev.feldera.v1alpha1.FelderaPipelineList" in schemas
    # Every $ref resolves inside the document.
    refs = set(_refs(doc))
    assert refs and all(r.removeprefix("#/components/schemas/") in schemas for r in refs)
    item = doc["paths"]["/apis/feldera.dev/v1alpha1/namespaces/{namespace}/felderapipelines/{name}"]
    patch = item["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "FelderaPipeline"
    assert any(p["name"] == "fieldValidation" and p["in"] == "query" for p in patch["parameters"])
    assert (
        "/apis/feldera.dev/v1alpha1/namespaces/{namespace}/felderapipelines/{name}/status"
        in doc["paths"]
    )
    assert ks.openapi_v3_document("other.dev", "v1", [pipeline_crd()])["paths"] == {}


def test_openapi_paths_of_a_cluster_scoped_resource() -> None:
    crd = pipeline_crd()
    crd["spec"]["scope"] = "Cluster"
    del crd["spec"]["versions"][0]["subresources"]
    paths = ks.openapi_v3_document("feldera.dev", "v1alpha1", [crd])["paths"]
    assert sorted(paths) == [
        "/apis/feldera.dev/v1alpha1/felderapipelines",
        "/apis/feldera.dev/v1alpha1/felderapipelines/{name}",
    ]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


# ---------------------------------------------------------------------------------------- tables


def cond(kind: str, status: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": "R",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def test_table_uses_printer_columns_and_conditions_filter() -> None:
    obj = pipeline(paused=True)
    obj["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    obj["status"] = {
        "pipelineName": "p1",
        "state": "Running",
        "observedGeneration": 3,
        "conditions": [cond("Synced", "False"), cond("Ready", "True")],
    }
    version = pipeline_crd()["spec"]["versions"][0]
    now = datetime(2026, 1, 1, 0, 5, 3, tzinfo=UTC)
    table = ks.printer_columns_table(version, [obj], now=now, resource_version="42")
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert table["metadata"] == {"resourceVersion": "42"}
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == [
        "Name",
        "Pipeline",
        "State",
        "Ready",
        "Connectors",
        "Generation",
        "Paused",
        "Age",
    ]
    assert table["columnDefinitions"][5]["priority"] == 1
    row = table["rows"][0]
    assert row["cells"] == ["p1", "p1", "Running", "True", None, 3, True, "5m3s"]
    assert row["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }
    full = ks.printer_columns_table(version, [obj], "Object", now=now)["rows"][0]["object"]
    assert full == obj
    assert "object" not in ks.printer_columns_table(version, [obj], "None", now=now)["rows"][0]


def test_table_without_columns_has_name_and_age() -> None:
    obj = pipeline()
    obj["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    now = datetime(2026, 1, 3, 1, 0, 0, tzinfo=UTC)
    table = ks.printer_columns_table({"name": "v1alpha1"}, [obj], now=now)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Age"]
    assert table["rows"][0]["cells"] == ["p1", "2d1h"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "5s"),
        (119, "119s"),
        (180, "3m"),
        (303, "5m3s"),
        (3600, "60m"),
        (4 * 3600 + 60, "4h1m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 3600, "3d1h"),
        (40 * 86400, "40d"),
        (3 * 365 * 86400, "3y"),
    ],
)
def test_human_duration_matches_kubernetes(seconds: int, text: str) -> None:
    assert ks.human_duration(seconds) == text


# ----------------------------------------------------------------------------------- performance


def test_validating_a_large_object_stays_fast() -> None:
    schema = pipeline_schema()
    inputs = [{"table": f"t{i}", "connector": f"c{i}"} for i in range(100)]
    obj = ks.apply_defaults(schema, pipeline(pipelineName="p", inputs=inputs))
    changed = copy.deepcopy(obj)
    changed["spec"]["inputs"][50]["paused"] = True
    assert ks.validate(schema, obj) == []
    assert ks.validate(schema, changed, obj) == []
    timings = {}
    for label, old, new in (("create", None, obj), ("update", obj, changed)):
        start = time.perf_counter()
        for _ in range(1000):
            ks.validate(schema, new, old)
        timings[label] = time.perf_counter() - start
    print(
        f"validate x1000, 100 list entries: create {timings['create']:.3f}s, "
        f"update of one entry {timings['update']:.3f}s"
    )
    assert max(timings.values()) < 10


# ------------------------------------------------------------------------------- robustness

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["table", "connector", "paused", "x", "name", "type", "status"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


def paths_of(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            found += paths_of(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += paths_of(v, (*prefix, i))
    return found


@settings(max_examples=150, deadline=None)
@given(spec=json_values, old_spec=json_values, status=json_values)
def test_arbitrary_objects_never_raise(spec: Any, old_spec: Any, status: Any) -> None:
    schema = pipeline_schema()
    obj = pipeline() | {"spec": spec, "status": status}
    old = pipeline() | {"spec": old_spec}
    for cause in ks.validate(schema, ks.apply_defaults(schema, obj), old):
        assert cause.message.startswith(cause.field + ": ")
    ks.validate(schema, obj)
    ks.unknown_fields(schema, obj)
    assert ks.unknown_fields(schema, ks.prune(schema, obj)) == []


CRD_PATHS = paths_of(pipeline_crd())


@settings(max_examples=300, deadline=None)
@given(where=st.sampled_from(CRD_PATHS), junk=json_values)
def test_arbitrary_crd_damage_never_raises(where: tuple[Any, ...], junk: Any) -> None:
    crd = pipeline_crd()
    if not where:
        return
    parent: Any = crd
    for step in where[:-1]:
        parent = parent[step]
    parent[where[-1]] = junk
    problems = ks.check_structural(crd)
    assert all(isinstance(p, str) and "could not be checked" not in p for p in problems), problems
