"""What the emulator's compiler stand-in makes of a program: SQL errors where the real compiler
points, UDF and system errors, program diffs, bootstrap blockers, and stored configurations."""

from __future__ import annotations

from typing import Any

import pytest

from feldera_sandbox.feldera_config import (
    ConfigError,
    normalize_program_config,
    normalize_runtime_config,
    storage_edits,
)
from feldera_sandbox.feldera_program import (
    bootstrap_blockers,
    compile_program,
    diff_is_empty,
    pipeline_diff,
)
from feldera_sandbox.feldera_sql import SqlParseError, parse_program

PROGRAM_CONFIG = {"profile": None, "cache": True, "runtime_version": None}


def first_error(sql: str) -> dict[str, Any]:
    outcome = compile_program(sql, "", "", PROGRAM_CONFIG, "0.369.0")
    assert outcome.status == "SqlError" and outcome.program is None and outcome.info is None
    assert len(outcome.messages) == 1
    return outcome.messages[0]


# ------------------------------------------------------------------------------ SQL errors


@pytest.mark.parametrize(
    ("sql", "line", "column", "error_type", "message"),
    [
        pytest.param(
            "CREATE TABLE t (x INT,\n  y INT", 2, 8, "Error parsing SQL", "<EOF>", id="open-paren"
        ),
        pytest.param(
            "CREATE TABLE t (x INT));", 1, 23, "Error parsing SQL", '")"', id="extra-close-paren"
        ),
        pytest.param(
            "CREATE TABLE t (x INT);\nCREATE VIEW v AS SELECT 'abc FROM t;",
            2,
            25,
            "Error parsing SQL",
            "Lexical error",
            id="open-quote",
        ),
        pytest.param(
            'CREATE TABLE "t (x INT);', 1, 14, "Error parsing SQL", "Lexical error", id="open-ident"
        ),
        pytest.param(
            "CREATE TABLE t (\n  x INT,\n  y INT,\n);", 4, 1, "Error parsing SQL", '")"', id="comma"
        ),
        pytest.param(
            "CREATE TABLE t (x INT, y INT);\nCREATE VIEW v AS SELECT x, FROM t;",
            2,
            28,
            "Error parsing SQL",
            '"FROM"',
            id="comma-before-from",
        ),
        pytest.param(
            "CREATE TABLE t (x INT);\nSELEC * FROM t;",
            2,
            1,
            "Error parsing SQL",
            '"SELEC"',
            id="stmt",
        ),
        pytest.param(
            "CREATE TABEL t (x INT);", 1, 8, "Error parsing SQL", '"TABEL"', id="create-what"
        ),
        pytest.param(
            "CREATE TABLE t (x INT);\nCREATE VIEW v AS SELECT * FROM t JOIN nope ON true;",
            2,
            39,
            "Error in SQL statement",
            "Object 'nope' not found",
            id="unknown-table",
        ),
        pytest.param(
            "CREATE TABLE t (x INT) WITH ('connectors' = '[{\"name\": ]');",
            1,
            45,
            "ConnectorGenerationError",
            "property 'connectors'",
            id="connectors-json",
        ),
    ],
)
def test_unreadable_sql_is_reported_where_the_compiler_points(
    sql: str, line: int, column: int, error_type: str, message: str
) -> None:
    error = first_error(sql)
    assert (error["start_line_number"], error["start_column"]) == (line, column)
    assert error["end_line_number"] >= line and error["warning"] is False
    assert error["error_type"] == error_type
    assert message in error["message"]


def test_snippet_numbers_the_lines_and_underlines_the_culprit() -> None:
    sql = "CREATE TABLE t (x INT);\nCREATE VIEW v AS SELECT * FROM nope;\n-- end\n"
    error = first_error(sql)
    assert (error["start_column"], error["end_column"]) == (32, 35)
    assert error["snippet"] == (
        "    2|CREATE VIEW v AS SELECT * FROM nope;\n"
        "                                     ^^^^\n"
        "    3|-- end\n"
    )
    # Connector errors come from the manager, which gives no snippet.
    assert first_error("CREATE TABLE t (x INT) WITH ('connectors' = '{}');")["snippet"] is None


def test_views_may_read_tables_declared_later_and_ctes_and_function_from() -> None:
    program = parse_program(
        """
        CREATE VIEW early AS SELECT * FROM late_table;
        CREATE TABLE late_table (ts TIMESTAMP, x INT);
        CREATE VIEW v AS
          WITH recent AS (SELECT * FROM late_table)
          SELECT EXTRACT(YEAR FROM ts) AS y, TRIM(BOTH ' ' FROM 'x') AS z FROM recent, early e;
        DECLARE RECURSIVE VIEW r (x INT);
        CREATE VIEW r AS SELECT x FROM late_table UNION ALL SELECT x FROM r;
        """
    )
    assert [v.name for v in program.views] == ["early", "v", "r"]
    v = program.view("v")
    assert v is not None and v.references == ("early", "late_table")


