"""Read the tables, views and connectors of a Feldera SQL program, as the emulator needs them.

This is not a SQL compiler. It tokenizes the program (comments, string literals, quoted
identifiers, balanced parentheses), splits it into statements and reads
`CREATE TABLE name (...) [WITH (...)]`, `CREATE [MATERIALIZED|LOCAL] VIEW name [(...)] [WITH (...)]
AS query`, `DECLARE RECURSIVE VIEW`, `LATENESS` statements and which `CREATE FUNCTION`s have no
SQL body (Rust UDFs). Of a view's query it reads only which relations it names. Other statements
it knows (`CREATE TYPE`, `CREATE INDEX`, `CREATE AGGREGATE`, `INSERT`) are skipped unread.

It refuses, with the position the real compiler would point at, what it can recognise as wrong:
unbalanced parentheses or quotes, a dangling comma, an unknown statement, a view reading a table
or view that is not declared before it, and a `connectors` property that is not a JSON list of
objects. `SqlParseError` carries the first such problem; the emulator reports it as the program's
`SqlError`, in the shape of the SQL compiler's messages.
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

# The SQL compiler's `error_type`s for the problems this reader recognises.
PARSE_ERROR = "Error parsing SQL"
STATEMENT_ERROR = "Error in SQL statement"
CONNECTOR_ERROR = "ConnectorGenerationError"


class SqlParseError(Exception):
    """The program cannot be read. Positions are 1-based; `end_column` is inclusive, as the SQL
    compiler reports it. A connector error has no snippet (`snippet=False`), as Feldera's own."""

    def __init__(
        self,
        message: str,
        line: int = 1,
        column: int = 1,
        *,
        end_line: int | None = None,
        end_column: int | None = None,
        error_type: str = PARSE_ERROR,
        snippet: bool = True,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.end_line = line if end_line is None else end_line
        self.end_column = column if end_column is None else end_column
        self.error_type = error_type
        self.snippet = snippet


@dataclass(frozen=True)
class Connector:
    """One entry of a relation's `connectors` property."""

    name: str
    paused: bool
    # The connector's JSON as written, `name` included.
    config: dict[str, Any]


@dataclass(frozen=True)
class Relation:
    """A table or a view: its canonical name (lower-cased unless it was quoted) and connectors.

    `definition` is the relation's text with comments, spacing, letter case of unquoted words and
    its connectors taken out: two relations with the same `definition` are the same relation.
    `references` are the relations a view's query names; `lateness` says a `LATENESS` applies.
    """

    name: str
    case_sensitive: bool
    materialized: bool
    fields: tuple[dict[str, Any], ...] = ()
    connectors: tuple[Connector, ...] = ()
    definition: str = ""
    references: tuple[str, ...] = ()
    lateness: bool = False


@dataclass(frozen=True)
class Program:
    tables: tuple[Relation, ...] = ()
    views: tuple[Relation, ...] = ()
    # Functions declared without a SQL body: their Rust implementation must be in `udf_rust`.
    rust_functions: tuple[str, ...] = ()
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
    pos: int  # offset of the first character
    end: int  # offset just past the last character

    @property
    def name(self) -> str:
        """The canonical name this token stands for, when it is an identifier."""
        return self.text if self.kind == "quoted" else self.text.lower()

    def normal(self) -> str:
        if self.kind == "word":
            return self.text.lower()
        if self.kind == "quoted":
            return '"' + self.text.replace('"', '""') + '"'
        if self.kind == "string":
            return "'" + self.text.replace("'", "''") + "'"
        return self.text


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*|[0-9]+(?:\.[0-9]*)?")
_STATEMENTS = {"CREATE", "DECLARE", "LATENESS", "INSERT"}
_CREATE_KINDS = {"TABLE", "VIEW", "FUNCTION", "TYPE", "INDEX", "AGGREGATE"}
_CREATE_MODIFIERS = {"MATERIALIZED", "LOCAL"}
# Words after which a comma cannot dangle: the list it ended has to go on.
_LIST_ENDERS = {"FROM", "WHERE", "GROUP", "HAVING", "ORDER", "LIMIT", "UNION", "EXCEPT"}
_FROM_ENDERS = _LIST_ENDERS | {"INTERSECT", "WINDOW", "QUALIFY", "ON", "USING", "JOIN"}
_NOT_RELATIONS = {"LATERAL", "UNNEST", "TABLE", "SELECT", "VALUES"}


def _position(source: str, pos: int) -> tuple[int, int]:
    line = source.count("\n", 0, pos) + 1
    column = pos - (source.rfind("\n", 0, pos) + 1) + 1
    return line, column


def _fail(
    source: str,
    pos: int,
    message: str,
    *,
    end: int | None = None,
    error_type: str = PARSE_ERROR,
    snippet: bool = True,
) -> SqlParseError:
    line, column = _position(source, pos)
    end_line, end_column = _position(source, max(pos, (end or pos + 1) - 1))
    return SqlParseError(
        message,
        line,
        column,
        end_line=end_line,
        end_column=end_column,
        error_type=error_type,
        snippet=snippet,
    )


def _encountered(source: str, tok: _Token | None, eof: int) -> SqlParseError:
    """The SQL parser's complaint about an unexpected token (None: the end of the input)."""
    if tok is None:
        line, column = _position(source, eof)
        return _fail(source, eof, f'Encountered "<EOF>" at line {line}, column {column}.')
    line, column = _position(source, tok.pos)
    shown = tok.text if tok.kind in ("word", "punct") else source[tok.pos : tok.end]
    return _fail(
        source, tok.pos, f'Encountered "{shown}" at line {line}, column {column}.', end=tok.end
    )


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
                line, column = _position(source, n)
                raise _fail(
                    source,
                    i,
                    f"Lexical error at line {line}, column {column}.  Encountered: <EOF> "
                    "after an unterminated comment",
                )
            i = end + 2
        elif c in "'\"":
            # Both literals escape their delimiter by doubling it.
            j = i + 1
            parts: list[str] = []
            while True:
                end = source.find(c, j)
                if end < 0:
                    line, column = _position(source, n)
                    what = "string literal" if c == "'" else "quoted identifier"
                    raise _fail(
                        source,
                        i,
                        f"Lexical error at line {line}, column {column}.  Encountered: <EOF> "
                        f"after : {source[i : i + 20]!r} (an unterminated {what})",
                        end=n,
                    )
                parts.append(source[j:end])
                if source.startswith(c * 2, end):
                    parts.append(c)
                    j = end + 2
                    continue
                start, i = i, end + 1
                break
            kind = "string" if c == "'" else "quoted"
            tokens.append(_Token(kind, "".join(parts), start, i))
        elif c == "(":
            depth_stack.append(i)
            tokens.append(_Token("punct", c, i, i + 1))
            i += 1
        elif c == ")":
            tok = _Token("punct", c, i, i + 1)
            if not depth_stack:
                raise _encountered(source, tok, i)
            depth_stack.pop()
            tokens.append(tok)
            i += 1
        elif c == ";" and depth_stack:
            # A statement cannot end inside parentheses: the '(' was never closed.
            raise _encountered(source, _Token("punct", c, i, i + 1), i)
        else:
            m = _WORD.match(source, i)
            if m:
                tokens.append(_Token("word", m.group(0), i, m.end()))
                i = m.end()
            else:
                tokens.append(_Token("punct", c, i, i + 1))
                i += 1
    if depth_stack:
        raise _encountered(source, None, len(source.rstrip()))
    return tokens


def _statements(tokens: list[_Token]) -> list[list[_Token]]:
    statements: list[list[_Token]] = []
    current: list[_Token] = []
    for tok in tokens:
        # The tokenizer refused ';' inside parentheses, so every ';' ends a statement.
        if tok.kind == "punct" and tok.text == ";":
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


def _is_punct(tok: _Token | None, text: str) -> bool:
    return tok is not None and tok.kind == "punct" and tok.text == text


def _at(stmt: list[_Token], k: int) -> _Token | None:
    return stmt[k] if 0 <= k < len(stmt) else None


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


def _check_commas(source: str, stmt: list[_Token]) -> None:
    """A comma must be followed by another item of its list."""
    for k, tok in enumerate(stmt):
        following = _at(stmt, k + 1)
        if _is_punct(tok, ","):
            if following is None:
                raise _encountered(source, None, tok.end)
            if (
                _is_punct(following, ")")
                or _is_punct(following, ",")
                or _is_word(following, *_LIST_ENDERS)
            ):
                raise _encountered(source, following, tok.end)
        elif _is_punct(tok, "(") and _is_punct(following, ","):
            assert following is not None
            raise _encountered(source, following, tok.end)


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


def _properties(source: str, tokens: list[_Token]) -> dict[str, _Token]:
    """`'key' = 'value'` pairs of a WITH clause: key → the value's token."""
    props: dict[str, _Token] = {}
    for item in _split_top_level(tokens):
        if (
            len(item) != 3
            or item[0].kind != "string"
            or item[1].text != "="
            or item[2].kind != "string"
        ):
            raise _encountered(source, item[min(1, len(item) - 1)], item[-1].end)
        props[item[0].text] = item[2]
    return props


def _connectors(source: str, relation: str, value: _Token) -> tuple[Connector, ...]:
    def invalid(reason: str) -> SqlParseError:
        return _fail(
            source,
            value.pos,
            f"relation '{relation}': property 'connectors' has value '{value.text}' which is "
            f"invalid: {reason}",
            end=value.end,
            error_type=CONNECTOR_ERROR,
            snippet=False,
        )

    try:
        parsed = json.loads(value.text)
    except json.JSONDecodeError as err:
        raise invalid(
            f"unable to deserialize JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from err
    if not isinstance(parsed, list) or not all(isinstance(c, dict) for c in parsed):
        raise invalid("expected a JSON array of connector objects")
    result: list[Connector] = []
    seen: set[str] = set()
    for index, config in enumerate(parsed):
        # Like the SQL compiler: an unnamed connector is named by its position in the list.
        name = config.get("name")
        if name is None:
            name = f"unnamed-{index}"
        if not isinstance(name, str) or not name:
            raise invalid("a connector's 'name' must be a non-empty string")
        if name in seen:
            raise invalid(f"duplicate connector name '{name}'")
        seen.add(name)
        paused = config.get("paused", False)
        if not isinstance(paused, bool):
            raise invalid(f"connector '{name}': 'paused' must be a boolean")
        result.append(Connector(name=name, paused=paused, config=config))
    return tuple(result)


def _relation_name(source: str, stmt: list[_Token], k: int) -> tuple[str, bool]:
    tok = _at(stmt, k)
    if tok is None or tok.kind not in ("word", "quoted"):
        raise _encountered(source, tok, stmt[-1].end)
    return tok.name, tok.kind == "quoted"


@dataclass
class _With:
    connectors: tuple[Connector, ...] = ()
    # The properties other than `connectors`, normalised: part of the relation's definition.
    others: str = ""
    materialized: bool = False
    end: int = 0


def _with_clause(source: str, stmt: list[_Token], k: int, relation: str) -> _With:
    """Reads an optional WITH (...) at stmt[k]."""
    if not _is_word(_at(stmt, k), "WITH"):
        return _With(end=k)
    if not _is_punct(_at(stmt, k + 1), "("):
        raise _encountered(source, _at(stmt, k + 1), stmt[-1].end)
    end = _closing(stmt, k + 1)
    props = _properties(source, stmt[k + 2 : end])
    result = _With(end=end + 1)
    if "connectors" in props:
        result.connectors = _connectors(source, relation, props["connectors"])
    result.others = " ".join(
        f"'{key}'={value.normal()}" for key, value in sorted(props.items()) if key != "connectors"
    )
    materialized = props.get("materialized")
    result.materialized = materialized is not None and materialized.text.lower() == "true"
    return result


def _normal(tokens: list[_Token]) -> str:
    return " ".join(tok.normal() for tok in tokens)


def _table(source: str, stmt: list[_Token], k: int) -> Relation:
    name, quoted = _relation_name(source, stmt, k)
    k += 1
    if not _is_punct(_at(stmt, k), "("):
        raise _encountered(source, _at(stmt, k), stmt[-1].end)
    end = _closing(stmt, k)
    body = stmt[k + 1 : end]
    with_ = _with_clause(source, stmt, end + 1, name)
    if with_.end < len(stmt):
        raise _encountered(source, stmt[with_.end], stmt[-1].end)
    return Relation(
        name,
        quoted,
        with_.materialized,
        _columns(body),
        with_.connectors,
        definition=f"table ( {_normal(body)} ) {with_.others}".strip(),
        lateness=any(_is_word(tok, "LATENESS") for tok in body),
    )


def _ctes(query: list[_Token]) -> set[str]:
    """Names the query defines itself (`WITH name [(cols)] AS (...)`): not relations to look up."""
    names: set[str] = set()
    for k, tok in enumerate(query):
        if tok.kind not in ("word", "quoted"):
            continue
        after = k + 1
        if _is_punct(_at(query, after), "("):
            after = _closing(query, after) + 1
        if _is_word(_at(query, after), "AS") and _is_punct(_at(query, after + 1), "("):
            names.add(tok.name)
    return names


def _read_relations(query: list[_Token]) -> list[_Token]:
    """The identifiers a query reads from: after FROM or JOIN, and after commas in a FROM list."""
    read: list[_Token] = []
    # A FROM counts where a SELECT opened the level: `EXTRACT(YEAR FROM ts)` reads no relation.
    select_depths: set[int] = set()
    from_depths: set[int] = set()
    depth = 0
    expect = False
    for k, tok in enumerate(query):
        if _is_punct(tok, "("):
            depth += 1
            expect = False
            continue
        if _is_punct(tok, ")"):
            from_depths.discard(depth)
            select_depths.discard(depth)
            depth -= 1
            expect = False
            continue
        if _is_word(tok, "SELECT"):
            select_depths.add(depth)
        if _is_word(tok, "FROM", "JOIN") and depth in select_depths:
            from_depths.add(depth)
            expect = True
            continue
        if _is_word(tok, *_FROM_ENDERS):
            from_depths.discard(depth)
            expect = False
            continue
        if _is_punct(tok, ",") and depth in from_depths:
            expect = True
            continue
        if expect and tok.kind in ("word", "quoted"):
            following = _at(query, k + 1)
            dotted = _is_punct(following, ".") or _is_punct(_at(query, k - 1), ".")
            call = _is_punct(following, "(")
            if not dotted and not call and not _is_word(tok, *_NOT_RELATIONS):
                read.append(tok)
        expect = False
    return read


def _view(source: str, stmt: list[_Token], k: int, materialized: bool, known: set[str]) -> Relation:
    name, quoted = _relation_name(source, stmt, k)
    k += 1
    fields: tuple[dict[str, Any], ...] = ()
    columns: list[_Token] = []
    if _is_punct(_at(stmt, k), "("):
        end = _closing(stmt, k)
        columns = stmt[k + 1 : end]
        fields = _columns(columns)
        k = end + 1
    with_ = _with_clause(source, stmt, k, name)
    k = with_.end
    if not _is_word(_at(stmt, k), "AS"):
        raise _encountered(source, _at(stmt, k), stmt[-1].end)
    query = stmt[k + 1 :]
    if not query:
        raise _encountered(source, None, stmt[-1].end)
    local = _ctes(query)
    for tok in _read_relations(query):
        if tok.name not in known and tok.name not in local:
            raise _fail(
                source,
                tok.pos,
                f"Object '{tok.name}' not found",
                end=tok.end,
                error_type=STATEMENT_ERROR,
            )
    references = sorted(
        {tok.name for tok in query if tok.kind in ("word", "quoted") and tok.name in known}
    )
    prefix = "materialized view" if materialized else "view"
    return Relation(
        name,
        quoted,
        materialized,
        fields,
        with_.connectors,
        definition=f"{prefix} ( {_normal(columns)} ) {with_.others} as {_normal(query)}",
        references=tuple(references),
    )


def _function(stmt: list[_Token], k: int) -> str | None:
    """The name of a function declared without a SQL body (a Rust UDF), else None."""
    tok = _at(stmt, k)
    if tok is None or tok.kind not in ("word", "quoted"):
        return None
    if any(_is_word(t, "AS") for t in stmt[k + 1 :]):
        return None
    return tok.name


def parse_program(source: str) -> Program:
    """Tables and views (with their connectors) of a SQL program; `SqlParseError` if unreadable."""
    tables: list[Relation] = []
    views: list[Relation] = []
    functions: list[str] = []
    late: set[str] = set()
    statements = _statements(_tokenize(source))
    # Relations a view may read: every table, the views declared so far, and the recursive views
    # declared ahead.
    known: set[str] = set()
    for stmt in statements:
        kind = next((t for t in stmt[1:4] if not _is_word(t, "OR", "REPLACE")), None)
        if _is_word(stmt[0], "CREATE") and _is_word(kind, "TABLE"):
            table = _at(stmt, stmt.index(kind) + 1) if kind is not None else None
            if table is not None and table.kind in ("word", "quoted"):
                known.add(table.name)
    for stmt in statements:
        _check_commas(source, stmt)
        head = stmt[0]
        if not _is_word(head, *_STATEMENTS):
            raise _encountered(source, head, head.end)
        if _is_word(head, "LATENESS"):
            target = _at(stmt, 1)
            if target is not None and target.kind in ("word", "quoted"):
                late.add(target.name)
            continue
        if _is_word(head, "DECLARE"):
            if _is_word(_at(stmt, 1), "RECURSIVE") and _is_word(_at(stmt, 2), "VIEW"):
                name, _ = _relation_name(source, stmt, 3)
                known.add(name)
                continue
            raise _encountered(source, _at(stmt, 1), stmt[-1].end)
        if _is_word(head, "INSERT"):
            continue
        k = 1
        if _is_word(_at(stmt, k), "OR") and _is_word(_at(stmt, k + 1), "REPLACE"):
            k += 2
        materialized = False
        while _is_word(_at(stmt, k), *_CREATE_MODIFIERS):
            materialized = materialized or stmt[k].text.upper() == "MATERIALIZED"
            k += 1
        kind = _at(stmt, k)
        if not _is_word(kind, *_CREATE_KINDS):
            raise _encountered(source, kind, stmt[-1].end)
        assert kind is not None
        if _is_word(kind, "TABLE"):
            rel = _table(source, stmt, k + 1)
            if any(t.name == rel.name for t in tables):
                raise _duplicate(source, stmt[k + 1], "Table")
            tables.append(rel)
            known.add(rel.name)
        elif _is_word(kind, "VIEW"):
            rel = _view(source, stmt, k + 1, materialized, known)
            if any(v.name == rel.name for v in views) or any(t.name == rel.name for t in tables):
                raise _duplicate(source, stmt[k + 1], "View")
            views.append(rel)
            known.add(rel.name)
        elif _is_word(kind, "FUNCTION"):
            function = _function(stmt, k + 1)
            if function is not None:
                functions.append(function)
    if late:
        tables = [_late(t, late) for t in tables]
        views = [_late(v, late) for v in views]
    return Program(
        tuple(tables),
        tuple(views),
        tuple(functions),
        {t.name: t for t in tables},
        {v.name: v for v in views},
    )


def _late(rel: Relation, late: set[str]) -> Relation:
    if rel.name not in late or rel.lateness:
        return rel
    return Relation(
        rel.name,
        rel.case_sensitive,
        rel.materialized,
        rel.fields,
        rel.connectors,
        rel.definition,
        rel.references,
        lateness=True,
    )


def _duplicate(source: str, tok: _Token, what: str) -> SqlParseError:
    return _fail(
        source,
        tok.pos,
        f"{what} with name '{tok.name}' already defined",
        end=tok.end,
        error_type=STATEMENT_ERROR,
    )
