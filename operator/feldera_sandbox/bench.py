"""`feldera-operator bench`: reaction time, API load, CPU and memory of the real operator at scale.

Runs `feldera-operator run` (kopf) against a real kube-apiserver and I Feldera emulators (one
process serving I independent emulators on I ports, `sandbox.Sandbox.start_felderas`), with the
chart's ServiceAccount and RBAC. P pipelines of C input connectors each are spread over I
FelderaInstances (pipeline i on instance i mod I), each instance with its API-key Secret labelled
`feldera.dev/credentials: "true"`. With `--shards S`, instances (and so their pipelines) are
labelled into S shards and S operators run, each with `--selector` of its shard. It measures, in
this order:

1. cold convergence: every resource and pipeline present, Feldera out of step (pipelines stopped,
   a third of the connectors' flags differing from the specs); with `--programs`, each resource
   declares its SQL (`spec.program.sql`) and no pipeline exists in Feldera: the operator creates,
   compiles and starts each one from its resource; the operators are started and the
   clock runs until every FelderaPipeline is Ready for its generation (one list call per poll);
   the Kubernetes writes that took, per pipeline;
2. the steady state over whole observation passes, exactly: each emulator marks the counts at
   every status list (`list_marks`), so the calls between an instance's k-th and (k+N)-th list
   are N whole passes; Feldera calls per pass, action calls and Kubernetes writes (both 0), the
   operator's CPU;
3. reaction time: a burst of random connector `paused` flips sent as JSON patches to the
   Kubernetes API; each flip's latency is from just before its patch is sent to the arrival of the
   matching connector action at its emulator (`GET /_emulator/actions`; both timestamps are
   `time.time()` on this machine); the operator's CPU per flip;
4. drift: a sample of connectors paused or started behind the operator's back
   (`POST /_emulator/connector`), each timed to the arrival of the action that corrects it;
5. restart: the operator is restarted on the converged system and must issue no action;
6. memory: the operator process's peak resident set (VmHWM), the larger of both runs.

Throughout, each emulator counts the requests of every second (`per_second`): the highest
one-second rate any instance saw must stay within the operator's `--feldera-rps` budget.

It prints a table, then, as its last line, one machine-readable `BENCH ...` line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from feldera_operator.config import DEFAULT_FELDERA_RPS
from feldera_operator.instance_connection import CREDENTIALS_LABEL
from feldera_operator.models import GROUP, VERSION, FelderaInstance, FelderaPipeline
from feldera_sandbox.processes import Stopped, exit_code, stop_on_signals
from feldera_sandbox.sandbox import Process, Sandbox, http_json, is_ready, wait_for

NAMESPACE = "default"
TABLE = "t"
ROUTE_LIST = "GET /v0/pipelines"
ACTION_ROUTE_PREFIX = "POST "
READ_VERBS = ("get", "list", "watch")
# Authorization questions (the operator's start-up permission check), not stored writes.
NOT_WRITES = ("selfsubjectaccessreviews",)
LOAD_CONCURRENCY = 16
FLIP_CONCURRENCY = 16
API_KEY = "bench-api-key-0123456789abcdef"
SHARD_LABEL = "bench.feldera.dev/shard"

# The issue's targets on a 2-core machine, at 5,000 x 10 over 50 instances and at 1,000 x 10
# over 10.
TARGET_FLIP_P99_MS = 500.0
TARGET_COLD_CONVERGE_S = 30.0
TARGET_RSS_MB = 200.0
TARGET_STEADY_CPU_PCT = 5.0
TARGET_CPU_MS_PER_FLIP = 3.0
TARGET_COLD_WRITES_PER_PIPELINE = 3.0


@dataclass(frozen=True)
class BenchConfig:
    pipelines: int = 1000
    connectors: int = 10
    instances: int = 1
    shards: int = 1
    period: float = 10.0
    feldera_rps: float | None = None  # the operator's --feldera-rps; None: its default
    steady_periods: int = 3
    flips: int = 200
    flip_rate: float = 0.0  # flips per second; 0: the whole batch at once
    drift_samples: int = 20
    seed: int = 1
    programs: bool = False  # resources declare spec.program; Feldera starts without pipelines
    workdir: Path | None = None
    keep_workdir: bool = False
    operator_args: tuple[str, ...] = ()

    @property
    def budget(self) -> float:
        return self.feldera_rps if self.feldera_rps is not None else DEFAULT_FELDERA_RPS


@dataclass
class BenchResult:
    pipelines: int
    connectors: int  # in all
    deployed: int
    instances: int = 1
    shards: int = 1
    feldera_rps_budget: float = 0.0
    programs: bool = False
    load_s: float = 0.0
    operator_start_s: float = 0.0
    cold_converge_s: float = 0.0
    cold_actions: int = 0
    cold_feldera_calls: int = 0
    cold_k8s_writes: int = 0
    cold_k8s_by_kind: dict[str, int] = field(default_factory=dict)
    cold_events_dropped: int = 0  # not posted: too many in flight (the operator's metric)
    steady_periods: int = 0  # whole observation passes measured, per instance
    steady_pass_s: float = 0.0  # mean time between an instance's status lists
    steady_feldera_calls: dict[str, int] = field(default_factory=dict)  # over all instances
    steady_k8s_calls: dict[str, int] = field(default_factory=dict)
    steady_cpu_percent: float = 0.0  # of a core, every operator together
    steady_max_rps: int = 0  # the highest one-second rate of any instance in the steady window
    flip_latencies_ms: list[float] = field(default_factory=list)
    flips_sent: int = 0
    flip_send_s: float = 0.0
    flip_cpu_s: float = 0.0  # operator CPU from the first patch until every resource was Ready
    flip_window_s: float = 0.0
    drift_latencies_s: list[float] = field(default_factory=list)
    restart_actions: int = 0
    restart_k8s_writes: int = 0
    restart_first_pass_s: float = 0.0
    rss_peak_mb: list[float] = field(default_factory=list)  # VmHWM of each operator run
    rss_steady_mb: float = 0.0
    max_rps: int = 0  # the highest one-second rate any instance saw, whole run
    max_rps_by_phase: dict[str, int] = field(default_factory=dict)
    busiest_cold: str = ""  # the highest second of cold convergence and the seconds around it
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
        return _writes(self.steady_k8s_calls)

    @property
    def steady_k8s_writes_per_period(self) -> float:
        return self.steady_k8s_writes / max(self.steady_periods, 1)

    @property
    def cold_k8s_writes_per_pipeline(self) -> float:
        return self.cold_k8s_writes / max(self.pipelines, 1)

    @property
    def rss_mb(self) -> float:
        return max(self.rss_peak_mb, default=0.0)

    @property
    def operator_cpu_ms_per_flip(self) -> float:
        """CPU of the flip window less the steady state's rate over it, per flip: what flips
        cost beyond the observation that runs anyway."""
        if not self.flips_sent:
            return math.nan
        background = self.steady_cpu_percent / 100 * self.flip_window_s
        return 1000 * max(self.flip_cpu_s - background, 0.0) / self.flips_sent

    def flip_percentile_ms(self, q: float) -> float:
        return percentile(self.flip_latencies_ms, q)

    def drift_percentile_s(self, q: float) -> float:
        return percentile(self.drift_latencies_s, q)


# ---------------------------------------------------------------------------- the workload


def pipeline_name(i: int) -> str:
    return f"bench-{i:05d}"


def instance_name(k: int) -> str:
    return f"bench-fi-{k:03d}"


def instance_of(i: int, instances: int) -> int:
    return i % instances


def shard_of(k: int, shards: int) -> int:
    return k % shards


def program_sql(connectors: int) -> str:
    """One table with `connectors` input connectors, all running as the SQL declares them."""
    entries = [
        {"name": f"c{j}", "transport": {"name": "datagen", "config": {}}} for j in range(connectors)
    ]
    return f"CREATE TABLE {TABLE} (x INT) WITH ('connectors' = '{json.dumps(entries)}');"


def declared_paused(connector: int) -> bool:
    """The spec pauses every third connector: Feldera (all running) starts out of step."""
    return connector % 3 == 0


def _labels(k: int, config: BenchConfig) -> dict[str, str]:
    return {SHARD_LABEL: str(shard_of(k, config.shards))} if config.shards > 1 else {}


def pipeline_manifest(i: int, connectors: int, config: BenchConfig | None = None) -> dict[str, Any]:
    config = config or BenchConfig(connectors=connectors)
    k = instance_of(i, config.instances)
    metadata: dict[str, Any] = {"name": pipeline_name(i), "namespace": NAMESPACE}
    if config.shards > 1:
        metadata["labels"] = _labels(k, config)
    spec: dict[str, Any] = {
        "instanceRef": {"name": instance_name(k)},
        "paused": False,
        "stopped": False,
        "inputs": [
            {"table": TABLE, "connector": f"c{j}", "paused": declared_paused(j)}
            for j in range(connectors)
        ],
    }
    if config.programs:
        spec["program"] = {"sql": program_sql(connectors)}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": FelderaPipeline.KIND,
        "metadata": metadata,
        "spec": spec,
    }


def secret_manifest(k: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"{instance_name(k)}-key",
            "namespace": NAMESPACE,
            "labels": {CREDENTIALS_LABEL: "true"},
        },
        "data": {"apiKey": base64.b64encode(API_KEY.encode()).decode()},
    }


def instance_manifest(k: int, url: str, config: BenchConfig) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": instance_name(k), "namespace": NAMESPACE}
    if config.shards > 1:
        metadata["labels"] = _labels(k, config)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": FelderaInstance.KIND,
        "metadata": metadata,
        "spec": {"url": url, "apiKeySecretRef": {"name": f"{instance_name(k)}-key"}},
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


def _add(total: dict[str, int], more: Mapping[str, int]) -> None:
    for k, v in more.items():
        total[k] = total.get(k, 0) + v


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
    headers: Mapping[str, str] | None = None,
) -> None:
    all_headers = {"Content-Type": content_type, **(headers or {})}
    async with session.request(method, url, data=json.dumps(body), headers=all_headers) as resp:
        if resp.status not in ok:
            text = await resp.text()
            raise RuntimeError(f"{method} {url}: HTTP {resp.status}: {text[:300]}")
        await resp.read()


async def _load(sb: Sandbox, config: BenchConfig) -> None:
    """Create the Feldera pipelines (stopped; none when the resources declare their programs),
    the Secrets, FelderaInstances and FelderaPipelines, in parallel."""
    sql = program_sql(config.connectors)
    urls = sb.feldera_urls
    api = f"{sb.kube_url}/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}"
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with _kube_session(sb) as kube, aiohttp.ClientSession() as session:
        await _bounded(
            (
                _send(
                    session,
                    "PUT",
                    f"{urls[instance_of(i, config.instances)]}/v0/pipelines/{pipeline_name(i)}",
                    {"name": pipeline_name(i), "program_code": sql},
                    headers=auth,
                )
                for i in range(0 if config.programs else config.pipelines)
            ),
            LOAD_CONCURRENCY,
        )
        secrets = f"{sb.kube_url}/api/v1/namespaces/{NAMESPACE}/secrets"
        await _bounded(
            (_send(kube, "POST", secrets, secret_manifest(k)) for k in range(config.instances)),
            LOAD_CONCURRENCY,
        )
        await _bounded(
            (
                _send(kube, "POST", f"{api}/felderainstances", instance_manifest(k, url, config))
                for k, url in enumerate(urls)
            ),
            LOAD_CONCURRENCY,
        )
        await _bounded(
            (
                _send(
                    kube,
                    "POST",
                    f"{api}/felderapipelines",
                    pipeline_manifest(i, config.connectors, config),
                )
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


# ---------------------------------------------------------------------------- the emulators


class Felderas:
    """The I emulators' test hooks, each instance's own and summed."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls

    def _each(self, method: str, path: str, body: Any = None) -> list[Any]:
        return [http_json(url, method, path, body) for url in self.urls]

    def requests(self) -> list[dict[str, Any]]:
        """Each instance's `/_emulator/requests`: counts, per_second, list_marks."""
        return self._each("GET", "/_emulator/requests")

    def counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for r in self.requests():
            _add(total, r["counts"])
        return total

    def marks(self) -> list[list[tuple[float, dict[str, int]]]]:
        """Per instance: (arrival, counts before it) of each status list since the reset."""
        return [[(w, c) for w, c in r["list_marks"]] for r in self.requests()]

    def max_rps(self, since: float = 0.0, until: float = math.inf) -> int:
        """The highest one-second request count of any instance, from second `since` on (to
        `until`)."""
        return max(
            (
                v
                for r in self.requests()
                for sec, v in r["per_second"].items()
                if int(since) <= int(sec) <= until
            ),
            default=0,
        )

    def busiest(self, since: float = 0.0) -> str:
        """The instance and seconds around the highest one-second rate: '40 [31, 50, 50, 89, 12]'
        (a burst after a quiet second is the emulators' process catching up, not a send)."""
        best: tuple[int, int, dict[int, int]] = (-1, 0, {})
        for r in self.requests():
            bins = {int(k): v for k, v in r["per_second"].items() if int(k) >= int(since)}
            for sec, v in bins.items():
                if v > best[0]:
                    best = (v, sec, bins)
        count, sec, bins = best
        around = [bins.get(s, 0) for s in range(sec - 3, sec + 3)]
        return f"{count} {around}"

    def actions(self) -> list[dict[str, Any]]:
        return [a for r in self._each("GET", "/_emulator/actions") for a in r["actions"]]

    def reset(self) -> None:
        self._each("DELETE", "/_emulator/requests")
        self._each("DELETE", "/_emulator/actions")

    def reset_actions(self) -> None:
        self._each("DELETE", "/_emulator/actions")

    def drift(self, k: int, pipeline: str, connector: str, paused: bool) -> None:
        body = {"pipeline": pipeline, "table": TABLE, "connector": connector, "paused": paused}
        http_json(self.urls[k], "POST", "/_emulator/connector", body)


