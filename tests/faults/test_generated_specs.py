"""Generated FelderaPipelines, valid and not, through kube-apiserver's validation into the
running operator (hypothesis, derandomized so a run is repeatable).

Every refusal names a field; every accepted resource gets a status from the operator that says
what it is (a catalogue reason, for the generation it describes); the operator never crashes and
never logs a traceback.
"""

from __future__ import annotations

import json
import string
from itertools import count
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feldera_operator import decision as d

from .conftest import PERIOD, Faults

pytestmark = pytest.mark.faults

EXAMPLES = 60
_names = count(1)
ACCEPTED: list[str] = []

identifier = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 300),
    st.text(string.printable, max_size=20),
    st.lists(st.integers(), max_size=2),
)


def sometimes_wrong(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a good value, sometimes anything at all."""
    return st.one_of(good, good, good, anything)


connector = st.fixed_dictionaries(
    {
        "table": sometimes_wrong(st.one_of(identifier, st.just('"Mixed"'))),
        "connector": sometimes_wrong(st.sampled_from(["backfill", "live", "extra", "gone"])),
    },
    optional={"paused": sometimes_wrong(st.booleans())},
)
program = st.one_of(
    st.fixed_dictionaries({"sql": st.text(max_size=40)}),
    st.fixed_dictionaries(
        {
            "sqlFrom": st.fixed_dictionaries(
                {
                    "configMapKeyRef": st.fixed_dictionaries(
                        {"name": sometimes_wrong(identifier), "key": sometimes_wrong(identifier)}
                    )
                }
            )
        }
    ),
    st.fixed_dictionaries({}, optional={"udfRust": st.text(max_size=10)}),
)
spec = st.fixed_dictionaries(
    {},
    optional={
        "pipelineName": sometimes_wrong(
            st.from_regex(r"[A-Za-z0-9][-A-Za-z0-9_]{0,20}", fullmatch=True)
        ),
        "paused": sometimes_wrong(st.booleans()),
        "stopped": sometimes_wrong(st.booleans()),
        "deletionPolicy": sometimes_wrong(st.sampled_from(["Orphan", "Stop", "Delete"])),
        "updateStrategy": sometimes_wrong(st.sampled_from(["Restart", "Recreate", "Manual"])),
        "managementPolicy": sometimes_wrong(st.sampled_from(["Full", "ObserveOnly"])),
        "inputs": sometimes_wrong(st.lists(connector, max_size=4)),
        "outputs": st.lists(
            st.fixed_dictionaries({"view": identifier, "connector": st.just("sink")}), max_size=1
        ),
        "program": sometimes_wrong(program),
        "bogus": st.booleans(),
    },
)


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=spec)
def test_generated_specs_are_refused_naming_a_field_or_accepted(
    faults: Faults, spec: dict[str, Any]
) -> None:
    plane = faults.sb.plane
    assert plane is not None
    name = f"gen-{next(_names)}"
    body = {
        "apiVersion": "feldera.dev/v1alpha1",
        "kind": "FelderaPipeline",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }
    path = "/apis/feldera.dev/v1alpha1/namespaces/default/felderapipelines?fieldValidation=Strict"
    status, answer = plane.request("POST", path, body)
    if status == 201:
        ACCEPTED.append(name)
        return
    message = json.loads(answer).get("message", "")
    assert status in (400, 422), (status, message)
    assert "spec" in message, message  # names the field, e.g. spec.inputs[0].table


def test_every_accepted_generated_spec_has_a_true_status(faults: Faults) -> None:
    """Runs after the generation above (same module, in order)."""
    # Enough of both kinds to mean something (the generator is derandomized: a fixed mix).
    assert len(ACCEPTED) >= EXAMPLES // 6, f"only {len(ACCEPTED)} of {EXAMPLES} were valid"
    assert len(ACCEPTED) <= EXAMPLES * 5 // 6, f"{len(ACCEPTED)} of {EXAMPLES} were valid"
    # The reason catalogue: the decision's named reasons (never an exception's class name).
    catalogue = {
        value
        for key, value in vars(d).items()
        if key.isupper() and isinstance(value, str) and value[:1].isupper() and value.isalpha()
    }

    def described(name: str) -> bool:
        obj = faults.get(name)
        status = obj.get("status") or {}
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
        return bool(
            ready
            and status.get("observedGeneration") == obj["metadata"]["generation"]
            and ready["reason"] in catalogue
        )

    for name in ACCEPTED:
        faults.wait(lambda n=name: described(n), f"{name} described", timeout=3 * PERIOD + 20)
    faults.assert_operator_healthy()
