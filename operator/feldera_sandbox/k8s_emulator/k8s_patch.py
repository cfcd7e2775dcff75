"""Patch semantics and selectors of the Kubernetes API emulator: pure functions on JSON values.

Kept apart from the HTTP server so they can be tested without one and read in one place:
JSON merge patch (RFC 7386), JSON patch (RFC 6902), a strategic merge patch good enough for the
built-in kinds a Helm chart uses, the merge that server-side apply performs, and label / field
selectors.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

JSON = Any
SchemaPath = tuple[str | int, ...]
# Given the schema path of a list inside an object (map keys, 0 for "the items of a list", e.g.
# ("spec", "inputs")), the keys of its entries when it is an `x-kubernetes-list-type: map`.
ListMapKeys = Callable[[SchemaPath], "list[str] | None"]
# Given the same path, its `x-kubernetes-list-type` ("atomic", "set", "map") or None.
ListTypeOf = Callable[[SchemaPath], "str | None"]


class PatchError(Exception):
    """A patch that cannot be applied; `test_failed` marks a failed JSON-patch `test` op."""

    def __init__(self, message: str, *, test_failed: bool = False) -> None:
        super().__init__(message)
        self.test_failed = test_failed


def deep_copy(value: JSON) -> JSON:
    # JSON round trips are several times faster than copy.deepcopy for plain JSON values.
    return json.loads(json.dumps(value))


# --- JSON merge patch ------------------------------------------------------------------------


def merge_patch(target: JSON, patch: JSON) -> JSON:
    """RFC 7386: maps merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- JSON patch ------------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f'JSON pointer "{path}" must start with "/"')
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f'invalid array index "{token}"')
    index = int(token)
    limit = len(container) if allow_end else len(container) - 1
    if index > limit:
        raise PatchError(f"array index {index} out of bounds")
    return index


def _parent(doc: JSON, tokens: list[str]) -> JSON:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f'missing path element "{token}"')
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, allow_end=False)]
        else:
            raise PatchError(f'cannot descend into a scalar at "{token}"')
    return node


def _get(doc: JSON, tokens: list[str]) -> JSON:
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f'missing value at "{last}"')
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, allow_end=False)]
    raise PatchError("cannot index a scalar")


def _remove(doc: JSON, tokens: list[str]) -> JSON:
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f'unable to remove nonexistent key "{last}"')
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, allow_end=False))
    raise PatchError("cannot remove from a scalar")


def _add(doc: JSON, tokens: list[str], value: JSON) -> JSON:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise PatchError("cannot add to a scalar")
    return doc


