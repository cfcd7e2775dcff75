"""The schema half of the Kubernetes API emulator: what kube-apiserver does with a CRD's schema.

Pure functions, no I/O. The HTTP server (`kubernetes.py`) calls them to refuse CRDs a real
apiserver would refuse (`check_structural`), to default, prune and validate custom objects the
way the apiextensions apiserver does (`apply_defaults`, `prune`, `unknown_fields`, `validate`),
to answer server-side apply questions (`list_map_keys`, `list_type`), to publish the OpenAPI v3
document `kubectl explain` and kubectl's validation read (`openapi_v3_document`), and to render
`kubectl get` tables from additionalPrinterColumns (`printer_columns_table`, `human_duration`).

Error shapes follow apimachinery's `field.Error`: the cause's `message` is the string the
apiserver puts in a 422 Status (`spec.x: Invalid value: "9x": spec.x in body should match '…'`),
errors at the object root have the field `<nil>`, as there. Validation runs in the apiserver's
order: schema keywords, list-type invariants, then CEL rules (skipped, with the apiserver's
notice, after a wrong type, unsupported value, missing field or excessive size). Updates are
ratcheted as in Kubernetes 1.30+: values an update leaves unchanged are not re-validated,
except by transition rules.

CEL library: `common-expression-language` (the `cel` module, Rust bindings to the `cel`
interpreter crate). It installs here as a wheel, supports `self`/`oldSelf` variables, `has()`,
the list macros (`all`, `exists`, `exists_one`, `map`, `filter`), `size`, `matches`, optionals
(for `optionalOldSelf`), timestamps and durations, and reusable compiled programs; a compiled
program runs in microseconds, which the pure-Python `cel-python` does not come near (the
server validates every write, with tens of thousands of objects in a benchmark). It parses but
does not type-check against the schema, so compile errors are syntax errors, undeclared
variables and unknown functions; the Kubernetes extension functions most rules use
(`lowerAscii`, `split`, `isSorted`, ...) are provided here in Python. Programs are compiled once
per rule string and cached, and only the fields a rule reads are converted to CEL values.

Compiled schemas are cached by object identity: the server must treat a stored CRD schema as
immutable (a CRD update brings a new mapping), as it does anyway.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "Cause",
    "apply_defaults",
    "check_structural",
    "human_duration",
    "list_map_keys",
    "list_type",
    "openapi_v3_document",
    "printer_columns_table",
    "prune",
    "unknown_fields",
    "validate",
]

JSON = Any
Schema = Mapping[str, Any]


@dataclass(frozen=True)
class Cause:
    """One field error, as a Kubernetes StatusCause (`reason`, `field`, `message`)."""

    reason: str
    field: str
    message: str


# ------------------------------------------------------------------------------- error helpers

# apimachinery's field error types: the cause reason and the words its message starts with.
_INVALID = ("FieldValueInvalid", "Invalid value")
_TYPE_INVALID = ("FieldValueTypeInvalid", "Invalid value")
_REQUIRED = ("FieldValueRequired", "Required value")
_NOT_SUPPORTED = ("FieldValueNotSupported", "Unsupported value")
_DUPLICATE = ("FieldValueDuplicate", "Duplicate value")
_FORBIDDEN = ("FieldValueForbidden", "Forbidden")
_TOO_LONG = ("FieldValueTooLong", "Too long")
_TOO_MANY = ("FieldValueTooMany", "Too many")

# Error types whose message carries no value (field.Error.ErrorBody omits it for these).
_NO_VALUE = {"FieldValueRequired", "FieldValueForbidden", "FieldValueTooLong"}
_OMIT = object()

# A nil field path prints as "<nil>": what the apiserver reports for errors at the object root.
_ROOT_FIELD = "<nil>"


def _go_value(value: JSON) -> str:
    """A value as field.Error prints it: strings quoted, scalars bare, the rest as JSON."""
    if value is None:
        return '"null"'
    if isinstance(value, _GoMap):
        return value.go_repr()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _num(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class _GoMap(dict[str, Any]):
    """A map printed as Go's %#v prints it, as the apiserver shows duplicate list-map keys."""

    def go_repr(self) -> str:
        inner = ", ".join(f"{json.dumps(k)}:{_go_value(self[k])}" for k in sorted(self))
        return f"map[string]interface {{}}{{{inner}}}"


