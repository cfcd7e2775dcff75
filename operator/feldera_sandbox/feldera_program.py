"""What Feldera's compiler makes of a pipeline's program, and what changed between two programs.

`compile_program` decides how a compilation ends, in the shapes the pipeline manager reports:
- `SqlError` with the SQL compiler's messages (`start_line_number`, `start_column`,
  `end_line_number`, `end_column`, `warning`, `error_type`, `message`, `snippet`) for SQL that
  `feldera_sql` cannot read;
- `RustError` (`rust_compilation: {exit_code, stdout, stderr}`) for UDFs that would not build:
  `udf_rust` whose braces do not balance, a `compile_error!("...")` in it, a SQL function declared
  without a body (a Rust UDF) that `udf_rust` does not define, or a `udf_toml` that is not TOML;
- `SystemError` when `program_config.runtime_version` asks for a runtime other than the
  platform's own, which needs the `runtime_version` unstable feature this emulator does not have;
- `Success` otherwise, with `program_info` (schema, connectors, a dataflow stand-in).

`pipeline_diff` computes the `PipelineDiff` Feldera shows at `/diff` and while a pipeline awaits
approval. A table or view is modified when its definition (text without comments, spacing,
letter case of unquoted words or connectors) changed, and a view also when a relation it reads was
modified: the real compiler gives each relation a persistent id computed from its dataflow, so a
change ripples down to the views that depend on it. A connector is modified when its JSON changed
other than `paused` (inputs also ignore the flow-control settings `max_batch_size`,
`max_worker_batch_size`, `max_queued_records`, `max_queued_bytes`); connectors of removed
relations are not listed as removed, as Feldera does not list them.

`bootstrap_blockers` tells why a change cannot be bootstrapped: a `LATENESS` in either program
(Feldera refuses those outright), or a new or modified view reading, directly or through other
views, an unchanged table that is not materialized (its contents are gone, so the view cannot be
computed from the checkpoint).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from feldera_sandbox.feldera_sql import Program, Relation, SqlParseError, parse_program

__all__ = [
    "Compilation",
    "bootstrap_blockers",
    "compile_program",
    "diff_is_empty",
    "pipeline_diff",
    "program_info",
    "runtime_version_error",
    "sql_messages",
]

CompileStatus = Literal["Success", "SqlError", "RustError", "SystemError"]

_RUNTIME_VERSION_ERROR: Final = (
    "A custom runtime version was requested, but this Feldera instance does not have the "
    "'runtime_version' feature enabled."
)
_INPUT_FLOW_CONTROL: Final = (
    "paused",
    "max_batch_size",
    "max_worker_batch_size",
    "max_queued_records",
    "max_queued_bytes",
)
_COMPILE_ERROR = re.compile(r'compile_error!\s*\(\s*"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Compilation:
    """How compiling a program ends. `program` is set once the SQL compiled (even if Rust then
    failed); `messages` are the SQL compiler's; `rust` and `system_error` as in `program_error`."""

    status: CompileStatus
    program: Program | None = None
    messages: tuple[dict[str, Any], ...] = ()
    rust: dict[str, Any] | None = None
    system_error: str | None = None
    info: dict[str, Any] | None = None


def runtime_version_error(runtime_version: str | None, platform_version: str) -> str | None:
    """Why a runtime version cannot be used here (None when it is the platform's own)."""
    if runtime_version is None or runtime_version.lstrip("v") == platform_version:
        return None
    return _RUNTIME_VERSION_ERROR


def compile_program(
    program_code: str,
    udf_rust: str,
    udf_toml: str,
    program_config: Mapping[str, Any],
    platform_version: str,
) -> Compilation:
    system = runtime_version_error(program_config.get("runtime_version"), platform_version)
    if system is not None:
        return Compilation("SystemError", system_error=system)
    try:
        program = parse_program(program_code)
    except SqlParseError as err:
        return Compilation("SqlError", messages=sql_messages(program_code, [err]))
    info = program_info(program)
    stderr = _rust_errors(program, udf_rust, udf_toml)
    if stderr:
        rust = {"exit_code": 101, "stdout": "", "stderr": stderr}
        return Compilation("RustError", program, rust=rust, info=info)
    return Compilation("Success", program, info=info)


