"""The HeavyDB backend's SQL hygiene and config, without a server.

Quoting is checked against a real SQL engine (DuckDB, the test server's engine): whatever a
name holds, the quoted identifier names exactly that table and nothing else runs.
"""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from daemon.error_handling.errors import ConfigurationError
from daemon.workflow.backends.heavydb_config import HeavyDBConfig
from daemon.workflow.backends.heavydb_sql import (
    create_table_sql,
    job_table_name,
    query_problem,
    quote_identifier,
    table_name_problem,
)
from daemon.workflow.settings import OptimizerConfig, load_optimizer_config
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.timeout(60)

NASTY = ['x"; DROP TABLE t; --', "O'Brien", 'a""b', "Robert'); DROP TABLE t;--", "ünï cødé"]


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"],
                                      exclude_characters="\x00\r\n"), min_size=1, max_size=30))
def test_a_quoted_name_is_exactly_one_table(name: str) -> None:
    assume(name.lower() != "t")  # DuckDB matches quoted names case-insensitively
    # Given a database holding a table t
    db = duckdb.connect()
    db.execute("CREATE TABLE t (a INTEGER)")
    # When a table is created under an arbitrary name
    db.execute(create_table_sql(name, (("v", "DOUBLE"),)))
    # Then it exists under exactly that name, and t is untouched
    tables = {row[0] for row in db.execute("SELECT table_name FROM information_schema.tables")
              .fetchall()}
    assert tables == {"t", name}
    db.close()


def test_nasty_names_quote_and_unusable_ones_are_refused() -> None:
    assert quote_identifier(NASTY[0]) == '"x""; DROP TABLE t; --"'
    for bad in ("", "a\x00b", "line\nbreak"):
        with pytest.raises(ValueError):
            quote_identifier(bad)


def test_job_tables_are_sanitised_distinct_and_short() -> None:
    names = {job_table_name("ho_job_", job) for job in ("a.b", "a-b", "a_b", "A_B")}
    assert len(names) == 4
    for name in names:
        assert name.startswith("ho_job_a_b_") and name.replace("_", "").isalnum()
    assert len(job_table_name("p_", "x" * 128)) < 64


@pytest.mark.parametrize("query", [
    "SELECT trade_date, strategy, pnl FROM daily_pnl",
    "  select * from t where strategy = 'DROP TABLE t'",
    'WITH x AS (SELECT * FROM "insert") SELECT * FROM x',
    "SELECT * FROM t WHERE note = 'it''s -- fine'",
])
def test_read_only_queries_pass(query: str) -> None:
    assert query_problem(query) is None


@pytest.mark.parametrize(("query", "reason"), [
    ("", "non-empty"),
    ("SELECT 1; DROP TABLE t", "';'"),
    ("SELECT * FROM t WHERE s = 'a;b'", "';'"),  # strict: no ';' at all, even quoted
    ("DROP TABLE t", "start with SELECT"),
    ("SELECT * FROM t -- trailing", "comments"),
    ("SELECT * FROM t /* x */", "comments"),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "DELETE"),
    ("SELECT * INTO copy FROM t", "INTO"),
    ("SELECT 'unterminated FROM t", "unterminated"),
    ("SELECT " + "x" * 20_001, "longer"),
    (None, "non-empty"),
])
def test_other_sql_is_refused_with_a_reason(query: object, reason: str) -> None:
    problem = query_problem(query)
    assert problem is not None and reason in problem


def test_table_names() -> None:
    assert table_name_problem("daily_pnl_2024") is None
    for bad in ("", "1abc", "a.b", 'x"; DROP', 42, "a" * 129):
        assert table_name_problem(bad) is not None


def test_config_env_overrides_at_load_and_password_never_in_summary() -> None:
    # Given the shipped config and HEAVYDB_* variables
    environ = {"HEAVYDB_HOST": "db.example", "HEAVYDB_PORT": "7001", "HEAVYDB_USER": "opt",
               "HEAVYDB_PASSWORD": "s3cret", "HEAVYDB_DATABASE": "risk",
               "HEAVYDB_PROTOCOL": "https"}
    # When it is loaded
    config = load_optimizer_config(REPO_ROOT / "config" / "optimizer_config.json",
                                   environ=environ)
    # Then the environment wins, and the secret stays out of reprs and summaries
    heavydb = config.heavydb
    assert (heavydb.host, heavydb.port, heavydb.user, heavydb.password, heavydb.database,
            heavydb.protocol) == ("db.example", 7001, "opt", "s3cret", "risk", "https")
    assert "s3cret" not in repr(config) and "s3cret" not in str(config.to_dict())
    assert config.to_dict()["heavydb"]["password"] == "***"


def test_shipped_config_matches_the_defaults() -> None:
    unknown: list[str] = []
    shipped = load_optimizer_config(REPO_ROOT / "config" / "optimizer_config.json",
                                    unknown=unknown, environ={})
    assert unknown == [] and shipped.heavydb == OptimizerConfig().heavydb


@pytest.mark.parametrize(("environ", "named"), [
    ({"HEAVYDB_PORT": "sixty"}, "HEAVYDB_PORT"),
    ({"HEAVYDB_PORT": "70000"}, "port"),
    ({"HEAVYDB_PROTOCOL": "ftp"}, "HEAVYDB_PROTOCOL"),
])
def test_bad_environment_is_refused_by_name(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        HeavyDBConfig().with_environment(environ)


def test_bad_config_values_are_refused() -> None:
    for changes in ({"port": 0}, {"query_timeout_seconds": 0}, {"work_table_prefix": "a-b"},
                    {"pnl_column": 'x"y'}, {"screen_correlation_threshold": 1.5}):
        with pytest.raises(ValueError):
            HeavyDBConfig(**changes)