def _json_copy(value: Any) -> Any:
    """A deep copy of JSON data: several times faster than copy.deepcopy on large objects."""
    t = type(value)
    if t is dict:
        return {k: _json_copy(v) for k, v in value.items()}
    if t is list:
        return [_json_copy(v) for v in value]
    if t in (str, int, float, bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {k: _json_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_copy(v) for v in value]
    return copy.deepcopy(value)


def _num(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


def _cause(kind: tuple[str, str], field: str, value: JSON = _OMIT, detail: str = "") -> Cause:
    reason, words = kind
    body = words
    if reason not in _NO_VALUE and value is not _OMIT:
        body = f"{words}: {_go_value(value)}"
    if detail:
        body = f"{body}: {detail}"
    return Cause(reason, field or _ROOT_FIELD, f"{field or _ROOT_FIELD}: {body}")


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _type_name(value: JSON) -> str:
    """The JSON type name kube-openapi reports for a value of the wrong type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _json_equal(a: JSON, b: JSON) -> bool:
    """JSON equality: Python's `True == 1` must not make a boolean equal a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


# ------------------------------------------------------------------------------------- formats

_DATE_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$"
)
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_DURATION = re.compile(r"^(-?\d+(\.\d+)?(ns|us|µs|ms|s|m|h|d|w))+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def _valid_date_time(text: str) -> bool:
    m = _DATE_TIME.match(text)
    if not m:
        return False
    try:
        y, mo, d, h, mi, sec = (int(m.group(i)) for i in range(1, 7))
        datetime(y, mo, d, h, mi, sec)
    except ValueError:
        return False
    return True


def _valid_format(fmt: str, text: str) -> bool:
    """The string formats the apiextensions apiserver checks; unknown formats pass, as there."""
    if fmt in ("date-time", "datetime"):
        return _valid_date_time(text)
    if fmt == "date":
        m = _DATE.match(text)
        if not m:
            return False
        try:
            datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            return False
        return True
    if fmt == "byte":
        try:
            base64.b64decode(text, validate=True)
        except ValueError:
            return False
        return True
    if fmt in ("uuid", "uuid3", "uuid4", "uuid5"):
        try:
            u = uuid.UUID(text)
        except ValueError:
            return False
        return fmt == "uuid" or u.version == int(fmt[-1])
    if fmt == "duration":
        return bool(_DURATION.match(text))
    if fmt == "email":
        return bool(_EMAIL.match(text))
    if fmt == "hostname":
        return bool(_HOSTNAME.match(text))
    if fmt in ("ipv4", "ipv6", "cidr"):
        import ipaddress

        try:
            if fmt == "cidr":
                ipaddress.ip_network(text, strict=False)
            elif fmt == "ipv4":
                ipaddress.IPv4Address(text)
            else:
                ipaddress.IPv6Address(text)
        except ValueError:
            return False
        return True
    return True


# ----------------------------------------------------------------------------------------- CEL


# Kubernetes' CEL libraries beyond the CEL standard, provided here so rules using them run.
def _cel_index_of(x: Any, y: Any, *start: Any) -> int:
    offset = int(start[0]) if start else 0
    if isinstance(x, str):
        return x.find(y, offset)
    try:
        return list(x).index(y, offset)
    except ValueError:
        return -1


def _cel_last_index_of(x: Any, y: Any) -> int:
    if isinstance(x, str):
        return x.rfind(y)
    items = list(x)
    for i in range(len(items) - 1, -1, -1):
        if items[i] == y:
            return i
    return -1


def _cel_substring(s: str, start: int, *end: int) -> str:
    return s[start : end[0]] if end else s[start:]


def _cel_split(s: str, sep: str, *limit: int) -> list[str]:
    if limit:
        return s.split(sep, limit[0] - 1) if limit[0] > 0 else []
    return s.split(sep)


def _cel_join(items: Sequence[str], *sep: str) -> str:
    return (sep[0] if sep else "").join(items)


def _cel_replace(s: str, old: str, new: str, *count: int) -> str:
    return s.replace(old, new, count[0]) if count else s.replace(old, new)


_CEL_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "lowerAscii": lambda s: s.lower(),
    "upperAscii": lambda s: s.upper(),
    "trim": lambda s: s.strip(),
    "charAt": lambda s, i: s[i] if i < len(s) else "",
    "indexOf": _cel_index_of,
    "lastIndexOf": _cel_last_index_of,
    "substring": _cel_substring,
    "split": _cel_split,
    "join": _cel_join,
    "replace": _cel_replace,
    "reverse": lambda s: s[::-1],
    "isSorted": lambda xs: list(xs) == sorted(xs),
    "sum": lambda xs: sum(xs),
    "min": lambda *xs: min(xs[0]) if len(xs) == 1 else min(xs),
    "max": lambda *xs: max(xs[0]) if len(xs) == 1 else max(xs),
    "find": lambda s, p: m.group(0) if (m := re.search(p, s)) else "",
    "findAll": lambda s, p, *n: [m.group(0) for m in re.finditer(p, s)][: n[0] if n else None],
}

# Names a rule may call: the CEL standard, the macros, Kubernetes' libraries (some of which
# are not implemented here and fail at evaluation, not at compile time).
_CEL_KNOWN_FUNCTIONS = frozenset(
    """
    size matches contains startsWith endsWith has all exists exists_one map filter int
    uint double string bytes bool type dyn duration timestamp getDate getDayOfMonth
    getDayOfWeek getDayOfYear getFullYear getHours getMilliseconds getMinutes getMonth
    getSeconds quote format url isURL getScheme getHost getHostname getPort
    getEscapedPath getQuery ip isIP cidr isCIDR quantity isQuantity family isLoopback
    containsIP containsCIDR prefixLength masked compareTo isLessThan isGreaterThan add
    sub asInteger asApproximateFloat isInteger sign semver isSemver major minor patch
    optional orValue hasValue value of none ofNonZeroValue flatten sort slice distinct
    range first last lists sets math abs ceil floor round greatest least base64 encode
    decode strings transformList transformMap transformMapEntry existsOne
    """.split()
) | frozenset(_CEL_FUNCTIONS)
_CEL_ITERATORS = re.compile(
    r"\.\s*(?:all|exists|exists_one|existsOne|map|filter|transformList|transformMap)\(\s*"
    r"([A-Za-z_]\w*)\s*(?:,\s*([A-Za-z_]\w*)\s*)?,"
)
_IDENT = re.compile(r"^[A-Za-z_]\w*$")


@dataclass(frozen=True)
class _Program:
    program: Any  # cel.Program
    uses_extensions: bool
    uses_old_self: bool
    # What of `self`/`oldSelf` a rule reads, when that can be told from its text: only that
    # is converted to CEL values (converting a large object costs far more than evaluating).
    self_reads: _Projection
    old_self_reads: _Projection


# What a rule reads of a variable, as a tree of field names (None: the whole value there):
# ("fields", tree) when it reads the variable only through `var.a.b` chains; ("items", tree)
# when it reads it only through list macros whose variable it reads only through chains;
# None when it reads it otherwise (the value is converted whole).
_Tree = dict[str, "_Tree | None"]
_Projection = tuple[str, _Tree] | None
_ITEM_MACRO = re.compile(r"\s*\.\s*(all|exists|exists_one|filter)\(\s*([A-Za-z_]\w*)\s*,")


def _fields_read(expr: str, var: str, skip: frozenset[int] = frozenset()) -> _Tree | None:
    """The field chains of `var` an expression reads, if it reads `var` only as `var.a.b`.

    `skip`: offsets of occurrences that are not reads (where a macro binds the name).
    """
    tree: _Tree = {}
    pattern = rf"(?<![\w.]){var}\b((?:\s*\.\s*[A-Za-z_]\w*)*)(\s*\()?"
    for m in re.finditer(pattern, expr):
        if m.start() in skip:
            continue
        chain = [n.strip() for n in m.group(1).split(".") if n.strip()]
        if m.group(2):
            chain = chain[:-1]  # the last name is a method called on what precedes it
        if not chain:
            return None  # `self` on its own, or a method call on it (`self.all(...)`)
        node: _Tree | None = tree
        for depth, name in enumerate(chain):
            assert node is not None
            if depth == len(chain) - 1:
                node[name] = None  # the value there is read whole
                break
            if name in node and node[name] is None:
                break  # already read whole
            node = node.setdefault(name, {})
    return tree


def _reads(expr: str, var: str) -> _Projection:
    fields = _fields_read(expr, var)
    if fields is not None:
        return ("fields", fields)
    macros = []
    for m in re.finditer(rf"(?<![\w.]){var}\b", expr):
        macro = _ITEM_MACRO.match(expr, m.end())
        if macro is None:
            return None
        macros.append(macro)
    bindings = frozenset(m.start(2) for m in macros)
    item_tree: _Tree = {}
    for macro in macros:
        read = _fields_read(expr, macro.group(2), bindings)
        if read is None:
            return None
        _merge_trees(item_tree, read)
    return ("items", item_tree)


def _merge_trees(into: _Tree, other: _Tree) -> None:
    for name, sub in other.items():
        if name in into and into[name] is None:
            continue
        if sub is None or name not in into:
            into[name] = sub
        else:
            existing = into[name]
            assert existing is not None
            _merge_trees(existing, sub)


@functools.lru_cache(maxsize=4096)
def _cel_compile(expr: str) -> _Program | str:
    """A compiled program, or the compile error as the apiserver would word it."""
    import cel  # lazily: only CRDs with rules need it

    try:
        program = cel.compile(expr)
    except (ValueError, RuntimeError) as exc:
        return "compilation failed: " + str(exc).strip()
    refs = program.references()
    bound = {n for m in _CEL_ITERATORS.finditer(expr) for n in m.groups() if n}
    for name in refs["variables"]:
        if name not in ("self", "oldSelf") and name not in bound:
            return f"compilation failed: ERROR: <input>: undeclared reference to '{name}'"
    functions = {f for f in refs["functions"] if _IDENT.match(f)}
    for name in functions:
        if name not in _CEL_KNOWN_FUNCTIONS:
            return f"compilation failed: ERROR: <input>: undeclared reference to '{name}'"
    return _Program(
        program=program,
        uses_extensions=bool(functions & set(_CEL_FUNCTIONS)),
        uses_old_self="oldSelf" in refs["variables"],
        self_reads=_reads(expr, "self"),
        old_self_reads=_reads(expr, "oldSelf"),
    )


def _project(value: JSON, reads: _Projection) -> JSON:
    if reads is None:
        return value
    kind, tree = reads
    if kind == "fields":
        return _project_tree(value, tree)
    if not isinstance(value, list):
        return value
    return [_project_tree(item, tree) for item in value]


def _project_tree(value: JSON, tree: _Tree | None) -> JSON:
    if tree is None or not isinstance(value, Mapping):
        return value
    return {k: _project_tree(value[k], sub) for k, sub in tree.items() if k in value}


def _cel_run(prog: _Program, variables: dict[str, JSON]) -> Any:
    variables = {
        name: _project(value, prog.self_reads if name == "self" else prog.old_self_reads)
        for name, value in variables.items()
    }
    if prog.uses_extensions:
        import cel

        return prog.program.execute(cel.Context(variables=variables, functions=_CEL_FUNCTIONS))
    return prog.program.execute(variables)


@dataclass(frozen=True)
class _Rule:
    rule: str
    program: _Program | str
    message: str
    message_expression: _Program | str | None
    reason: str | None
    field_path: str
    optional_old_self: bool

    @property
    def transition(self) -> bool:
        return isinstance(self.program, _Program) and self.program.uses_old_self


def _make_rule(raw: Mapping[str, Any]) -> _Rule:
    rule = str(raw.get("rule", ""))
    mexpr = raw.get("messageExpression")
    return _Rule(
        rule=rule,
        program=_cel_compile(rule),
        message=str(raw.get("message") or ""),
        message_expression=_cel_compile(str(mexpr)) if mexpr else None,
        reason=raw.get("reason"),
        field_path=str(raw.get("fieldPath") or ""),
        optional_old_self=bool(raw.get("optionalOldSelf")),
    )


def _field_path_suffix(field_path: str) -> str:
    """A rule's fieldPath (`.spec.x['y'][0]`) as a field.Path suffix (`.x[y]`)."""
    out = re.sub(r"\[['\"]([^'\"]*)['\"]\]", r"[\1]", field_path)
    return out


# ------------------------------------------------------------------------- compiled schema nodes


# Keywords that make a scalar node need more than a type check.
_SCALAR_CONSTRAINTS = (
    "enum",
    "pattern",
    "format",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "multipleOf",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "x-kubernetes-validations",
)
# Python types that satisfy a scalar schema type outright (3.0 as an integer takes the slow path).
_PLAIN_TYPES: dict[str | None, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
}


class _Node:
    """A schema node with its keywords read once, so validating an object is a plain walk."""

    __slots__ = (
        "additional",
        "all_of",
        "any_of",
        "default",
        "embedded",
        "enum",
        "enum_strings",
        "exclusive_maximum",
        "exclusive_minimum",
        "format",
        "has_default",
        "int_or_string",
        "items",
        "list_type",
        "map_keys",
        "max_items",
        "max_length",
        "max_properties",
        "maximum",
        "min_items",
        "min_length",
        "min_properties",
        "minimum",
        "multiple_of",
        "not_",
        "nullable",
        "one_of",
        "pattern",
        "pattern_src",
        "plain",
        "preserve",
        "properties",
        "raw",
        "required",
        "rules",
        "transitions_below",
        "type",
        "typed_below",
        "unique_items",
    )

    def __init__(self, s: Schema) -> None:
        self.raw = s
        self.type: str | None = s.get("type")
        self.nullable = bool(s.get("nullable"))
        self.int_or_string = bool(s.get("x-kubernetes-int-or-string"))
        self.preserve = bool(s.get("x-kubernetes-preserve-unknown-fields"))
        self.embedded = bool(s.get("x-kubernetes-embedded-resource"))
        enum = s.get("enum")
        self.enum: list[JSON] | None = list(enum) if enum is not None else None
        self.enum_strings: frozenset[str] | None = (
            frozenset(enum) if enum is not None and all(isinstance(e, str) for e in enum) else None
        )
        self.pattern_src: str | None = s.get("pattern")
        self.pattern: re.Pattern[str] | None = None
        if self.pattern_src is not None:
            try:
                self.pattern = re.compile(self.pattern_src)
            except re.error:
                self.pattern = None
        self.format: str | None = s.get("format")
        self.min_length: int | None = s.get("minLength")
        self.max_length: int | None = s.get("maxLength")
        self.minimum: float | None = s.get("minimum")
        self.maximum: float | None = s.get("maximum")
        self.exclusive_minimum = bool(s.get("exclusiveMinimum"))
        self.exclusive_maximum = bool(s.get("exclusiveMaximum"))
        self.multiple_of: float | None = s.get("multipleOf")
        self.min_items: int | None = s.get("minItems")
        self.max_items: int | None = s.get("maxItems")
        self.unique_items = bool(s.get("uniqueItems"))
        self.min_properties: int | None = s.get("minProperties")
        self.max_properties: int | None = s.get("maxProperties")
        self.required: tuple[str, ...] = tuple(s.get("required") or ())
        props = s.get("properties")
        self.properties: dict[str, _Node] | None = (
            {k: _Node(v) for k, v in props.items()} if isinstance(props, Mapping) else None
        )
        addl = s.get("additionalProperties")
        self.additional: _Node | bool | None = (
            _Node(addl) if isinstance(addl, Mapping) else (addl if isinstance(addl, bool) else None)
        )
        items = s.get("items")
        self.items: _Node | None = _Node(items) if isinstance(items, Mapping) else None
        self.list_type: str | None = s.get("x-kubernetes-list-type")
        self.map_keys: tuple[str, ...] = tuple(s.get("x-kubernetes-list-map-keys") or ())
        self.all_of = [_Node(x) for x in s.get("allOf") or () if isinstance(x, Mapping)]
        self.any_of = [_Node(x) for x in s.get("anyOf") or () if isinstance(x, Mapping)]
        self.one_of = [_Node(x) for x in s.get("oneOf") or () if isinstance(x, Mapping)]
        not_ = s.get("not")
        self.not_: _Node | None = _Node(not_) if isinstance(not_, Mapping) else None
        self.has_default = "default" in s
        self.default: JSON = s.get("default")
        self.rules = [_make_rule(r) for r in s.get("x-kubernetes-validations") or ()]
        children: list[_Node] = list((self.properties or {}).values())
        if isinstance(self.additional, _Node):
            children.append(self.additional)
        if self.items is not None:
            children.append(self.items)
        # Whether a rule reading oldSelf sits here or below: those run even on unchanged values.
        self.transitions_below: bool = any(r.transition for r in self.rules) or any(
            c.transitions_below for c in children
        )
        # Whether a string here or below has a format CEL sees as another type (timestamp...).
        self.typed_below: bool = (self.type == "string" and self.format in _CEL_FORMATS) or any(
            c.typed_below for c in children
        )
        constrained = any(k in s for k in _SCALAR_CONSTRAINTS)
        self.plain: tuple[type, ...] | None = (
            _PLAIN_TYPES[self.type]
            if self.type in _PLAIN_TYPES and not constrained and not self.int_or_string
            else None
        )

    def child(self, name: str) -> _Node | None:
        """The schema of property `name` (a declared property, else additionalProperties)."""
        if self.properties is not None and name in self.properties:
            return self.properties[name]
        if isinstance(self.additional, _Node):
            return self.additional
        return None


_COMPILED: dict[int, tuple[Schema, _Node]] = {}
_COMPILED_MAX = 512


def _compile(schema: Schema) -> _Node:
    hit = _COMPILED.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    node = _Node(schema)
    if len(_COMPILED) >= _COMPILED_MAX:
        _COMPILED.clear()
    # Keep the schema referenced so its id cannot be reused by another mapping while cached.
    _COMPILED[id(schema)] = (schema, node)
    return node


# ------------------------------------------------------------------------------------ validate


@dataclass
class _Pending:
    """A CEL rule to evaluate once the schema checks have passed."""

    rule: _Rule
    node: _Node
    value: JSON
    old: JSON
    has_old: bool
    path: str


class _Validation:
    __slots__ = ("cel", "list_errors", "schema_errors")

    def __init__(self) -> None:
        self.schema_errors: list[Cause] = []
        self.list_errors: list[Cause] = []
        self.cel: list[_Pending] = []

    # The walk: schema keywords first, list-type invariants, then (deferred) CEL rules.
    def check(self, node: _Node, value: JSON, path: str, old: JSON, has_old: bool) -> None:
        if node.plain is not None and type(value) in node.plain:
            return  # the common leaf: a scalar of the right type with nothing else to check
        if has_old and value == old:
            # Ratcheting (Kubernetes 1.30+): an update does not fail on a value it left
            # unchanged, so a schema tightened since it was stored does not lock the object;
            # only transition rules still run there. Unchanged subtrees without them (the
            # spec on a status write) are skipped outright.
            if not node.transitions_below:
                return
            marks = (len(self.schema_errors), len(self.list_errors))
            self._check(node, value, path, old, has_old)
            del self.schema_errors[marks[0] :]
            del self.list_errors[marks[1] :]
            return
        self._check(node, value, path, old, has_old)

    def _check(self, node: _Node, value: JSON, path: str, old: JSON, has_old: bool) -> None:
        errors = self.schema_errors
        if value is None:
            if node.nullable or (node.type is None and not node.int_or_string):
                return
            expected = "integer,string" if node.int_or_string else node.type
            errors.append(
                _cause(
                    _TYPE_INVALID,
                    path,
                    "null",
                    f'{path} in body must be of type {expected}: "null"',
                )
            )
            return
        t = node.type
        if node.int_or_string:
            if not (
                isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
            ):
                actual = _type_name(value)
                errors.append(
                    _cause(
                        _TYPE_INVALID,
                        path,
                        actual,
                        f'{path} in body must be of type integer,string: "{actual}"',
                    )
                )
                return
        elif t is not None and not _is_type(t, value):
            actual = _type_name(value)
            errors.append(
                _cause(
                    _TYPE_INVALID, path, actual, f'{path} in body must be of type {t}: "{actual}"'
                )
            )
            return

        if node.enum is not None:
            if node.enum_strings is not None and isinstance(value, str):
                ok = value in node.enum_strings
            else:
                ok = any(_json_equal(value, e) for e in node.enum)
            if not ok:
                supported = ", ".join(_go_value(e) for e in node.enum)
                errors.append(_cause(_NOT_SUPPORTED, path, value, f"supported values: {supported}"))

        # A node's rules come before its children's, the order the apiserver reports them.
        if node.rules:
            # Ratcheting (Kubernetes 1.30+): a rule that does not read oldSelf is not
            # re-checked on a value the update left unchanged. Besides fidelity, this keeps
            # status-only and no-op writes of large objects from converting them to CEL.
            unchanged = has_old and value == old
            for rule in node.rules:
                if unchanged and not rule.transition:
                    continue
                self.cel.append(_Pending(rule, node, value, old, has_old, path))
        tv = type(value)
        if tv is str:
            self._check_string(node, value, path)
        elif tv is dict or (tv is not list and isinstance(value, Mapping)):
            self._check_object(node, value, path, old, has_old)
        elif tv is list:
            self._check_list(node, value, path, old, has_old)
        elif tv is int or tv is float:
            self._check_number(node, value, path)

        if node.all_of or node.any_of or node.one_of or node.not_ is not None:
            self._check_junctors(node, value, path)

    def _check_string(self, node: _Node, value: str, path: str) -> None:
        errors = self.schema_errors
        if node.max_length is not None and len(value) > node.max_length:
            unit = "byte" if node.max_length == 1 else "bytes"
            errors.append(
                _cause(_TOO_LONG, path, value, f"may not be more than {node.max_length} {unit}")
            )
        if node.min_length is not None and len(value) < node.min_length:
            errors.append(
                _cause(
                    _INVALID,
                    path,
                    value,
                    f"{path} in body should be at least {node.min_length} chars long",
                )
            )
        if node.pattern is not None and not node.pattern.search(value):
            errors.append(
                _cause(_INVALID, path, value, f"{path} in body should match '{node.pattern_src}'")
            )
        if node.format is not None and not _valid_format(node.format, value):
            errors.append(
                _cause(
                    _TYPE_INVALID,
                    path,
                    value,
                    f"{path} in body must be of type {node.format}: {_go_value(value)}",
                )
            )

    def _check_number(self, node: _Node, value: float, path: str) -> None:
        errors = self.schema_errors
        if node.minimum is not None:
            if node.exclusive_minimum and value <= node.minimum:
                errors.append(
                    _cause(
                        _INVALID,
                        path,
                        value,
                        f"{path} in body should be greater than {_num(node.minimum)}",
                    )
                )
            elif value < node.minimum:
                errors.append(
                    _cause(
                        _INVALID,
                        path,
                        value,
                        f"{path} in body should be greater than or equal to {_num(node.minimum)}",
                    )
                )
        if node.maximum is not None:
            if node.exclusive_maximum and value >= node.maximum:
                errors.append(
                    _cause(
                        _INVALID,
                        path,
                        value,
                        f"{path} in body should be less than {_num(node.maximum)}",
                    )
                )
            elif value > node.maximum:
                errors.append(
                    _cause(
                        _INVALID,
                        path,
                        value,
                        f"{path} in body should be less than or equal to {_num(node.maximum)}",
                    )
                )
        if node.multiple_of:
            q = value / node.multiple_of
            if not math.isclose(q, round(q), rel_tol=0, abs_tol=1e-9):
                errors.append(
                    _cause(
                        _INVALID,
                        path,
                        value,
                        f"{path} in body should be a multiple of {_num(node.multiple_of)}",
                    )
                )
        if node.format in _INT_RANGES:
            lo, hi = _INT_RANGES[node.format]
            if not lo <= value <= hi:
                errors.append(
                    _cause(
                        _TYPE_INVALID,
                        path,
                        value,
                        f"{path} in body must be of type {node.format}: {_go_value(value)}",
                    )
                )

    def _check_list(
        self, node: _Node, value: list[JSON], path: str, old: JSON, has_old: bool
    ) -> None:
        errors = self.schema_errors
        n = len(value)
        if node.max_items is not None and n > node.max_items:
            errors.append(_cause(_TOO_MANY, path, n, f"must have at most {node.max_items} items"))
        if node.min_items is not None and n < node.min_items:
            errors.append(
                _cause(
                    _INVALID,
                    path,
                    value,
                    f"{path} in body should have at least {node.min_items} items",
                )
            )
        if node.unique_items:
            for i in range(n):
                if any(_json_equal(value[i], value[j]) for j in range(i)):
                    errors.append(_cause(_DUPLICATE, f"{path}[{i}]", value[i]))
        items = node.items
        list_type = node.list_type
        old_by_key: dict[tuple[Any, ...], JSON] | None = None
        keys = node.map_keys
        item_keys: list[tuple[Any, ...] | None] | None = None
        if list_type == "map" and keys:
            if has_old and isinstance(old, list):
                old_by_key = {}
                for o in old:
                    if isinstance(o, Mapping):
                        old_by_key[_map_key(o, keys)] = o
            seen: set[tuple[Any, ...]] = set()
            item_keys = []
            for i, item in enumerate(value):
                if not isinstance(item, Mapping):
                    item_keys.append(None)
                    continue
                key = _map_key(item, keys)
                item_keys.append(key)
                if key in seen:
                    shown = _GoMap({k: item[k] for k in keys if k in item})
                    self.list_errors.append(_cause(_DUPLICATE, f"{path}[{i}]", shown))
                seen.add(key)
        elif list_type == "set":
            seen_set: set[Any] = set()
            for i, item in enumerate(value):
                h = _hashable(item)
                if h in seen_set:
                    self.list_errors.append(_cause(_DUPLICATE, f"{path}[{i}]", item))
                seen_set.add(h)
        if items is None:
            return
        for i, item in enumerate(value):
            item_path = f"{path}[{i}]"
            if old_by_key is not None and item_keys is not None:
                item_key = item_keys[i]
                if item_key is not None and item_key in old_by_key:
                    self.check(items, item, item_path, old_by_key[item_key], True)
                    continue
            # Items of atomic and set lists have no old counterpart: Kubernetes cannot
            # correlate them, so transition rules below them never run.
            self.check(items, item, item_path, None, False)

    def _check_object(
        self, node: _Node, value: Mapping[str, JSON], path: str, old: JSON, has_old: bool
    ) -> None:
        errors = self.schema_errors
        old_map = old if has_old and isinstance(old, Mapping) else None
        props = node.properties
        if props is not None:
            for name, item in value.items():
                child = props.get(name)
                if child is None:
                    continue
                plain = child.plain
                if plain is not None and type(item) in plain:
                    continue  # inlined fast path of check(): saves a call and a path string
                sub = f"{path}.{name}" if path else name
                if old_map is not None and name in old_map:
                    self.check(child, item, sub, old_map[name], True)
                else:
                    self.check(child, item, sub, None, False)
        for name in node.required:
            if name not in value:
                errors.append(_cause(_REQUIRED, _child(path, name)))
        n = len(value)
        if node.max_properties is not None and n > node.max_properties:
            errors.append(
                _cause(
                    _INVALID,
                    path,
                    _OMIT,
                    f"{path} in body should have at most {node.max_properties} properties",
                )
            )
        if node.min_properties is not None and n < node.min_properties:
            errors.append(
                _cause(
                    _INVALID,
                    path,
                    _OMIT,
                    f"{path} in body should have at least {node.min_properties} properties",
                )
            )
        addl = node.additional
        if isinstance(addl, _Node):
            for name, item in value.items():
                if props is not None and name in props:
                    continue
                # kube-openapi names map entries with dots (`spec.labels.a`), not `[a]`.
                item_path = f"{path}.{name}"
                if old_map is not None and name in old_map:
                    self.check(addl, item, item_path, old_map[name], True)
                else:
                    self.check(addl, item, item_path, None, False)

    def _check_junctors(self, node: _Node, value: JSON, path: str) -> None:
        errors = self.schema_errors
        for sub in node.all_of:
            self._sub_errors(sub, value, path, into=errors)
        if node.any_of:
            results = [self._sub_errors(sub, value, path) for sub in node.any_of]
            if all(results):
                errors.append(
                    _cause(
                        _INVALID,
                        path,
                        value,
                        f"{path} in body must validate at least one schema (anyOf)",
                    )
                )
                errors.extend(results[0])
        if node.one_of:
            passing = sum(1 for sub in node.one_of if not self._sub_errors(sub, value, path))
            if passing != 1:
                errors.append(
                    _cause(
                        _INVALID,
                        path,
                        value,
                        f"{path} in body must validate one and only one schema (oneOf)",
                    )
                )
        if node.not_ is not None and not self._sub_errors(node.not_, value, path):
            errors.append(
                _cause(_INVALID, path, value, f"{path} in body must not validate the schema (not)")
            )

    def _sub_errors(
        self, sub: _Node, value: JSON, path: str, into: list[Cause] | None = None
    ) -> list[Cause]:
        """Errors of a value against a junctor branch (value validation only, no CEL)."""
        inner = _Validation()
        inner.check(sub, value, path, None, False)
        found = inner.schema_errors + inner.list_errors
        if into is not None:
            into.extend(found)
        return found

    def run_cel(self) -> list[Cause]:
        out: list[Cause] = []
        for p in self.cel:
            cause = _evaluate_rule(p)
            if cause is not None:
                out.append(cause)
        return out


def _is_type(t: str, value: JSON) -> bool:
    if t == "string":
        return type(value) is str or isinstance(value, str)
    if t == "object":
        return type(value) is dict or isinstance(value, Mapping)
    if t == "array":
        return isinstance(value, list)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        if isinstance(value, bool):
            return False
        # JSON decoding gives 3.0 for "3.0"; kube-openapi accepts integral floats as integers.
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if t == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


def _map_key(item: Mapping[str, JSON], keys: tuple[str, ...]) -> tuple[Any, ...]:
    """The identity of a map-list item: its key fields' values (scalars, per the schema)."""
    key = tuple([item.get(k) for k in keys])
    try:
        hash(key)
    except TypeError:  # a key field of the wrong type; reported by the type check
        return tuple(_hashable(item.get(k)) for k in keys)
    return key


def _hashable(value: JSON) -> Any:
    if isinstance(value, Mapping):
        return ("{}", tuple(sorted((k, _hashable(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("[]", tuple(_hashable(v) for v in value))
    if isinstance(value, bool):
        return ("bool", value)
    return value


_CEL_FORMATS = frozenset({"date-time", "datetime", "date", "duration", "byte"})
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d|w)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}


def _parse_duration(text: str) -> timedelta | None:
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    parts = list(_GO_DURATION_PART.finditer(body))
    if not parts or "".join(m.group(0) for m in parts) != body:
        return None
    seconds = sum(float(m.group(1)) * _DURATION_UNITS[m.group(2)] for m in parts)
    return timedelta(seconds=sign * seconds)


def _cel_value(node: _Node | None, value: JSON) -> Any:
    """A value as CEL sees it under its schema: formatted strings become timestamps,
    durations and bytes, as in Kubernetes (`self.lastTransitionTime < timestamp(...)`)."""
    if node is None or not node.typed_below:
        return value
    if isinstance(value, str):
        fmt = node.format
        converted: Any = None
        if fmt in ("date-time", "datetime"):
            converted = _parse_time(value)
        elif fmt == "date" and _valid_format("date", value):
            converted = datetime.fromisoformat(value).replace(tzinfo=UTC)
        elif fmt == "duration":
            converted = _parse_duration(value)
        elif fmt == "byte":
            try:
                converted = base64.b64decode(value, validate=True)
            except ValueError:
                converted = None
        return value if converted is None else converted
    if isinstance(value, Mapping):
        return {k: _cel_value(node.child(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cel_value(node.items, v) for v in value]
    return value


def _evaluate_rule(p: _Pending) -> Cause | None:
    rule = p.rule
    if rule.transition and not p.has_old and not rule.optional_old_self:
        return None
    program = rule.program
    if isinstance(program, str):
        return _cause(_INVALID, p.path, _OMIT, f"{program} evaluating rule: {rule.rule}")
    variables: dict[str, JSON] = {"self": _cel_value(p.node, p.value)}
    if rule.optional_old_self and rule.transition:
        import cel

        # optionalOldSelf: oldSelf is a CEL optional, empty on create or without an old value.
        optional = cel.OptionalValue
        variables["oldSelf"] = (
            optional.of(_cel_value(p.node, p.old)) if p.has_old else optional.none()
        )
    elif rule.transition:
        variables["oldSelf"] = _cel_value(p.node, p.old)
    try:
        result = _cel_run(program, variables)
    except Exception as exc:  # the interpreter raises several types; all are rule errors
        return _cause(
            _INVALID,
            p.path,
            _schema_type(p.node),
            f"{_cel_error(exc)} evaluating rule: {rule.rule}",
        )
    if result is True:
        return None
    if result is not False:
        return _cause(
            _INVALID,
            p.path,
            _schema_type(p.node),
            f"rule did not evaluate to a bool: {rule.rule}",
        )
    detail = ""
    if isinstance(rule.message_expression, _Program):
        try:
            msg = _cel_run(rule.message_expression, variables)
        except Exception:  # a failing messageExpression falls back to message, as there
            msg = None
        if isinstance(msg, str) and msg.strip() and "\n" not in msg:
            detail = msg
    if not detail:
        detail = rule.message or f"failed rule: {rule.rule}"
    path = p.path
    if rule.field_path:
        suffix = _field_path_suffix(rule.field_path)
        path = (path + suffix) if path else suffix.lstrip(".")
    value = _schema_type(p.node)
    if rule.reason == "FieldValueForbidden":
        return _cause(_FORBIDDEN, path, _OMIT, detail)
    if rule.reason == "FieldValueRequired":
        return _cause(_REQUIRED, path, _OMIT, detail)
    if rule.reason == "FieldValueDuplicate":
        return _cause(_DUPLICATE, path, value)
    return _cause(_INVALID, path, value, detail)


def _cel_error(exc: Exception) -> str:
    """An evaluation error in cel-go's words where they differ (a missing field)."""
    if isinstance(exc, KeyError) and exc.args:
        return f"no such key: {exc.args[0]}"
    return str(exc)


def _schema_type(node: _Node) -> str:
    """The apiserver reports a failed rule's value as the schema's type name."""
    if node.int_or_string:
        return "integer-or-string"
    return node.type or "object"


# Metadata a root rule may read: only name and generateName, as in Kubernetes.
_RULE_METADATA = ("name", "generateName")

# ObjectMeta's fields: anything else under metadata is an unknown field.
_OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)


def validate(
    schema: Schema, obj: Mapping[str, Any], old: Mapping[str, Any] | None = None
) -> list[Cause]:
    """Validate a custom object against its version's openAPIV3Schema, as the apiserver does.

    Unknown fields are not reported (see `unknown_fields`/`prune`); call `apply_defaults`
    first, as the apiserver defaults before it validates. Transition rules (those reading
    `oldSelf`) run only when `old` is given and holds a value at the rule's path. CEL rules do
    not run after errors of a wrong type, unsupported value, missing field or excessive size
    (a `<nil>` cause says so instead), as in Kubernetes.
    """
    root = _compile(schema)
    v = _Validation()
    has_old = old is not None
    if root.properties is None:
        v.check(root, obj, "", old, has_old)
    else:
        # The root: metadata is ObjectMeta (validated by the server); only the constraints a
        # CRD may put on name and generateName apply, and root rules see only those two.
        meta_node = root.properties.get("metadata")
        meta = obj.get("metadata")
        if meta_node is not None and isinstance(meta, Mapping) and meta_node.properties:
            for name in _RULE_METADATA:
                child = meta_node.properties.get(name)
                if child is not None and name in meta:
                    v.check(child, meta[name], f"metadata.{name}", None, False)
        if root.rules:
            view = _rule_view(obj)
            old_view = _rule_view(old) if old is not None else None
            unchanged = view == old_view
            for rule in root.rules:
                if not (unchanged and not rule.transition):
                    v.cel.append(_Pending(rule, root, view, old_view, has_old, ""))
        for name, child in root.properties.items():
            if name == "metadata" or name not in obj:
                continue
            if has_old and old is not None and name in old:
                v.check(child, obj[name], name, old[name], True)
            else:
                v.check(child, obj[name], name, None, False)
        for name in root.required:
            if name not in obj:
                v.schema_errors.append(_cause(_REQUIRED, name))
    causes = v.schema_errors + v.list_errors
    if v.cel:
        if any(c.reason in _BLOCKING for c in causes):
            causes.append(
                _cause(
                    _INVALID,
                    "",
                    None,
                    "some validation rules were not checked because the object was invalid; "
                    "correct the existing errors to complete validation",
                )
            )
        else:
            causes.extend(v.run_cel())
    return causes


# Errors after which the apiserver does not run CEL rules: the values may have the wrong type
# or an unbounded size, so rules could fail or exceed their cost budget.
_BLOCKING = frozenset(
    {
        _TYPE_INVALID[0],
        _NOT_SUPPORTED[0],
        _REQUIRED[0],
        _TOO_LONG[0],
        _TOO_MANY[0],
    }
)


def _rule_view(obj: Mapping[str, Any]) -> dict[str, Any]:
    view = dict(obj)
    meta = obj.get("metadata")
    if isinstance(meta, Mapping):
        view["metadata"] = {k: meta[k] for k in _RULE_METADATA if k in meta}
    return view


# ------------------------------------------------------------------------- defaults and pruning


def apply_defaults(schema: Schema, obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with the schema's defaults applied, as the apiserver does on every request.

    Absent fields of present objects get their default (a deep copy), recursively, including
    inside list items, map values and the defaults just inserted. A null where the schema is
    not nullable is replaced by the default, or dropped when there is none.
    """
    out: dict[str, Any] = _json_copy(dict(obj))
    root = _compile(schema)
    _default(root, out, is_root=True)
    return out


def _default(node: _Node, value: JSON, is_root: bool = False) -> None:
    if isinstance(value, dict):
        props = node.properties
        if props is not None:
            for name, child in props.items():
                if is_root and name == "metadata":
                    continue
                present = name in value
                if present and value[name] is None and not child.nullable:
                    if child.has_default:
                        value[name] = _json_copy(child.default)
                    else:
                        del value[name]
                elif not present and child.has_default:
                    value[name] = _json_copy(child.default)
                if name in value:
                    _default(child, value[name])
        addl = node.additional
        if isinstance(addl, _Node):
            for name in list(value):
                if props is not None and name in props:
                    continue
                if value[name] is None and not addl.nullable:
                    if addl.has_default:
                        value[name] = _json_copy(addl.default)
                    else:
                        del value[name]
                        continue
                _default(addl, value[name])
    elif isinstance(value, list) and node.items is not None:
        items = node.items
        for i, item in enumerate(value):
            if item is None and items.has_default and not items.nullable:
                value[i] = _json_copy(items.default)
            _default(items, value[i])


def unknown_fields(schema: Schema, obj: Mapping[str, Any]) -> list[str]:
    """Paths of fields the schema does not know, e.g. `.spec.foo`, `.spec.inputs[0].bar`.

    The apiserver's strict field validation answers `unknown field "spec.foo"` (the path
    without the leading dot). Fields under `x-kubernetes-preserve-unknown-fields` are known;
    under metadata, anything but ObjectMeta's fields is unknown.
    """
    found: list[str] = []
    root = _compile(schema)
    for name, value in obj.items():
        if name in ("apiVersion", "kind"):
            continue
        if name == "metadata":
            if isinstance(value, Mapping):
                found.extend(f".metadata.{k}" for k in value if k not in _OBJECT_META_FIELDS)
            continue
        child = root.child(name)
        if child is None:
            if not root.preserve:
                found.append(f".{name}")
            continue
        _unknown(child, value, f".{name}", found)
    return found


def _unknown(node: _Node, value: JSON, path: str, found: list[str]) -> None:
    if isinstance(value, Mapping):
        if node.additional is True:
            return
        for name, item in value.items():
            if node.embedded and name in ("apiVersion", "kind", "metadata"):
                continue
            child = node.child(name)
            # Map keys join with dots too, as in the apiserver's `unknown field "spec.m.k.x"`.
            item_path = f"{path}.{name}"
            if child is None:
                if not node.preserve:
                    found.append(item_path)
                continue
            _unknown(child, item, item_path, found)
    elif isinstance(value, list) and node.items is not None:
        for i, item in enumerate(value):
            _unknown(node.items, item, f"{path}[{i}]", found)


def prune(schema: Schema, obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy without unknown fields, as the apiserver stores objects (metadata untouched)."""
    root = _compile(schema)
    out: dict[str, Any] = {}
    for name, value in obj.items():
        if name in ("apiVersion", "kind", "metadata"):
            out[name] = _json_copy(value)
            continue
        child = root.child(name)
        if child is None:
            if root.preserve:
                out[name] = _json_copy(value)
            continue
        out[name] = _pruned(child, value)
    return out


def _pruned(node: _Node, value: JSON) -> JSON:
    if isinstance(value, Mapping):
        if node.additional is True:
            return _json_copy(value)
        out: dict[str, Any] = {}
        for name, item in value.items():
            if node.embedded and name in ("apiVersion", "kind", "metadata"):
                out[name] = _json_copy(item)
                continue
            child = node.child(name)
            if child is None:
                if node.preserve:
                    out[name] = _json_copy(item)
                continue
            out[name] = _pruned(child, item)
        return out
    if isinstance(value, list):
        if node.items is None:
            return _json_copy(value)
        return [_pruned(node.items, item) for item in value]
    return value


# ----------------------------------------------------------------------- server-side apply help


def _node_at(schema: Schema, path: Sequence[str | int]) -> _Node | None:
    node: _Node | None = _compile(schema)
    for step in path:
        if node is None:
            return None
        if isinstance(step, int):
            node = node.items
        else:
            node = node.child(step)
    return node


def list_type(schema: Schema, path: Sequence[str | int]) -> str | None:
    """`map`, `set` or `atomic` for the list at `path` (atomic when unset), None if no list."""
    node = _node_at(schema, path)
    if node is None or node.type != "array":
        return None
    return node.list_type or "atomic"


def list_map_keys(schema: Schema, path: Sequence[str | int]) -> list[str] | None:
    """The x-kubernetes-list-map-keys of the map list at `path`, None if it is not one."""
    node = _node_at(schema, path)
    if node is None or node.type != "array" or node.list_type != "map":
        return None
    return list(node.map_keys)


# ------------------------------------------------------------------------- structural checking

_JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
_UNSUPPORTED_KEYWORDS = (
    "$ref",
    "$defs",
    "definitions",
    "$schema",
    "patternProperties",
    "additionalItems",
    "dependencies",
    "id",
)
# What may not appear inside allOf/anyOf/oneOf/not, and how the apiserver words it.
_FORBIDDEN_IN_JUNCTORS = {
    "type": "must be empty to be structural",
    "description": "must be empty to be structural",
    "title": "must be empty to be structural",
    "default": "must be undefined to be structural",
    "additionalProperties": "must be undefined to be structural",
    "nullable": "must be false to be structural",
    "x-kubernetes-preserve-unknown-fields": "must be false to be structural",
    "x-kubernetes-embedded-resource": "must be false to be structural",
    "x-kubernetes-int-or-string": "must be false to be structural",
    "x-kubernetes-list-type": "must be undefined to be structural",
    "x-kubernetes-list-map-keys": "must be undefined to be structural",
    "x-kubernetes-map-type": "must be undefined to be structural",
    "x-kubernetes-validations": "must be empty to be structural",
}
_TYPES = ("object", "array", "string", "integer", "number", "boolean")
_SCALARS = ("string", "integer", "number", "boolean")
_RULE_REASONS = (
    "FieldValueInvalid",
    "FieldValueForbidden",
    "FieldValueRequired",
    "FieldValueDuplicate",
)
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_COLUMN_TYPES = ("integer", "number", "string", "boolean", "date")
_COLUMN_FORMATS = ("int32", "int64", "float", "double", "byte", "date", "date-time", "password")

# Operations whose cost grows with the size of what they read: iterating a list or map, or
# scanning a string. The apiserver bounds their estimated cost by maxItems/maxProperties/
# maxLength; without them it assumes a 3 MiB request and refuses the rule.
_ITERATION = re.compile(
    r"(?<![\w.])([A-Za-z_]\w*)((?:\.[A-Za-z_]\w*)*)\s*\.\s*"
    r"(all|exists|exists_one|existsOne|map|filter|isSorted|sum|min|max|indexOf|lastIndexOf|join)"
    r"\(\s*(?:([A-Za-z_]\w*)\s*(?:,\s*([A-Za-z_]\w*)\s*)?,)?"
)
_STRING_SCAN = re.compile(
    r"(?<![\w.])([A-Za-z_]\w*)((?:\.[A-Za-z_]\w*)*)\s*\.\s*"
    r"(matches|contains|startsWith|endsWith|find|findAll|split|replace|indexOf|lastIndexOf|"
    r"lowerAscii|upperAscii|trim|substring|reverse)\("
)
_CALL_SCAN = re.compile(r"(?<![\w.])(matches|size)\(\s*([A-Za-z_]\w*)((?:\.[A-Za-z_]\w*)*)\s*[,)]")
_MACROS = ("all", "exists", "exists_one", "existsOne", "map", "filter")


def check_structural(crd: Mapping[str, Any]) -> list[str]:
    """What a real apiserver would refuse in this CRD manifest, one message a problem."""
    # A keyword of the wrong JSON type fails the apiserver's decoding before any validation;
    # the checks below rely on well-typed keywords, so such a CRD stops here.
    problems = _decode_problems(crd)
    if problems:
        return problems
    try:
        return _check_crd(crd)
    except Exception as exc:  # a shape the decode check missed: refuse it, do not crash
        return [f"spec: Invalid value: the CRD could not be checked: {type(exc).__name__}: {exc}"]


# JSONSchemaProps' keywords by the JSON type they decode from.
_STRING_KEYWORDS = (
    "type",
    "format",
    "pattern",
    "description",
    "title",
    "id",
    "$schema",
    "$ref",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
)
_COUNT_KEYWORDS = (
    "maxLength",
    "minLength",
    "maxItems",
    "minItems",
    "maxProperties",
    "minProperties",
)
_NUMBER_KEYWORDS = ("minimum", "maximum", "multipleOf")
_BOOL_KEYWORDS = (
    "nullable",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "uniqueItems",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
)
_STRING_LIST_KEYWORDS = ("required", "x-kubernetes-list-map-keys")
_SCHEMA_MAP_KEYWORDS = ("properties", "definitions", "$defs", "patternProperties")
_RULE_FIELDS = {
    "rule": str,
    "message": str,
    "messageExpression": str,
    "reason": str,
    "fieldPath": str,
    "optionalOldSelf": bool,
}


def _wrong_type(path: str, value: Any, expected: str) -> str:
    return f"{path}: Invalid value: {_go_value(value)}: must be of type {expected}"


def _decode_problems(crd: Mapping[str, Any]) -> list[str]:
    if not isinstance(crd, Mapping):
        return [_wrong_type("<nil>", crd, "object")]
    problems: list[str] = []
    for key in ("metadata", "spec"):
        if key in crd and not isinstance(crd[key], Mapping):
            problems.append(_wrong_type(key, crd[key], "object"))
    spec = crd.get("spec")
    if not isinstance(spec, Mapping):
        return problems
    for key in ("group", "scope"):
        if key in spec and not isinstance(spec[key], str):
            problems.append(_wrong_type(f"spec.{key}", spec[key], "string"))
    names = spec.get("names")
    if names is not None:
        if not isinstance(names, Mapping):
            problems.append(_wrong_type("spec.names", names, "object"))
        else:
            for key, value in names.items():
                want_list = key in ("shortNames", "categories")
                ok = (
                    isinstance(value, list) and all(isinstance(v, str) for v in value)
                    if want_list
                    else isinstance(value, str)
                )
                if not ok:
                    problems.append(
                        _wrong_type(
                            f"spec.names.{key}", value, "[]string" if want_list else "string"
                        )
                    )
    versions = spec.get("versions")
    if versions is None:
        return problems
    if not isinstance(versions, list):
        return [*problems, _wrong_type("spec.versions", versions, "array")]
    for i, version in enumerate(versions):
        vpath = f"spec.versions[{i}]"
        if not isinstance(version, Mapping):
            problems.append(_wrong_type(vpath, version, "object"))
            continue
        if "name" in version and not isinstance(version["name"], str):
            problems.append(_wrong_type(f"{vpath}.name", version["name"], "string"))
        for key in ("served", "storage", "deprecated"):
            if key in version and not isinstance(version[key], bool):
                problems.append(_wrong_type(f"{vpath}.{key}", version[key], "boolean"))
        for key in ("schema", "subresources"):
            if key in version and not isinstance(version[key], Mapping):
                problems.append(_wrong_type(f"{vpath}.{key}", version[key], "object"))
        sub = version.get("subresources")
        if isinstance(sub, Mapping):
            for key, value in sub.items():
                if not isinstance(value, Mapping):
                    problems.append(_wrong_type(f"{vpath}.subresources.{key}", value, "object"))
        columns = version.get("additionalPrinterColumns")
        if columns is not None:
            if not isinstance(columns, list):
                problems.append(_wrong_type(f"{vpath}.additionalPrinterColumns", columns, "array"))
            else:
                for j, col in enumerate(columns):
                    cpath = f"{vpath}.additionalPrinterColumns[{j}]"
                    if not isinstance(col, Mapping):
                        problems.append(_wrong_type(cpath, col, "object"))
                        continue
                    for key, value in col.items():
                        ok = isinstance(value, int) if key == "priority" else isinstance(value, str)
                        if not ok:
                            problems.append(_wrong_type(f"{cpath}.{key}", value, "string"))
        schema = version.get("schema")
        if isinstance(schema, Mapping) and "openAPIV3Schema" in schema:
            _decode_schema(schema["openAPIV3Schema"], f"{vpath}.schema.openAPIV3Schema", problems)
    return problems


def _decode_schema(s: Any, path: str, problems: list[str]) -> None:
    if not isinstance(s, Mapping):
        problems.append(_wrong_type(path, s, "object"))
        return
    for key, value in s.items():
        kpath = f"{path}.{key}"
        if key in _STRING_KEYWORDS:
            ok = isinstance(value, str)
            expected = "string"
        elif key in _COUNT_KEYWORDS:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            expected = "non-negative integer"
        elif key in _NUMBER_KEYWORDS:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            expected = "number"
        elif key in _BOOL_KEYWORDS:
            ok = isinstance(value, bool)
            expected = "boolean"
        elif key in _STRING_LIST_KEYWORDS:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            expected = "[]string"
        elif key == "enum":
            ok = isinstance(value, list)
            expected = "array"
        elif key in _SCHEMA_MAP_KEYWORDS:
            ok = isinstance(value, Mapping)
            expected = "object"
            if ok:
                for name, sub in value.items():
                    _decode_schema(sub, f"{path}.{key}[{name}]", problems)
        elif key in ("allOf", "anyOf", "oneOf"):
            ok = isinstance(value, list)
            expected = "array"
            if ok:
                for j, sub in enumerate(value):
                    _decode_schema(sub, f"{kpath}[{j}]", problems)
        elif key == "not":
            ok = True
            expected = "object"
            _decode_schema(value, kpath, problems)
        elif key == "items":
            ok = isinstance(value, Mapping | list)
            expected = "object"
            if isinstance(value, Mapping):
                _decode_schema(value, kpath, problems)
            elif isinstance(value, list):
                for j, sub in enumerate(value):
                    _decode_schema(sub, f"{kpath}[{j}]", problems)
        elif key == "additionalProperties":
            ok = isinstance(value, Mapping | bool)
            expected = "object or boolean"
            if isinstance(value, Mapping):
                _decode_schema(value, kpath, problems)
        elif key == "x-kubernetes-validations":
            ok = isinstance(value, list)
            expected = "array"
            if ok:
                for j, rule in enumerate(value):
                    rpath = f"{kpath}[{j}]"
                    if not isinstance(rule, Mapping):
                        problems.append(_wrong_type(rpath, rule, "object"))
                        continue
                    for field, want in _RULE_FIELDS.items():
                        if field in rule and not isinstance(rule[field], want):
                            name = "boolean" if want is bool else "string"
                            problems.append(_wrong_type(f"{rpath}.{field}", rule[field], name))
        else:
            continue  # default, example, external docs...: any JSON
        if not ok:
            problems.append(_wrong_type(kpath, value, expected))


def _check_crd(crd: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    if crd.get("apiVersion") != "apiextensions.k8s.io/v1":
        problems.append(
            f"apiVersion: Unsupported value: {_go_value(crd.get('apiVersion'))}: "
            'supported values: "apiextensions.k8s.io/v1"'
        )
    if crd.get("kind") != "CustomResourceDefinition":
        problems.append(
            f"kind: Unsupported value: {_go_value(crd.get('kind'))}: "
            'supported values: "CustomResourceDefinition"'
        )
    spec = crd.get("spec")
    if not isinstance(spec, Mapping):
        problems.append("spec: Required value")
        return problems
    group = spec.get("group")
    names = spec.get("names") if isinstance(spec.get("names"), Mapping) else {}
    assert isinstance(names, Mapping)
    plural = names.get("plural")
    meta = crd.get("metadata") if isinstance(crd.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    if meta.get("name") != f"{plural}.{group}":
        problems.append(
            f"metadata.name: Invalid value: {_go_value(meta.get('name'))}: "
            'must be spec.names.plural+"."+spec.group'
        )
    if not group:
        problems.append("spec.group: Required value")
    elif not isinstance(group, str) or not _DNS1123_SUBDOMAIN.match(group) or "." not in group:
        problems.append(
            f"spec.group: Invalid value: {_go_value(group)}: "
            "should be a domain with at least one dot"
        )
    problems.extend(_check_names(names))
    scope = spec.get("scope")
    if scope not in ("Namespaced", "Cluster"):
        problems.append(
            f"spec.scope: Unsupported value: {_go_value(scope)}: "
            'supported values: "Cluster", "Namespaced"'
        )
    if spec.get("preserveUnknownFields"):
        problems.append("spec.preserveUnknownFields: Invalid value: true: must be false")
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        problems.append(
            "spec.versions: Invalid value: null: "
            "must have exactly one version marked as storage version"
        )
        return problems
    storage = sum(1 for v in versions if isinstance(v, Mapping) and v.get("storage") is True)
    version_names = [v.get("name") for v in versions if isinstance(v, Mapping)]
    if storage != 1:
        problems.append(
            f"spec.versions: Invalid value: {_go_value(version_names)}: "
            "must have exactly one version marked as storage version"
        )
    seen: set[str] = set()
    for i, version in enumerate(versions):
        vpath = f"spec.versions[{i}]"
        if not isinstance(version, Mapping):
            problems.append(f"{vpath}: Invalid value: must be an object")
            continue
        vname = version.get("name")
        if not isinstance(vname, str) or not _DNS1035.match(vname):
            problems.append(
                f"{vpath}.name: Invalid value: {_go_value(vname)}: a DNS-1035 label must consist "
                "of lower case alphanumeric characters or '-'"
            )
        elif vname in seen:
            problems.append(f"{vpath}.name: Duplicate value: {_go_value(vname)}")
        else:
            seen.add(vname)
        if not isinstance(version.get("served"), bool):
            problems.append(f"{vpath}.served: Required value")
        if not isinstance(version.get("storage"), bool):
            problems.append(f"{vpath}.storage: Required value")
        schema = version.get("schema")
        root = schema.get("openAPIV3Schema") if isinstance(schema, Mapping) else None
        spath = f"{vpath}.schema.openAPIV3Schema"
        if not isinstance(root, Mapping):
            problems.append(f"{spath}: Required value: schemas are required")
        else:
            problems.extend(_check_schema_root(root, spath))
        problems.extend(_check_subresources(version.get("subresources"), f"{vpath}.subresources"))
        problems.extend(
            _check_columns(
                version.get("additionalPrinterColumns"), f"{vpath}.additionalPrinterColumns"
            )
        )
    return problems


def _check_names(names: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    for key in ("plural", "singular"):
        value = names.get(key)
        if value is None and key == "singular":
            continue
        if not value:
            problems.append(f"spec.names.{key}: Required value")
        elif not isinstance(value, str) or not _DNS1035.match(value):
            problems.append(
                f"spec.names.{key}: Invalid value: {_go_value(value)}: a lowercase RFC 1035 "
                "label must consist of lower case alphanumeric characters or '-', start with an "
                "alphabetic character, and end with an alphanumeric character"
            )
    kind = names.get("kind")
    list_kind = names.get("listKind")
    for key, value in (("kind", kind), ("listKind", list_kind)):
        if value is None and key == "listKind":
            continue
        if not value:
            problems.append(f"spec.names.{key}: Required value")
        elif not isinstance(value, str) or not _DNS1035.match(value.lower()):
            problems.append(
                f"spec.names.{key}: Invalid value: {_go_value(value)}: may have mixed case, but "
                "should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?"
            )
    if kind and list_kind and kind == list_kind:
        problems.append(
            f"spec.names.listKind: Invalid value: {_go_value(list_kind)}: "
            "kind and listKind may not be the same"
        )
    for key, pattern in (("shortNames", _DNS1035), ("categories", _DNS1123_LABEL)):
        values = names.get(key)
        if values is None:
            continue
        if not isinstance(values, list):
            problems.append(f"spec.names.{key}: Invalid value: must be a list of strings")
            continue
        dup: set[str] = set()
        for j, value in enumerate(values):
            if not isinstance(value, str) or not pattern.match(value):
                problems.append(
                    f"spec.names.{key}[{j}]: Invalid value: {_go_value(value)}: "
                    "must be a lowercase DNS label"
                )
            elif value in dup:
                problems.append(f"spec.names.{key}[{j}]: Duplicate value: {_go_value(value)}")
            else:
                dup.add(value)
    return problems


def _check_subresources(sub: Any, path: str) -> list[str]:
    if sub is None:
        return []
    if not isinstance(sub, Mapping):
        return [f"{path}: Invalid value: must be an object"]
    problems: list[str] = []
    for key in sub:
        if key not in ("status", "scale"):
            problems.append(
                f'{path}.{key}: Unsupported value: "{key}": supported values: "scale", "status"'
            )
    scale = sub.get("scale")
    if isinstance(scale, Mapping):
        for key in ("specReplicasPath", "statusReplicasPath"):
            value = scale.get(key)
            if not value:
                problems.append(f"{path}.scale.{key}: Required value")
            elif not str(value).startswith(".spec." if key == "specReplicasPath" else ".status."):
                problems.append(
                    f"{path}.scale.{key}: Invalid value: {_go_value(value)}: "
                    "should be a json path under "
                    + (".spec" if key == "specReplicasPath" else ".status")
                )
    return problems


def _check_columns(columns: Any, path: str) -> list[str]:
    if columns is None:
        return []
    if not isinstance(columns, list):
        return [f"{path}: Invalid value: must be a list"]
    problems: list[str] = []
    for i, col in enumerate(columns):
        cpath = f"{path}[{i}]"
        if not isinstance(col, Mapping):
            problems.append(f"{cpath}: Invalid value: must be an object")
            continue
        if not col.get("name"):
            problems.append(f"{cpath}.name: Required value")
        if col.get("type") not in _COLUMN_TYPES:
            problems.append(
                f"{cpath}.type: Unsupported value: {_go_value(col.get('type'))}: supported values: "
                + ", ".join(f'"{t}"' for t in _COLUMN_TYPES)
            )
        fmt = col.get("format")
        if fmt and fmt not in _COLUMN_FORMATS:
            problems.append(
                f"{cpath}.format: Unsupported value: {_go_value(fmt)}: supported values: "
                + ", ".join(f'"{f}"' for f in _COLUMN_FORMATS)
            )
        priority = col.get("priority", 0)
        if not isinstance(priority, int) or priority < 0:
            problems.append(
                f"{cpath}.priority: Invalid value: {_go_value(priority)}: must be non-negative"
            )
        jp = col.get("jsonPath")
        if not jp:
            problems.append(f"{cpath}.jsonPath: Required value")
        elif _parse_column_path(str(jp)) is None:
            problems.append(
                f"{cpath}.jsonPath: Invalid value: {_go_value(jp)}: must be a simple json path"
            )
    return problems


def _check_schema_root(root: Schema, path: str) -> list[str]:
    problems: list[str] = []
    if root.get("type") != "object":
        problems.append(f"{path}.type: Required value: must be object at the root")
    if root.get("nullable"):
        problems.append(f"{path}.nullable: Forbidden: must be false at the root")
    for key in ("x-kubernetes-int-or-string", "x-kubernetes-embedded-resource"):
        if root.get(key):
            problems.append(f"{path}.{key}: Forbidden: must be false at the root")
    props = root.get("properties")
    if isinstance(props, Mapping):
        meta = props.get("metadata")
        if isinstance(meta, Mapping):
            problems.extend(_check_metadata(meta, f"{path}.properties[metadata]"))
        for key in ("apiVersion", "kind"):
            sub = props.get(key)
            if isinstance(sub, Mapping) and set(sub) - {"type", "description"}:
                problems.append(
                    f"{path}.properties[{key}]: Forbidden: must not specify anything other than "
                    "type and description"
                )
            if isinstance(sub, Mapping) and sub.get("type") not in (None, "string"):
                problems.append(f"{path}.properties[{key}].type: Unsupported value: must be string")
    walker = _SchemaWalker(problems)
    walker.walk(root, path, root_level=True, unbounded_above=False, correlatable=True)
    return problems


def _check_metadata(meta: Schema, path: str) -> list[str]:
    problems: list[str] = []
    if set(meta) - {"type", "description", "properties"}:
        problems.append(
            f"{path}: Forbidden: must not specify anything other than name and generateName, "
            "but metadata is implicitly specified"
        )
    if meta.get("type") not in (None, "object"):
        problems.append(
            f"{path}.type: Unsupported value: {_go_value(meta.get('type'))}: must be object"
        )
    props = meta.get("properties")
    if isinstance(props, Mapping):
        for name, sub in props.items():
            if name not in _RULE_METADATA:
                problems.append(
                    f"{path}: Forbidden: must not specify anything other than name and "
                    "generateName, but metadata is implicitly specified"
                )
                break
            if isinstance(sub, Mapping):
                if sub.get("type") != "string":
                    problems.append(
                        f"{path}.properties[{name}].type: Unsupported value: must be string"
                    )
                if "default" in sub:
                    problems.append(
                        f"{path}.properties[{name}].default: Forbidden: must not be set"
                    )
    return problems


class _SchemaWalker:
    """Walks an openAPIV3Schema collecting what makes it non-structural or unusable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems

    def walk(
        self,
        s: Schema,
        path: str,
        *,
        root_level: bool = False,
        unbounded_above: bool,
        correlatable: bool,
        in_junctor: bool = False,
        specified: str = "object fields",
    ) -> None:
        p = self.problems
        for key in _UNSUPPORTED_KEYWORDS:
            if key in s:
                p.append(f"{path}.{key}: Forbidden: {key} is not supported")
        if in_junctor:
            for key, wording in _FORBIDDEN_IN_JUNCTORS.items():
                if key in s:
                    p.append(f"{path}.{key}: Forbidden: {wording}")
        t = s.get("type")
        int_or_string = bool(s.get("x-kubernetes-int-or-string"))
        preserve = bool(s.get("x-kubernetes-preserve-unknown-fields"))
        if not in_junctor:
            if t is None and not int_or_string and not preserve:
                p.append(
                    f"{path}.type: Required value: must not be empty for specified {specified}"
                )
            if t is not None and t not in _TYPES:
                p.append(
                    f"{path}.type: Unsupported value: {_go_value(t)}: supported values: "
                    + ", ".join(f'"{x}"' for x in _TYPES)
                )
            if int_or_string and t is not None:
                p.append(
                    f"{path}.type: Invalid value: {_go_value(t)}: must be empty if "
                    "x-kubernetes-int-or-string is true"
                )
            if s.get("x-kubernetes-embedded-resource") and t != "object":
                p.append(
                    f"{path}.type: Invalid value: {_go_value(t)}: must be object if "
                    "x-kubernetes-embedded-resource is true"
                )
        props = s.get("properties")
        addl = s.get("additionalProperties")
        if props is not None and addl is not None:
            p.append(
                f"{path}.additionalProperties: Forbidden: additionalProperties and properties are "
                "mutual exclusive"
            )
        if addl is False:
            p.append(
                f"{path}.additionalProperties: Forbidden: "
                "additionalProperties cannot be set to false"
            )
        if s.get("uniqueItems") is True:
            p.append(
                f"{path}.uniqueItems: Forbidden: uniqueItems cannot be set to true since the "
                "runtime complexity becomes quadratic"
            )
        if "pattern" in s:
            try:
                re.compile(str(s["pattern"]))
            except re.error as exc:
                p.append(
                    f"{path}.pattern: Invalid value: {_go_value(s['pattern'])}: "
                    f"must be a valid regular expression, but isn't: {exc}"
                )
        items = s.get("items")
        if isinstance(items, list):
            p.append(f"{path}.items: Forbidden: items must be a schema object and not an array")
        elif t == "array" and items is None and not in_junctor:
            p.append(f"{path}.items: Required value: must be specified")
        if t is not None and t != "array" and items is not None and not in_junctor:
            p.append(f"{path}.items: Forbidden: must be empty for type {t}")
        if (
            t is not None
            and t != "object"
            and (props is not None or isinstance(addl, Mapping))
            and not in_junctor
        ):
            p.append(f"{path}.properties: Forbidden: must be empty for type {t}")

        self._check_list_type(s, path)
        if s.get("x-kubernetes-map-type") not in (None, "granular", "atomic"):
            p.append(
                f"{path}.x-kubernetes-map-type: Unsupported value: "
                f"{_go_value(s['x-kubernetes-map-type'])}: "
                'supported values: "atomic", "granular"'
            )

        if "default" in s and not in_junctor:
            self._check_default(s, path)

        self._check_rules(
            s,
            path,
            unbounded_above=unbounded_above,
            correlatable=correlatable,
            root_level=root_level,
        )

        # Recurse into the structural parts, tracking whether we are below an unbounded
        # collection (rules there are multiplied by its estimated size) and whether old values
        # can be correlated (only through properties, map values and map-list items).
        if isinstance(props, Mapping):
            for name, sub in props.items():
                if root_level and name == "metadata":
                    continue
                if isinstance(sub, Mapping):
                    self.walk(
                        sub,
                        f"{path}.properties[{name}]",
                        unbounded_above=unbounded_above,
                        correlatable=correlatable,
                        in_junctor=in_junctor,
                    )
                else:
                    p.append(f"{path}.properties[{name}]: Invalid value: must be a schema object")
        if isinstance(addl, Mapping):
            self.walk(
                addl,
                f"{path}.additionalProperties",
                unbounded_above=unbounded_above or "maxProperties" not in s,
                correlatable=correlatable,
                in_junctor=in_junctor,
            )
        if isinstance(items, Mapping):
            self.walk(
                items,
                f"{path}.items",
                unbounded_above=unbounded_above or "maxItems" not in s,
                correlatable=correlatable and s.get("x-kubernetes-list-type") == "map",
                in_junctor=in_junctor,
                specified="array items",
            )
        for junctor in _JUNCTORS:
            branches = s.get(junctor)
            if branches is None:
                continue
            if junctor == "not":
                branches = [branches]
            if not isinstance(branches, list):
                p.append(f"{path}.{junctor}: Invalid value: must be a list of schemas")
                continue
            for j, sub in enumerate(branches):
                sub_path = f"{path}.{junctor}" if junctor == "not" else f"{path}.{junctor}[{j}]"
                if isinstance(sub, Mapping):
                    self._check_junctor_fields(sub, s, sub_path)
                    self.walk(
                        sub,
                        sub_path,
                        unbounded_above=unbounded_above,
                        correlatable=correlatable,
                        in_junctor=True,
                    )

    def _check_junctor_fields(self, sub: Schema, outer: Schema, path: str) -> None:
        """Fields named inside allOf/anyOf/oneOf/not must exist in the structural part."""
        props = sub.get("properties")
        outer_props = outer.get("properties")
        if isinstance(props, Mapping):
            for name in props:
                if (
                    not (isinstance(outer_props, Mapping) and name in outer_props)
                    and not isinstance(outer.get("additionalProperties"), Mapping)
                    and not outer.get("x-kubernetes-preserve-unknown-fields")
                ):
                    self.problems.append(
                        f"{path}.properties[{name}]: Forbidden: must have a corresponding "
                        "field in the structural part of the schema"
                    )
        if "items" in sub and "items" not in outer:
            self.problems.append(
                f"{path}.items: Forbidden: must have a corresponding field in the structural "
                "part of the schema"
            )

    def _check_list_type(self, s: Schema, path: str) -> None:
        p = self.problems
        lt = s.get("x-kubernetes-list-type")
        keys = s.get("x-kubernetes-list-map-keys")
        if lt is None:
            if keys is not None:
                p.append(
                    f"{path}.x-kubernetes-list-map-keys: Forbidden: must only be set if "
                    "x-kubernetes-list-type is map"
                )
            return
        if lt not in ("atomic", "set", "map"):
            p.append(
                f"{path}.x-kubernetes-list-type: Unsupported value: {_go_value(lt)}: "
                'supported values: "atomic", "map", "set"'
            )
            return
        if s.get("type") != "array":
            p.append(
                f"{path}.type: Invalid value: {_go_value(s.get('type'))}: "
                "must be array if x-kubernetes-list-type is specified"
            )
            return
        items = s.get("items") if isinstance(s.get("items"), Mapping) else {}
        assert isinstance(items, Mapping)
        if lt == "map":
            if not keys:
                p.append(
                    f"{path}.x-kubernetes-list-map-keys: Required value: must not be empty if "
                    "x-kubernetes-list-type is map"
                )
                return
            if items.get("type") != "object":
                p.append(
                    f"{path}.items.type: Invalid value: {_go_value(items.get('type'))}: must be "
                    "object if parent array's x-kubernetes-list-type is map"
                )
                return
            if items.get("nullable"):
                p.append(
                    f"{path}.items.nullable: Forbidden: "
                    "cannot be nullable when x-kubernetes-list-type is map"
                )
            item_props = items.get("properties") or {}
            required = set(items.get("required") or ())
            if len(set(keys)) != len(keys):
                p.append(
                    f"{path}.x-kubernetes-list-map-keys: Invalid value: must not contain duplicates"
                )
            for k in keys:
                key_schema = item_props.get(k)
                if not isinstance(key_schema, Mapping):
                    p.append(
                        f"{path}.x-kubernetes-list-map-keys: Invalid value: {_go_value(k)}: "
                        "entries must all be names of item properties"
                    )
                    continue
                if key_schema.get("type") not in _SCALARS:
                    p.append(
                        f"{path}.items.properties[{k}].type: Invalid value: "
                        f"{_go_value(key_schema.get('type'))}: must be a scalar type if parent "
                        "array's x-kubernetes-list-type is map"
                    )
                if k not in required and "default" not in key_schema:
                    p.append(
                        f"{path}.items.properties[{k}]: Required value: this property is in "
                        "x-kubernetes-list-map-keys, so it must have a default or be a required "
                        "property"
                    )
        else:
            if keys is not None:
                p.append(
                    f"{path}.x-kubernetes-list-map-keys: Forbidden: must only be set if "
                    "x-kubernetes-list-type is map"
                )
            if lt == "set":
                it = items.get("type")
                atomic = (it == "object" and items.get("x-kubernetes-map-type") == "atomic") or (
                    it == "array" and items.get("x-kubernetes-list-type") == "atomic"
                )
                if (
                    it not in _SCALARS
                    and not atomic
                    and not items.get("x-kubernetes-int-or-string")
                ):
                    p.append(
                        f"{path}.items.type: Invalid value: {_go_value(it)}: must be a scalar "
                        "type if parent array's x-kubernetes-list-type is set"
                    )

    def _check_default(self, s: Schema, path: str) -> None:
        default = s["default"]
        node = _Node(s)
        v = _Validation()
        v.check(node, default, "", None, False)
        for cause in v.schema_errors + v.list_errors:
            where = cause.field if cause.field != _ROOT_FIELD else ""
            body = cause.message.split(": ", 1)[1] if ": " in cause.message else cause.message
            self.problems.append(f"{path}.default{('.' + where) if where else ''}: {body}")
        extra: list[str] = []
        _unknown(node, default, "", extra)
        for where in extra:
            self.problems.append(
                f"{path}.default{where}: Invalid value: must not have unknown fields"
            )
        if not v.schema_errors and v.cel:
            for cause in v.run_cel():
                self.problems.append(f"{path}.default: Invalid value: {cause.message}")

    def _check_rules(
        self,
        s: Schema,
        path: str,
        *,
        unbounded_above: bool,
        correlatable: bool,
        root_level: bool = False,
    ) -> None:
        rules = s.get("x-kubernetes-validations")
        if rules is None:
            return
        p = self.problems
        if not isinstance(rules, list):
            p.append(f"{path}.x-kubernetes-validations: Invalid value: must be a list")
            return
        if (
            s.get("x-kubernetes-int-or-string") is None
            and s.get("type") is None
            and not s.get("x-kubernetes-preserve-unknown-fields")
        ):
            return
        node = _Node({k: v for k, v in s.items() if k != "x-kubernetes-validations"})
        for i, raw in enumerate(rules):
            rpath = f"{path}.x-kubernetes-validations[{i}]"
            if not isinstance(raw, Mapping):
                p.append(f"{rpath}: Invalid value: must be an object")
                continue
            rule = raw.get("rule")
            if not isinstance(rule, str) or not rule.strip():
                p.append(f"{rpath}.rule: Required value: rule is not specified")
                continue
            compiled = _cel_compile(rule)
            if isinstance(compiled, str):
                p.append(f"{rpath}.rule: Invalid value: {_go_value(rule)}: {compiled}")
                continue
            undefined = _undefined_field(rule, node, root_level)
            if undefined is not None:
                p.append(
                    f"{rpath}.rule: Invalid value: {_go_value(rule)}: compilation failed: "
                    f"ERROR: <input>: undefined field '{undefined}'"
                )
                continue
            if compiled.uses_old_self and not correlatable:
                p.append(
                    f"{rpath}.rule: Invalid value: {_go_value(rule)}: oldSelf cannot be used on "
                    f"the uncorrelatable portion of the schema within {path}"
                )
            message = raw.get("message")
            if message is not None and (not str(message).strip() or "\n" in str(message)):
                p.append(
                    f"{rpath}.message: Invalid value: {_go_value(message)}: "
                    "message must be non-empty and not contain line breaks"
                )
            mexpr = raw.get("messageExpression")
            if mexpr is not None:
                cm = _cel_compile(str(mexpr))
                if not str(mexpr).strip():
                    p.append(
                        f"{rpath}.messageExpression: Required value: "
                        "messageExpression must be non-empty if specified"
                    )
                elif isinstance(cm, str):
                    p.append(f"{rpath}.messageExpression: Invalid value: {_go_value(mexpr)}: {cm}")
            reason = raw.get("reason")
            if reason is not None and reason not in _RULE_REASONS:
                p.append(
                    f"{rpath}.reason: Unsupported value: {_go_value(reason)}: supported values: "
                    + ", ".join(f'"{r}"' for r in _RULE_REASONS)
                )
            fp = raw.get("fieldPath")
            if fp is not None and not _resolve_field_path(node, str(fp)):
                p.append(
                    f"{rpath}.fieldPath: Invalid value: {_go_value(fp)}: fieldPath must be a "
                    "valid path that exists in the schema"
                )
            for reason_text in _cost_problems(rule, node, unbounded_above):
                p.append(f"{rpath}.rule: Forbidden: {reason_text}")


_FIELD_CHAIN = re.compile(r"(?<![\w.])(self|oldSelf)((?:\s*\.\s*[A-Za-z_]\w*)+)(\s*\()?")


def _undefined_field(rule: str, node: _Node, root_level: bool) -> str | None:
    """A field a rule reads that the schema does not declare (the type checker's error).

    Only `self.a.b` / `oldSelf.a.b` chains through objects with declared properties are
    checked; a name followed by `(` is a method, and maps and preserved fields accept any name.
    """
    for m in _FIELD_CHAIN.finditer(rule):
        names = [n.strip() for n in m.group(2).split(".") if n.strip()]
        if m.group(3):
            names = names[:-1]  # the last name is called: a method, not a field
        cur: _Node | None = node
        for depth, name in enumerate(names):
            if cur is None or cur.preserve or isinstance(cur.additional, _Node):
                break
            if root_level and depth == 0 and name in ("apiVersion", "kind", "metadata"):
                if name != "metadata":
                    break
                # Root rules see metadata.name and metadata.generateName only.
                if len(names) > 1 and names[1] not in _RULE_METADATA:
                    return names[1]
                break
            if cur.type != "object" or cur.properties is None:
                break
            if name not in cur.properties:
                return name
            cur = cur.properties[name]
    return None


def _resolve_field_path(node: _Node, field_path: str) -> bool:
    if not field_path.startswith((".", "[")):
        return False
    cur: _Node | None = node
    for m in re.finditer(
        r"\.([A-Za-z_$][\w$-]*)|\[['\"]([^'\"]+)['\"]\]|\[(\d+)\]|(.)", field_path
    ):
        if m.group(4) is not None or cur is None:
            return False
        if m.group(3) is not None:
            cur = cur.items
        else:
            cur = cur.child(m.group(1) or m.group(2))
    return cur is not None


_BUDGET_HINT = (
    "estimated rule cost exceeds budget (try simplifying the rule, or adding maxItems, "
    "maxProperties, and maxLength where arrays, maps, and strings are declared)"
)


def _cost_problems(rule: str, node: _Node, unbounded_above: bool) -> list[str]:
    """Approximate the apiserver's static cost check: what iterates or scans without bounds.

    Exact estimation needs CEL's type checker; instead the rule is scanned for list/map
    macros and string functions, their receivers resolved through the schema (also through
    macro variables), and a problem reported when a receiver has no maxItems/maxProperties/
    maxLength, or when such an operation sits in a rule repeated for each item of an unbounded
    list or map.
    """
    bound: dict[str, _Node | None] = {"self": node, "oldSelf": node}
    problems: list[str] = []
    heavy = False

    def resolve(base: str, chain: str) -> _Node | None:
        cur = bound.get(base)
        for name in filter(None, chain.split(".")):
            if cur is None:
                return None
            cur = cur.child(name)
        return cur

    for m in _ITERATION.finditer(rule):
        target = resolve(m.group(1), m.group(2))
        op = m.group(3)
        if target is not None and target.type == "string" and op in ("indexOf", "lastIndexOf"):
            if target.max_length is None:
                problems.append(f"{_BUDGET_HINT}: {m.group(1)}{m.group(2)} has no maxLength")
            heavy = True
            continue
        if op in _MACROS:
            element: _Node | None = None
            if target is not None:
                if target.type == "array":
                    element = target.items
                    if target.max_items is None:
                        problems.append(f"{_BUDGET_HINT}: {m.group(1)}{m.group(2)} has no maxItems")
                elif target.type == "object" and isinstance(target.additional, _Node):
                    element = None  # iterating a map binds its keys (strings)
                    if target.max_properties is None:
                        problems.append(
                            f"{_BUDGET_HINT}: {m.group(1)}{m.group(2)} has no maxProperties"
                        )
            for var in (m.group(4), m.group(5)):
                if var:
                    bound[var] = element
            heavy = True
        elif target is not None and target.type == "array" and target.max_items is None:
            problems.append(f"{_BUDGET_HINT}: {m.group(1)}{m.group(2)} has no maxItems")
            heavy = True
    for m in _STRING_SCAN.finditer(rule):
        target = resolve(m.group(1), m.group(2))
        if target is not None and target.type == "string" and target.max_length is None:
            problems.append(f"{_BUDGET_HINT}: {m.group(1)}{m.group(2)} has no maxLength")
        heavy = True
    for m in _CALL_SCAN.finditer(rule):
        if m.group(1) == "matches":
            target = resolve(m.group(2), m.group(3))
            if target is not None and target.type == "string" and target.max_length is None:
                problems.append(f"{_BUDGET_HINT}: {m.group(2)}{m.group(3)} has no maxLength")
            heavy = True
    if heavy and unbounded_above and not problems:
        problems.append(
            f"{_BUDGET_HINT}: the rule runs for every item of an enclosing list or map that has "
            "no maxItems/maxProperties"
        )
    return sorted(set(problems))


# ------------------------------------------------------------------------------------ OpenAPI

_META = "io.k8s.apimachinery.pkg.apis.meta.v1"


def _reverse_group(group: str) -> str:
    return ".".join(reversed(group.split(".")))


def _object_meta_schema() -> dict[str, Any]:
    string = {"type": "string"}
    time = {"type": "string", "format": "date-time"}
    return {
        "description": "ObjectMeta is metadata that all persisted resources must have.",
        "type": "object",
        "properties": {
            "name": {**string, "description": "Name must be unique within a namespace."},
            "generateName": {
                **string,
                "description": "Optional prefix the server uses to generate a unique name.",
            },
            "namespace": {**string, "description": "The namespace the object lives in."},
            "uid": {**string, "description": "Unique identifier set by the server."},
            "resourceVersion": {
                **string,
                "description": "Opaque version used for optimistic concurrency and watches.",
            },
            "generation": {
                "type": "integer",
                "format": "int64",
                "description": "Sequence number of the desired state (spec) generation.",
            },
            "creationTimestamp": {**time, "description": "When the object was created."},
            "deletionTimestamp": {**time, "description": "When the object will be deleted."},
            "deletionGracePeriodSeconds": {"type": "integer", "format": "int64"},
            "labels": {
                "type": "object",
                "additionalProperties": {**string, "default": ""},
                "description": "Map of string keys and values to organize and select objects.",
            },
            "annotations": {
                "type": "object",
                "additionalProperties": {**string, "default": ""},
                "description": "Unstructured key value map set by external tools.",
            },
            "finalizers": {
                "type": "array",
                "items": {**string, "default": ""},
                "x-kubernetes-list-type": "set",
                "description": "Must be empty before the object is deleted from the registry.",
            },
            "ownerReferences": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["apiVersion", "kind", "name", "uid"],
                    "properties": {
                        "apiVersion": string,
                        "kind": string,
                        "name": string,
                        "uid": string,
                        "controller": {"type": "boolean"},
                        "blockOwnerDeletion": {"type": "boolean"},
                    },
                    "x-kubernetes-map-type": "atomic",
                },
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["uid"],
                "description": "Objects this object depends on.",
            },
            "managedFields": {
                "type": "array",
                "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "description": "Which field managers manage which fields (server-side apply).",
            },
            "selfLink": {**string, "description": "Deprecated; not set."},
        },
    }


def _list_meta_schema() -> dict[str, Any]:
    return {
        "description": "ListMeta describes metadata that synthetic resources must have.",
        "type": "object",
        "properties": {
            "resourceVersion": {"type": "string"},
            "continue": {"type": "string"},
            "remainingItemCount": {"type": "integer", "format": "int64"},
            "selfLink": {"type": "string"},
        },
    }


def openapi_v3_document(
    group: str, version: str, crds: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """The OpenAPI v3 document kube-apiserver serves at /openapi/v3/apis/{group}/{version}.

    Each served version of each CRD of that group gives a `<reverse-group>.<version>.<Kind>`
    schema (the CRD schema, metadata as a reference to ObjectMeta) and its list kind, both
    tagged with x-kubernetes-group-version-kind as `kubectl explain` looks them up, plus paths
    whose PATCH operations declare the `fieldValidation` query parameter: kubectl checks for it
    to decide that the server validates fields, so it needs no client-side schema download.
    """
    prefix = f"{_reverse_group(group)}.{version}"
    schemas: dict[str, Any] = {
        f"{_META}.ObjectMeta": _object_meta_schema(),
        f"{_META}.ListMeta": _list_meta_schema(),
        f"{_META}.Status": {
            "description": "Status is a return value for calls that don't return other objects.",
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "status": {"type": "string"},
                "message": {"type": "string"},
                "reason": {"type": "string"},
                "code": {"type": "integer", "format": "int32"},
                "details": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "metadata": {"$ref": f"#/components/schemas/{_META}.ListMeta"},
            },
        },
        f"{_META}.Patch": {
            "description": "Patch is provided to give a concrete name and type to the patch body.",
            "type": "object",
        },
        f"{_META}.DeleteOptions": {
            "description": "DeleteOptions may be provided when deleting an API object.",
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "gracePeriodSeconds": {"type": "integer", "format": "int64"},
                "propagationPolicy": {"type": "string"},
                "dryRun": {"type": "array", "items": {"type": "string"}},
            },
        },
    }
    paths: dict[str, Any] = {}
    for crd in crds:
        spec = crd.get("spec") or {}
        if spec.get("group") != group:
            continue
        names = spec.get("names") or {}
        kind = str(names.get("kind"))
        list_kind = str(names.get("listKind") or f"{kind}List")
        plural = str(names.get("plural"))
        namespaced = spec.get("scope", "Namespaced") == "Namespaced"
        for v in spec.get("versions") or ():
            if v.get("name") != version or not v.get("served", True):
                continue
            raw = ((v.get("schema") or {}).get("openAPIV3Schema")) or {"type": "object"}
            gvk = {"group": group, "version": version, "kind": kind}
            list_gvk = {"group": group, "version": version, "kind": list_kind}
            name = f"{prefix}.{kind}"
            list_name = f"{prefix}.{list_kind}"
            schemas[name] = _published_schema(raw, gvk)
            schemas[list_name] = {
                "description": f"{list_kind} is a list of {kind}",
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": _API_VERSION_PROP,
                    "kind": _KIND_PROP,
                    "items": {
                        "description": (
                            f"List of {plural}. More info: "
                            "https://git.k8s.io/community/contributors/devel/sig-architecture/"
                            "api-conventions.md"
                        ),
                        "type": "array",
                        "items": {"$ref": f"#/components/schemas/{name}"},
                    },
                    "metadata": {
                        "description": "Standard list metadata.",
                        "allOf": [{"$ref": f"#/components/schemas/{_META}.ListMeta"}],
                        "default": {},
                    },
                },
                "x-kubernetes-group-version-kind": [list_gvk],
            }
            subresources = v.get("subresources") or {}
            paths.update(
                _resource_paths(
                    group,
                    version,
                    plural,
                    kind,
                    name,
                    list_name,
                    gvk,
                    list_gvk,
                    namespaced,
                    "status" in subresources,
                )
            )
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "unversioned"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


_API_VERSION_PROP = {
    "description": (
        "APIVersion defines the versioned schema of this representation of an object. Servers "
        "should convert recognized schemas to the latest internal value, and may reject "
        "unrecognized values."
    ),
    "type": "string",
}
_KIND_PROP = {
    "description": (
        "Kind is a string value representing the REST resource this object represents. Servers "
        "may infer this from the endpoint the client submits requests to. In CamelCase."
    ),
    "type": "string",
}


def _published_schema(raw: Schema, gvk: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = _json_copy(dict(raw))
    props = dict(out.get("properties") or {})
    props["apiVersion"] = {**_API_VERSION_PROP, **(props.get("apiVersion") or {})}
    props["kind"] = {**_KIND_PROP, **(props.get("kind") or {})}
    props["metadata"] = {
        "description": (
            "Standard object's metadata. More info: https://git.k8s.io/community/contributors/"
            "devel/sig-architecture/api-conventions.md#metadata"
        ),
        "allOf": [{"$ref": f"#/components/schemas/{_META}.ObjectMeta"}],
        "default": {},
    }
    out["properties"] = props
    out["x-kubernetes-group-version-kind"] = [dict(gvk)]
    return out


def _param(
    name: str, where: str, description: str, schema: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "description": description,
        **({"required": True} if where == "path" else {}),
        "schema": dict(schema or {"type": "string", "uniqueItems": True}),
    }


def _json_response(ref: str, code: str = "200") -> dict[str, Any]:
    content = {
        mt: {"schema": {"$ref": f"#/components/schemas/{ref}"}}
        for mt in ("application/json", "application/yaml")
    }
    return {code: {"description": "OK", "content": content}, "401": {"description": "Unauthorized"}}


def _resource_paths(
    group: str,
    version: str,
    plural: str,
    kind: str,
    name: str,
    list_name: str,
    gvk: Mapping[str, str],
    list_gvk: Mapping[str, str],
    namespaced: bool,
    has_status: bool,
) -> dict[str, Any]:
    base = f"/apis/{group}/{version}"
    collection = f"{base}/namespaces/{{namespace}}/{plural}" if namespaced else f"{base}/{plural}"
    item = f"{collection}/{{name}}"
    scope_params = (
        [_param("namespace", "path", "object name and auth scope, such as for teams and projects")]
        if namespaced
        else []
    )
    name_param = _param("name", "path", f"name of the {kind}")
    write_params = [
        _param(
            "dryRun", "query", "When present, indicates that modifications should not be persisted."
        ),
        _param(
            "fieldManager",
            "query",
            "A name associated with the actor or entity making these changes.",
        ),
        _param(
            "fieldValidation",
            "query",
            "Instructs the server how to handle objects in the request containing unknown or "
            "duplicate fields: Ignore, Warn or Strict.",
        ),
    ]
    patch_body = {
        "content": {
            mt: {"schema": {"$ref": f"#/components/schemas/{_META}.Patch"}}
            for mt in (
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/apply-patch+yaml",
            )
        },
        "required": True,
    }
    object_body = {
        "content": {"*/*": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        "required": True,
    }
    tag = [f"{group.split('.')[0]}_{version}"]

    def op(
        action: str, op_id: str, ref: str, gvk_: Mapping[str, str], **extra: Any
    ) -> dict[str, Any]:
        return {
            "tags": tag,
            "operationId": op_id,
            "responses": _json_response(ref, "201" if action == "post" else "200"),
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": dict(gvk_),
            **extra,
        }

    scope = "Namespaced" if namespaced else ""
    paths: dict[str, Any] = {
        collection: {
            "get": op("list", f"list{scope}{kind}", list_name, list_gvk),
            "post": op(
                "post",
                f"create{scope}{kind}",
                name,
                gvk,
                requestBody=object_body,
                parameters=write_params,
            ),
            "delete": op(
                "deletecollection", f"deletecollection{scope}{kind}", f"{_META}.Status", gvk
            ),
            "parameters": scope_params,
        },
        item: {
            "get": op("get", f"read{scope}{kind}", name, gvk),
            "put": op(
                "put",
                f"replace{scope}{kind}",
                name,
                gvk,
                requestBody=object_body,
                parameters=write_params,
            ),
            "patch": op(
                "patch",
                f"patch{scope}{kind}",
                name,
                gvk,
                requestBody=patch_body,
                parameters=[
                    *write_params,
                    _param(
                        "force",
                        "query",
                        "Force is going to force Apply requests.",
                        {"type": "boolean", "uniqueItems": True},
                    ),
                ],
            ),
            "delete": op("delete", f"delete{scope}{kind}", f"{_META}.Status", gvk),
            "parameters": [name_param, *scope_params],
        },
    }
    if namespaced:
        paths[f"{base}/{plural}"] = {
            "get": op("list", f"list{kind}ForAllNamespaces", list_name, list_gvk),
        }
    if has_status:
        paths[f"{item}/status"] = {
            "get": op("get", f"read{scope}{kind}Status", name, gvk),
            "put": op(
                "put",
                f"replace{scope}{kind}Status",
                name,
                gvk,
                requestBody=object_body,
                parameters=write_params,
            ),
            "patch": op(
                "patch",
                f"patch{scope}{kind}Status",
                name,
                gvk,
                requestBody=patch_body,
                parameters=write_params,
            ),
            "parameters": [name_param, *scope_params],
        }
    return paths


# ------------------------------------------------------------------------------ printer tables

# The column kube-apiserver serves when a CRD version declares no additionalPrinterColumns.
_DEFAULT_COLUMNS: tuple[Mapping[str, Any], ...] = (
    {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
        "description": (
            "CreationTimestamp is a timestamp representing the server time when this object was "
            "created."
        ),
    },
)
_NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some "
    "resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)


@functools.lru_cache(maxsize=256)
def _parse_column_path(json_path: str) -> Any:
    """A parsed JSONPath (jsonpath-ng extended syntax), or None if it does not parse.

    Kubernetes writes column paths relative to the object (`.status.x`, maybe in braces).
    """
    from jsonpath_ng.ext.parser import parse  # lazily: only tables need it

    text = json_path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if not text.startswith("."):
        return None
    try:
        return parse("$" + text)
    except Exception:  # jsonpath-ng raises several exception types for bad syntax
        return None


def human_duration(seconds: float) -> str:
    """Age as kube-apiserver prints it (apimachinery's HumanDuration): 45s, 5m3s, 3h10m, 2d4h."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def _parse_time(text: str) -> datetime | None:
    if not _valid_date_time(text):
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _cell(column_type: str, value: JSON, now: datetime) -> JSON:
    """A table cell as kube-apiserver's CRD table convertor computes it."""
    if column_type == "string":
        # Printed through JSONPath: scalars as text, objects and lists as compact JSON.
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return _num(value)
        if value is None:
            return None
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if value is None:
        return None
    if column_type == "integer":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
        return None
    if column_type == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return None
    if column_type == "boolean":
        return value if isinstance(value, bool) else None
    if column_type == "date":
        if not isinstance(value, str):
            return None
        if value in ("", "null"):
            return "<unknown>"
        when = _parse_time(value)
        if when is None:
            return "<invalid>"
        return human_duration((now - when).total_seconds())
    return None


def printer_columns_table(
    crd_version: Mapping[str, Any],
    objects: Sequence[Mapping[str, Any]],
    include_object: str = "Metadata",
    *,
    now: datetime | None = None,
    resource_version: str | None = None,
) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table of `objects` built from a CRD version's additionalPrinterColumns.

    As kube-apiserver: a Name column first, then the version's columns, or a single Age column
    when it declares none. Cells come from each column's JSONPath (first match); date cells
    are ages ("5m", "3d") relative to `now` (default: the current time), which is what the
    apiserver sends and kubectl prints as it is. Each row's `object` is a PartialObjectMetadata
    ("Metadata", the default), the whole object ("Object") or absent ("None").
    """
    now = now or datetime.now(UTC)
    columns = crd_version.get("additionalPrinterColumns") or _DEFAULT_COLUMNS
    definitions: list[dict[str, Any]] = [
        {
            "name": "Name",
            "type": "string",
            "format": "name",
            "description": _NAME_DESCRIPTION,
            "priority": 0,
        }
    ]
    parsed: list[tuple[str, Any]] = []
    for col in columns:
        jp = str(col.get("jsonPath", ""))
        definitions.append(
            {
                "name": col.get("name", ""),
                "type": col.get("type", "string"),
                "format": col.get("format", ""),
                "description": col.get("description")
                or f"Custom resource definition column (in JSONPath format): {jp}",
                "priority": int(col.get("priority", 0)),
            }
        )
        parsed.append((str(col.get("type", "string")), _parse_column_path(jp)))
    rows: list[dict[str, Any]] = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        cells: list[JSON] = [meta.get("name", "")]
        for column_type, expr in parsed:
            matches = expr.find(obj) if expr is not None else []
            cells.append(_cell(column_type, matches[0].value, now) if matches else None)
        row: dict[str, Any] = {"cells": cells}
        if include_object == "Object":
            row["object"] = _json_copy(dict(obj))
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": _json_copy(dict(meta)),
            }
        rows.append(row)
    table_meta: dict[str, Any] = {}
    if resource_version is not None:
        table_meta["resourceVersion"] = resource_version
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": table_meta,
        "columnDefinitions": definitions,
        "rows": rows,
    }