# ------------------------------------------------------------------------------ SQL messages


def _snippet(source: str, err: SqlParseError) -> str | None:
    """The compiler's decorated fragment: numbered lines around the error, `^` under it."""
    if not err.snippet:
        return None
    # Java's String.split drops trailing empty strings; the compiler's line list does too.
    lines = source.split("\n")
    while lines and not lines[-1]:
        lines.pop()
    start = err.line - 1
    if not 0 <= start < len(lines):
        return ""
    out: list[str] = []
    if err.end_line == err.line:
        if start == len(lines) - 1 and len(lines) > 1:
            out.append(f"{start:5d}|{lines[start - 1]}\n")
        out.append(f"{start + 1:5d}|{lines[start]}\n")
        out.append(" " * (err.column - 1 + 6) + "^" * (err.end_column - err.column + 1) + "\n")
        if start + 1 < len(lines):
            out.append(f"{start + 2:5d}|{lines[start + 1]}\n")
    else:
        for number in range(start, min(err.end_line, len(lines))):
            out.append(f"{number + 1:5d}|{lines[number]}\n")
    return "".join(out)


def sql_messages(source: str, errors: Iterable[SqlParseError]) -> tuple[dict[str, Any], ...]:
    return tuple(
        {
            "start_line_number": err.line,
            "start_column": err.column,
            "end_line_number": err.end_line,
            "end_column": err.end_column,
            "warning": False,
            "error_type": err.error_type,
            "message": err.message,
            "snippet": _snippet(source, err),
        }
        for err in errors
    )


# ------------------------------------------------------------------------------------- Rust


def _strip_rust(code: str) -> str:
    """The code with comments, string and character literals blanked out (positions kept)."""
    out = list(code)
    i, n = 0, len(code)

    def blank(a: int, b: int) -> None:
        for k in range(a, min(b, n)):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        if code.startswith("//", i):
            end = code.find("\n", i)
            end = n if end < 0 else end
            blank(i, end)
            i = end
        elif code.startswith("/*", i):
            end = code.find("*/", i + 2)
            end = n if end < 0 else end + 2
            blank(i, end)
            i = end
        elif code[i] == '"':
            j = i + 1
            while j < n and code[j] != '"':
                j += 2 if code[j] == "\\" else 1
            blank(i, j + 1)
            i = j + 1
        elif code[i] == "'" and re.match(r"'(\\.|[^\\'])'", code[i : i + 4]):
            end = code.index("'", i + 1 + (code[i + 1] == "\\")) + 1
            blank(i, end)
            i = end
        else:
            i += 1
    return "".join(out)


def _brace_error(code: str) -> str | None:
    stripped = _strip_rust(code)
    stack: list[tuple[str, int]] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for pos, c in enumerate(stripped):
        if c in "([{":
            stack.append((c, pos))
        elif c in pairs:
            if not stack or stack[-1][0] != pairs[c]:
                line, column = _line_col(code, pos)
                return (
                    f"error: unexpected closing delimiter: `{c}`\n --> src/udf.rs:{line}:{column}\n"
                )
            stack.pop()
    if stack:
        line, column = _line_col(code, stack[-1][1])
        return f"error: this file contains an unclosed delimiter\n --> src/udf.rs:{line}:{column}\n"
    return None


def _line_col(code: str, pos: int) -> tuple[int, int]:
    return code.count("\n", 0, pos) + 1, pos - (code.rfind("\n", 0, pos) + 1) + 1


