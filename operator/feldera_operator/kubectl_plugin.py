"""`kubectl feldera`: a kubectl plugin for the people who run pipelines.

    kubectl feldera status PIPELINE
    kubectl feldera pause  PIPELINE [TABLE.CONNECTOR] [--force-conflicts]
    kubectl feldera resume PIPELINE [TABLE.CONNECTOR] [--force-conflicts]
    kubectl feldera approve PIPELINE [--force-conflicts]

Installed with the package as the console script `kubectl-feldera`, which kubectl finds on PATH.
Every change is a server-side apply of just the fields it sets, under its own field manager
(`kubectl-feldera`): managedFields then say who paused what, GitOps tools see it as someone
else's change, and a field another manager owns is a conflict that the user must choose to
override (`--force-conflicts`), as with `kubectl apply --server-side`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

import kubernetes
from kubernetes.client.exceptions import ApiException

from feldera_operator.models import GROUP, VERSION, FelderaPipeline

FIELD_MANAGER = "kubectl-feldera"
APPLY_PATCH = "application/apply-patch+yaml"
PLURAL = "felderapipelines"


class PluginError(Exception):
    """A failure to report to the user as it is (no traceback), exit status 1."""


# ----------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    # kubectl passes a plugin every argument after its name, so the connection flags come after
    # the verb as often as before it: accept them in both places.
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    connection.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG)")
    connection.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser = argparse.ArgumentParser(
        prog="kubectl feldera",
        description="Look at and change FelderaPipelines (feldera.dev).",
        parents=[connection],
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    later = argparse.ArgumentParser(add_help=False)
    for action in connection._actions:
        later.add_argument(*action.option_strings, default=argparse.SUPPRESS, help=action.help)
    force = argparse.ArgumentParser(add_help=False)
    force.add_argument(
        "--force-conflicts",
        action="store_true",
        help="take the field over from the manager that set it (as kubectl apply --server-side)",
    )

    status = verbs.add_parser(
        "status", parents=[later], help="the pipeline's state, conditions and connectors"
    )
    status.add_argument("pipeline", help="FelderaPipeline name")
    for verb, doing in (("pause", "Pause"), ("resume", "Resume")):
        sub = verbs.add_parser(
            verb,
            parents=[later, force],
            help=f"{doing} the pipeline, or one connector of it (spec.paused)",
        )
        sub.add_argument("pipeline", help="FelderaPipeline name")
        sub.add_argument(
            "connector",
            nargs="?",
            metavar="TABLE.CONNECTOR",
            help="an input (TABLE.CONNECTOR) or output (VIEW.CONNECTOR) connector; "
            "without it, the pipeline",
        )
    approve = verbs.add_parser(
        "approve",
        parents=[later, force],
        help="approve the pending program change (spec.bootstrap.approve = its hash)",
    )
    approve.add_argument("pipeline", help="FelderaPipeline name")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        api, namespace = connect(args.kubeconfig, args.context, args.namespace)
        plugin = Plugin(api, namespace, sys.stdout)
        if args.verb == "status":
            plugin.status(args.pipeline)
        elif args.verb in ("pause", "resume"):
            plugin.set_paused(
                args.pipeline, args.connector, args.verb == "pause", args.force_conflicts
            )
        else:
            plugin.approve(args.pipeline, args.force_conflicts)
    except PluginError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def connect(
    kubeconfig: str | None, context: str | None, namespace: str | None
) -> tuple[kubernetes.client.CustomObjectsApi, str]:
    """A client for the kubeconfig and context kubectl would use, and the namespace: the flag's,
    else the context's, else `default`."""
    try:
        client = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context
        )
        if namespace is None:
            contexts, current = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                kubeconfig
            )
            chosen = (
                next((c for c in contexts if c["name"] == context), current) if context else current
            )
            namespace = (chosen or {}).get("context", {}).get("namespace") or "default"
    except (kubernetes.config.ConfigException, OSError) as e:
        raise PluginError(f"cannot load the kubeconfig: {e}") from None
    return kubernetes.client.CustomObjectsApi(client), namespace


# ----------------------------------------------------------------------- the verbs


