"""A real Kubernetes control plane on loopback: etcd and kube-apiserver, as envtest runs them.

`feldera-operator controlplane --kubeconfig PATH` and the test fixtures use this module: it builds
the binaries once per machine (`toolchain`), generates a CA, serving and client certificates and a
service-account signing key, starts etcd and kube-apiserver on free loopback ports with RBAC and
TokenRequest on, waits until `/readyz` answers and the `default` namespace exists, and writes an
admin kubeconfig. kube-controller-manager runs the controllers that tests and users see the effect
of without nodes: namespace deletion, garbage collection of ownerReferences, default
ServiceAccounts, and the aggregation of ClusterRoles (the chart's roles for `edit` and `view`).
There is no kubelet or scheduler: Pods never run. Everything the operator uses (CRDs, status
subresources, server-side apply, watches, RBAC, admission, Leases, Events) is Kubernetes' own.

Every request is written to an audit log (metadata only): the tests count the operator's
Kubernetes calls from it, by verb and resource, exactly as the API server saw them.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from feldera_sandbox import toolchain
from feldera_sandbox.certs import CertificateAuthority, rsa_key_pair
from feldera_sandbox.processes import Process, Stopped, exit_code, stop_on_signals, wait_for

ADMIN_USER = "sandbox-admin"
_START_ATTEMPTS = 4  # a port taken between choosing it and binding it: try other ports
_PORT_TAKEN = ("address already in use", "bind: address already in use")

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    # One entry per request when it completes; a watch also when its stream starts (it may
    # never complete while the server runs).
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "users": ["system:apiserver"]},
        {"level": "None", "nonResourceURLs": ["/readyz*", "/livez*", "/healthz*", "/version"]},
        {"level": "Metadata"},
    ],
}


class ControlPlaneError(RuntimeError):
    """The control plane did not come up: the message carries its logs' last lines."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ControlPlane:
    """etcd + kube-apiserver in `workdir`; `stop()` ends both and removes their data."""

    def __init__(
        self,
        workdir: Path,
        *,
        progress: Callable[[str], None] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.pki = workdir / "pki"
        self.data = workdir / "etcd-data"
        self.kubeconfig = workdir / "kubeconfig"
        self.audit_log = workdir / "audit.log"
        self.progress = progress
        self.env = dict(env if env is not None else os.environ)
        self.etcd: Process | None = None
        self.apiserver: Process | None = None
        self.controller_manager: Process | None = None
        self.etcd_port = self.peer_port = self.port = 0
        self._audit_offset = 0
        self._audit_rest = b""
        self._ssl: ssl.SSLContext | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        # An IP, not `localhost`: Python matches IP hosts against IP SANs, and localhost may be ::1.
        return f"https://127.0.0.1:{self.port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    def start(self, timeout: float = 120.0) -> None:
        started = time.monotonic()
        self._binaries = toolchain.ensure_all(
            ["etcd", "kube-apiserver", "kube-controller-manager"], self.progress
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._certificates()
        try:
            self._start_etcd(timeout)
            self._start_apiserver(timeout)
            self._write_admin_kubeconfig()
            self._wait_default_namespace(timeout)
            self._start_controller_manager()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started

    @property
    def processes(self) -> list[Process]:
        return [p for p in (self.etcd, self.apiserver, self.controller_manager) if p is not None]

    def stop(self, *, remove_data: bool = True) -> None:
        for proc in (self.controller_manager, self.apiserver, self.etcd):
            if proc is not None:
                proc.stop(timeout=15)
        if remove_data:
            shutil.rmtree(self.data, ignore_errors=True)
            shutil.rmtree(self.pki, ignore_errors=True)

    def kill_apiserver(self) -> None:
        """SIGKILL kube-apiserver (etcd keeps its data): every client sees the server vanish."""
        assert self.apiserver is not None
        self.apiserver.kill()

    def restart_apiserver(self, timeout: float = 120.0) -> None:
        """Start kube-apiserver again on the same port, certificates and etcd."""
        if self.apiserver is not None and self.apiserver.running:
            self.apiserver.stop()
        self._launch_apiserver(self.port)
        self._wait_ready(self.apiserver, timeout)  # type: ignore[arg-type]

    def freeze_apiserver(self) -> None:
        """SIGSTOP: connections are accepted by the kernel and never answered (a half-open
        server, as a hung node or a network partition looks to a client)."""
        assert self.apiserver is not None
        self.apiserver.signal(signal.SIGSTOP)

    def thaw_apiserver(self) -> None:
        assert self.apiserver is not None
        self.apiserver.signal(signal.SIGCONT)

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each component, from /proc."""
        return {p.name: _rss(p.pid) for p in self.processes if p.running}

    # ------------------------------------------------------------------ kube-controller-manager

    CONTROLLERS = (
        "namespace-controller",
        "garbage-collector-controller",
        "serviceaccount-controller",
        "clusterrole-aggregation-controller",
    )

    def _start_controller_manager(self) -> None:
        self.controller_manager = Process(
            "kube-controller-manager",
            [
                str(self._binaries[2]),
                f"--kubeconfig={self.kubeconfig}",
                f"--controllers={','.join(self.CONTROLLERS)}",
                "--leader-elect=false",
                "--secure-port=0",  # serves nothing: no one scrapes it here
                "--use-service-account-credentials=false",
                f"--root-ca-file={self.ca_file}",
                "--v=1",
            ],
            self.workdir / "kube-controller-manager.log",
            self.env,
        )

    # ------------------------------------------------------------------ etcd

    def _start_etcd(self, timeout: float) -> None:
        for attempt in range(_START_ATTEMPTS):
            self.etcd_port, self.peer_port = free_port(), free_port()
            shutil.rmtree(self.data, ignore_errors=True)
            peer = f"http://127.0.0.1:{self.peer_port}"
            self.etcd = Process(
                "etcd",
                [
                    str(self._binaries[0]),
                    "--name=default",
                    f"--data-dir={self.data}",
                    f"--listen-client-urls={self.etcd_url}",
                    f"--advertise-client-urls={self.etcd_url}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=default={peer}",
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                ],
                self.workdir / f"etcd-{attempt}.log",
                self.env,
            )
            try:
                self._wait_etcd(timeout)
                return
            except ControlPlaneError:
                if not self._port_taken(self.etcd) or attempt == _START_ATTEMPTS - 1:
                    raise
                self.etcd.stop()

    def _wait_etcd(self, timeout: float) -> None:
        etcd = self.etcd
        assert etcd is not None

        def healthy() -> bool:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as r:
                return bool(json.loads(r.read()).get("health") == "true")

        self._wait(etcd, healthy, timeout, "etcd /health")

    def etcd_revision(self) -> int:
        body = self._etcd_post("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
        return int(body["header"]["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd's history up to now (physically): older resourceVersions are gone, so a
        watch resumed from one gets 410 Gone once kube-apiserver's watch cache no longer has it."""
        revision = self.etcd_revision()
        self._etcd_post("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def etcd_delete(self, key: str) -> int:
        """Delete a key in etcd directly, behind kube-apiserver's back (with it stopped, no watch
        ever sees the deletion). Returns how many keys went."""
        body = self._etcd_post(
            "/v3/kv/deleterange", {"key": base64.b64encode(key.encode()).decode()}
        )
        return int(body.get("deleted", 0))

    def _etcd_post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.etcd_url + path, data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            result: dict[str, Any] = json.loads(r.read())
            return result

    # ------------------------------------------------------------------ kube-apiserver

    def _certificates(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority("feldera-sandbox-kubernetes-ca")
        self.ca_file.write_bytes(ca.cert_pem)
        ca.issue(
            "kube-apiserver",
            ips=("127.0.0.1",),
            dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
            server=True,
        ).write(self.pki, "apiserver")
        ca.issue(ADMIN_USER, organization="system:masters", client=True).write(self.pki, "admin")
        rsa_key_pair(self.pki, "sa")
        (self.pki / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))

    def _start_apiserver(self, timeout: float) -> None:
        for attempt in range(_START_ATTEMPTS):
            self._launch_apiserver(free_port(), attempt)
            try:
                self._wait_ready(self.apiserver, timeout)  # type: ignore[arg-type]
                return
            except ControlPlaneError:
                assert self.apiserver is not None
                if not self._port_taken(self.apiserver) or attempt == _START_ATTEMPTS - 1:
                    raise
                self.apiserver.stop()

    def _launch_apiserver(self, port: int, attempt: int = 0) -> None:
        self.port = port
        pki = self.pki
        self.apiserver = Process(
            "kube-apiserver",
            [
                str(self._binaries[1]),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                # Without a default route the apiserver wants an advertise address; a loopback
                # one is refused unless the endpoint reconciler is off.
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--authorization-mode=RBAC",
                # TokenRequest: `kubectl create token` gives tokens RBAC judges as the account.
                f"--service-account-issuer=https://127.0.0.1:{port}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                # No controller manager creates default ServiceAccounts, which this plugin needs.
                "--disable-admission-plugins=ServiceAccount",
                f"--audit-policy-file={pki / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxbackup=0",
                "--audit-log-maxsize=0",
                "--profiling=false",
                "--v=1",
            ],
            self.workdir / f"kube-apiserver-{attempt}.log",
            self.env,
        )

    def _wait_ready(self, apiserver: Process, timeout: float) -> None:
        def ready() -> bool:
            status, body = self.request("GET", "/readyz")
            return status == 200 and body.strip() == b"ok"

        self._wait(apiserver, ready, timeout, "kube-apiserver /readyz")

    def _wait_default_namespace(self, timeout: float) -> None:
        assert self.apiserver is not None
        self._wait(
            self.apiserver,
            lambda: self.request("GET", "/api/v1/namespaces/default")[0] == 200,
            timeout,
            "namespace default",
        )

    def _wait(self, proc: Process, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Until `check` holds; a process that exits meanwhile fails at once, not at the
        deadline, and either way the error carries its log's last lines."""

        def ready_or_exited() -> str | None:
            if not proc.running:
                return "exited"
            return "ready" if check() else None

        try:
            outcome = wait_for(ready_or_exited, timeout=timeout, interval=0.1, what=what)
        except TimeoutError as e:
            raise ControlPlaneError(
                f"{proc.name} not ready after {timeout:g} s ({what}); last lines of "
                f"{proc.log_path}:\n{proc.log_tail(30)}"
            ) from e
        if outcome == "exited":
            raise ControlPlaneError(
                f"{proc.name} exited ({what}); last lines of {proc.log_path}:\n{proc.log_tail(30)}"
            )

    @staticmethod
    def _port_taken(proc: Process) -> bool:
        text = proc.log_text()
        return any(marker in text for marker in _PORT_TAKEN)

    # ------------------------------------------------------------------ clients

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            context = ssl.create_default_context(cafile=str(self.ca_file))
            context.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
            self._ssl = context
        return self._ssl

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        *,
        impersonate: str | None = None,
    ) -> tuple[int, bytes]:
        """One request as the admin user (or as `impersonate`); (status, body), never raises on
        an HTTP status."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        if impersonate is not None:
            req.add_header("Impersonate-User", impersonate)
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(), timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _write_admin_kubeconfig(self) -> None:
        self.write_kubeconfig(
            self.kubeconfig,
            user=ADMIN_USER,
            credentials={
                "client-certificate-data": _b64(self.pki / "admin.crt"),
                "client-key-data": _b64(self.pki / "admin.key"),
            },
        )

    def write_kubeconfig(
        self,
        path: Path,
        *,
        user: str,
        credentials: Mapping[str, str],
        namespace: str = "default",
    ) -> Path:
        """A kubeconfig for this server with the given user credentials (`token`, or client
        certificate data)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "sandbox",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": _b64(self.ca_file),
                    },
                }
            ],
            "users": [{"name": user, "user": dict(credentials)}],
            "contexts": [
                {
                    "name": "sandbox",
                    "context": {"cluster": "sandbox", "user": user, "namespace": namespace},
                }
            ],
            "current-context": "sandbox",
        }
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(config))
        return path

    # ------------------------------------------------------------------ audit

    def audit_events(self) -> list[dict[str, Any]]:
        """Requests since the last call, one audit event each (metadata only: verb, user,
        objectRef, responseStatus...); a watch is counted when its stream starts."""
        if not self.audit_log.exists():
            return []
        with open(self.audit_log, "rb") as f:
            f.seek(self._audit_offset)
            chunk = f.read()
        self._audit_offset += len(chunk)
        lines = (self._audit_rest + chunk).split(b"\n")
        self._audit_rest = lines.pop()  # a line still being written
        events = (json.loads(line) for line in lines if line.strip())
        return [e for e in events if e.get("stage") != "ResponseComplete" or not _long_running(e)]


