"""`feldera-operator bench`: reaction time, API load and memory of the real operator at scale.

Runs `feldera-operator run` (kopf) against a real kube-apiserver and the Feldera emulator as
processes (`sandbox.Sandbox`), with the chart's ServiceAccount and RBAC, and
P pipelines of C input connectors each, and measures, in this order:

1. cold convergence: every resource and pipeline present, Feldera out of step (pipelines stopped,
   a third of the connectors' flags differing from the specs); the operator is started and the
   clock runs until every FelderaPipeline is Ready for its generation (one list call per poll);
2. the steady state over several periods: Feldera calls per period (one status list plus one
   `/stats` per deployed pipeline is the design), action calls and Kubernetes writes (both 0);
3. reaction time: a batch of random connector `paused` flips sent as JSON patches to the
   Kubernetes API; each flip's latency is from just before its patch is sent to the arrival of the
   matching connector action at the Feldera emulator (its action log, `GET /_emulator/actions`;
   both timestamps are `time.time()` on this machine);
4. restart: the operator is restarted on the converged system and must issue no action;
5. memory: the operator process's peak resident set (VmHWM), the larger of both runs.

It prints a table, then, as its last line, one machine-readable `BENCH ...` line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from feldera_operator.models import GROUP, VERSION, FelderaPipeline
from feldera_sandbox.processes import Stopped, exit_code, stop_on_signals
from feldera_sandbox.sandbox import Process, Sandbox, is_ready, wait_for

NAMESPACE = "default"
TABLE = "t"
ROUTE_LIST = "GET /v0/pipelines"
ACTION_ROUTE_PREFIX = "POST "
READ_VERBS = ("get", "list", "watch")
LOAD_CONCURRENCY = 16
FLIP_CONCURRENCY = 16

# The targets on a 2-core machine at 1,000 x 10.
TARGET_FLIP_P99_MS = 1000.0
TARGET_COLD_CONVERGE_S = 60.0
TARGET_RSS_MB = 200.0


@dataclass(frozen=True)
class BenchConfig:
    pipelines: int = 1000
    connectors: int = 10
    period: float = 10.0
    steady_periods: int = 3
    flips: int = 200
    flip_rate: float = 0.0  # flips per second; 0: the whole batch at once
    seed: int = 1
    workdir: Path | None = None
    keep_workdir: bool = False
    operator_args: tuple[str, ...] = ()


@dataclass
class BenchResult:
    pipelines: int
    connectors: int  # in all
    deployed: int
    load_s: float = 0.0
    operator_start_s: float = 0.0
    cold_converge_s: float = 0.0
    cold_actions: int = 0
    cold_feldera_calls: int = 0
    cold_k8s_writes: int = 0
    steady_periods: int = 0
    steady_feldera_calls: dict[str, int] = field(default_factory=dict)
    steady_k8s_calls: dict[str, int] = field(default_factory=dict)
    steady_cpu_percent: float = 0.0
    flip_latencies_ms: list[float] = field(default_factory=list)
    flips_sent: int = 0
    flip_send_s: float = 0.0
    restart_actions: int = 0
    restart_k8s_writes: int = 0
    restart_first_pass_s: float = 0.0
    rss_peak_mb: list[float] = field(default_factory=list)  # VmHWM of each operator run
    rss_steady_mb: float = 0.0
    # The machine's 1-minute load average at the start and at the end: other work on the same
    # cores (the emulators are part of the run; anything else distorts it).
    load_average: tuple[float, float] = (0.0, 0.0)

    @property
    def steady_feldera_calls_per_period(self) -> float:
        return sum(self.steady_feldera_calls.values()) / max(self.steady_periods, 1)

    @property
    def steady_action_calls(self) -> int:
        return sum(v for k, v in self.steady_feldera_calls.items() if _is_action(k))

    @property
    def steady_k8s_writes(self) -> int:
        return sum(v for k, v in self.steady_k8s_calls.items() if k.split()[0] not in READ_VERBS)

    @property
    def steady_k8s_writes_per_period(self) -> float:
        return self.steady_k8s_writes / max(self.steady_periods, 1)

    @property
    def rss_mb(self) -> float:
        return max(self.rss_peak_mb, default=0.0)

    def flip_percentile_ms(self, q: float) -> float:
        return percentile(self.flip_latencies_ms, q)


# ---------------------------------------------------------------------------- the workload


def pipeline_name(i: int) -> str:
    return f"bench-{i:05d}"


def program_sql(connectors: int) -> str:
    """One table with `connectors` input connectors, all running as the SQL declares them."""
    entries = [
        {"name": f"c{j}", "transport": {"name": "datagen", "config": {}}} for j in range(connectors)
    ]
    return f"CREATE TABLE {TABLE} (x INT) WITH ('connectors' = '{json.dumps(entries)}');"


def declared_paused(connector: int) -> bool:
    """The spec pauses every third connector: Feldera (all running) starts out of step."""
    return connector % 3 == 0


def pipeline_manifest(i: int, connectors: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": FelderaPipeline.KIND,
        "metadata": {"name": pipeline_name(i), "namespace": NAMESPACE},
        "spec": {
            "paused": False,
            "stopped": False,
            "inputs": [
                {"table": TABLE, "connector": f"c{j}", "paused": declared_paused(j)}
                for j in range(connectors)
            ],
        },
    }


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN when there are no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _is_action(count_key: str) -> bool:
    return count_key.startswith(ACTION_ROUTE_PREFIX)


def _diff(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    keys = set(after) | set(before)
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in keys if after.get(k, 0) != before.get(k, 0)
    }


# ---------------------------------------------------------------------------- HTTP in bulk


def _kube_session(sb: Sandbox) -> aiohttp.ClientSession:
    """An HTTP session to kube-apiserver as the sandbox's admin (its client certificate)."""
    assert sb.plane is not None, "the benchmark needs the local control plane"
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=sb.plane.ssl_context()))