def json_patch(target: JSON, operations: JSON) -> JSON:
    """RFC 6902 on a copy of `target`; raises PatchError (test_failed for a failed `test`)."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = deep_copy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid JSON patch operation: {json.dumps(op)}")
        kind, tokens = op["op"], _pointer(op["path"])
        if kind == "add":
            doc = _add(doc, tokens, deep_copy(op.get("value")))
        elif kind == "remove":
            if not tokens:
                raise PatchError("cannot remove the whole document")
            _remove(doc, tokens)
        elif kind == "replace":
            if not tokens:
                doc = deep_copy(op.get("value"))
                continue
            _get(doc, tokens)  # must exist
            parent = _parent(doc, tokens)
            if isinstance(parent, dict):
                parent[tokens[-1]] = deep_copy(op.get("value"))
            else:
                parent[_index(parent, tokens[-1], allow_end=False)] = deep_copy(op.get("value"))
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = _get(doc, source)
            if kind == "move":
                _remove(doc, source)
            doc = _add(doc, tokens, deep_copy(value))
        elif kind == "test":
            try:
                actual = _get(doc, tokens)
            except PatchError:
                actual = _MISSING
            if actual != op.get("value"):
                raise PatchError(
                    f"testing value {op['path']} failed: test failed", test_failed=True
                )
        else:
            raise PatchError(f'unexpected JSON patch operation "{kind}"')
    return doc


_MISSING = object()


# --- strategic merge patch -------------------------------------------------------------------

# Lists of the built-in kinds that strategic merge patch merges by a key instead of replacing.
# kubectl's client-side apply sends only the changed fields of a container, so replacing these
# lists wholesale would lose the rest of the container.
_SMP_MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "conditions": ("type",),
    "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
    "finalizers": (),  # a set of strings: merged as a union
}


def _smp_keys(field: str, items: Sequence[Any]) -> tuple[str, ...] | None:
    if field == "ports":
        # Container ports merge by containerPort, Service ports by port.
        if any(isinstance(i, dict) and "containerPort" in i for i in items):
            return ("containerPort", "protocol")
        return ("port", "protocol")
    return _SMP_MERGE_KEYS.get(field)


def strategic_merge_patch(target: JSON, patch: JSON) -> JSON:
    """Merge semantics plus the directives kubectl sends for built-in kinds.

    Lists named in `_SMP_MERGE_KEYS` merge by key (`$patch: delete` entries remove one);
    `$setElementOrder/…` and `$retainKeys` are accepted and ignored; `$deleteFromPrimitiveList/…`
    removes values. Everything else follows JSON merge patch.
    """
    return _smp(target, patch)


def _smp(target: JSON, patch: JSON) -> JSON:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            current = result.get(name)
            if isinstance(current, list) and isinstance(value, list):
                result[name] = [v for v in current if v not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(value, list) and isinstance(current, list):
            keys = _smp_keys(key, value + current)
            if keys is not None:
                result[key] = _smp_merge_list(current, value, keys)
                continue
            result[key] = [_strip_directives(v) for v in value]
            continue
        merged = _smp(current, value)
        if merged is None and isinstance(value, dict) and value.get("$patch") == "delete":
            result.pop(key, None)
        else:
            result[key] = _strip_directives(merged)
    return result


def _strip_directives(value: JSON) -> JSON:
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not (k.startswith("$setElementOrder/") or k in ("$retainKeys", "$patch"))
        }
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _smp_merge_list(current: list[Any], patch: list[Any], keys: tuple[str, ...]) -> list[Any]:
    if not keys:  # a set of scalars
        return list(current) + [v for v in patch if v not in current]
    result = list(current)
    for item in patch:
        if not isinstance(item, dict):
            result.append(item)
            continue
        ident = tuple(item.get(k) for k in keys)
        position = next(
            (
                i
                for i, existing in enumerate(result)
                if isinstance(existing, dict) and tuple(existing.get(k) for k in keys) == ident
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if position is not None:
                result.pop(position)
        elif position is None:
            result.append(_strip_directives(item))
        else:
            result[position] = _smp(result[position], item)
    return result


# --- server-side apply -----------------------------------------------------------------------


def apply_merge(
    live: JSON,
    applied: JSON,
    list_map_keys: ListMapKeys,
    list_type: ListTypeOf,
    path: SchemaPath = (),
) -> JSON:
    """Merge an applied configuration into the live object the way server-side apply does.

    Maps merge recursively; lists declared `x-kubernetes-list-type: map` merge entry by entry on
    their keys (so applying one connector's entry under its own field manager leaves the others);
    `set` lists take the union; other lists and scalars are replaced. Removing what a manager no
    longer applies is `server_side_apply`'s part.
    """
    if not isinstance(applied, dict) or not isinstance(live, dict):
        return deep_copy(applied)
    result = dict(live)
    for key, value in applied.items():
        sub = (*path, key)
        current = result.get(key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(current, dict):
            result[key] = apply_merge(current, value, list_map_keys, list_type, sub)
        elif isinstance(value, list) and isinstance(current, list):
            keys = list_map_keys(sub)
            if keys:
                result[key] = _apply_list_map(current, value, keys, list_map_keys, list_type, sub)
            elif list_type(sub) == "set":
                result[key] = list(current) + [v for v in value if v not in current]
            else:
                result[key] = deep_copy(value)
        else:
            result[key] = deep_copy(value)
    return result


def _apply_list_map(
    current: list[Any],
    applied: list[Any],
    keys: list[str],
    list_map_keys: ListMapKeys,
    list_type: ListTypeOf,
    path: SchemaPath,
) -> list[Any]:
    def ident(item: Any) -> tuple[Any, ...] | None:
        return tuple(item.get(k) for k in keys) if isinstance(item, dict) else None

    result = list(current)
    index = {ident(item): i for i, item in enumerate(result)}
    for item in applied:
        key = ident(item)
        if key is not None and key in index:
            result[index[key]] = apply_merge(
                result[index[key]], item, list_map_keys, list_type, (*path, 0)
            )
        else:
            index[key] = len(result)
            result.append(deep_copy(item))
    return result


# A field an apply manager owns: map keys, ("k", ((key, value), ...)) for the entry of a map
# list, ("v", json) for the member of a set.
FieldPath = tuple[Any, ...]
# Server-filled or identifying fields: nobody owns them, applying them changes nothing.
_NOT_OWNED = {
    ("apiVersion",),
    ("kind",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "resourceVersion"),
    ("metadata", "uid"),
    ("metadata", "generation"),
    ("metadata", "creationTimestamp"),
    ("metadata", "managedFields"),
    ("metadata", "deletionTimestamp"),
    ("metadata", "deletionGracePeriodSeconds"),
}


class ApplyConflict(Exception):
    """Fields another manager applied with other values; `force` takes them over instead."""

    def __init__(self, conflicts: list[tuple[str, str]]) -> None:
        self.conflicts = conflicts  # (manager, rendered field path)
        plural = "s" if len(conflicts) > 1 else ""
        lines = [f'- conflict with "{m}": {p}' for m, p in conflicts]
        text = f": {lines[0][2:]}" if len(lines) == 1 else ":\n" + "\n".join(lines)
        super().__init__(f"Apply failed with {len(conflicts)} conflict{plural}{text}")


def _schema_path(path: FieldPath) -> SchemaPath:
    return tuple(e if isinstance(e, str) else 0 for e in path)


def applied_fields(
    config: JSON, list_map_keys: ListMapKeys, list_type: ListTypeOf
) -> set[FieldPath]:
    """The fields an applied configuration sets: its leaves, map-list entries and set members."""
    found: set[FieldPath] = set()
    if isinstance(config, dict):
        for key, value in config.items():
            _collect(value, (key,), found, list_map_keys, list_type)
    return found


def _collect(
    value: JSON, path: FieldPath, found: set[FieldPath], keys_of: ListMapKeys, type_of: ListTypeOf
) -> None:
    if value is None or path in _NOT_OWNED:
        return
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _collect(item, (*path, key), found, keys_of, type_of)
        return
    if isinstance(value, list) and value:
        keys = keys_of(_schema_path(path))
        if keys:
            for item in value:
                if isinstance(item, dict):
                    entry = (*path, ("k", tuple((k, item.get(k)) for k in keys)))
                    found.add(entry)
                    for key, sub in item.items():
                        if key not in keys:
                            _collect(sub, (*entry, key), found, keys_of, type_of)
            return
        if type_of(_schema_path(path)) == "set":
            found.update((*path, ("v", json.dumps(v, sort_keys=True))) for v in value)
            return
    found.add(path)


def _at(obj: JSON, path: FieldPath) -> JSON:
    node = obj
    for element in path:
        if isinstance(element, str):
            if not isinstance(node, dict) or element not in node:
                return _MISSING
            node = node[element]
        elif element[0] == "k":
            if not isinstance(node, list):
                return _MISSING
            node = next(
                (
                    i
                    for i in node
                    if isinstance(i, dict) and all(i.get(k) == v for k, v in element[1])
                ),
                _MISSING,
            )
            if node is _MISSING:
                return _MISSING
        else:
            value = json.loads(element[1])
            return value if isinstance(node, list) and value in node else _MISSING
    return node


def _drop(obj: JSON, path: FieldPath) -> None:
    parent = _at(obj, path[:-1])
    last = path[-1]
    if isinstance(last, str):
        if isinstance(parent, dict):
            parent.pop(last, None)
    elif isinstance(parent, list):
        if last[0] == "k":
            parent[:] = [
                i
                for i in parent
                if not (isinstance(i, dict) and all(i.get(k) == v for k, v in last[1]))
            ]
        else:
            value = json.loads(last[1])
            parent[:] = [i for i in parent if i != value]


def render_field(path: FieldPath) -> str:
    """A field path as the apiserver prints it in apply conflicts."""
    text = ""
    for element in path:
        if isinstance(element, str):
            text += f".{element}"
        elif element[0] == "k":
            pairs = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(element[1]))
            text += f"[{pairs}]"
        else:
            text += f"[={element[1]}]"
    return text


def server_side_apply(
    live: JSON,
    config: JSON,
    manager: str,
    owners: Mapping[str, frozenset[FieldPath]],
    *,
    force: bool,
    list_map_keys: ListMapKeys,
    list_type: ListTypeOf,
) -> tuple[JSON, dict[str, frozenset[FieldPath]]]:
    """Apply `config` for `manager`: the merged object and the managers' new field sets.

    Tracks the fields each apply manager owns (not those of other writes): a field another
    manager applied with a different value is a conflict (ApplyConflict) unless `force` moves it
    to this manager; a field this manager applied before, applies no more, and no other manager
    applies is removed, as server-side apply does.
    """
    fields = applied_fields(config, list_map_keys, list_type)
    others = {m: set(f) for m, f in owners.items() if m != manager}
    conflicts: list[tuple[str, FieldPath]] = []
    for other, owned in sorted(others.items()):
        for path in sorted(fields & owned, key=repr):
            if isinstance(path[-1], str) and _at(live, path) != _at(config, path):
                conflicts.append((other, path))
    if conflicts and not force:
        raise ApplyConflict([(m, render_field(p)) for m, p in conflicts])
    for other, path in conflicts:
        others[other].discard(path)
    still_owned: set[FieldPath] = set().union(*others.values()) if others else set()
    removed = set(owners.get(manager, frozenset())) - fields - still_owned
    merged = apply_merge(live, config, list_map_keys, list_type)
    if removed:
        merged = deep_copy(merged)
        for path in sorted(removed, key=len):  # a parent first: its children go with it
            _drop(merged, path)
    result = {m: frozenset(f) for m, f in others.items() if f}
    result[manager] = frozenset(fields)
    return merged, result


# --- selectors -------------------------------------------------------------------------------


class SelectorError(ValueError):
    """A label or field selector that does not parse."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("gt", "lt") and present:
            try:
                number, bound = int(str(value)), int(self.values[0])
            except ValueError:
                return False
            return number > bound if self.op == "gt" else number < bound
        return False


_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s+(in|notin)\s*\((.*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=|>|<)\s*([A-Za-z0-9_.-]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*$")


def _split_top(selector: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(selector):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(selector[start:i])
            start = i + 1
    parts.append(selector[start:])
    return [p for p in parts if p.strip()]


def parse_label_selector(selector: str) -> list[Requirement]:
    """Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h` into requirements (all must match)."""
    requirements = []
    for part in _split_top(selector):
        if m := _SET_RE.match(part):
            if m.group(1):
                raise SelectorError(f"unable to parse requirement: {part!r}")
            values = tuple(v.strip() for v in m.group(4).split(",") if v.strip())
            requirements.append(Requirement(m.group(2), m.group(3), values))
        elif m := _EQ_RE.match(part):
            op = {"==": "=", "=": "=", "!=": "!=", ">": "gt", "<": "lt"}[m.group(2)]
            requirements.append(Requirement(m.group(1), op, (m.group(3),)))
        elif m := _EXISTS_RE.match(part):
            requirements.append(Requirement(m.group(2), "!exists" if m.group(1) else "exists"))
        else:
            raise SelectorError(f"unable to parse requirement: {part!r}")
    return requirements


def parse_field_selector(selector: str) -> list[tuple[str, bool, str]]:
    """Parse `metadata.name=x,metadata.namespace!=y` into (path, equal, value) triples."""
    result = []
    for part in _split_top(selector):
        m = re.match(r"^\s*([A-Za-z0-9_.\[\]-]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise SelectorError(f"invalid field selector: {part!r}")
        result.append((m.group(1), m.group(2) != "!=", m.group(3)))
    return result


def field_value(obj: Mapping[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)