def test_view_in_front_of_its_source_view_is_unknown() -> None:
    with pytest.raises(SqlParseError, match="Object 'later' not found"):
        parse_program("CREATE VIEW v AS SELECT * FROM later; CREATE VIEW later AS SELECT 1 AS x;")


# ------------------------------------------------------------------- UDF and system errors


@pytest.mark.parametrize(
    ("udf_rust", "udf_toml", "expected"),
    [
        ("pub fn f(x: Option<i32>) -> Option<i32> { x", "", "unclosed delimiter"),
        ("pub fn f(x: Option<i32>) -> Option<i32> { x }}", "", "unexpected closing delimiter"),
        ('compile_error!("boom");\npub fn f(x: Option<i32>) -> Option<i32> { x }', "", "boom"),
        ("pub fn g() {}", "", "cannot find function `f`"),
        ("pub fn f(x: Option<i32>) -> Option<i32> { x }", "[dependencies\n", "TOML parse error"),
    ],
)
def test_udfs_that_would_not_build_are_a_rust_error(
    udf_rust: str, udf_toml: str, expected: str
) -> None:
    sql = "CREATE FUNCTION f(x INT) RETURNS INT;\nCREATE TABLE t (x INT);"
    outcome = compile_program(sql, udf_rust, udf_toml, PROGRAM_CONFIG, "0.369.0")
    assert outcome.status == "RustError"
    assert outcome.program is not None and outcome.info is not None  # the SQL did compile
    assert outcome.rust is not None and outcome.rust["exit_code"] != 0
    assert expected in outcome.rust["stderr"]


def test_braces_in_strings_and_comments_do_not_count() -> None:
    udf = 'pub fn f(x: Option<i32>) -> Option<i32> {\n  // }\n  let _s = "}{";\n  x\n}\n'
    sql = "CREATE FUNCTION f(x INT) RETURNS INT;"
    assert compile_program(sql, udf, "", PROGRAM_CONFIG, "0.369.0").status == "Success"


def test_a_runtime_other_than_the_platforms_is_a_system_error() -> None:
    config = {**PROGRAM_CONFIG, "runtime_version": "v0.300.0"}
    outcome = compile_program("CREATE TABLE t (x INT);", "", "", config, "0.369.0")
    assert outcome.status == "SystemError" and outcome.system_error
    assert "runtime_version" in outcome.system_error
    own = {**PROGRAM_CONFIG, "runtime_version": "v0.369.0"}
    assert compile_program("CREATE TABLE t (x INT);", "", "", own, "0.369.0").status == "Success"


# ------------------------------------------------------------------------------------ diffs

BASE = """
CREATE TABLE orders (id INT, amount INT) WITH ('materialized' = 'true', 'connectors' = '[
  {"name": "live", "paused": true, "transport": {"name": "kafka_input", "config": {"t": "a"}}},
  {"name": "old", "transport": {"name": "datagen"}}]');
CREATE TABLE gone (x INT) WITH ('connectors' = '[{"name": "c"}]');
CREATE VIEW big AS SELECT * FROM orders WHERE amount > 10;
CREATE MATERIALIZED VIEW bigger WITH ('connectors' = '[{"name": "sink"}]')
  AS SELECT * FROM big WHERE amount > 100;
CREATE VIEW other AS SELECT 1 AS one;
"""


def test_diff_lists_added_removed_and_modified_relations_sorted_and_transitively() -> None:
    new = (
        BASE.replace("amount > 10;", "amount > 20;")
        .replace("CREATE TABLE gone (x INT) WITH ('connectors' = '[{\"name\": \"c\"}]');", "")
        .replace("CREATE VIEW other AS SELECT 1 AS one;", "")
        + "CREATE TABLE zz (x INT); CREATE TABLE aa (x INT); CREATE VIEW b2 AS SELECT 2 AS two;"
    )
    diff = pipeline_diff(parse_program(BASE), parse_program(new))
    assert diff["program_diff"] == {
        "added_tables": ["aa", "zz"],
        "removed_tables": ["gone"],
        "modified_tables": [],
        # `bigger` reads `big`: its definition is the same but what it computes is not.
        "added_views": ["b2"],
        "removed_views": ["other"],
        "modified_views": ["big", "bigger"],
    }
    assert diff["program_diff_error"] is None
    # The connector of the removed table is not listed as removed, as Feldera does not.
    assert diff["removed_input_connectors"] == []
    assert not diff_is_empty(diff)


def test_formatting_comments_and_case_are_no_change() -> None:
    new = "-- reformatted\n" + BASE.replace("SELECT * FROM orders", "select *\n  from ORDERS")
    diff = pipeline_diff(parse_program(BASE), parse_program(new))
    assert diff_is_empty(diff)


