"""TLS to Feldera, and Feldera servers that misbehave at the transport.

- https with a CA from `caSecretRef`; a wrong CA, an expired certificate, a certificate for
  another host, and an https URL served by plain http each give `TLSError` with what is wrong.
- A server that accepts and never answers, one that answers a byte a second, an HTML 502 from a
  proxy, and 429/503 with Retry-After: bounded waits, a named reason, recovery once it is over,
  and the operator's memory flat across all of them.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e.conftest import SQL, unique
from e2e.test_operator import INPUT_ACTION, standard

from feldera_sandbox.feldera_emulator import ROUTE_INPUT_CONNECTOR_ACTION, ROUTE_PIPELINES
from feldera_sandbox.processes import wait_for
from feldera_sandbox.sandbox import http_json

from .conftest import (
    KEY,
    PERIOD,
    REQUEST_TIMEOUT,
    Faults,
    cond_message,
    cond_status,
    secret_manifest,
)

pytestmark = pytest.mark.faults


def https_json(url: str, ca: Path, method: str, path: str, body: Any = None) -> Any:
    context = ssl.create_default_context(cafile=str(ca))
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {KEY}")
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        raw = response.read()
    return json.loads(raw) if raw.strip() else None


class Tls:
    """An https Feldera emulator (and the CA it trusts) for FelderaInstances of its own."""

    def __init__(self, f: Faults, tmp: Path, mode: str) -> None:
        tag = unique(mode)
        self.ca = tmp / f"ca-{tag}.pem"
        self.url = f.sb.start_feldera(
            "--api-key", KEY, "--tls-mode", mode, "--ca-out", str(self.ca), name=f"feldera-{tag}"
        )
        assert self.url.startswith("https://")


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="module")
def valid(faults: Faults, tmp: Path) -> Tls:
    return Tls(faults, tmp, "valid")


def instance_on(f: Faults, url: str, ca_pem: str | None, tag: str) -> str:
    """A FelderaInstance at `url` (its key, and a CA Secret when given) and a pipeline on it."""
    instance = unique(tag)
    f.sb.apply([secret_manifest(f"{instance}-key", KEY)])
    spec: dict[str, Any] = {"url": url, "apiKeySecretRef": {"name": f"{instance}-key"}}
    if ca_pem is not None:
        ca_secret = secret_manifest(f"{instance}-ca", "")
        ca_secret["stringData"] = {"ca.crt": ca_pem}
        f.sb.apply([ca_secret])
        spec["caSecretRef"] = {"name": f"{instance}-ca"}
    f.apply(
        {
            "apiVersion": "feldera.dev/v1alpha1",
            "kind": "FelderaInstance",
            "metadata": {"name": instance, "namespace": "default"},
            "spec": spec,
        }
    )
    name = unique(tag)
    f.apply(standard(name, instanceRef={"name": instance}))
    return name


def test_https_with_the_ca_from_its_secret_converges(faults: Faults, valid: Tls) -> None:
    name = unique("tls")
    https_json(
        valid.url, valid.ca, "PUT", f"/v0/pipelines/{name}", {"name": name, "program_code": SQL}
    )
    instance = unique("tlsok")
    faults.sb.apply([secret_manifest(f"{instance}-key", KEY)])
    ca_secret = secret_manifest(f"{instance}-ca", "")
    ca_secret["stringData"] = {"ca.crt": valid.ca.read_text()}
    faults.sb.apply([ca_secret])
    faults.apply(
        {
            "apiVersion": "feldera.dev/v1alpha1",
            "kind": "FelderaInstance",
            "metadata": {"name": instance, "namespace": "default"},
            "spec": {
                "url": valid.url,
                "apiKeySecretRef": {"name": f"{instance}-key"},
                "caSecretRef": {"name": f"{instance}-ca"},
            },
        }
    )
    faults.apply(standard(name, instanceRef={"name": instance}))
    faults.wait_ready(name)
    stats = https_json(valid.url, valid.ca, "GET", f"/v0/pipelines/{name}/stats")
    assert {e["endpoint_name"]: e["paused"] for e in stats["inputs"]}["orders.live"] is True


@pytest.mark.parametrize(
    ("mode", "trusted", "says"),
    [
        ("valid", "another CA", "certificate verify failed"),
        ("expired", "its CA", "certificate has expired"),
        ("wrong-host", "its CA", "mismatch"),
    ],
)
def test_a_tls_failure_is_named(
    faults: Faults, tmp: Path, valid: Tls, mode: str, trusted: str, says: str
) -> None:
    server = valid if mode == "valid" else Tls(faults, tmp, mode)
    other = Tls(faults, tmp, "valid") if trusted == "another CA" else None
    ca = (other or server).ca.read_text()
    name = instance_on(faults, server.url, ca, f"tls{mode[:3]}")
    obj = faults.wait_reason(name, "TLSError", ctype="Synced")
    assert says in cond_message(obj, "Ready"), cond_message(obj, "Ready")
    assert cond_status(obj, "Ready") == "False"


def test_an_https_url_served_by_plain_http_is_a_tls_error_and_no_key_goes_out(
    faults: Faults,
) -> None:
    # A plain-http emulator of its own: the shared one is observed for other tests' resources.
    url = faults.sb.start_feldera(name=f"plain-{unique('x')}")
    name = instance_on(faults, url.replace("http://", "https://"), None, "plain")
    obj = faults.wait_reason(name, "TLSError", ctype="Synced")
    assert "TLS" in cond_message(obj, "Ready") or "SSL" in cond_message(obj, "Ready")
    # The plain server never saw a request it could read (so never the Authorization header).
    assert http_json(url, "GET", "/_emulator/requests")["counts"] == {}


# ---------------------------------------------------------------------- broken servers


@pytest.fixture(scope="module")
def rss(faults: Faults) -> Iterator[list[int]]:
    """The operator's resident memory before and after the broken-server tests."""
    samples = [_rss(faults.operator.pid)]
    yield samples
    samples.append(_rss(faults.operator.pid))
    assert samples[-1] - samples[0] < 30 * 2**20, [s // 2**20 for s in samples]


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.mark.parametrize(
    ("fault", "reason", "says"),
    [
        ({"hang": True}, "FelderaUnreachable", "timed out"),
        ({"slow_body": 1.0}, "FelderaUnreachable", "timed out"),
        ({"html": True}, "FelderaError", "502"),
    ],
    ids=["never answers", "a byte a second", "HTML 502 from a proxy"],
)
def test_a_broken_server_is_named_within_the_request_timeout_then_recovers(
    faults: Faults, rss: list[int], fault: dict[str, Any], reason: str, says: str
) -> None:
    name = unique("broken")
    faults.create_pipeline(name)
    faults.apply(standard(name))
    faults.wait_ready(name)
    for _ in range(3):  # stays broken while the test looks
        faults.fault(ROUTE_PIPELINES, count=0, **fault)
    obj = faults.wait_reason(
        name, reason, ctype="Synced", timeout=REQUEST_TIMEOUT * 4 + 3 * PERIOD + 10
    )
    assert says in cond_message(obj, "Synced"), cond_message(obj, "Synced")
    faults.sb.feldera("DELETE", "/_emulator/faults")
    faults.wait_ready(name, timeout=REQUEST_TIMEOUT * 4 + 3 * PERIOD + 10)


def test_retry_after_is_honoured_on_a_refused_action(faults: Faults, rss: list[int]) -> None:
    """503 with Retry-After on a connector action: the next attempt comes no sooner than Feldera
    asked (capped at a period), not after the usual 0.1, 0.2, 0.4 s."""
    name = unique("retryafter")
    faults.create_pipeline(name)
    faults.apply(standard(name))
    faults.wait_ready(name)
    faults.fault(ROUTE_INPUT_CONNECTOR_ACTION, status=503, retry_after="5", count=2)
    before = faults.count(INPUT_ACTION)
    faults.patch(name, [{"op": "replace", "path": "/spec/inputs/1/paused", "value": False}], "json")
    wait_for(lambda: faults.count(INPUT_ACTION) > before, timeout=10, what="the first attempt")
    first = time.monotonic()
    # The attempts in the period after the first: one more at most (capped Retry-After = the
    # period); three without it (0.1 + 0.2 + 0.4 s).
    seen = 1
    while time.monotonic() < first + PERIOD * 0.9:
        seen = faults.count(INPUT_ACTION) - before
        time.sleep(0.05)  # sampling an observation window, not waiting for a condition
    assert seen <= 2, seen
    faults.wait(lambda: faults.flags(name)["orders.live"] is False, "live started in the end")
    faults.wait_ready(name)