def _lists_after(marks: list[tuple[float, dict[str, int]]], since: float) -> list[Any]:
    return [m for m in marks if m[0] >= since]


def _wait_lists(felderas: Felderas, since: float, lists: int, timeout: float) -> list[list[Any]]:
    """Wait until every instance had `lists` status lists since `since`; their marks."""
    found: list[list[Any]] = []

    def enough() -> bool:
        nonlocal found
        found = [_lists_after(m, since) for m in felderas.marks()]
        return all(len(m) >= lists for m in found)

    wait_for(enough, timeout=timeout, interval=0.5, what=f"{lists} observation passes")
    return found


# ---------------------------------------------------------------------------- observations


def _wait_all_ready(sb: Sandbox, total: int, timeout: float, interval: float = 0.0) -> float:
    """Seconds until every FelderaPipeline is Ready: one list, then a watch from it. (A list of
    every object per poll cost the API server more than the operator's own writes at 5,000.)"""
    started = time.monotonic()
    deadline = started + timeout
    version = f"{GROUP}/{VERSION}"
    while True:  # a relist after a 410 (the watch fell too far behind)
        response = sb.kube.get(version=version, namespace=NAMESPACE, url="felderapipelines")
        response.raise_for_status()
        listing = response.json()
        ready = {o["metadata"]["name"] for o in listing["items"] if is_ready(o)}
        rv = listing["metadata"]["resourceVersion"]
        while len(ready) < total:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(ready)} of {total} FelderaPipelines Ready")
            params = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true"}
            params["timeoutSeconds"] = str(max(1, min(int(left), 60)))
            stream = sb.kube.get(
                version=version,
                namespace=NAMESPACE,
                url="felderapipelines",
                params=params,
                stream=True,
                timeout=left + 5,
            )
            stream.raise_for_status()
            gone = False
            for line in stream.iter_lines():
                if not line:
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    gone = True  # 410: too old a resourceVersion
                    break
                rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                if event.get("type") == "BOOKMARK":
                    continue
                name = obj["metadata"]["name"]
                if event.get("type") != "DELETED" and is_ready(obj):
                    ready.add(name)
                else:
                    ready.discard(name)
                if len(ready) >= total:
                    break
            stream.close()
            if gone:
                break
        else:
            return time.monotonic() - started


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