def test_connector_changes_ignore_paused_and_input_flow_control() -> None:
    new = (
        BASE.replace('"paused": true, ', '"paused": false, "max_queued_records": 5, ')
        .replace('{"t": "a"}', '{"t": "a"}')
        .replace('{"name": "old", "transport": {"name": "datagen"}}', '{"name": "new"}')
        .replace('[{"name": "sink"}]', '[{"name": "sink", "format": {"name": "json"}}]')
    )
    diff = pipeline_diff(parse_program(BASE), parse_program(new))
    assert diff["program_diff"] == {k: [] for k in diff["program_diff"]}
    assert diff["added_input_connectors"] == ["orders.new"]
    assert diff["removed_input_connectors"] == ["orders.old"]
    assert diff["modified_input_connectors"] == []
    assert diff["modified_output_connectors"] == ["bigger.sink"]
    changed = BASE.replace('{"t": "a"}', '{"t": "b"}')
    diff = pipeline_diff(parse_program(BASE), parse_program(changed))
    assert diff["modified_input_connectors"] == ["orders.live"]
    # A connector-only change is still a change: an Enterprise restart awaits approval for it.
    assert not diff_is_empty(diff)


def test_a_modified_table_is_one_whose_columns_or_properties_changed() -> None:
    for new in (
        BASE.replace("amount INT)", "amount BIGINT)"),
        BASE.replace("'materialized' = 'true', ", ""),
    ):
        diff = pipeline_diff(parse_program(BASE), parse_program(new))
        assert diff["program_diff"]["modified_tables"] == ["orders"]
        assert diff["program_diff"]["modified_views"] == ["big", "bigger"]


def test_new_view_on_an_unchanged_non_materialized_table_cannot_be_bootstrapped() -> None:
    old = parse_program(BASE)
    reads_gone = parse_program(BASE + "CREATE VIEW g AS SELECT * FROM gone;")
    diff = pipeline_diff(old, reads_gone)
    blockers = bootstrap_blockers(old, reads_gone, diff)
    assert blockers is not None and "not materialized" in blockers and "'gone'" in blockers
    # Reading the materialized table is fine; so is a modified table (it restarts empty).
    reads_orders = parse_program(BASE + "CREATE VIEW o AS SELECT * FROM orders;")
    assert bootstrap_blockers(old, reads_orders, pipeline_diff(old, reads_orders)) is None
    modified = parse_program(
        BASE.replace("(x INT)", "(x BIGINT)") + "CREATE VIEW g AS SELECT * FROM gone;"
    )
    assert bootstrap_blockers(old, modified, pipeline_diff(old, modified)) is None


def test_lateness_blocks_any_program_change() -> None:
    late = BASE + "LATENESS orders.id 10;"
    old, new = parse_program(late), parse_program(late + "CREATE VIEW x AS SELECT 1 AS y;")
    blockers = bootstrap_blockers(old, new, pipeline_diff(old, new))
    assert blockers is not None and "lateness: orders" in blockers
    same = parse_program(late)
    assert bootstrap_blockers(old, same, pipeline_diff(old, same)) is None


# ------------------------------------------------------------------- stored configuration


def test_runtime_config_gets_defaults_and_loses_unknown_keys() -> None:
    stored = normalize_runtime_config({"workers": 4, "surprise": 1}, enterprise=False)
    assert stored["workers"] == 4 and "surprise" not in stored
    assert stored["hosts"] == 1 and stored["cpu_profiler"] is True
    assert stored["clock_resolution_usecs"] == 1_000_000
    assert stored["fault_tolerance"] == {"model": "none", "checkpoint_interval_secs": 60}
    assert stored["storage"]["backend"] == {"name": "default"}
    assert normalize_runtime_config({"storage": False}, enterprise=False)["storage"] is None
    assert normalize_runtime_config({"storage": True}, enterprise=False) == (
        normalize_runtime_config({}, enterprise=False)
    )
    ft = normalize_runtime_config({"fault_tolerance": {}}, enterprise=True)["fault_tolerance"]
    assert ft == {"model": "exactly_once", "checkpoint_interval_secs": 60}


def test_program_config_defaults() -> None:
    assert normalize_program_config({"extra": 1}) == {
        "profile": None,
        "cache": True,
        "runtime_version": None,
        "use_platform_compiler": False,
    }
    with pytest.raises(ConfigError):
        normalize_program_config({"profile": "fastest"})


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"fault_tolerance": {"model": "at_least_once"}}, {"EnterpriseFeature": "fault tolerance"}),
        ({"workers": "eight"}, None),
        ({"storage": 3}, None),
    ],
)
def test_invalid_runtime_config_is_refused(value: Any, error: Any) -> None:
    with pytest.raises(ConfigError) as info:
        normalize_runtime_config(value, enterprise=False)
    if error is not None:
        assert info.value.error == error
    else:
        assert "DeserializationFailed" in info.value.error


def test_storage_bound_edits_are_named_in_backticks() -> None:
    old = normalize_runtime_config({}, enterprise=True)
    new = normalize_runtime_config(
        {"workers": 2, "fault_tolerance": {}, "cpu_profiler": False}, enterprise=True
    )
    assert storage_edits("p", "q", old, new) == [
        "`name`",
        "`runtime_config.workers`",
        "`runtime_config.fault_tolerance`",
    ]
    assert storage_edits("p", "p", old, {**old, "cpu_profiler": False}) == []
