"""The image's contents, proven without a Docker engine: the wheel built from this checkout,
installed alone (no extras) into a fresh virtual environment as the Dockerfile installs it, holds
the operator and nothing of the sandbox, and that operator converges a pipeline on the real
control plane with the chart's identity."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from feldera_sandbox.sandbox import PROJECT_ROOT

from .conftest import E2E, operator_defaults, start_sandbox, unique
from .test_operator import standard

pytestmark = pytest.mark.e2e


def run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, cwd=cwd, timeout=600
    )
    assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def image_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the wheel alone, as the image's `pip install *.whl`."""
    tmp = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp / "dist", PROJECT_ROOT)
    (wheel,) = (tmp / "dist").glob("feldera_operator-*.whl")
    venv.create(tmp / "venv", with_pip=True)
    run(tmp / "venv" / "bin" / "pip", "install", "--quiet", wheel)
    return tmp / "venv"


def test_the_wheel_holds_the_operator_and_nothing_of_the_sandbox(image_env: Path) -> None:
    python = image_env / "bin" / "python"
    listing = run(python, "-m", "pip", "show", "-f", "feldera-operator").stdout
    assert "feldera_operator/reconciler.py" in listing
    assert "feldera_sandbox" not in listing
    missing = subprocess.run(
        [python, "-c", "import feldera_sandbox"], capture_output=True, text=True, check=False
    )
    assert "No module named 'feldera_sandbox'" in missing.stderr
    # No sandbox extra: none of its dependencies came along.
    for module in ("pykube", "cryptography", "kubectl"):
        absent = subprocess.run([python, "-c", f"import {module}"], capture_output=True)
        assert absent.returncode != 0, module
    usage = run(image_env / "bin" / "feldera-operator", "--help").stdout
    assert "{run,crds}" in usage


def test_the_wheel_alone_runs_the_operator_end_to_end(image_env: Path, tmp_path: Path) -> None:
    sb = start_sandbox(tmp_path, examples=False, operator=False)
    try:
        e2e = E2E(sb)
        sb.start_operator(*operator_defaults(sb), cli=[str(image_env / "bin" / "feldera-operator")])
        name = unique("wheel")
        e2e.create_pipeline(name)
        e2e.apply(standard(name))
        e2e.wait_ready(name)
        assert e2e.flags(name)["orders.live"] is True
    finally:
        sb.stop()
