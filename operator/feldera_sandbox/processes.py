"""Child processes that never outlive the command that started them.

Every process the sandbox starts (etcd, kube-apiserver, the Feldera emulator, the operator) is a
`Process`: its output goes to a log file that tests and people read, it runs in a process group of
its own (so a stop reaches its children too), and the kernel kills it when the thread that started
it dies (`PR_SET_PDEATHSIG`), so a parent killed with SIGKILL leaves nothing behind.
`stop_on_signals()` turns SIGTERM and SIGHUP into the same clean exit as Ctrl-C, so every command
that starts processes (demo, bench, controlplane, the emulators) stops them whatever stops it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

_PR_SET_PDEATHSIG = 1


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


_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before any fork


def _die_with_parent(parent: int) -> Callable[[], None]:
    """Runs in the child between fork and exec: ask for SIGKILL when the parent goes. (The kernel
    sends it when the *thread* that forked exits: start processes from the main thread.)"""

    def preexec() -> None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class Process:
    """A child process whose output goes to a log file that tests and people can read."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str],
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # closed in stop()
        self.popen = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        regex = re.compile(pattern)

        def check() -> re.Match[str] | bool | None:
            exited = self.popen.poll() is not None
            return regex.search(self.log_text()) or exited

        result = wait_for(check, timeout=timeout, what=f"{self.name}: {pattern}")
        if not isinstance(result, re.Match):
            # Exited before saying it: no point waiting out the deadline.
            raise RuntimeError(
                f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail(60)}"
            )
        return result

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL of the whole group if it does not exit in time."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # anything it left in its group
        self._log.close()

    def kill(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


class Stopped(BaseException):
    """Raised in the main thread when SIGTERM or SIGHUP arrives: unwinds like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise `Stopped` (SIGINT raises KeyboardInterrupt as usual), so `finally`
    blocks stop every child whatever stopped the command. Handlers are restored on exit."""

    stopping = False

    def handler(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return  # already unwinding: let the cleanup finish
        stopping = True
        raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def exit_code(error: BaseException) -> int:
    """The shell's convention for a command ended by a signal: 128 + its number."""
    if isinstance(error, Stopped):
        return 128 + error.signum
    if isinstance(error, KeyboardInterrupt):
        return 128 + signal.SIGINT
    return 1