def _cpu(operators: Iterable[Process]) -> float:
    return sum(_cpu_seconds(p.popen.pid) for p in operators)


# ---------------------------------------------------------------------------- the run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start_operators(
    sb: Sandbox, config: BenchConfig, args: list[str], suffix: str = ""
) -> list[tuple[Process, int]]:
    """The operators (one per shard) and their metrics ports."""
    operators = []
    for shard in range(config.shards):
        selector = ["--selector", f"{SHARD_LABEL}={shard}"] if config.shards > 1 else []
        name = f"operator{suffix}" + (f"-shard{shard}" if config.shards > 1 else "")
        port = _free_port()
        proc = sb.start_operator(*args, *selector, "--metrics-port", str(port), name=name)
        operators.append((proc, port))
    return operators


def _metric(ports: Iterable[int], name: str) -> float:
    """A metric's value summed over every operator and every label set."""
    total = 0.0
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name) and not line.startswith("#"):
                    total += float(line.rsplit(" ", 1)[1])
    return total


def run(config: BenchConfig, progress: Callable[[str], None] | None = None) -> BenchResult:
    say = progress or (lambda _msg: None)
    workdir = config.workdir or Path(tempfile.mkdtemp(prefix="feldera-bench-"))
    sb = Sandbox(workdir)
    result = BenchResult(
        pipelines=config.pipelines,
        connectors=config.pipelines * config.connectors,
        deployed=config.pipelines,
        instances=config.instances,
        shards=config.shards,
        feldera_rps_budget=config.budget,
        programs=config.programs,
    )
    rng = random.Random(config.seed)
    # One list of P objects per poll: sparser for more objects, so polling does not load the
    # API server (shared with the operator) more than the operator does.
    poll = min(max(config.pipelines / 2000, 0.1), 1.0)
    # A pass over an instance needs its calls at the budget (or a period, if more).
    per_instance = math.ceil(config.pipelines / config.instances) + 1
    pass_s = max(config.period, per_instance / config.budget)
    load_start = os.getloadavg()[0]
    try:
        sb.start_kubernetes()
        sb.start_felderas(config.instances, "--api-key", API_KEY)
        felderas = Felderas(sb.feldera_urls)
        sb.install_crds()
        sb.install_operator_identity()
        started = time.monotonic()
        asyncio.run(_load(sb, config))
        result.load_s = time.monotonic() - started
        say(f"loaded {config.pipelines} pipelines on {config.instances} instances")
        operator_args = ["--period", str(config.period), "--log-format", "text"]
        if config.feldera_rps is not None:
            operator_args += ["--feldera-rps", str(config.feldera_rps)]
        operator_args += config.operator_args

        # 1. Cold convergence.
        felderas.reset()
        sb.reset_kube_counts()
        phase_start = time.time()
        started = time.monotonic()
        started_operators = _start_operators(sb, config, operator_args)
        operators = [p for p, _ in started_operators]
        ports = [port for _, port in started_operators]
        result.operator_start_s = time.monotonic() - started
        timeout = 120 + config.pipelines * 0.2 + 2 * pass_s
        _wait_all_ready(sb, config.pipelines, timeout, poll)
        result.cold_converge_s = time.monotonic() - started
        # Events go out on threads of their own: the last may land after the last Ready. Cold
        # convergence's writes are counted, and the steady window starts, once a whole period
        # has passed without one.
        _wait_writes_ended(sb, quiet=max(config.period, 1.0), timeout=timeout)
        result.cold_actions = len(felderas.actions())
        result.cold_feldera_calls = sum(felderas.counts().values())
        cold_kube = sb.kube_counts()
        result.cold_k8s_writes = _writes(cold_kube)
        result.cold_k8s_by_kind = {k: v for k, v in cold_kube.items() if _is_write(k)}
        result.cold_events_dropped = int(_metric(ports, "feldera_operator_events_dropped_total"))
        say(f"cold convergence in {result.cold_converge_s:.1f}s")
        result.max_rps_by_phase["cold"] = felderas.max_rps(phase_start)
        result.busiest_cold = felderas.busiest(phase_start)

        # 2. Steady state: whole passes of every instance, from the first list after a quiet
        # start (the follow-ups of cold convergence are over once every resource is Ready).
        since = time.time()
        kube_before = sb.kube_counts()
        cpu_before, cpu_started = _cpu(operators), time.monotonic()
        marks = _wait_lists(
            felderas, since, config.steady_periods + 1, (config.steady_periods + 2) * pass_s + 60
        )
        result.steady_cpu_percent = (
            100 * (_cpu(operators) - cpu_before) / (time.monotonic() - cpu_started)
        )
        result.steady_k8s_calls = _diff(sb.kube_counts(), kube_before)
        n = config.steady_periods
        for instance_marks in marks:
            first, last = instance_marks[0], instance_marks[n]
            _add(result.steady_feldera_calls, _diff(last[1], first[1]))
            result.steady_pass_s += (last[0] - first[0]) / n / config.instances
        result.steady_periods = n
        window_start = min(m[0][0] for m in marks)
        result.steady_max_rps = felderas.max_rps(since=window_start + 1)
        result.max_rps_by_phase["steady"] = result.steady_max_rps
        result.rss_steady_mb = max(_memory_mb(p.popen.pid, "VmRSS") for p in operators)
        say(f"steady state: {result.steady_feldera_calls_per_period:.1f} Feldera calls per pass")

        # 3. Reaction time to a batch of connector flips.
        flips = _choose_flips(rng, config)
        phase_start = time.time()
        felderas.reset_actions()
        cpu_before, started = _cpu(operators), time.monotonic()
        sent = asyncio.run(_send_flips(sb, flips, config.flip_rate))
        result.flip_send_s = time.monotonic() - started
        result.flips_sent = len(sent)
        result.flip_latencies_ms = _flip_latencies(felderas, sent, timeout=3 * pass_s + 60)
        _wait_all_ready(sb, config.pipelines, timeout, poll)
        result.flip_cpu_s = _cpu(operators) - cpu_before
        result.flip_window_s = time.monotonic() - started
        say(f"{len(sent)} flips: p99 {result.flip_percentile_ms(99):.0f} ms")
        result.max_rps_by_phase["flips"] = felderas.max_rps(phase_start)
        phase_start = time.time()

        # 4. Drift behind the operator's back, on pipelines no flip touched.
        flipped = {f.pipeline for f in flips}
        felderas.reset_actions()
        result.drift_latencies_s = _drift(felderas, rng, config, flipped, 3 * pass_s + 60)
        say(f"drift: p99 {result.drift_percentile_s(99):.1f} s")
        result.max_rps_by_phase["drift"] = felderas.max_rps(phase_start)
        _wait_all_ready(sb, config.pipelines, timeout, poll)
        result.rss_peak_mb.append(max(_memory_mb(p.popen.pid, "VmHWM") for p in operators))
        result.max_rps = felderas.max_rps()

        # 5. Restart on the converged system.
        for proc in operators:
            proc.stop(timeout=30)
        felderas.reset()
        sb.reset_kube_counts()
        since = time.time()
        started = time.monotonic()
        operators = [p for p, _ in _start_operators(sb, config, operator_args, "-restarted")]
        marks = _wait_lists(felderas, since, 2, 3 * pass_s + 60)
        result.restart_first_pass_s = max(m[1][0] for m in marks) - since
        _wait_lists(felderas, since, 3, 4 * pass_s + 60)
        result.restart_actions = len(felderas.actions())
        result.restart_k8s_writes = _writes(sb.kube_counts())
        result.rss_peak_mb.append(max(_memory_mb(p.popen.pid, "VmHWM") for p in operators))
        result.max_rps_by_phase["restart"] = felderas.max_rps()
        result.max_rps = max(result.max_rps, felderas.max_rps())
        say(f"restart: {result.restart_actions} actions")
        _check_operators_alive(sb.operators)
        result.load_average = (load_start, os.getloadavg()[0])
    finally:
        sb.stop()
        if config.workdir is None and not config.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


