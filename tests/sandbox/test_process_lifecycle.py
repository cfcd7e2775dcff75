"""Every command that starts processes stops all of them, whatever stops it: SIGTERM (a process
supervisor, `timeout`), SIGINT (Ctrl-C), SIGHUP (a closed terminal), or its own death by SIGKILL
(its children die with it). Checked on the real processes: no descendant survives and the ports
they listened on are free again."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from feldera_sandbox.processes import wait_for

pytestmark = pytest.mark.e2e


def descendants(pid: int) -> set[int]:
    """Every living process below `pid`."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def listening_ports(pids: set[int]) -> set[int]:
    """TCP ports in LISTEN state owned by these processes (from /proc/net/tcp and their fds)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:  # 0A: LISTEN
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Command:
    argv: list[str]
    ready: str  # a regex of its output once everything it starts is up
    timeout: float


def commands(tmp: Path) -> dict[str, Command]:
    return {
        "controlplane": Command(
            ["controlplane", "--kubeconfig", str(tmp / "kubeconfig")], "control plane ready", 120
        ),
        "emulator": Command(["emulator", "feldera", "--port", "0"], "listening on", 30),
        "demo": Command(
            ["demo", "--keep-running", "--period", "1", "--workdir", str(tmp / "demo")],
            "Still running",
            180,
        ),
        "bench": Command(
            [
                *("bench", "--pipelines", "4", "--connectors", "2", "--period", "1"),
                *("--steady-periods", "50", "--workdir", str(tmp / "bench")),
            ],
            "cold convergence in",
            180,
        ),
    }


@pytest.fixture
def started(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[subprocess.Popen[str]]:
    name = request.param
    command = commands(tmp_path)[name]
    log = tmp_path / f"{name}.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "feldera_operator.cli", *command.argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: re.search(command.ready, log.read_text()) or proc.poll() is not None,
            timeout=command.timeout,
            interval=0.2,
            what=f"{name} ready",
        )
        assert proc.poll() is None, log.read_text()[-3000:]
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


CASES = [
    ("controlplane", signal.SIGTERM),
    ("controlplane", signal.SIGINT),
    ("controlplane", signal.SIGHUP),
    ("controlplane", signal.SIGKILL),
    ("emulator", signal.SIGTERM),
    ("emulator", signal.SIGINT),
    ("emulator", signal.SIGHUP),
    ("demo", signal.SIGTERM),
    ("demo", signal.SIGHUP),
    ("demo", signal.SIGKILL),
    ("bench", signal.SIGTERM),
]


@pytest.mark.parametrize(
    ("started", "signum"),
    [pytest.param(n, s, id=f"{n}-{signal.Signals(s).name}") for n, s in CASES],
    indirect=["started"],
)
@pytest.mark.timeout(300)
def test_a_signal_stops_every_process_the_command_started(
    started: subprocess.Popen[str], signum: int
) -> None:
    below = descendants(started.pid)
    ports = listening_ports(below | {started.pid})
    assert ports, "the command listens somewhere"
    started.send_signal(signum)  # to the command alone, as a supervisor or a terminal does
    started.wait(60)
    wait_for(
        lambda: not [p for p in below if alive(p)],
        timeout=30,
        what="no descendant left",
    )
    wait_for(lambda: all(port_free(p) for p in ports), timeout=10, what=f"ports {ports} free")
    if signum != signal.SIGKILL:
        # A clean stop by signal: the shell's convention, or 0 for the emulator's server.
        assert started.returncode in (0, 128 + signum, -signum), started.returncode
