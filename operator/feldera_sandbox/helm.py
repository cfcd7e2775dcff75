"""The real `helm`, built from its Go module (`toolchain`), run against the chart in helm/."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from feldera_sandbox import toolchain

CHART_DIR = toolchain.PROJECT_ROOT / "helm" / "feldera-operator"


class HelmError(RuntimeError):
    pass


def helm(
    *args: str,
    kubeconfig: Path | None = None,
    home: Path | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run helm. Its config, cache and data live under `home` (a temporary directory by
    default), never in the user's own ~/.config/helm."""
    binary = toolchain.ensure("helm")
    with tempfile.TemporaryDirectory(prefix="helm-home-") as scratch:
        base = home or Path(scratch)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBE"))},
            "HELM_CONFIG_HOME": str(base / "config"),
            "HELM_CACHE_HOME": str(base / "cache"),
            "HELM_DATA_HOME": str(base / "data"),
        }
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        result = subprocess.run(
            [str(binary), *args], capture_output=True, text=True, env=env, timeout=timeout
        )
    if check and result.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def values_file(values: Mapping[str, Any], directory: Path) -> Path:
    path = directory / "values.yaml"
    path.write_text(yaml.safe_dump(dict(values)))
    return path


def template(
    values: Mapping[str, Any],
    *,
    release: str,
    namespace: str,
    chart: Path = CHART_DIR,
    extra: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The chart's objects, exactly as `helm template RELEASE CHART -n NAMESPACE -f values`."""
    with tempfile.TemporaryDirectory(prefix="helm-values-") as tmp:
        result = helm(
            "template",
            release,
            str(chart),
            "--namespace",
            namespace,
            "--values",
            str(values_file(values, Path(tmp))),
            *extra,
        )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