def _is_write(count_key: str) -> bool:
    verb, _, resource = count_key.partition(" ")
    return verb not in READ_VERBS and resource not in NOT_WRITES


def _writes(kube_counts: Mapping[str, int]) -> int:
    return sum(v for k, v in kube_counts.items() if _is_write(k))


def _wait_writes_ended(sb: Sandbox, *, quiet: float, timeout: float) -> None:
    """Until `quiet` seconds pass with no Kubernetes write of the operators (the audit log)."""
    last = (_writes(sb.kube_counts()), time.monotonic())

    def ended() -> bool:
        nonlocal last
        writes = _writes(sb.kube_counts())
        if writes != last[0]:
            last = (writes, time.monotonic())
        return time.monotonic() - last[1] >= quiet

    wait_for(ended, timeout=timeout, interval=0.2, what="the operators' writes to end")


def _choose_flips(rng: random.Random, config: BenchConfig) -> list[Flip]:
    """Distinct random connectors, each flipped away from the value its spec holds."""
    total = config.pipelines * config.connectors
    picks = rng.sample(range(total), min(config.flips, total))
    flips = []
    for pick in picks:
        i, j = divmod(pick, config.connectors)
        flips.append(Flip(i, j, not declared_paused(j)))
    return flips


def _flip_latencies(felderas: Felderas, sent: list[Flip], timeout: float) -> list[float]:
    """Milliseconds from each flip's patch to its action's arrival at Feldera."""
    by_key = {f.key: f for f in sent}
    arrived: dict[tuple[str, str, str, str], float] = {}

    def collect() -> bool:
        for a in felderas.actions():
            key = (a["pipeline"], a["relation"], a["connector"], a["action"])
            flip = by_key.get(key)
            if flip is not None and key not in arrived and a["wall"] >= flip.sent:
                arrived[key] = a["wall"]
        return len(arrived) == len(by_key)

    wait_for(collect, timeout=timeout, interval=0.2, what=f"{len(sent)} connector actions")
    return [(arrived[k] - f.sent) * 1000 for k, f in by_key.items()]


