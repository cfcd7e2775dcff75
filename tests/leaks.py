"""Search everything the operator leaves behind for API keys.

A key can leak through a log line (the operator's, or an emulator's echoing what it got), an
exception message (which lands in a log), an Event, a status field (a condition message quoting a
server's answer), or a metric label. `find_leaks()` collects all of them from a Sandbox and looks
for each key: whole, as any fragment long enough to identify it (an error excerpt may cut it), and
base64-encoded (a Secret's `data` dumped somewhere).

What a leak report says never holds the key itself: only which key (by its first characters) and
where it was found.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterable, Iterator, Sequence

from feldera_sandbox.sandbox import Process, Sandbox

FRAGMENT = 16  # characters of a key's secret part that identify it


def key_fragments(key: str) -> set[str]:
    """The strings whose presence means `key` leaked."""
    _, _, secret = key.partition(":")
    secret = secret or key
    fragments = {key}
    if len(secret) <= FRAGMENT:
        fragments.add(secret)
    else:
        fragments.update(secret[i : i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1))
    # base64 of the key at each of the three alignments it can have inside a longer encoded blob;
    # the first and last characters of each depend on the neighbours, so only the middle is kept.
    for shift in range(3):
        encoded = base64.b64encode(key[shift:].encode()).decode()
        fragments.add(encoded[4:-4])
    return fragments


def _masked(key: str) -> str:
    return key[:10] + "…"


def _logs(processes: Iterable[Process]) -> Iterator[tuple[str, str]]:
    for proc in processes:
        if proc.log_path.exists():
            yield f"{proc.name} log ({proc.log_path.name})", proc.log_text()


def _metrics(processes: Iterable[Process]) -> Iterator[tuple[str, str]]:
    """The operators' /metrics, when they serve on a known port and still run."""
    for proc in processes:
        argv = proc.argv
        if not proc.running or "--metrics-port" not in argv:
            continue
        port = argv[len(argv) - argv[::-1].index("--metrics-port")]  # the last one counts
        if port == "0":
            continue
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                yield f"{proc.name} /metrics", r.read().decode(errors="replace")
        except OSError:
            continue


def _kubernetes(sb: Sandbox) -> Iterator[tuple[str, str]]:
    """Every Event, and every FelderaPipeline and FelderaInstance (status included)."""
    for what in ("events", "felderapipelines", "felderainstances"):
        yield f"kubectl get {what} -A", json.dumps(sb.kubectl_json("get", what, "-A"))


def collect(sb: Sandbox, *, live: bool = True) -> list[tuple[str, str]]:
    """(where, text) of everything searchable. `live=False`: the logs only (the sandbox stopped)."""
    found = list(_logs(sb.processes))
    if live:
        found += list(_metrics(sb.operators))
        found += list(_kubernetes(sb))
    return found


def find_leaks(sb: Sandbox, keys: Sequence[str], *, live: bool = True) -> list[str]:
    """One line per (key, place) where a key shows up; empty when nothing leaked."""
    return find_in(collect(sb, live=live), keys)


def find_in(texts: Iterable[tuple[str, str]], keys: Sequence[str]) -> list[str]:
    leaks = []
    by_key = [(key, key_fragments(key)) for key in keys]
    for where, text in texts:
        for key, fragments in by_key:
            if not any(f in text for f in fragments):
                continue
            for lineno, line in enumerate(text.splitlines(), 1):
                if any(f in line for f in fragments):
                    leaks.append(f"key {_masked(key)!r} found in {where}, line {lineno}")
                    break
    return leaks


def assert_no_leaks(sb: Sandbox, keys: Sequence[str], *, live: bool = True) -> None:
    leaks = find_leaks(sb, keys, live=live)
    assert not leaks, "API keys leaked:\n" + "\n".join(leaks)


def tracebacks(processes: Iterable[Process]) -> list[str]:
    """Processes whose log holds a Python traceback (an unhandled or logged exception)."""
    return [p.name for p in processes if "Traceback (most recent call last)" in p.log_text()]
