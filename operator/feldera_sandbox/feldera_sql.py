"""Read the tables, views and connectors of a Feldera SQL program, as the emulator needs them.

This is not a SQL compiler. It tokenizes the program (comments, string literals, quoted
identifiers, balanced parentheses), splits it into statements and reads only
`CREATE TABLE name (...) [WITH (...)]` and
`CREATE [MATERIALIZED] VIEW name [(...)] [WITH (...)] AS`.
Anything else (functions, types, indexes, the view's query) is skipped unread. Input it cannot
tokenize, or a connectors property that is not a JSON list of objects, raises `SqlParseError`,
which the emulator reports as the program's `SqlError`.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Connector",
    "Program",
    "Relation",
    "SqlParseError",
    "canonical_name",
    "parse_program",
]


class SqlParseError(Exception):
    """The program cannot be read; `line` and `column` are 1-based and point at the culprit."""

    def __init__(self, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


@dataclass(frozen=True)
class Connector:
    """One entry of a relation's `connectors` property."""

    name: str
    paused: bool
    # The connector's JSON as written, `name` included.
    config: dict[str, Any]


@dataclass(frozen=True)
class Relation:
    """A table or a view: its canonical name (lower-cased unless it was quoted) and connectors."""

    name: str
    case_sensitive: bool
    materialized: bool
    fields: tuple[dict[str, Any], ...] = ()
    connectors: tuple[Connector, ...] = ()


@dataclass(frozen=True)
class Program:
    tables: tuple[Relation, ...] = ()
    views: tuple[Relation, ...] = ()
    # Lookup by canonical name, built once.
    _tables_by_name: dict[str, Relation] = field(default_factory=dict, compare=False, repr=False)
    _views_by_name: dict[str, Relation] = field(default_factory=dict, compare=False, repr=False)

    def table(self, name: str) -> Relation | None:
        return self._tables_by_name.get(name)

    def view(self, name: str) -> Relation | None:
        return self._views_by_name.get(name)


def canonical_name(identifier: str) -> str:
    """The name a SQL identifier (or a URL path segment holding one) stands for.

    Quoted (`"MyTable"`) keeps its case, with `""` read as one quote; unquoted folds to lower case.
    """
    if len(identifier) >= 2 and identifier.startswith('"') and identifier.endswith('"'):
        return identifier[1:-1].replace('""', '"')
    return identifier.lower()


@dataclass(frozen=True)
class _Token:
    kind: str  # "word" | "quoted" | "string" | "punct"
    text: str  # identifier / keyword / literal value (unescaped) / punctuation
    pos: int


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*|[0-9]+(?:\.[0-9]*)?")


def _position(source: str, pos: int) -> tuple[int, int]:
    line = source.count("\n", 0, pos) + 1
    column = pos - (source.rfind("\n", 0, pos) + 1) + 1
    return line, column


def _fail(source: str, pos: int, message: str) -> SqlParseError:
    line, column = _position(source, pos)
    return SqlParseError(message, line, column)


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    depth_stack: list[int] = []
    i = 0
    n = len(source)
    while i < n:
        c = source[i]
        if c.isspace():
            i += 1
        elif source.startswith("--", i):
            end = source.find("\n", i)
            i = n if end < 0 else end + 1
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            if end < 0:
                raise _fail(source, i, "unterminated comment")
            i = end + 2
        elif c in "'\"":
            # Both literals escape their delimiter by doubling it.
            j = i + 1
            parts: list[str] = []
            while True:
                end = source.find(c, j)
                if end < 0:
                    what = "string literal" if c == "'" else "quoted identifier"
                    raise _fail(source, i, f"unterminated {what}")
                parts.append(source[j:end])
                if source.startswith(c * 2, end):
                    parts.append(c)
                    j = end + 2
                    continue
                i = end + 1
                break
            kind = "string" if c == "'" else "quoted"
            tokens.append(_Token(kind, "".join(parts), i))
        elif c == "(":
            depth_stack.append(i)
            tokens.append(_Token("punct", c, i))
            i += 1
        elif c == ")":
            if not depth_stack:
                raise _fail(source, i, "unbalanced ')'")
            depth_stack.pop()
            tokens.append(_Token("punct", c, i))
            i += 1
        else:
            m = _WORD.match(source, i)
            if m:
                tokens.append(_Token("word", m.group(0), i))
                i = m.end()
            else:
                tokens.append(_Token("punct", c, i))
                i += 1
    if depth_stack:
        raise _fail(source, depth_stack[-1], "unbalanced '('")
    return tokens