async def _bounded(jobs: Iterable[Awaitable[None]], limit: int) -> None:
    semaphore = asyncio.Semaphore(limit)

    async def one(job: Awaitable[None]) -> None:
        async with semaphore:
            await job

    await asyncio.gather(*(one(j) for j in jobs))


async def _send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any,
    *,
    content_type: str = "application/json",
    ok: tuple[int, ...] = (200, 201),
) -> None:
    headers = {"Content-Type": content_type}
    async with session.request(method, url, data=json.dumps(body), headers=headers) as resp:
        if resp.status not in ok:
            text = await resp.text()
            raise RuntimeError(f"{method} {url}: HTTP {resp.status}: {text[:300]}")
        await resp.read()


async def _load(sb: Sandbox, config: BenchConfig) -> None:
    """Create the Feldera pipelines (stopped) and the FelderaPipelines, in parallel."""
    sql = program_sql(config.connectors)
    collection = f"{sb.kube_url}/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/felderapipelines"
    async with _kube_session(sb) as kube, aiohttp.ClientSession() as session:
        await _bounded(
            (
                _send(
                    session,
                    "PUT",
                    f"{sb.feldera_url}/v0/pipelines/{pipeline_name(i)}",
                    {"name": pipeline_name(i), "program_code": sql},
                )
                for i in range(config.pipelines)
            ),
            LOAD_CONCURRENCY,
        )
        await _bounded(
            (
                _send(kube, "POST", collection, pipeline_manifest(i, config.connectors))
                for i in range(config.pipelines)
            ),
            LOAD_CONCURRENCY,
        )


@dataclass(frozen=True)
class Flip:
    pipeline: int
    connector: int
    paused: bool  # the new value
    sent: float = 0.0  # time.time() just before the patch went out

    @property
    def action(self) -> str:
        return "pause" if self.paused else "start"

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (pipeline_name(self.pipeline), TABLE, f"c{self.connector}", self.action)


