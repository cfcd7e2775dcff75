"""Extension points: what a cluster's admins add to the operator's Pod without forking the
chart. Each value lands where Kubernetes reads it, and the chart's own settings stay."""

from __future__ import annotations

from typing import Any

import pytest

from feldera_operator import runner

from .conftest import VALUE_SETS, container, one, operator_args, render

EXTENSIONS = VALUE_SETS["extensions"]


def pod_spec(values: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = one(render(values), "Deployment")["spec"]["template"]["spec"]
    return spec


def test_image_digest_wins_over_the_tag() -> None:
    digest = EXTENSIONS["image"]["digest"]
    assert container(render(EXTENSIONS))["image"] == f"registry.example/feldera-operator@{digest}"
    tagged = {"image": {"repository": "r/feldera-operator", "tag": "1.2.3"}}
    assert container(render(tagged))["image"] == "r/feldera-operator:1.2.3"
    assert container(render({}))["image"] == "feldera-operator:0.1.0"  # the appVersion


def test_extra_args_come_last_and_win(monkeypatch: pytest.MonkeyPatch) -> None:
    args = container(render(EXTENSIONS))["args"]
    assert args[-1] == "--request-timeout=30"
    assert "--request-timeout=10" in args  # the chart's own, overridden
    config = runner.config_from_args(operator_args(EXTENSIONS, monkeypatch))
    assert config.request_timeout == 30


def test_extra_env_is_added_to_the_chart_own() -> None:
    env = container(render(EXTENSIONS))["env"]
    names = [e["name"] for e in env]
    assert names[:2] == ["POD_NAME", "PYTHONDONTWRITEBYTECODE"]
    assert env[2:] == EXTENSIONS["extraEnv"]


def test_extra_volumes_and_mounts_beside_tmp() -> None:
    objects = render(EXTENSIONS)
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert [v["name"] for v in spec["volumes"]] == ["tmp", "feldera-ca"]
    assert spec["volumes"][1] == EXTENSIONS["extraVolumes"][0]
    mounts = container(objects)["volumeMounts"]
    assert mounts == [{"name": "tmp", "mountPath": "/tmp"}, *EXTENSIONS["extraVolumeMounts"]]


def test_pod_labels_and_annotations_keep_the_selector_labels() -> None:
    deployment = one(render(EXTENSIONS), "Deployment")
    metadata = deployment["spec"]["template"]["metadata"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert metadata["labels"] == {**selector, "team": "data"}
    assert metadata["annotations"] == {"example.com/owner": "data-platform"}


def test_scheduling_values_land_in_the_pod_spec() -> None:
    spec = pod_spec(EXTENSIONS)
    for key in ("priorityClassName", "nodeSelector", "tolerations", "affinity"):
        assert spec[key] == EXTENSIONS[key], key
    for key in ("priorityClassName", "nodeSelector", "tolerations", "affinity"):
        assert key not in pod_spec({}), key
    assert "topologySpreadConstraints" not in pod_spec({})


def test_a_spread_constraint_without_selector_spreads_this_release() -> None:
    selector = one(render({}), "Deployment")["spec"]["selector"]
    (constraint,) = pod_spec(EXTENSIONS)["topologySpreadConstraints"]
    assert constraint == {**EXTENSIONS["topologySpreadConstraints"][0], "labelSelector": selector}
    own = {"matchLabels": {"pool": "a"}}
    given = {"maxSkew": 2, "topologyKey": "h", "whenUnsatisfiable": "DoNotSchedule"}
    (kept,) = pod_spec({"topologySpreadConstraints": [{**given, "labelSelector": own}]})[
        "topologySpreadConstraints"
    ]
    assert kept["labelSelector"] == own  # a selector given is used as it is, not merged


def test_probe_timings_are_values_and_the_probes_stay_the_chart_own() -> None:
    c = container(render(EXTENSIONS))
    assert c["startupProbe"] == {
        "httpGet": {"path": "/healthz", "port": "health"},
        "periodSeconds": 2,
        "timeoutSeconds": 5,
        "failureThreshold": 90,
    }
    assert c["livenessProbe"]["timeoutSeconds"] == 3
    assert c["livenessProbe"]["periodSeconds"] == 20  # the default, kept beside the override
    default = container(render({}))
    # The startup probe gives a start 60 s before the liveness probe may restart the pod.
    startup = default["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 60
    assert "initialDelaySeconds" not in default["livenessProbe"]