def _statements(tokens: list[_Token]) -> list[list[_Token]]:
    statements: list[list[_Token]] = []
    current: list[_Token] = []
    depth = 0
    for tok in tokens:
        if tok.kind == "punct":
            if tok.text == "(":
                depth += 1
            elif tok.text == ")":
                depth -= 1
            elif tok.text == ";" and depth == 0:
                if current:
                    statements.append(current)
                current = []
                continue
        current.append(tok)
    if current:
        statements.append(current)
    return statements


def _is_word(tok: _Token | None, *words: str) -> bool:
    return tok is not None and tok.kind == "word" and tok.text.upper() in words


def _closing(tokens: list[_Token], open_index: int) -> int:
    """Index of the ')' matching the '(' at `open_index` (the tokenizer guaranteed one)."""
    depth = 0
    for k in range(open_index, len(tokens)):
        if tokens[k].kind == "punct":
            if tokens[k].text == "(":
                depth += 1
            elif tokens[k].text == ")":
                depth -= 1
                if depth == 0:
                    return k
    raise AssertionError("unbalanced parentheses after tokenizing")


def _split_top_level(tokens: list[_Token]) -> list[list[_Token]]:
    items: list[list[_Token]] = [[]]
    depth = 0
    for tok in tokens:
        if tok.kind == "punct" and tok.text == "(":
            depth += 1
        elif tok.kind == "punct" and tok.text == ")":
            depth -= 1
        elif tok.kind == "punct" and tok.text == "," and depth == 0:
            items.append([])
            continue
        items[-1].append(tok)
    return [item for item in items if item]


_NOT_COLUMNS = {"PRIMARY", "FOREIGN", "CONSTRAINT", "UNIQUE", "CHECK", "WATERMARK", "LATENESS"}


def _columns(tokens: list[_Token]) -> tuple[dict[str, Any], ...]:
    fields: list[dict[str, Any]] = []
    for item in _split_top_level(tokens):
        head = item[0]
        if head.kind == "word" and head.text.upper() in _NOT_COLUMNS:
            continue
        if head.kind not in ("word", "quoted"):
            continue
        quoted = head.kind == "quoted"
        type_name = item[1].text.upper() if len(item) > 1 and item[1].kind == "word" else "NULL"
        nullable = not any(
            _is_word(a, "NOT") and _is_word(b, "NULL") for a, b in itertools.pairwise(item)
        )
        fields.append(
            {
                "name": head.text if quoted else head.text.lower(),
                "case_sensitive": quoted,
                "columntype": {"type": type_name, "nullable": nullable},
                "unused": False,
            }
        )
    return tuple(fields)


def _properties(source: str, tokens: list[_Token]) -> dict[str, tuple[str, int]]:
    """`'key' = 'value'` pairs of a WITH clause: key → (value, position of the value)."""
    props: dict[str, tuple[str, int]] = {}
    for item in _split_top_level(tokens):
        if (
            len(item) != 3
            or item[0].kind != "string"
            or item[1].text != "="
            or item[2].kind != "string"
        ):
            raise _fail(source, item[0].pos, "expected 'key' = 'value' in WITH clause")
        props[item[0].text] = (item[2].text, item[2].pos)
    return props


def _connectors(source: str, text: str, pos: int) -> tuple[Connector, ...]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise _fail(source, pos, f"invalid JSON in 'connectors': {err.msg}") from err
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
        raise _fail(source, pos, "'connectors' must be a JSON list of objects")
    result: list[Connector] = []
    seen: set[str] = set()
    for index, config in enumerate(value):
        # Like the SQL compiler: an unnamed connector is named by its position in the list.
        name = config.get("name")
        if name is None:
            name = f"unnamed-{index}"
        if not isinstance(name, str) or not name:
            raise _fail(source, pos, "a connector's 'name' must be a non-empty string")
        if name in seen:
            raise _fail(source, pos, f"duplicate connector name '{name}'")
        seen.add(name)
        paused = config.get("paused", False)
        if not isinstance(paused, bool):
            raise _fail(source, pos, f"connector '{name}': 'paused' must be a boolean")
        result.append(Connector(name=name, paused=paused, config=config))
    return tuple(result)