def _rust_errors(program: Program, udf_rust: str, udf_toml: str) -> str:
    errors: list[str] = []
    if udf_toml.strip():
        try:
            tomllib.loads(udf_toml)
        except tomllib.TOMLDecodeError as err:
            errors.append(
                "error: failed to parse manifest at `/udf/Cargo.toml`\n\n"
                f"Caused by:\n  TOML parse error: {err}\n"
            )
    braces = _brace_error(udf_rust)
    if braces is not None:
        errors.append(braces)
    for match in _COMPILE_ERROR.finditer(udf_rust):
        line, column = _line_col(udf_rust, match.start())
        errors.append(f"error: {match.group(1)}\n --> src/udf.rs:{line}:{column}\n")
    if braces is None:
        stripped = _strip_rust(udf_rust)
        for function in program.rust_functions:
            if not re.search(rf"\bfn\s+{re.escape(function)}\b", stripped):
                errors.append(
                    f"error[E0425]: cannot find function `{function}` in module `udf`\n"
                    " --> src/stubs.rs\n"
                )
    if errors:
        errors.append("error: could not compile `feldera_pipeline` due to previous errors\n")
    return "".join(errors)


# ------------------------------------------------------------------------------ program_info


def _relation_json(rel: Relation) -> dict[str, Any]:
    return {
        "name": rel.name,
        "case_sensitive": rel.case_sensitive,
        "fields": list(rel.fields),
        "materialized": rel.materialized,
        "properties": {},
    }


def connector_config(relation: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """A connector as `program_info` shows it: its JSON with `stream` set to its relation."""
    result: dict[str, Any] = {"stream": relation, "paused": False}
    result.update({k: v for k, v in config.items() if k != "name"})
    result["stream"] = relation
    return result


def _persistent_ids(program: Program) -> dict[str, str]:
    """A stand-in for the compiler's persistent node ids: a hash of a relation's definition and,
    for a view, of the ids of the relations it reads, so that a change ripples downstream."""
    ids: dict[str, str] = {}
    for table in program.tables:
        ids[table.name] = hashlib.sha256(table.definition.encode()).hexdigest()[:16]
    for view in program.views:
        reads = "|".join(f"{ref}={ids.get(ref, '?')}" for ref in view.references)
        text = f"{view.definition}|{reads}"
        ids[view.name] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return ids


def program_info(program: Program) -> dict[str, Any]:
    ids = _persistent_ids(program)
    mir: dict[str, Any] = {}
    for kind, relations in (("table", program.tables), ("view", program.views)):
        for rel in relations:
            mir[str(len(mir))] = {"operation": kind, kind: rel.name, "persistent_id": ids[rel.name]}
    return {
        "schema": {
            "inputs": [_relation_json(t) for t in program.tables],
            "outputs": [_relation_json(v) for v in program.views],
        },
        "main_rust": "",
        "udf_stubs": "",
        "dataflow": {"mir": mir},
        "input_connectors": {
            f"{t.name}.{c.name}": connector_config(t.name, c.config)
            for t in program.tables
            for c in t.connectors
        },
        "output_connectors": {
            f"{v.name}.{c.name}": connector_config(v.name, c.config)
            for v in program.views
            for c in v.connectors
        },
    }


# --------------------------------------------------------------------------------------- diff


def _connectors(relations: Iterable[Relation]) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        f"{rel.name}.{c.name}": (rel.name, dict(c.config))
        for rel in relations
        for c in rel.connectors
    }


