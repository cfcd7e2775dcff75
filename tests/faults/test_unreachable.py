"""Feldera not there when the operator starts: connection refused on a port where nothing listens.

The operator says so (`Synced=False`, `FelderaUnreachable`), retries the instance after 1 s, 2 s,
4 s ... capped at the period, and converges once Feldera comes up on that port. The spacing of
the attempts is read from the operator's own request counter (`/metrics`, code "none": no
response), sampled far faster than the attempts come.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from e2e.conftest import SQL
from e2e.test_operator import standard

from .conftest import (
    Faults,
    cond_message,
    cond_status,
    finish,
    free_port,
    start_fault_sandbox,
    start_feldera_emulator,
)

pytestmark = pytest.mark.faults

PERIOD = 4.0  # long enough for the backoff to double twice before the cap
NAME = "early"
ATTEMPT = re.compile(
    r'^feldera_operator_feldera_requests_total\{(?=[^}]*endpoint="GET /v0/config")'
    r'(?=[^}]*code="none")[^}]*\} (\S+)$',
    re.M,
)


class AttemptClock(threading.Thread):
    """Samples the operator's count of failed attempts every 20 ms from before it starts, and
    notes when each attempt happened."""

    def __init__(self, metrics_port: int) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.times: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        seen = 0
        while not self.done.wait(0.02):
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    match = ATTEMPT.search(response.read().decode())
            except OSError:
                continue  # not serving yet
            now = int(float(match.group(1))) if match else 0
            self.times.extend([time.monotonic()] * (now - seen))
            seen = now


@pytest.fixture(scope="module")
def early(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Faults, int, AttemptClock]]:
    port, metrics_port = free_port(), free_port()
    clock = AttemptClock(metrics_port)
    clock.start()
    sb = start_fault_sandbox(
        tmp_path_factory.mktemp("unreachable"),
        "--period",
        str(PERIOD),
        "--metrics-port",
        str(metrics_port),
        start_feldera=False,
        default_url=f"http://127.0.0.1:{port}",
        manifests=[standard(NAME)],
    )
    yield Faults(sb), port, clock
    clock.done.set()
    finish(sb)


def test_unreachable_at_start_backs_off_exponentially_and_converges_when_feldera_comes_up(
    early: tuple[Faults, int, AttemptClock],
) -> None:
    f, port, clock = early

    obj = f.wait_reason(NAME, "FelderaUnreachable", timeout=15)
    assert cond_status(obj, "Synced") == "False" and cond_status(obj, "Ready") == "False"
    assert f"127.0.0.1:{port}" in cond_message(obj, "Synced")
    assert "unreachable" in cond_message(obj, "Synced")

    f.wait(lambda: len(clock.times) >= 5, "five attempts", timeout=4 * PERIOD + 10)
    times = clock.times[:5]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    print("seconds between attempts:", [round(g, 2) for g in gaps])
    for gap, expected in zip(gaps, (1.0, 2.0, 4.0, PERIOD), strict=True):
        assert expected - 0.1 <= gap <= expected + 1.0, gaps

    start_feldera_emulator(f.sb, port=port)
    f.create_pipeline(NAME, SQL)
    started = time.monotonic()
    f.wait_ready(NAME, timeout=PERIOD + 10)
    assert time.monotonic() - started < PERIOD + 3  # the next attempt, not a restart
    assert f.pipeline(NAME)["deployment_status"] == "Running"
    assert f.flags(NAME)["orders.live"] is True
    f.assert_operator_healthy()
    # The log says it once when it starts and once when it ends, not at every retry.
    log = f.operator_log()
    assert log.count("default instance: FelderaUnreachable: Feldera (default instance)") == 1, log
    assert log.count("default instance: Feldera answers again") == 1, log