class Plugin:
    def __init__(
        self, api: kubernetes.client.CustomObjectsApi, namespace: str, out: TextIO
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.out = out

    def _call(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return call(GROUP, VERSION, self.namespace, PLURAL, *args, **kwargs)
        except ApiException as e:
            raise PluginError(describe_api_error(what, e)) from None

    def get(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            f"FelderaPipeline {self.namespace}/{name}",
            self.api.get_namespaced_custom_object,
            name,
        )
        return result

    def apply(
        self, obj: Mapping[str, Any], change: Mapping[str, Any], force: bool
    ) -> dict[str, Any]:
        """Server-side apply of `change` to the spec under the plugin's field manager. An apply
        states the manager's whole intent: a field it applied before and leaves out now would be
        removed. So the fields the plugin already owns go in too, with their current values."""
        name = obj["metadata"]["name"]
        owned = own_fields(obj, FIELD_MANAGER)
        spec = merge_spec(project(owned.get("f:spec") or {}, obj.get("spec") or {}), change)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": FelderaPipeline.KIND,
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }
        result: dict[str, Any] = self._call(
            f"FelderaPipeline {self.namespace}/{name}",
            self.api.patch_namespaced_custom_object,
            name,
            body,
            field_manager=FIELD_MANAGER,
            force=force,
            _content_type=APPLY_PATCH,
        )
        return result

    def status(self, name: str) -> None:
        self.out.write(render_status(self.get(name)))

    def set_paused(self, name: str, connector: str | None, paused: bool, force: bool) -> None:
        obj = self.get(name)
        word = "paused" if paused else "running"
        if connector is None:
            self.apply(obj, {"paused": paused}, force)
            target = "the pipeline"
        else:
            direction, relation, conn = find_connector(obj, connector)
            key = "table" if direction == "inputs" else "view"
            entry = {key: relation, "connector": conn, "paused": paused}
            self.apply(obj, {direction: [entry]}, force)
            target = f"{relation}.{conn}"
        self.out.write(
            f"felderapipeline {self.namespace}/{name}: {target} declared {word} "
            f"(field manager {FIELD_MANAGER}).\n"
            f"Wait for Feldera: kubectl wait --for=condition=Ready -n {self.namespace} "
            f"fpl/{name}\n"
        )

    def approve(self, name: str, force: bool) -> None:
        obj = self.get(name)
        pending = ((obj.get("status") or {}).get("program") or {}).get("pending") or {}
        if not pending.get("hash"):
            raise PluginError(
                f"nothing to approve: FelderaPipeline {self.namespace}/{name} has no pending "
                "program change (status.program.pending is empty)"
            )
        waiting = pending.get("waitingFor")
        if waiting not in (None, "Approval"):
            raise PluginError(
                f"nothing to approve: the pending program change {pending['hash']} waits for "
                f"{waiting}, not for an approval"
            )
        self.apply(obj, {"bootstrap": {"approve": pending["hash"]}}, force)
        self.out.write(
            f"felderapipeline {self.namespace}/{name}: approved {pending['hash']} "
            f"(spec.bootstrap.approve, field manager {FIELD_MANAGER}).\n"
        )


# ----------------------------------------------------------------------- pure helpers

# The keys of the spec's list-maps (x-kubernetes-list-map-keys in the CRD).
LIST_KEYS = {"inputs": ("table", "connector"), "outputs": ("view", "connector")}


def own_fields(obj: Mapping[str, Any], manager: str) -> dict[str, Any]:
    """The fieldsV1 set `manager` holds through Apply operations."""
    fields: dict[str, Any] = {}
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            fields.update(entry.get("fieldsV1") or {})
    return fields


def project(fields: Mapping[str, Any], value: Any) -> Any:
    """The part of `value` that a fieldsV1 set covers: `f:name` is a field, `k:{...}` the
    element of a list-map with those keys."""
    if isinstance(value, list):
        out = []
        for key, sub in fields.items():
            if not key.startswith("k:"):
                continue
            wanted = json.loads(key[2:])
            for element in value:
                if all(element.get(k) == v for k, v in wanted.items()):
                    out.append({**wanted, **project(sub, element)})
        return out
    if isinstance(value, Mapping):
        projected = {}
        for key, sub in fields.items():
            if key.startswith("f:") and key[2:] in value:
                field = key[2:]
                projected[field] = project(sub, value[field]) if sub else value[field]
        return projected
    return value


def merge_spec(base: Mapping[str, Any], change: Mapping[str, Any]) -> dict[str, Any]:
    """`change` over `base`: objects merged field by field, list-maps entry by entry."""
    merged = dict(base)
    for key, value in change.items():
        if key in LIST_KEYS and isinstance(value, list):
            keys = LIST_KEYS[key]
            entries = {tuple(e.get(k) for k in keys): dict(e) for e in merged.get(key) or []}
            for e in value:
                ident = tuple(e.get(k) for k in keys)
                entries[ident] = {**entries.get(ident, {}), **e}
            merged[key] = list(entries.values())
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_spec(merged[key], value)
        else:
            merged[key] = value
    return merged


def describe_api_error(what: str, error: ApiException) -> str:
    """The API server's answer in words, naming the managers a conflict is with."""
    try:
        body = json.loads(error.body or "{}")
    except ValueError:
        body = {}
    if error.status == 404:
        return f"{what} not found"
    if error.status == 409 and body.get("reason") == "Conflict":
        causes = (body.get("details") or {}).get("causes") or []
        fields = ", ".join(f"{c.get('field')} ({c.get('message')})" for c in causes)
        detail = fields or body.get("message")
        return (
            f"{what}: another field manager set what this changes: {detail}. "
            "Rerun with --force-conflicts to take it over (a GitOps tool that owns it will set "
            "it back: change Git instead)."
        )
    return f"{what}: {body.get('message') or error.reason} (HTTP {error.status})"


def connectors(obj: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(direction, table or view, connector) of every connector the spec declares or the status
    reports, in that order, without repeats."""
    seen: list[tuple[str, str, str]] = []
    for part in ("spec", "status"):
        for direction, key in (("inputs", "table"), ("outputs", "view")):
            for entry in (obj.get(part) or {}).get(direction) or []:
                found = (direction, str(entry.get(key)), str(entry.get("connector")))
                if found not in seen:
                    seen.append(found)
    return seen


def find_connector(obj: Mapping[str, Any], name: str) -> tuple[str, str, str]:
    """The connector `name` (TABLE.CONNECTOR or VIEW.CONNECTOR) designates. Unquoted SQL names
    are case-insensitive, so `Orders.live` is `orders.live`."""
    known = connectors(obj)
    exact = [c for c in known if f"{c[1]}.{c[2]}" == name]
    loose = [c for c in known if f"{c[1]}.{c[2]}".lower() == name.lower() and '"' not in c[1]]
    for matches in (exact, loose):
        if len(matches) == 1:
            return matches[0]
    listed = ", ".join(f"{r}.{c}" for _, r, c in known) or "none"
    raise PluginError(
        f"no connector {name!r} in FelderaPipeline {obj['metadata']['name']} "
        f"(declared or reported: {listed})"
    )


def condition_rows(obj: Mapping[str, Any]) -> list[list[str]]:
    return [
        [
            str(c.get("type", "")),
            str(c.get("status", "")),
            str(c.get("reason", "")),
            str(c.get("message", "")),
        ]
        for c in (obj.get("status") or {}).get("conditions") or []
    ]


def connector_rows(obj: Mapping[str, Any]) -> list[list[str]]:
    status = obj.get("status") or {}
    rows = []
    for direction, key, io in (("inputs", "table", "in"), ("outputs", "view", "out")):
        for entry in status.get(direction) or []:
            desired = entry.get("desiredPaused")
            rows.append(
                [
                    io,
                    str(entry.get(key, "")),
                    str(entry.get("connector", "")),
                    "yes" if entry.get("declared") else "no",
                    "-" if desired is None else "paused" if desired else "running",
                    str(entry.get("state", "")),
                    "yes" if entry.get("active") else "no",
                    str(entry.get("reason") or ""),
                ]
            )
    return rows


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns as kubectl prints them: left-aligned, three spaces apart."""
    rows = [list(header), *rows]
    if len(rows) == 1:
        return "(none)\n"
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "".join(
        "   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() + "\n"
        for r in rows
    )


def render_status(obj: Mapping[str, Any]) -> str:
    metadata, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    generation, observed = metadata.get("generation"), status.get("observedGeneration")
    name = metadata["name"]
    in_feldera = status.get("pipelineName") or spec.get("pipelineName") or name
    declared = "stopped" if spec.get("stopped") else "paused" if spec.get("paused") else "running"
    lines = [
        f"FelderaPipeline {metadata.get('namespace')}/{name} (Feldera pipeline {in_feldera})",
        f"Declared: {declared}"
        f"   State: {status.get('state') or '-'} (desired {status.get('desiredState') or '-'})"
        f"   Program: {status.get('programStatus') or '-'}"
        f"   Connectors: {status.get('connectors') or '-'}",
    ]
    if not status:
        lines.append("No status yet: the operator has not observed this pipeline.")
    elif observed != generation:
        lines.append(f"Stale: the status describes generation {observed}, the spec {generation}.")
    pending = (status.get("program") or {}).get("pending") or {}
    if pending.get("hash"):
        lines.append(
            f"Pending program {pending['hash']}, waiting for {pending.get('waitingFor') or '-'}"
            + (
                f": kubectl feldera approve {name}"
                if pending.get("waitingFor") == "Approval"
                else ""
            )
        )
    out = "\n".join(lines) + "\n\nConditions:\n"
    out += table(["TYPE", "STATUS", "REASON", "MESSAGE"], condition_rows(obj))
    out += "\nConnectors:\n"
    out += table(
        ["IO", "TABLE/VIEW", "CONNECTOR", "DECLARED", "DESIRED", "STATE", "ACTIVE", "REASON"],
        connector_rows(obj),
    )
    return out


if __name__ == "__main__":
    sys.exit(main())