async def _send_flips(sb: Sandbox, flips: list[Flip], rate: float = 0.0) -> list[Flip]:
    """JSON-patch each flip's `paused` field, all at once or `rate` per second; returns the flips
    with their send times."""
    base = f"{sb.kube_url}/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/felderapipelines"
    sent: list[Flip] = []

    async def one(session: aiohttp.ClientSession, flip: Flip, at: float) -> None:
        if at:
            await asyncio.sleep(at - time.monotonic())
        patch = [
            {"op": "replace", "path": f"/spec/inputs/{flip.connector}/paused", "value": flip.paused}
        ]
        stamped = Flip(flip.pipeline, flip.connector, flip.paused, time.time())
        sent.append(stamped)
        await _send(
            session,
            "PATCH",
            f"{base}/{pipeline_name(flip.pipeline)}",
            patch,
            content_type="application/json-patch+json",
        )

    async with _kube_session(sb) as session:
        if rate > 0:
            start = time.monotonic()
            await asyncio.gather(*(one(session, f, start + k / rate) for k, f in enumerate(flips)))
        else:
            await _bounded((one(session, f, 0.0) for f in flips), FLIP_CONCURRENCY)
    return sent


# ---------------------------------------------------------------------------- observations


def _ready_count(sb: Sandbox) -> int:
    return sum(1 for obj in sb.list_objects("felderapipelines", NAMESPACE) if is_ready(obj))


def _wait_all_ready(sb: Sandbox, total: int, timeout: float, interval: float) -> float:
    """Seconds until every FelderaPipeline is Ready, polling one list call at a time."""
    started = time.monotonic()
    wait_for(
        lambda: _ready_count(sb) == total,
        timeout=timeout,
        interval=interval,
        what=f"{total} FelderaPipelines Ready",
    )
    return time.monotonic() - started


def _quiet_counts(sb: Sandbox, gap: float, timeout: float) -> tuple[dict[str, int], dict[str, int]]:
    """Feldera and Kubernetes request counts at a moment between two observation passes: two
    readings `gap` seconds apart agree."""
    deadline = time.monotonic() + timeout
    last = (sb.feldera_counts(), sb.kube_counts())
    while True:
        time.sleep(gap)
        now = (sb.feldera_counts(), sb.kube_counts())
        # The Kubernetes counts include this benchmark's own reads; only Feldera's must be still.
        if now[0] == last[0]:
            return now
        if time.monotonic() > deadline:
            raise TimeoutError("Feldera calls never paused between observation passes")
        last = now


def _wait_passes(
    sb: Sandbox, base: Mapping[str, int], passes: int, period: float, gap: float
) -> tuple[dict[str, int], dict[str, int]]:
    """Counts at the first quiet moment after `passes` more status lists than in `base`."""
    wait_for(
        lambda: sb.feldera_counts().get(ROUTE_LIST, 0) - base.get(ROUTE_LIST, 0) >= passes,
        timeout=passes * period * 3 + 60,
        interval=min(0.1, gap),
        what=f"{passes} observation passes",
    )
    return _quiet_counts(sb, gap, timeout=period * 3 + 60)


def _actions(sb: Sandbox) -> list[dict[str, Any]]:
    actions: list[dict[str, Any]] = sb.feldera("GET", "/_emulator/actions")["actions"]
    return actions


def _proc_status(pid: int) -> dict[str, str]:
    result: dict[str, str] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            result[key] = value.strip()
    return result


def _memory_mb(pid: int, key: str) -> float:
    """VmHWM (peak) or VmRSS (now) of a process, in MB."""
    return int(_proc_status(pid)[key].split()[0]) / 1024


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat; fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- the run