def _without(config: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    skip = set(keys)
    return {k: v for k, v in config.items() if k not in skip}


def _relation_changes(
    old: Mapping[str, str], new: Mapping[str, str]
) -> tuple[list[str], list[str], list[str]]:
    added = sorted(k for k in new if k not in old)
    removed = sorted(k for k in old if k not in new)
    modified = sorted(k for k in new if k in old and old[k] != new[k])
    return added, removed, modified


def pipeline_diff(old: Program, new: Program) -> dict[str, Any]:
    """The `PipelineDiff` from `old` to `new` (lists sorted, as Feldera's are)."""
    old_ids, new_ids = _persistent_ids(old), _persistent_ids(new)
    old_tables = {t.name: old_ids[t.name] for t in old.tables}
    new_tables = {t.name: new_ids[t.name] for t in new.tables}
    old_views = {v.name: old_ids[v.name] for v in old.views}
    new_views = {v.name: new_ids[v.name] for v in new.views}
    added_tables, removed_tables, modified_tables = _relation_changes(old_tables, new_tables)
    added_views, removed_views, modified_views = _relation_changes(old_views, new_views)
    diff: dict[str, Any] = {
        "program_diff": {
            "added_tables": added_tables,
            "removed_tables": removed_tables,
            "modified_tables": modified_tables,
            "added_views": added_views,
            "removed_views": removed_views,
            "modified_views": modified_views,
        },
        "program_diff_error": None,
    }
    for side, old_rels, new_rels, gone, ignored in (
        ("input", old.tables, new.tables, removed_tables, _INPUT_FLOW_CONTROL),
        ("output", old.views, new.views, removed_views, ("paused",)),
    ):
        before, after = _connectors(old_rels), _connectors(new_rels)
        diff[f"added_{side}_connectors"] = sorted(k for k in after if k not in before)
        diff[f"modified_{side}_connectors"] = sorted(
            k
            for k in after
            if k in before and _without(before[k][1], ignored) != _without(after[k][1], ignored)
        )
        diff[f"removed_{side}_connectors"] = sorted(
            k for k, (rel, _) in before.items() if k not in after and rel not in gone
        )
    return diff


def diff_is_empty(diff: Mapping[str, Any]) -> bool:
    """No change at all: the program's relations and every connector list are empty."""
    lists = [v for v in diff["program_diff"].values()]
    lists += [v for k, v in diff.items() if k.endswith("_connectors")]
    return not any(lists)


def _program_changed(diff: Mapping[str, Any]) -> bool:
    return any(diff["program_diff"].values())


def lateness_blockers(old: Program, new: Program, diff: Mapping[str, Any]) -> str | None:
    """Feldera's reason to refuse bootstrapping a change to a program with `LATENESS`."""
    if not _program_changed(diff):
        return None
    lines = []
    new_late = [r.name for r in (*new.tables, *new.views) if r.lateness]
    old_late = [r.name for r in (*old.tables, *old.views) if r.lateness]
    if new_late:
        lines.append(
            "- The new version of the program has relations with lateness: " + ", ".join(new_late)
        )
    if old_late:
        lines.append(
            "- The checkpointed version of the program has relations with lateness: "
            + ", ".join(old_late)
        )
    return "\n".join(lines) + "\n" if lines else None


def _non_materialized_sources(new: Program, diff: Mapping[str, Any]) -> list[str]:
    program = diff["program_diff"]
    fresh = set(program["added_views"]) | set(program["modified_views"])
    changed_tables = set(program["added_tables"]) | set(program["modified_tables"])
    views = {v.name: v for v in new.views}
    sources: set[str] = set()
    seen: set[str] = set()
    stack = sorted(fresh)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        view = views.get(name)
        if view is None:
            continue
        for ref in view.references:
            table = new.table(ref)
            if table is not None:
                if not table.materialized and ref not in changed_tables:
                    sources.add(ref)
            else:
                stack.append(ref)
    return sorted(sources)


def bootstrap_blockers(old: Program, new: Program, diff: Mapping[str, Any]) -> str | None:
    """Why a pipeline whose checkpoint holds `old` cannot bootstrap `new` (None: it can)."""
    late = lateness_blockers(old, new, diff)
    if late is not None:
        return late
    sources = _non_materialized_sources(new, diff)
    if sources:
        return (
            "- The following tables are not materialized, but some of the views that depend on "
            "these tables require bootstrapping: "
            + ", ".join(f"'{t}'" for t in sources)
            + ". We recommend materializing all tables in the program to avoid such errors in "
            "the future"
        )
    return None
