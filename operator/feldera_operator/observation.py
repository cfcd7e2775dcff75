"""Feldera's JSON and errors → the decision's observations. Pure: no I/O, nothing remembered.

Kept apart from `decision.py` so that the decision never sees Feldera's wire format, and from the
client so that the client stays a thin edge that knows nothing of reasons and conditions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from feldera_operator import decision as d
from feldera_operator.feldera_client import (
    FelderaAuthError,
    FelderaError,
    FelderaForbidden,
    FelderaNotDeployed,
    FelderaNotFound,
    FelderaTLSError,
    FelderaUnreachable,
)


def observed_pipeline(
    pipeline: Mapping[str, Any],
    stats: Mapping[str, Any] | None = None,
    *,
    stats_problem: d.Problem | None = None,
) -> d.ObservedPipeline:
    """One pipeline's status (from `GET /v0/pipelines?selector=status`) and, if read, its stats."""
    inputs: tuple[d.ObservedConnector, ...] | None = None
    outputs: tuple[d.ObservedConnector, ...] | None = None
    outputs_pausable = True
    if stats is not None:
        inputs = tuple(_connector(e) for e in stats.get("inputs") or [] if _named(e))
        raw_outputs = [e for e in stats.get("outputs") or [] if _named(e)]
        outputs = tuple(_connector(e) for e in raw_outputs)
        # Feldera before 0.369 has no `paused` on outputs, and no way to pause them.
        outputs_pausable = all("paused" in e for e in raw_outputs)
    return d.ObservedPipeline(
        deployment_status=str(pipeline.get("deployment_status") or "Unknown"),
        desired_status=str(pipeline.get("deployment_desired_status") or "Unknown"),
        program_status=_str_or_none(pipeline.get("program_status")),
        program_version=_int_or_none(pipeline.get("program_version")),
        program_error=_error_text(pipeline.get("program_error")),
        deployment_error=_error_text(pipeline.get("deployment_error")),
        inputs=inputs,
        outputs=outputs,
        outputs_pausable=outputs_pausable,
        stats_problem=stats_problem,
    )


def after_connector_actions(
    observed: d.ObservedPipeline, applied: Iterable[d.ConnectorAction]
) -> d.ObservedPipeline:
    """What Feldera holds once it answered these connector actions: it sets a connector's flag
    before it answers, so the answer confirms the action as a new `/stats` would (the next pass
    reads `/stats` anyway)."""
    wanted: dict[tuple[str, str, str], bool] = {
        (a.direction, d.canonical_spec_relation(a.relation), a.connector): a.verb == "pause"
        for a in applied
    }

    def updated(
        direction: str, connectors: tuple[d.ObservedConnector, ...] | None
    ) -> tuple[d.ObservedConnector, ...] | None:
        if connectors is None:
            return None
        result = []
        for c in connectors:
            key = (direction, d.canonical_reported_relation(c.relation), c.connector)
            paused = wanted.get(key)
            result.append(c if paused is None else dataclasses.replace(c, paused=paused))
        return tuple(result)

    return dataclasses.replace(
        observed,
        inputs=updated("input", observed.inputs),
        outputs=updated("output", observed.outputs),
    )


def _named(entry: Any) -> bool:
    return isinstance(entry, Mapping) and isinstance(entry.get("endpoint_name"), str)


def _connector(entry: Mapping[str, Any]) -> d.ObservedConnector:
    relation, connector = d.split_endpoint_name(entry["endpoint_name"])
    metrics = entry.get("metrics") if isinstance(entry.get("metrics"), Mapping) else {}
    health = entry.get("health")
    paused = entry.get("paused")
    return d.ObservedConnector(
        relation=relation,
        connector=connector,
        paused=paused if isinstance(paused, bool) else None,
        end_of_input=_bool_or_none(metrics.get("end_of_input")) if metrics else None,
        health=_str_or_none(health.get("status")) if isinstance(health, Mapping) else None,
        fatal_error=_str_or_none(entry.get("fatal_error")),
    )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool_or_none(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _error_text(value: Any) -> str | None:
    """Feldera's error fields are a string, an error body ({message, ...}) or a compiler report."""
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        if isinstance(value.get("message"), str):
            return str(value["message"])
        # program_error: {sql_compilation: {messages: [...]}, rust_compilation: ..., ...}
        for part in value.values():
            text = _error_text(part)
            if text:
                return text
        return None
    if isinstance(value, list):
        for item in value:
            text = _error_text(item)
            if text:
                return text
    return None


def problem_from_error(error: FelderaError, *, instance: str, url: str = "") -> d.Problem:
    """A failed call → the catalogue reason that says what a person should look at.

    `str(error)` is safe to show: the client keeps keys and headers out of its errors. `url` is
    the instance's base URL (never holding credentials: the client refuses those).
    """
    if isinstance(error, FelderaTLSError):
        return d.Problem(
            d.TLS_ERROR,
            f"TLS to Feldera ({instance}) failed: {error.detail}; check the server's certificate "
            "and spec.caSecretRef",
        )
    if error.status is not None and 300 <= error.status <= 399:
        return d.Problem(
            d.INVALID_URL,
            f"{_request(error, url)} answered {error.status}, {error.message}: set the URL to "
            "where Feldera's API answers (a redirect is never followed: the API key would go "
            "with it)",
        )
    if isinstance(error, FelderaNotFound) and error.error_code is None:
        # Feldera names every 404 of its own (UnknownPipelineName...); one without its error
        # body comes from something else at that address.
        return d.Problem(
            d.INVALID_URL,
            f"{_request(error, url)} answered 404: is the URL Feldera's API root?",
        )
    if isinstance(error, FelderaUnreachable):
        what = "timed out" if error.timeout else "unreachable"
        return d.Problem(d.FELDERA_UNREACHABLE, f"Feldera ({instance}) {what}: {error}")
    if isinstance(error, FelderaAuthError):
        return d.Problem(
            d.CREDENTIALS_REJECTED,
            f"Feldera ({instance}) rejected the API key (401); check the API key Secret: {error}",
        )
    if isinstance(error, FelderaForbidden):
        return d.Problem(
            d.PERMISSION_DENIED,
            f"the API key lacks the role for this call (403; actions need a write key): {error}",
        )
    if isinstance(error, FelderaNotFound) and error.is_pipeline:
        return d.Problem(d.PIPELINE_NOT_FOUND, f"Feldera ({instance}) has no such pipeline")
    if isinstance(error, FelderaNotFound) and error.is_connector:
        # An action on a connector the SQL no longer has (changed since it was observed): the
        # round trip worked and named what is missing.
        which = error.endpoint_name or "the connector"
        return d.Problem(
            d.CONNECTOR_NOT_FOUND, f"Feldera ({instance}) does not know {which}: {error}"
        )
    if isinstance(error, FelderaNotDeployed):
        return d.Problem(d.PIPELINE_NOT_DEPLOYED, str(error))
    return d.Problem(d.FELDERA_ERROR, f"Feldera ({instance}) answered an error: {error}")


def _request(error: FelderaError, url: str) -> str:
    """`GET http://host/prefix/v0/config`: the request as a person would retype it."""
    method, _, path = error.endpoint.partition(" ")
    return f"{method} {url}{path}" if url else error.endpoint