def run(config: BenchConfig, progress: Callable[[str], None] | None = None) -> BenchResult:
    say = progress or (lambda _msg: None)
    workdir = config.workdir or Path(tempfile.mkdtemp(prefix="feldera-bench-"))
    sb = Sandbox(workdir)
    result = BenchResult(
        pipelines=config.pipelines,
        connectors=config.pipelines * config.connectors,
        deployed=config.pipelines,
    )
    rng = random.Random(config.seed)
    gap = min(config.period / 4, 1.0)
    # One list of P objects per poll: sparser for more objects, so polling does not load the
    # Kubernetes emulator (shared with the operator) more than the operator does.
    poll = min(max(config.pipelines / 2000, 0.1), 1.0)
    load_start = os.getloadavg()[0]
    try:
        sb.start_kubernetes()
        sb.start_feldera()
        sb.install_crds()
        sb.install_operator_identity()
        started = time.monotonic()
        asyncio.run(_load(sb, config))
        result.load_s = time.monotonic() - started
        say(f"loaded {config.pipelines} pipelines in {result.load_s:.1f}s")
        operator_args = [
            "--period",
            str(config.period),
            "--log-format",
            "text",
            "--default-url",
            sb.feldera_url,
            *config.operator_args,
        ]

        # 1. Cold convergence.
        sb.feldera("DELETE", "/_emulator/requests")
        sb.feldera("DELETE", "/_emulator/actions")
        sb.reset_kube_counts()
        started = time.monotonic()
        operator = sb.start_operator(*operator_args)
        result.operator_start_s = time.monotonic() - started
        timeout = 120 + config.pipelines * 0.2
        _wait_all_ready(sb, config.pipelines, timeout, poll)
        result.cold_converge_s = time.monotonic() - started
        result.cold_actions = len(_actions(sb))
        result.cold_feldera_calls = sum(sb.feldera_counts().values())
        result.cold_k8s_writes = _writes(sb.kube_counts())
        say(f"cold convergence in {result.cold_converge_s:.1f}s")

        # 2. Steady state: from a quiet moment after one more whole pass, `steady_periods` more.
        base, _ = _quiet_counts(sb, gap, timeout=config.period * 3 + 60)
        base, kube_base = _wait_passes(sb, base, 1, config.period, gap)
        cpu_before, cpu_started = _cpu_seconds(operator.popen.pid), time.monotonic()
        feldera_after, kube_after = _wait_passes(
            sb, base, config.steady_periods, config.period, gap
        )
        result.steady_cpu_percent = (
            100 * (_cpu_seconds(operator.popen.pid) - cpu_before) / (time.monotonic() - cpu_started)
        )
        result.steady_feldera_calls = _diff(feldera_after, base)
        result.steady_periods = result.steady_feldera_calls.get(ROUTE_LIST, 0)
        result.steady_k8s_calls = _diff(kube_after, kube_base)
        result.rss_steady_mb = _memory_mb(operator.popen.pid, "VmRSS")
        say(f"steady state: {result.steady_feldera_calls_per_period:.1f} Feldera calls per period")

        # 3. Reaction time to a batch of connector flips.
        flips = _choose_flips(rng, config)
        sb.feldera("DELETE", "/_emulator/actions")
        started = time.monotonic()
        sent = asyncio.run(_send_flips(sb, flips, config.flip_rate))
        result.flip_send_s = time.monotonic() - started
        result.flips_sent = len(sent)
        result.flip_latencies_ms = _flip_latencies(sb, sent, timeout=config.period * 3 + 60)
        say(f"{len(sent)} flips: p99 {result.flip_percentile_ms(99):.0f} ms")
        _wait_all_ready(sb, config.pipelines, timeout, poll)
        result.rss_peak_mb.append(_memory_mb(operator.popen.pid, "VmHWM"))

        # 4. Restart on the converged system.
        operator.stop(timeout=30)
        sb.feldera("DELETE", "/_emulator/actions")
        sb.feldera("DELETE", "/_emulator/requests")
        sb.reset_kube_counts()
        started = time.monotonic()
        operator = sb.start_operator(*operator_args, name="operator-restarted")
        counts, _ = _wait_passes(sb, {}, 1, config.period, gap)
        result.restart_first_pass_s = time.monotonic() - started
        _, kube_counts = _wait_passes(sb, counts, 1, config.period, gap)
        result.restart_actions = len(_actions(sb))
        result.restart_k8s_writes = _writes(kube_counts)
        result.rss_peak_mb.append(_memory_mb(operator.popen.pid, "VmHWM"))
        say(f"restart: {result.restart_actions} actions")
        _check_operators_alive(sb.operators)
        result.load_average = (load_start, os.getloadavg()[0])
    finally:
        sb.stop()
        if config.workdir is None and not config.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


def _writes(kube_counts: Mapping[str, int]) -> int:
    return sum(v for k, v in kube_counts.items() if k.split()[0] not in READ_VERBS)


