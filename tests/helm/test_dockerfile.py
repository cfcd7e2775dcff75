"""The Dockerfile parses, pins its base, builds the wheel in one stage and runs it as non-root."""

from __future__ import annotations

import json
import re

from dockerfile_parse import DockerfileParser

from .conftest import ROOT


def parse() -> DockerfileParser:
    return DockerfileParser(str(ROOT / "Dockerfile"))


def test_two_stages_on_a_pinned_python_311_slim() -> None:
    parser = parse()
    images = parser.parent_images
    assert len(images) == 2
    for image in images:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", image), image


def test_builds_the_wheel_then_installs_only_it() -> None:
    runs = [i["value"] for i in parse().structure if i["instruction"] == "RUN"]
    assert any("python -m build --wheel" in r for r in runs)
    installs = [r for r in runs if "pip install" in r and ".whl" in r]
    assert len(installs) == 1
    assert "[" not in installs[0], "no extras (sandbox, test, dev) in the image"


def test_runs_as_uid_65532_with_the_operator_entrypoint() -> None:
    structure = parse().structure
    last_stage = structure[max(i for i, s in enumerate(structure) if s["instruction"] == "FROM") :]
    users = [s["value"] for s in last_stage if s["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] == "65532"
    (entrypoint,) = [s["value"] for s in last_stage if s["instruction"] == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["feldera-operator", "run"]


def test_the_build_context_holds_what_the_build_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    copies = [
        s["value"].split()[:-1]
        for s in parse().structure
        if s["instruction"] == "COPY" and "--from" not in s["value"]
    ]
    assert copies
    for sources in copies:
        for path in sources:
            assert (ROOT / path).exists(), path
    assert "*" in ignore
    for kept in ("pyproject.toml", "README.md", "operator/"):
        assert f"!{kept}" in ignore
