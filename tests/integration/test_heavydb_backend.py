"""The HeavyDB backend end to end: real heavyai client, real binary Thrift over TCP, our SQL.

The server is tests/heavydb_server.py (HeavyDB's Thrift service, SQL on DuckDB). These tests
drive whole jobs through it and compare with the numpy path on the same data and seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from daemon.error_handling.errors import DataValidationError, JobSpecError
from daemon.workflow.backends.base import InputSpec
from daemon.workflow.backends.heavydb import HeavyDBSource
from daemon.workflow.data import load_strategy_csv
from tests.heavydb_server import HeavyDBTestServer
from tests.heavydb_support import (
    FAST_RETRY,
    NASTY_NAMES,
    create_long_table,
    heavydb_config,
    optimizer_config,
    run,
    server,
    strategy_names,
    work_tables,
    write_csv,
)

pytestmark = pytest.mark.timeout(120)
__all__ = ["server"]  # the fixture, imported for pytest


def test_server_side_job_gives_the_numpy_portfolio(tmp_path: Path,
                                                   server: HeavyDBTestServer) -> None:
    # Given a CSV whose strategy names hold quotes and SQL
    csv_path = write_csv(tmp_path / "pnl.csv")
    config = optimizer_config(heavydb_config(server))
    # When the same job runs on the numpy path and through HeavyDB
    local = run(tmp_path, config, job_id="local", input_path=csv_path, execution_mode="numpy")
    remote = run(tmp_path, config, job_id="remote", input_path=csv_path,
                 execution_mode="server_side_heavydb")
    # Then every algorithm found the same portfolio with the same fitness
    assert [(r["algorithm"], r["best_indices"], r["best_fitness"]) for r in remote["algorithms"]] \
        == [(r["algorithm"], r["best_indices"], r["best_fitness"]) for r in local["algorithms"]]
    assert remote["best"]["strategies"] == local["best"]["strategies"]
    assert set(NASTY_NAMES) <= set(remote["best"]["strategies"])
    assert remote["input_sha256"] == local["input_sha256"]
    # and the per-strategy report is byte for byte the same (the matrix came back exactly)
    assert (tmp_path / "remote" / "strategy_metrics.csv").read_bytes() == \
        (tmp_path / "local" / "strategy_metrics.csv").read_bytes()
    backend = remote["data"]["backend"]
    assert backend["name"] == "heavydb" and backend["rows_loaded"] == 30 * 40
    assert backend["strategies"] == 40 and local["data"]["backend"] == {"name": "numpy"}
    # and the data travelled as values: table t is still there, the work table is gone
    assert "t" in server.tables() and work_tables(server) == set()
    assert server.calls["load_table_binary_arrow"] == 3  # 1200 rows in batches of 500


def test_input_table_and_query_run_on_the_server(tmp_path: Path,
                                                 server: HeavyDBTestServer) -> None:
    # Given the same P&L kept in HeavyDB in long form, and as a CSV in the order a table
    # input gets (strategies sorted by name)
    create_long_table(server)
    csv_path = write_csv(tmp_path / "sorted.csv", sort=True)
    config = optimizer_config(heavydb_config(server))
    # When jobs read the table, a query over it, and the CSV
    from_table = run(tmp_path, config, job_id="table", input_path=None, input_table="pnl_long")
    from_csv = run(tmp_path, config, job_id="csv", input_path=csv_path)
    from_query = run(tmp_path, config, job_id="query", input_path=None,
                     input_query="SELECT trade_date, strategy, pnl FROM pnl_long "
                                 "WHERE strategy <> 'S03'")
    # Then the table job equals the CSV job, and the query saw one strategy fewer
    assert from_table["best"]["strategies"] == from_csv["best"]["strategies"]
    assert from_table["best"]["fitness"] == from_csv["best"]["fitness"]
    assert from_table["input_file"] == "heavydb:pnl_long"
    assert from_table["data"]["strategies"] == 40 and from_query["data"]["strategies"] == 39
    assert from_query["input_file"] == "heavydb:query"
    assert "S03" not in from_query["best"]["strategies"]
    assert work_tables(server) == set() and "pnl_long" in server.tables()


def test_results_are_appended_and_a_rerun_replaces_its_rows(tmp_path: Path,
                                                            server: HeavyDBTestServer) -> None:
    # Given result writing on
    csv_path = write_csv(tmp_path / "pnl.csv")
    config = optimizer_config(heavydb_config(server, write_results=True))
    # When two jobs run, and the first runs again (a retried report stage)
    first = run(tmp_path, config, job_id="job-a", input_path=csv_path,
                execution_mode="server_side_heavydb")
    run(tmp_path, config, job_id="job-b", input_path=csv_path,
        execution_mode="server_side_heavydb")
    run(tmp_path / "again", config, job_id="job-a", input_path=csv_path,
        execution_mode="server_side_heavydb")
    # Then each job has one run row, k portfolio rows and one row per algorithm
    runs = server.sql("SELECT job_id, best_algorithm, fitness, portfolio_size "
                      "FROM heavy_optimizer_runs ORDER BY job_id")
    best = first["best"]
    assert runs == [("job-a", best["algorithm"], best["fitness"], 10),
                    ("job-b", best["algorithm"], best["fitness"], 10)]
    portfolio = server.sql("SELECT strategy FROM heavy_optimizer_portfolios "
                           "WHERE job_id = 'job-a' ORDER BY portfolio_position")
    assert [row[0] for row in portfolio] == best["strategies"]  # quotes and all
    assert server.sql("SELECT COUNT(*) FROM heavy_optimizer_algorithms")[0][0] == 4
    assert "t" in server.tables()


def test_bad_table_data_fails_clearly_and_the_table_is_dropped(
        tmp_path: Path, server: HeavyDBTestServer) -> None:
    # Given a long-form table with one (date, strategy) twice and one with a missing cell
    create_long_table(server, "dup")
    server.sql("INSERT INTO dup SELECT * FROM dup WHERE strategy = 'O''Brien' LIMIT 1")
    create_long_table(server, "gap")
    server.sql("DELETE FROM gap WHERE strategy = 'S05' AND trade_date = DATE '2024-01-03'")
    source = HeavyDBSource(heavydb_config(server), retry_config=FAST_RETRY)
    # When they are loaded
    with pytest.raises(DataValidationError, match="\"O'Brien\" has 2 rows for 2024-01-01"):
        source.load(InputSpec(job_id="dup-job", input_table="dup"))
    with pytest.raises(DataValidationError, match="'S05' has no P&L for 2024-01-03"):
        source.load(InputSpec(job_id="gap-job", input_table="gap"))
    # Then nothing is left on the server; with nan_policy zero the gap reads as 0
    assert work_tables(server) == set()
    data = source.load(InputSpec(job_id="gap-job", input_table="gap", nan_policy="zero"))
    assert data.pnl[2, data.names.index("S05")] == 0.0
    assert any("1 blank cells read as 0" in w for w in data.warnings)


def test_nasty_names_are_values_and_bad_inputs_never_reach_the_server(
        tmp_path: Path, server: HeavyDBTestServer) -> None:
    # Given a CSV with quote-and-SQL names, and jobs naming a bad table or query
    csv_path = write_csv(tmp_path / "pnl.csv")
    source = HeavyDBSource(heavydb_config(server), retry_config=FAST_RETRY)
    # When the CSV is loaded through the server
    data = source.load(InputSpec(job_id="nasty", input_path=csv_path))
    # Then names and values come back exactly, and table t survived
    local = load_strategy_csv(csv_path)
    assert data.names == tuple(strategy_names()) == local.names
    assert np.array_equal(data.pnl, local.pnl) and "t" in server.tables()
    # and bad table names / queries are refused before any connection
    connects = server.calls["connect"]
    for spec in (InputSpec(job_id="j", input_table='t"; DROP TABLE t; --'),
                 InputSpec(job_id="j", input_query="SELECT 1; DROP TABLE t")):
        with pytest.raises(JobSpecError):
            source.load(spec)
    assert server.calls["connect"] == connects and "t" in server.tables()