def _choose_flips(rng: random.Random, config: BenchConfig) -> list[Flip]:
    """Distinct random connectors, each flipped away from the value its spec holds."""
    total = config.pipelines * config.connectors
    picks = rng.sample(range(total), min(config.flips, total))
    flips = []
    for pick in picks:
        i, j = divmod(pick, config.connectors)
        flips.append(Flip(i, j, not declared_paused(j)))
    return flips


def _flip_latencies(sb: Sandbox, sent: list[Flip], timeout: float) -> list[float]:
    """Milliseconds from each flip's patch to its action's arrival at Feldera."""
    by_key = {f.key: f for f in sent}
    arrived: dict[tuple[str, str, str, str], float] = {}

    def collect() -> bool:
        for a in _actions(sb):
            key = (a["pipeline"], a["relation"], a["connector"], a["action"])
            flip = by_key.get(key)
            if flip is not None and key not in arrived and a["wall"] >= flip.sent:
                arrived[key] = a["wall"]
        return len(arrived) == len(by_key)

    wait_for(collect, timeout=timeout, interval=0.2, what=f"{len(sent)} connector actions")
    return [(arrived[k] - f.sent) * 1000 for k, f in by_key.items()]


def _check_operators_alive(operators: Iterable[Process]) -> None:
    for proc in operators:
        if proc.running and "Traceback" in proc.log_text():
            print(f"note: {proc.name} logged a traceback; see {proc.log_path}", file=sys.stderr)


# ---------------------------------------------------------------------------- reporting


