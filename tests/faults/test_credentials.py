"""Credentials and references that are wrong: a reason that says which, Stalled, no crash loop, and
recovery by fixing the Secret or creating what was missing, never by restarting the operator."""

from __future__ import annotations

import pytest
from e2e.conftest import unique
from e2e.test_operator import standard

from .conftest import KEY, MALFORMED_KEY, READ_KEY, WRONG_KEY, Faults, cond_message, cond_status

pytestmark = pytest.mark.faults


def on_instance(f: Faults, instance: str, prefix: str) -> str:
    name = unique(prefix)
    f.create_pipeline(name)
    f.apply(standard(name, instanceRef={"name": instance}))
    return name


def instance_reason(f: Faults, name: str) -> str | None:
    obj = f.sb.kubectl_json("get", "fi", name)
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return str(c.get("reason"))
    return None


def test_wrong_api_key_is_credentials_rejected_and_fixing_the_secret_recovers(
    faults: Faults,
) -> None:
    faults.secret("wrong-key", WRONG_KEY)
    faults.instance("wrongkey", "wrong-key")
    name = on_instance(faults, "wrongkey", "wrongkey")
    obj = faults.wait_reason(name, "CredentialsRejected")
    assert cond_status(obj, "Synced") == "False"
    assert cond_status(obj, "Stalled") == "True"
    assert "API key" in cond_message(obj, "Ready")
    faults.wait(lambda: instance_reason(faults, "wrongkey") == "CredentialsRejected", "FI says so")

    faults.secret("wrong-key", KEY)  # the key is rotated; the operator is not restarted
    faults.wait_ready(name)
    faults.wait(lambda: instance_reason(faults, "wrongkey") == "Converged", "FI Ready")
    assert faults.pipeline(name)["deployment_status"] == "Running"


def test_read_only_key_is_permission_denied_and_a_write_key_recovers(faults: Faults) -> None:
    faults.secret("read-key", READ_KEY)
    faults.instance("readonly", "read-key")
    name = on_instance(faults, "readonly", "readonly")  # needs a start: a write
    obj = faults.wait_reason(name, "PermissionDenied")
    assert cond_status(obj, "Stalled") == "True"
    assert "403" in cond_message(obj, "Ready") and "write" in cond_message(obj, "Ready")
    # Reading works with a read key: the status still shows what Feldera reports.
    assert obj["status"]["state"] == "Stopped"
    assert faults.pipeline(name)["deployment_status"] == "Stopped"
    # Retried every period, said once: one Warning, not one per retry.
    lists = faults.count("GET /v0/pipelines")
    faults.wait(lambda: faults.count("GET /v0/pipelines") >= lists + 6, "a few more passes")
    events = faults.wait_events(
        name, lambda evs: any(e["reason"] == "ActionFailed" for e in evs), "the Warning"
    )
    warnings = [e for e in events if e["reason"] == "ActionFailed"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning", warnings
    assert "403" in warnings[0]["message"]

    faults.secret("read-key", KEY)
    faults.wait_ready(name)
    assert faults.pipeline(name)["deployment_status"] == "Running"


def test_missing_secret_is_secret_not_found_and_creating_it_recovers(faults: Faults) -> None:
    faults.instance("nosecret", "absent-secret")
    name = on_instance(faults, "nosecret", "nosecret")
    obj = faults.wait_reason(name, "SecretNotFound")
    assert "absent-secret" in cond_message(obj, "Ready")
    assert cond_status(obj, "Synced") == "False" and cond_status(obj, "Stalled") == "True"
    faults.wait(lambda: instance_reason(faults, "nosecret") == "SecretNotFound", "FI says so")

    # A Secret without the key named is just as missing.
    faults.sb.kubectl(
        "create", "secret", "generic", "absent-secret", "--from-literal=other=nothing-here"
    )
    faults.sb.kubectl("label", "secret", "absent-secret", "feldera.dev/credentials=true")
    obj = faults.wait(
        lambda: "no key" in cond_message(faults.get(name), "Ready") and faults.get(name),
        "the message names the missing key",
    )
    assert faults.reason(name) == "SecretNotFound"

    faults.secret("absent-secret", KEY)
    faults.wait_ready(name)


def test_unlabelled_secret_is_never_read_and_labelling_it_recovers(faults: Faults) -> None:
    """A FelderaInstance chooses where its key goes: only Secrets that opt in are used."""
    faults.sb.kubectl(
        "create", "secret", "generic", "unlabelled-key", f"--from-literal=apiKey={KEY}"
    )
    faults.instance("unlabelled", "unlabelled-key")
    name = on_instance(faults, "unlabelled", "unlabelled")
    obj = faults.wait_reason(name, "SecretNotLabelled")
    message = cond_message(obj, "Ready")
    assert "kubectl label secret unlabelled-key" in message and "feldera.dev/credentials" in message
    assert cond_status(obj, "Stalled") == "True" and cond_status(obj, "Synced") == "False"
    faults.wait(lambda: instance_reason(faults, "unlabelled") == "SecretNotLabelled", "FI says so")
    faults.sb.kubectl("label", "secret", "unlabelled-key", "feldera.dev/credentials=true")
    faults.wait_ready(name)


def test_missing_felderainstance_is_instance_not_found_and_creating_it_recovers(
    faults: Faults,
) -> None:
    name = on_instance(faults, "ghost", "ghost")
    obj = faults.wait_reason(name, "InstanceNotFound")
    assert "ghost" in cond_message(obj, "Ready")
    assert cond_status(obj, "Stalled") == "True"
    faults.secret("ghost-key", KEY)
    faults.instance("ghost", "ghost-key")
    faults.wait_ready(name)


def test_malformed_key_in_the_secret_is_named_without_showing_it(faults: Faults) -> None:
    """A key that is no valid header value (a space in it) is never sent: the instance's
    settings are invalid, and the message says what is wrong with the key, not the key."""
    faults.secret("malformed-key", MALFORMED_KEY)
    faults.instance("malformed", "malformed-key")
    name = on_instance(faults, "malformed", "malformed")
    obj = faults.wait_reason(name, "InvalidSpec")
    assert "api_key must be" in cond_message(obj, "Ready")
    assert cond_status(obj, "Stalled") == "True"
    faults.secret("malformed-key", KEY)
    faults.wait_ready(name)