def request_key(event: Mapping[str, Any]) -> str:
    """`verb resource[/subresource]` of an audit event, e.g. `patch felderapipelines/status`."""
    ref = event.get("objectRef") or {}
    resource = ref.get("resource") or event.get("requestURI", "?")
    if ref.get("subresource"):
        resource = f"{resource}/{ref['subresource']}"
    return f"{event.get('verb')} {resource}"


def _long_running(event: Mapping[str, Any]) -> bool:
    """A request that had a ResponseStarted stage of its own (a watch)."""
    return event.get("verb") == "watch"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _rss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", required=True, help="Where to write the admin kubeconfig.")
    parser.add_argument(
        "--workdir",
        help="Where etcd's data, certificates and logs go (default: a temporary directory, "
        "removed at exit).",
    )


def main(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="feldera-cp-"))
    plane = ControlPlane(workdir, progress=_say)
    kubeconfig = Path(args.kubeconfig).resolve()
    try:
        with stop_on_signals():
            try:
                plane.start()
                shutil.copyfile(plane.kubeconfig, kubeconfig)
                kubeconfig.chmod(0o600)
                _say(
                    f"control plane ready in {plane.start_seconds:.1f} s at {plane.url}: "
                    f"kubectl --kubeconfig {kubeconfig} get namespaces"
                )
                _say("running until SIGTERM, SIGINT or SIGHUP")
                while all(p.running for p in plane.processes):
                    time.sleep(0.5)
                ended = [p.name for p in plane.processes if not p.running]
                _say(f"{', '.join(ended)} exited; stopping")
                return 1
            finally:
                plane.stop()
                if not args.workdir:
                    shutil.rmtree(workdir, ignore_errors=True)
    except (Stopped, KeyboardInterrupt) as e:
        _say("stopped")
        return exit_code(e)
    except (toolchain.ToolchainError, ControlPlaneError) as e:
        _say(str(e))
        return 1


def _say(message: str) -> None:
    print(f"feldera-sandbox: {message}", file=sys.stderr, flush=True)
