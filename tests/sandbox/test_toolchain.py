"""The control plane's set-up fails clearly: no Go names what to install, a failed build names the
module and version, a taken port is retried on another, a control plane that does not come up in
time shows its logs' last lines; a built binary is never built twice."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from feldera_sandbox import toolchain
from feldera_sandbox.controlplane import ControlPlane, ControlPlaneError
from feldera_sandbox.toolchain import Tool, ToolchainError


def test_without_go_the_message_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FELDERA_SANDBOX_CACHE", str(tmp_path))  # nothing built there
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ToolchainError) as error:
        toolchain.ensure("etcd", progress=lambda _: None)
    assert "Go 1.26 or newer is needed" in str(error.value)
    assert "https://go.dev/doc/install" in str(error.value)


def test_a_failed_build_names_the_module_and_the_version(tmp_path: Path) -> None:
    broken = Tool(
        "etcd",
        "go.etcd.io/etcd/server/v3",
        "v3.7.3",
        "etcd",
        "go.etcd.io/etcd/server/v3/no/such/package",
        "",
        1,
    )
    with pytest.raises(ToolchainError) as error:
        toolchain._build(broken, tmp_path / "etcd", lambda _: None)
    message = str(error.value)
    assert "go.etcd.io/etcd/server/v3 v3.7.3 (tools/etcd) failed" in message
    assert not (tmp_path / "etcd").exists()  # nothing half-built in the cache


def test_a_built_program_is_not_built_again() -> None:
    said: list[str] = []
    first = toolchain.ensure("etcd", progress=said.append)  # built by `make tools` already
    again = toolchain.ensure("etcd", progress=said.append)
    assert first == again and first.exists()
    assert said == []


def test_a_taken_port_is_tried_again_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([taken.getsockname()[1]])
    # The first port handed to kube-apiserver is one something else already listens on.
    plane = ControlPlane(tmp_path)
    original = plane._launch_apiserver

    def launch(port: int, attempt: int = 0) -> None:
        original(next(ports, port), attempt)

    monkeypatch.setattr(plane, "_launch_apiserver", launch)
    try:
        plane.start()
        assert plane.port != taken.getsockname()[1]
        assert (tmp_path / "kube-apiserver-0.log").exists()  # the attempt that failed
        assert "address already in use" in (tmp_path / "kube-apiserver-0.log").read_text()
    finally:
        plane.stop()
        taken.close()


def test_a_control_plane_not_up_in_time_shows_its_last_log_lines(tmp_path: Path) -> None:
    plane = ControlPlane(tmp_path)
    with pytest.raises(ControlPlaneError) as error:
        plane.start(timeout=0.01)
    assert "not ready after" in str(error.value)
    assert "last lines of" in str(error.value)
    assert not [p for p in plane.processes if p.running]  # nothing left behind
    assert os.listdir(tmp_path)  # its logs stay for whoever reads the error