def _drift(
    felderas: Felderas,
    rng: random.Random,
    config: BenchConfig,
    exclude: set[int],
    timeout: float,
) -> list[float]:
    """Seconds from each connector changed behind the operator's back to the action that puts it
    back as its spec says: a sample of distinct pipelines, changed all at once."""
    candidates = [i for i in range(config.pipelines) if i not in exclude]
    chosen = rng.sample(candidates, min(config.drift_samples, len(candidates)))
    injected: dict[tuple[str, str, str, str], float] = {}
    for i in chosen:
        j = rng.randrange(config.connectors)
        spec_paused = declared_paused(j)
        correction = "pause" if spec_paused else "start"
        key = (pipeline_name(i), TABLE, f"c{j}", correction)
        injected[key] = time.time()
        felderas.drift(instance_of(i, config.instances), pipeline_name(i), f"c{j}", not spec_paused)
    corrected: dict[tuple[str, str, str, str], float] = {}

    def collect() -> bool:
        for a in felderas.actions():
            key = (a["pipeline"], a["relation"], a["connector"], a["action"])
            if key in injected and key not in corrected and a["wall"] >= injected[key]:
                corrected[key] = a["wall"]
        return len(corrected) == len(injected)

    wait_for(collect, timeout=timeout, interval=0.2, what=f"{len(injected)} drift corrections")
    return [corrected[k] - at for k, at in injected.items()]


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
        "instances": result.instances,
        "shards": result.shards,
        "feldera_rps_budget": _number(result.feldera_rps_budget),
        "programs": int(result.programs),
        "flip_p50_ms": f"{result.flip_percentile_ms(50):.1f}",
        "flip_p99_ms": f"{result.flip_percentile_ms(99):.1f}",
        "cold_converge_s": f"{result.cold_converge_s:.1f}",
        "restart_actions": result.restart_actions,
        "steady_feldera_calls_per_period": _number(result.steady_feldera_calls_per_period),
        "steady_action_calls": result.steady_action_calls,
        "steady_k8s_writes_per_period": _number(result.steady_k8s_writes_per_period),
        "rss_mb": f"{result.rss_mb:.1f}",
        "max_feldera_rps_per_instance": result.max_rps,
        "drift_p99_s": f"{result.drift_percentile_s(99):.1f}",
        "operator_cpu_ms_per_flip": f"{result.operator_cpu_ms_per_flip:.2f}",
        "cold_k8s_writes_per_pipeline": f"{result.cold_k8s_writes_per_pipeline:.2f}",
        "steady_cpu_pct": f"{result.steady_cpu_percent:.1f}",
    }
    return "BENCH " + " ".join(f"{k}={v}" for k, v in fields.items())


