"""`kubectl feldera`'s pure parts: what it re-applies, which connector a name designates, and
how it prints. tests/helm/test_kubectl_plugin.py runs the plugin through kubectl end to end."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from feldera_operator import kubectl_plugin as kp

BACKFILL = 'k:{"connector":"backfill","table":"orders"}'
OBJ: dict[str, Any] = {
    "metadata": {
        "name": "orders",
        "namespace": "default",
        "generation": 2,
        "managedFields": [
            {
                "manager": "kubectl-feldera",
                "operation": "Apply",
                "fieldsV1": {
                    "f:spec": {
                        "f:paused": {},
                        "f:inputs": {
                            BACKFILL: {".": {}, "f:connector": {}, "f:paused": {}, "f:table": {}}
                        },
                    }
                },
            },
            {"manager": "gitops", "operation": "Apply", "fieldsV1": {"f:spec": {"f:stopped": {}}}},
        ],
    },
    "spec": {
        "paused": True,
        "stopped": False,
        "inputs": [
            {"table": "orders", "connector": "backfill", "paused": True},
            {"table": "orders", "connector": "live", "paused": False},
        ],
        "outputs": [{"view": "big_orders", "connector": "sink", "paused": False}],
    },
}


def test_what_the_plugin_applied_before_is_applied_again_with_the_change() -> None:
    owned = kp.own_fields(OBJ, "kubectl-feldera")
    before = kp.project(owned["f:spec"], OBJ["spec"])
    assert before == {
        "paused": True,
        "inputs": [{"table": "orders", "connector": "backfill", "paused": True}],
    }
    change = {"outputs": [{"view": "big_orders", "connector": "sink", "paused": True}]}
    assert kp.merge_spec(before, change) == {**before, **change}
    resumed = kp.merge_spec(
        before, {"inputs": [{"table": "orders", "connector": "backfill", "paused": False}]}
    )
    assert resumed["inputs"] == [{"table": "orders", "connector": "backfill", "paused": False}]
    assert kp.own_fields(OBJ, "nobody") == {}


def test_a_connector_is_named_table_dot_connector_case_insensitively() -> None:
    assert kp.find_connector(OBJ, "orders.live") == ("inputs", "orders", "live")
    assert kp.find_connector(OBJ, "Big_Orders.sink") == ("outputs", "big_orders", "sink")
    with pytest.raises(kp.PluginError, match=r"orders\.backfill, orders\.live, big_orders\.sink"):
        kp.find_connector(OBJ, "orders.kafka")


def test_a_conflict_names_the_field_and_the_manager() -> None:
    body = {
        "reason": "Conflict",
        "message": "Apply failed with 1 conflict",
        "details": {
            "causes": [{"field": ".spec.paused", "message": 'conflict with "argocd-controller"'}]
        },
    }
    error = ApiException(status=409, reason="Conflict")
    error.body = json.dumps(body)
    text = kp.describe_api_error("FelderaPipeline default/orders", error)
    assert '.spec.paused (conflict with "argocd-controller")' in text
    assert "--force-conflicts" in text


def test_status_of_a_resource_the_operator_has_not_seen() -> None:
    out = kp.render_status({"metadata": {"name": "new", "namespace": "ns", "generation": 1}})
    assert "No status yet" in out
    assert out.count("(none)") == 2