def _relation_name(source: str, tok: _Token | None, what: str, at: int) -> tuple[str, bool]:
    if tok is None or tok.kind not in ("word", "quoted"):
        raise _fail(source, tok.pos if tok else at, f"expected a {what} name")
    if tok.kind == "quoted":
        return tok.text, True
    return tok.text.lower(), False


def _with_clause(source: str, stmt: list[_Token], k: int) -> tuple[tuple[Connector, ...], int]:
    """Reads an optional WITH (...) at stmt[k]; returns its connectors and the index after it."""
    if not _is_word(stmt[k] if k < len(stmt) else None, "WITH"):
        return (), k
    if k + 1 >= len(stmt) or stmt[k + 1].text != "(":
        raise _fail(source, stmt[k].pos, "expected '(' after WITH")
    end = _closing(stmt, k + 1)
    props = _properties(source, stmt[k + 2 : end])
    connectors: tuple[Connector, ...] = ()
    if "connectors" in props:
        connectors = _connectors(source, *props["connectors"])
    return connectors, end + 1


def _table(source: str, stmt: list[_Token], k: int) -> Relation:
    name, quoted = _relation_name(source, stmt[k] if k < len(stmt) else None, "table", stmt[0].pos)
    k += 1
    if k >= len(stmt) or stmt[k].text != "(":
        raise _fail(source, stmt[k - 1].pos, f"expected '(' after CREATE TABLE {name}")
    end = _closing(stmt, k)
    fields = _columns(stmt[k + 1 : end])
    connectors, _ = _with_clause(source, stmt, end + 1)
    return Relation(name, quoted, False, fields, connectors)


def _view(source: str, stmt: list[_Token], k: int, materialized: bool) -> Relation:
    name, quoted = _relation_name(source, stmt[k] if k < len(stmt) else None, "view", stmt[0].pos)
    k += 1
    fields: tuple[dict[str, Any], ...] = ()
    if k < len(stmt) and stmt[k].text == "(":
        end = _closing(stmt, k)
        fields = _columns(stmt[k + 1 : end])
        k = end + 1
    connectors, k = _with_clause(source, stmt, k)
    if not _is_word(stmt[k] if k < len(stmt) else None, "AS"):
        raise _fail(source, stmt[min(k, len(stmt) - 1)].pos, f"expected AS in CREATE VIEW {name}")
    return Relation(name, quoted, materialized, fields, connectors)


def parse_program(source: str) -> Program:
    """Tables and views (with their connectors) of a SQL program; `SqlParseError` if unreadable."""
    tables: list[Relation] = []
    views: list[Relation] = []
    for stmt in _statements(_tokenize(source)):
        if not _is_word(stmt[0], "CREATE"):
            continue
        k = 1
        if _is_word(stmt[k] if k < len(stmt) else None, "OR"):
            k += 2  # CREATE OR REPLACE
        materialized = False
        while _is_word(stmt[k] if k < len(stmt) else None, "MATERIALIZED", "LOCAL"):
            materialized = materialized or stmt[k].text.upper() == "MATERIALIZED"
            k += 1
        head = stmt[k] if k < len(stmt) else None
        if _is_word(head, "TABLE"):
            tables.append(_table(source, stmt, k + 1))
        elif _is_word(head, "VIEW"):
            views.append(_view(source, stmt, k + 1, materialized))
    by_table: dict[str, Relation] = {}
    by_view: dict[str, Relation] = {}
    for rel in tables:
        if rel.name in by_table:
            raise SqlParseError(f"table '{rel.name}' is declared twice")
        by_table[rel.name] = rel
    for rel in views:
        if rel.name in by_view or rel.name in by_table:
            raise SqlParseError(f"view '{rel.name}' is declared twice")
        by_view[rel.name] = rel
    return Program(tuple(tables), tuple(views), by_table, by_view)
