"""kube-apiserver, kube-controller-manager, etcd and helm, built from their pinned Go modules
once per machine.

Nothing can be downloaded as a release binary where this project is built and tested, but the Go
module proxy is reachable: `tools/<module>/` pins each program (see tools/README.md), and this
module builds what is missing into a cache keyed by the program's version and a digest of its
go.mod, go.sum and link flags. A second run builds nothing. Concurrent runs (two test sessions,
a demo beside the tests) wait for each other on a lock instead of building twice.

Cache: `$FELDERA_SANDBOX_CACHE`, else `$XDG_CACHE_HOME/feldera-operator`, else
`~/.cache/feldera-operator`; binaries in its `bin/`. Measured on 2 cores: a first build of all
four takes about 12 minutes (kube-apiserver ~7, kube-controller-manager ~2 more from the same
build cache, helm ~2, etcd under 1) plus the module download.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = PROJECT_ROOT / "tools"
GO_MINIMUM = (1, 26)

_K8S = "v1.37.2"
_K8S_STAMP = " ".join(
    f"-X {pkg}.{var}={value}"
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
    for var, value in (("gitVersion", _K8S), ("gitMajor", "1"), ("gitMinor", "37"))
)


class ToolchainError(RuntimeError):
    """A program could not be built: the message says what to install or what failed."""


@dataclass(frozen=True)
class Tool:
    name: str  # the binary's name
    module: str  # the Go module that provides it, for messages
    version: str
    directory: str  # under tools/
    package: str  # what `go build` builds
    ldflags: str  # version stamps, so `/version` and `helm version` tell the truth
    minutes: int  # rough first-build time on 2 cores, for the progress line

    @property
    def key(self) -> str:
        digest = hashlib.sha256(self.ldflags.encode())
        for name in ("go.mod", "go.sum"):
            digest.update((TOOLS_DIR / self.directory / name).read_bytes())
        return f"{self.name}-{self.version}-{digest.hexdigest()[:12]}"


TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            "kube-apiserver",
            "k8s.io/kubernetes",
            _K8S,
            "kube",
            "k8s.io/kubernetes/cmd/kube-apiserver",
            _K8S_STAMP,
            7,
        ),
        Tool(
            "kube-controller-manager",
            "k8s.io/kubernetes",
            _K8S,
            "kube",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            _K8S_STAMP,
            2,
        ),
        Tool(
            "etcd",
            "go.etcd.io/etcd/server/v3",
            "v3.7.3",
            "etcd",
            "go.etcd.io/etcd/server/v3",
            "",
            1,
        ),
        Tool(
            "helm",
            "helm.sh/helm/v4",
            "v4.3.2",
            "helm",
            "helm.sh/helm/v4/cmd/helm",
            "-X helm.sh/helm/v4/internal/version.version=v4.3.2",
            2,
        ),
    )
}


def cache_dir() -> Path:
    explicit = os.environ.get("FELDERA_SANDBOX_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "feldera-operator"


def cached_path(name: str) -> Path:
    return cache_dir() / "bin" / TOOLS[name].key


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolchainError(
            "Go 1.26 or newer is needed to build kube-apiserver, etcd and helm once on this "
            "machine (nothing is downloaded as a binary): install Go from "
            "https://go.dev/doc/install or your distribution's golang package, put `go` on PATH, "
            "and run again."
        )
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False)
    found = re.match(r"go(\d+)\.(\d+)", out.stdout.strip())
    if found is None or (int(found.group(1)), int(found.group(2))) < GO_MINIMUM:
        raise ToolchainError(
            f"Go 1.26 or newer is needed to build kube-apiserver {_K8S}, etcd and helm; "
            f"`go env GOVERSION` says {out.stdout.strip() or out.stderr.strip()!r}: upgrade Go."
        )
    return go


def ensure(name: str, progress: Callable[[str], None] | None = None) -> Path:
    """The path of a built program, building it first when this machine has none yet."""
    path = cached_path(name)
    if path.exists():
        return path
    say = progress or _stderr
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building it right now
        if path.exists():
            return path
        _build(TOOLS[name], path, say)
    return path


def ensure_all(names: Iterable[str], progress: Callable[[str], None] | None = None) -> list[Path]:
    return [ensure(name, progress) for name in names]


def _build(tool: Tool, target: Path, say: Callable[[str], None]) -> None:
    go = _go()
    say(
        f"building {tool.name} from {tool.module} {tool.version} (once per machine, "
        f"~{tool.minutes} min on 2 cores) into {target.parent}"
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / tool.name
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly"}
        ldflags = f"-s -w {tool.ldflags}".strip()
        result = subprocess.run(
            [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(out), tool.package],
            cwd=TOOLS_DIR / tool.directory,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not out.exists():
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
            raise ToolchainError(
                f"building {tool.name} from {tool.module} {tool.version} "
                f"(tools/{tool.directory}) failed with exit code {result.returncode}:\n{tail}"
            )
        out.replace(target)  # atomic: a half-written binary is never in the cache
    say(f"built {tool.name} {tool.version} in {time.monotonic() - started:.0f} s")


def _stderr(message: str) -> None:
    print(f"feldera-sandbox: {message}", file=sys.stderr, flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "tools", nargs="*", help=f"What to build (default: all of {', '.join(TOOLS)})."
    )


def main(args: argparse.Namespace) -> int:
    unknown = [name for name in args.tools if name not in TOOLS]
    if unknown:
        _stderr(f"unknown tool(s) {', '.join(unknown)}: choose from {', '.join(TOOLS)}")
        return 2
    try:
        for path in ensure_all(args.tools or TOOLS):
            print(path)
    except ToolchainError as e:
        _stderr(str(e))
        return 1
    return 0