def targets(result: BenchResult) -> list[tuple[str, str, str, bool]]:
    """(metric, measured, target, met) for each of the issue's targets."""
    p99 = result.flip_percentile_ms(99)
    per_period = result.steady_feldera_calls_per_period
    calls_target = result.deployed + result.instances
    per_flip = result.operator_cpu_ms_per_flip
    writes = result.cold_k8s_writes_per_pipeline
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
            "steady Feldera calls/pass",
            _number(per_period),
            f"<= {calls_target}",
            per_period <= calls_target,
        ),
        (
            "steady action calls",
            str(result.steady_action_calls),
            "0",
            result.steady_action_calls == 0,
        ),
        ("steady k8s writes", str(result.steady_k8s_writes), "0", result.steady_k8s_writes == 0),
        (
            "steady CPU",
            f"{result.steady_cpu_percent:.1f} %",
            f"< {TARGET_STEADY_CPU_PCT:g} %",
            result.steady_cpu_percent < TARGET_STEADY_CPU_PCT,
        ),
        (
            "operator CPU per flip",
            f"{per_flip:.2f} ms",
            f"<= {TARGET_CPU_MS_PER_FLIP:g} ms",
            per_flip <= TARGET_CPU_MS_PER_FLIP,
        ),
        (
            "cold k8s writes per pipeline",
            f"{writes:.2f}",
            f"<= {TARGET_COLD_WRITES_PER_PIPELINE:g}",
            writes <= TARGET_COLD_WRITES_PER_PIPELINE,
        ),
        (
            "max Feldera rps of an instance",
            str(result.max_rps),
            f"<= {_number(result.feldera_rps_budget)}",
            result.max_rps <= result.feldera_rps_budget,
        ),
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
        (
            "pipelines x connectors / instances",
            f"{config.pipelines} x {config.connectors} / {config.instances}"
            + (f" in {config.shards} shards" if config.shards > 1 else "")
            + (", programs declared" if config.programs else ""),
        ),
        ("period, Feldera budget", f"{config.period:g} s, {config.budget:g} requests/s/instance"),
        ("load (Feldera + Kubernetes)", f"{result.load_s:.1f} s"),
        ("operator start (to its log line)", f"{result.operator_start_s:.1f} s"),
        ("cold convergence", f"{result.cold_converge_s:.1f} s"),
        ("  actions / Feldera calls", f"{result.cold_actions} / {result.cold_feldera_calls}"),
        (
            "  Kubernetes writes",
            f"{result.cold_k8s_writes} ("
            + ", ".join(f"{k}={v}" for k, v in sorted(result.cold_k8s_by_kind.items()))
            + f"); Events dropped: {result.cold_events_dropped}",
        ),
        ("steady passes measured", f"{result.steady_periods} per instance"),
        ("  time per pass", f"{result.steady_pass_s:.1f} s"),
        ("  Feldera calls per pass", _number(result.steady_feldera_calls_per_period)),
        (
            "  Feldera calls by route",
            ", ".join(f"{k}={v}" for k, v in sorted(result.steady_feldera_calls.items())) or "-",
        ),
        ("  highest one-second rate", f"{result.steady_max_rps} requests (an instance)"),
        ("  action calls", str(result.steady_action_calls)),
        (
            "  Kubernetes writes",
            str(result.steady_k8s_writes)
            + "".join(
                f" {k}={v}" for k, v in sorted(result.steady_k8s_calls.items()) if _is_write(k)
            ),
        ),
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
        (
            "  operator CPU (until all Ready)",
            f"{result.flip_cpu_s * 1000:.0f} ms in {result.flip_window_s:.1f} s; "
            f"{result.operator_cpu_ms_per_flip:.2f} ms per flip beyond the steady rate",
        ),
        (
            "drift corrected p50 / p99 / max",
            " / ".join(f"{result.drift_percentile_s(q):.1f}" for q in (50, 99, 100))
            + f" s ({len(result.drift_latencies_s)} connectors)",
        ),
        ("restart: first pass", f"{result.restart_first_pass_s:.1f} s"),
        (
            "  actions / Kubernetes writes",
            f"{result.restart_actions} / {result.restart_k8s_writes}",
        ),
        ("peak RSS (VmHWM) per run", " / ".join(f"{m:.0f} MB" for m in result.rss_peak_mb)),
        (
            "highest one-second rate, whole run",
            f"{result.max_rps} requests (an instance); by phase: "
            + ", ".join(f"{k} {v}" for k, v in result.max_rps_by_phase.items())
            + f"; cold, seconds around its highest: {result.busiest_cold}",
        ),
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
        "--instances",
        type=int,
        default=1,
        help="FelderaInstances (each an emulator of its own) the pipelines spread over "
        "(default 1).",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=1,
        help="Operators, each serving the instances of its shard (--selector) (default 1).",
    )
    parser.add_argument(
        "--period", type=float, default=10.0, help="Operator observation period (default 10 s)."
    )
    parser.add_argument(
        "--feldera-rps",
        type=float,
        default=None,
        help=f"The operator's request budget per instance (default: its own, "
        f"{DEFAULT_FELDERA_RPS:g}).",
    )
    parser.add_argument(
        "--steady-periods",
        type=int,
        default=3,
        help="Observation passes the steady state is measured over (default 3).",
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
    parser.add_argument(
        "--drift-samples",
        type=int,
        default=20,
        help="Connectors changed behind the operator's back, each timed to its correction "
        "(default 20).",
    )
    parser.add_argument("--seed", type=int, default=1, help="Random seed of flips and drift.")
    parser.add_argument(
        "--programs",
        action="store_true",
        help="Each FelderaPipeline declares its SQL (spec.program) and Feldera starts with no "
        "pipeline: the operator creates, compiles and starts them; the steady state shows what a "
        "converged program-managed pipeline costs.",
    )
    parser.add_argument(
        "--workdir", help="Where logs go (default: a temporary directory, removed at the end)."
    )
    parser.add_argument("--check", action="store_true", help="Exit 1 when a target is missed.")


def main(args: argparse.Namespace) -> int:
    if (
        min(args.pipelines, args.connectors, args.steady_periods, args.flips, args.instances) < 1
        or args.shards < 1
        or args.drift_samples < 1
    ):
        raise SystemExit(
            "--pipelines, --connectors, --instances, --shards, --steady-periods, --flips and "
            "--drift-samples must be >= 1"
        )
    if args.shards > args.instances:
        raise SystemExit("--shards must not exceed --instances (a shard is a set of instances)")
    config = BenchConfig(
        pipelines=args.pipelines,
        connectors=args.connectors,
        instances=args.instances,
        shards=args.shards,
        period=args.period,
        feldera_rps=args.feldera_rps,
        steady_periods=args.steady_periods,
        flips=args.flips,
        flip_rate=args.flip_rate,
        drift_samples=args.drift_samples,
        seed=args.seed,
        programs=args.programs,
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
