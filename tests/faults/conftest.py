"""Fault-suite fixtures: one sandbox (both emulators, the real operator) shared by the modules.

Tests here run one at a time and undo what they inject: after each test every Feldera and
Kubernetes fault is cleared and the Feldera emulator's settings are put back. At the end the whole
sandbox is searched for API keys (logs, Events, statuses, metrics) and for tracebacks.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from e2e.conftest import API_KEY, E2E, PERIOD, SQL, operator_defaults, pipeline_manifest
from leaks import assert_no_leaks, tracebacks

from feldera_sandbox.controlplane import request_key
from feldera_sandbox.sandbox import Process, Sandbox, condition

# Distinctive keys (the emulator accepts KEY with the write role and READ_KEY with the read role;
# WRONG_KEY is no key at all): none of them may show up anywhere.
KEY = API_KEY
READ_KEY = "apikey:" + "readonlyKEY" * 11 + "rk0123"
WRONG_KEY = "apikey:" + "wrongWRONGx" * 11 + "wk0123"
# Not even a valid header value: a key pasted with a space in it.
MALFORMED_KEY = "apikey:" + "malformedKEY" * 10 + " mk0123"
KEYS = (KEY, READ_KEY, WRONG_KEY, MALFORMED_KEY)
REQUEST_TIMEOUT = 1.0  # the operator's --request-timeout in this suite

__all__ = [
    "KEY",
    "KEYS",
    "MALFORMED_KEY",
    "PERIOD",
    "READ_KEY",
    "REQUEST_TIMEOUT",
    "SQL",
    "WRONG_KEY",
    "Faults",
    "cond_message",
    "cond_status",
    "condition",
    "free_port",
    "pipeline_manifest",
    "start_fault_sandbox",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cond_status(obj: dict[str, Any], ctype: str) -> str | None:
    c = condition(obj, ctype)
    return str(c["status"]) if c else None


def cond_message(obj: dict[str, Any], ctype: str) -> str:
    c = condition(obj, ctype)
    return str(c["message"]) if c else ""


def secret_manifest(name: str, key: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        # The opt-in a FelderaInstance's Secret needs (the default instance's does not).
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"feldera.dev/credentials": "true"},
        },
        "stringData": {"apiKey": key},
    }


class Faults(E2E):
    """The end-to-end verbs, plus the emulators' fault hooks and the operator's health."""

    # Feldera emulator
    def fault(
        self,
        endpoint: str,
        *,
        method: str | None = None,
        status: int | None = None,
        error_code: str | None = None,
        latency: float = 0.0,
        drop: bool = False,
        count: int = 1,
        hang: bool = False,
        slow_body: float = 0.0,
        html: bool = False,
        retry_after: str | None = None,
    ) -> None:
        body: dict[str, Any] = {"endpoint": endpoint, "latency": latency, "drop": drop}
        body["count"] = count
        body |= {"hang": hang, "slow_body": slow_body, "html": html}
        if retry_after is not None:
            body["retry_after"] = retry_after
        if method is not None:
            body["method"] = method
        if status is not None:
            body["status"] = status
        if error_code is not None:
            body["error_code"] = error_code
        self.sb.feldera("POST", "/_emulator/faults", body)

    def settings(self, **values: Any) -> None:
        self.sb.feldera("PATCH", "/_emulator/settings", values)

    def count(self, key: str) -> int:
        return self.sb.feldera_counts().get(key, 0)

    # Kubernetes: refusals by a real admission policy, outages by the real API server
    @contextlib.contextmanager
    def refuse(
        self,
        group: str,
        resource: str,
        operation: str,
        *,
        probe: tuple[str, str],
        message: str = "refused by the test's admission policy",
    ) -> Iterator[None]:
        """A ValidatingAdmissionPolicy that refuses the operator's `operation` on `resource`
        (as a cluster's admission policies do), until the block ends. `probe` is a server-side
        dry run as the operator that the policy must refuse before the block starts:
        ("create", "event") or ("patch-status", <FelderaPipeline name>)."""
        name = f"refuse-{resource.replace('/', '-')}-{operation.lower()}"
        policy = refusal_policy(name, group, resource, operation, self.sb.operator_user, message)
        self.sb.apply(policy)
        try:
            self.wait(lambda: self._probe_refused(probe, message), f"policy {name} in force")
            yield
        finally:
            for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
                self.sb.kubectl("delete", kind, name, "--ignore-not-found")

    def _probe_refused(self, probe: tuple[str, str], message: str) -> bool:
        """A server-side dry run of the probe, as the operator: refused with `message`?"""
        plane = self.sb.plane
        assert plane is not None
        kind, target = probe
        if kind == "create":
            path = "/api/v1/namespaces/default/events?dryRun=All"
            body: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": "probe-", "namespace": "default"},
                "involvedObject": {"kind": "Namespace", "name": "default"},
                "reason": "Probe",
                "message": "probe",
            }
            method, content_type = "POST", "application/json"
        else:
            path = f"/apis/feldera.dev/v1alpha1/namespaces/default/felderapipelines/{target}"
            path += "/status?dryRun=All"
            body = {"status": {"observedGeneration": 0}}
            method, content_type = "PATCH", "application/merge-patch+json"
        code, answer = plane.request(
            method, path, body, content_type, impersonate=self.sb.operator_user
        )
        return code >= 400 and message in answer.decode(errors="replace")

    def refused(self, key: str) -> int:
        """The operator's requests `verb resource[/sub]` that Kubernetes refused so far."""
        return sum(
            1
            for e in self.sb.operator_requests()
            if request_key(e) == key and (e.get("responseStatus") or {}).get("code", 0) >= 400
        )

    def reset(self) -> None:
        self.sb.feldera("DELETE", "/_emulator/faults")
        self.settings(delay=0.0, restore="checkpoint")

    # Kubernetes objects
    def secret(self, name: str, key: str) -> None:
        self.sb.kubectl("apply", "-f", "-", input=json.dumps(secret_manifest(name, key)))

    def instance(self, name: str, secret: str | None) -> None:
        spec: dict[str, Any] = {"url": self.sb.feldera_url}
        if secret is not None:
            spec["apiKeySecretRef"] = {"name": secret, "key": "apiKey"}
        manifest = {
            "apiVersion": "feldera.dev/v1alpha1",
            "kind": "FelderaInstance",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }
        self.apply(manifest)

    def reason(self, name: str, ctype: str = "Ready") -> str | None:
        c = condition(self.get(name), ctype)
        return str(c["reason"]) if c else None

    def wait_reason(
        self, name: str, reason: str, ctype: str = "Ready", timeout: float = 30
    ) -> dict[str, Any]:
        """The resource once `ctype` has `reason` for its current generation."""

        def check() -> dict[str, Any] | None:
            obj = self.get(name)
            c = condition(obj, ctype)
            current = obj["metadata"].get("generation") == (obj.get("status") or {}).get(
                "observedGeneration"
            )
            return obj if c and c.get("reason") == reason and current else None

        result: dict[str, Any] = self.wait(check, f"{name}: {ctype} reason {reason}", timeout)
        return result

    # The operator
    @property
    def operator(self) -> Process:
        return self.sb.operators[-1]

    def restart_operator(self) -> Process:
        """SIGKILL the operator and start another with the same flags (a fresh metrics port)."""
        killed = self.operator
        killed.kill()
        args = killed.argv[killed.argv.index("--liveness") + 2 :]  # the test's own flags
        args[len(args) - args[::-1].index("--metrics-port")] = str(free_port())  # the last one
        return self.sb.start_operator(*args, name=f"operator-{len(self.sb.operators) + 1}")

    def assert_operator_healthy(self) -> None:
        """The operator still runs, was never restarted by itself, and logged no traceback."""
        assert self.operator.running, self.operator.log_text()[-3000:]
        assert self.operator.log_text().count("feldera-operator started") == 1
        assert not tracebacks(self.sb.operators), self.operator_log()[-5000:]


def start_fault_sandbox(
    workdir: Path,
    *operator_args: str,
    feldera_port: int = 0,
    start_feldera: bool = True,
    default_url: str | None = None,
    manifests: Sequence[dict[str, Any]] = (),
) -> Sandbox:
    """Both emulators (Feldera with a write key and a read key), the default instance's Secret,
    and the operator with a short period, a short request timeout and a metrics port.
    `manifests` are applied before the operator starts."""
    sb = Sandbox(workdir)
    try:
        sb.start_kubernetes()
        if start_feldera:
            start_feldera_emulator(sb, port=feldera_port)
        sb.install_crds()
        sb.install_operator_identity()
        sb.kubectl("apply", "-f", "-", input=json.dumps(secret_manifest("feldera-api-key", KEY)))
        for manifest in manifests:
            sb.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        defaults = operator_defaults(sb)
        if default_url is not None:
            defaults[defaults.index("--default-url") + 1] = default_url
        sb.start_operator(
            *defaults,
            "--request-timeout",
            str(REQUEST_TIMEOUT),
            "--metrics-port",
            str(free_port()),
            *operator_args,
        )
    except BaseException:
        sb.stop()
        raise
    return sb


def refusal_policy(
    name: str, group: str, resource: str, operation: str, user: str | None, message: str
) -> list[dict[str, Any]]:
    """A ValidatingAdmissionPolicy and its binding refusing `user`'s `operation` on `resource`."""
    match = "true" if user is None else f"request.userInfo.username == '{user}'"
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [group],
                            "apiVersions": ["*"],
                            "operations": [operation],
                            "resources": [resource],
                        }
                    ]
                },
                "matchConditions": [{"name": "the-operator", "expression": match}],
                "validations": [{"expression": "false", "message": message}],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"]},
        },
    ]


def start_feldera_emulator(sb: Sandbox, port: int = 0) -> str:
    return sb.start_feldera("--api-key", KEY, "--read-api-key", READ_KEY, port=port)


def finish(sb: Sandbox) -> None:
    """Search the sandbox for leaked keys and tracebacks, then stop it (and search its logs)."""
    try:
        assert_no_leaks(sb, KEYS)
        assert not tracebacks(sb.processes), [p.name for p in sb.processes]
    finally:
        sb.stop()
    assert_no_leaks(sb, KEYS, live=False)


@pytest.fixture(scope="package")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    sb = start_fault_sandbox(tmp_path_factory.mktemp("faults"))
    yield Faults(sb)
    finish(sb)


@pytest.fixture(autouse=True)
def _undo_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "faults" in request.fixturenames:
        f: Faults = request.getfixturevalue("faults")
        f.reset()
        f.assert_operator_healthy()