def _number(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def bench_line(result: BenchResult) -> str:
    fields = {
        "pipelines": result.pipelines,
        "connectors": result.connectors,
        "flip_p50_ms": f"{result.flip_percentile_ms(50):.1f}",
        "flip_p99_ms": f"{result.flip_percentile_ms(99):.1f}",
        "cold_converge_s": f"{result.cold_converge_s:.1f}",
        "restart_actions": result.restart_actions,
        "steady_feldera_calls_per_period": _number(result.steady_feldera_calls_per_period),
        "steady_action_calls": result.steady_action_calls,
        "steady_k8s_writes_per_period": _number(result.steady_k8s_writes_per_period),
        "rss_mb": f"{result.rss_mb:.1f}",
    }
    return "BENCH " + " ".join(f"{k}={v}" for k, v in fields.items())


def targets(result: BenchResult) -> list[tuple[str, str, str, bool]]:
    """(metric, measured, target, met) for each of the issue's targets."""
    p99 = result.flip_percentile_ms(99)
    per_period = result.steady_feldera_calls_per_period
    return [
        ("flip p99", f"{p99:.0f} ms", f"< {TARGET_FLIP_P99_MS:.0f} ms", p99 < TARGET_FLIP_P99_MS),
        (
            "cold convergence",
            f"{result.cold_converge_s:.1f} s",
            f"< {TARGET_COLD_CONVERGE_S:.0f} s",
            result.cold_converge_s < TARGET_COLD_CONVERGE_S,
        ),
        ("restart actions", str(result.restart_actions), "0", result.restart_actions == 0),
        (
            "steady Feldera calls/period",
            _number(per_period),
            f"<= {result.deployed + 1}",
            per_period <= result.deployed + 1,
        ),
        (
            "steady action calls",
            str(result.steady_action_calls),
            "0",
            result.steady_action_calls == 0,
        ),
        ("steady k8s writes", str(result.steady_k8s_writes), "0", result.steady_k8s_writes == 0),
        (
            "peak RSS",
            f"{result.rss_mb:.0f} MB",
            f"< {TARGET_RSS_MB:.0f} MB",
            result.rss_mb < TARGET_RSS_MB,
        ),
    ]


def table(result: BenchResult, config: BenchConfig) -> str:
    lat = result.flip_latencies_ms
    rows: list[tuple[str, str]] = [
        ("pipelines x connectors", f"{config.pipelines} x {config.connectors}"),
        ("period", f"{config.period:g} s"),
        ("load (Feldera + Kubernetes)", f"{result.load_s:.1f} s"),
        ("operator start (to its log line)", f"{result.operator_start_s:.1f} s"),
        ("cold convergence", f"{result.cold_converge_s:.1f} s"),
        ("  actions / Feldera calls", f"{result.cold_actions} / {result.cold_feldera_calls}"),
        ("  Kubernetes writes", str(result.cold_k8s_writes)),
        ("steady periods measured", str(result.steady_periods)),
        ("  Feldera calls per period", _number(result.steady_feldera_calls_per_period)),
        (
            "  Feldera calls by route",
            ", ".join(f"{k}={v}" for k, v in sorted(result.steady_feldera_calls.items())) or "-",
        ),
        ("  action calls", str(result.steady_action_calls)),
        ("  Kubernetes writes", str(result.steady_k8s_writes)),
        ("  operator CPU", f"{result.steady_cpu_percent:.1f} % of a core"),
        ("  operator RSS", f"{result.rss_steady_mb:.0f} MB"),
        (
            "flips sent (patches)",
            f"{result.flips_sent} in {result.flip_send_s:.2f} s"
            + (f" (paced at {config.flip_rate:g}/s)" if config.flip_rate > 0 else " (one burst)"),
        ),
        (
            "  latency p50 / p90 / p99 / max",
            " / ".join(f"{percentile(lat, q):.0f}" for q in (50, 90, 99, 100)) + " ms",
        ),
        ("  mean", f"{statistics.fmean(lat):.0f} ms" if lat else "-"),
        ("restart: first pass", f"{result.restart_first_pass_s:.1f} s"),
        (
            "  actions / Kubernetes writes",
            f"{result.restart_actions} / {result.restart_k8s_writes}",
        ),
        ("peak RSS (VmHWM) per run", " / ".join(f"{m:.0f} MB" for m in result.rss_peak_mb)),
        (
            "machine load average start / end",
            " / ".join(f"{x:.1f}" for x in result.load_average) + f" ({os.cpu_count()} CPUs)",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append("")
    lines.append(f"{'target':<{width}}  measured / target")
    for name, measured, target, met in targets(result):
        lines.append(f"{name:<{width}}  {measured} / {target}  {'met' if met else 'MISSED'}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipelines", type=int, default=1000, help="Pipelines (default 1000).")
    parser.add_argument(
        "--connectors", type=int, default=10, help="Input connectors per pipeline (default 10)."
    )
    parser.add_argument(
        "--period", type=float, default=10.0, help="Operator observation period (default 10 s)."
    )
    parser.add_argument(
        "--steady-periods",
        type=int,
        default=3,
        help="Observation periods the steady state is measured over (default 3).",
    )
    parser.add_argument(
        "--flips", type=int, default=200, help="Connector flips in the batch (default 200)."
    )
    parser.add_argument(
        "--flip-rate",
        type=float,
        default=0.0,
        help="Send the flips at this rate per second (default 0: the whole batch at once).",
    )
    parser.add_argument("--seed", type=int, default=1, help="Random seed of the flips.")
    parser.add_argument(
        "--workdir", help="Where logs go (default: a temporary directory, removed at the end)."
    )
    parser.add_argument("--check", action="store_true", help="Exit 1 when a target is missed.")


def main(args: argparse.Namespace) -> int:
    if args.pipelines < 1 or args.connectors < 1 or args.steady_periods < 1 or args.flips < 1:
        raise SystemExit("--pipelines, --connectors, --steady-periods and --flips must be >= 1")
    config = BenchConfig(
        pipelines=args.pipelines,
        connectors=args.connectors,
        period=args.period,
        steady_periods=args.steady_periods,
        flips=args.flips,
        flip_rate=args.flip_rate,
        seed=args.seed,
        workdir=Path(args.workdir) if args.workdir else None,
    )
    try:
        with stop_on_signals():  # SIGTERM/SIGHUP unwind like Ctrl-C: run() stops every process
            result = run(
                config, progress=lambda msg: print(f"... {msg}", file=sys.stderr, flush=True)
            )
    except (Stopped, KeyboardInterrupt) as e:
        print(f"stopped ({e or 'SIGINT'})", file=sys.stderr)
        return exit_code(e)
    print(table(result, config))
    print(bench_line(result), flush=True)
    if args.check and not all(met for *_, met in targets(result)):
        return 1
    return 0
