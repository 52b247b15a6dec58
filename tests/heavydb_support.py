"""Shared pieces of the HeavyDB backend tests: data, configs and the test server fixture."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.error_handling.config import ErrorHandlingConfig, RetryConfig, RetryKindConfig
from daemon.workflow.backends.heavydb_config import HeavyDBConfig
from daemon.workflow.pipeline import JobRequest, run_job
from daemon.workflow.settings import BudgetConfig, OptimizerConfig, OptimizerSection
from tests.heavydb_server import HeavyDBTestServer

PASSWORD = "HyperInteractive"
#: Names that would break SQL built by pasting: they must survive as plain values.
NASTY_NAMES = ('x"; DROP TABLE t; --', "O'Brien")
DAYS, STRATEGIES = 30, 40
#: Three attempts, no waiting: retries are counted, not slept through.
FAST_RETRY = RetryConfig(max_delay=0.0, database_errors=RetryKindConfig(3, 0.0))
ERROR_CONFIG = dataclasses.replace(ErrorHandlingConfig(), retry=FAST_RETRY)


@pytest.fixture
def server() -> Iterator[HeavyDBTestServer]:
    """A running test server with an admin and a read-only user."""
    with HeavyDBTestServer(users={"admin": PASSWORD, "reader": "reader"},
                           read_only_users=frozenset({"reader"})) as running:
        running.sql("CREATE TABLE t (a INTEGER)")  # the table injected SQL would drop
        yield running


def strategy_names(*, sort: bool = False) -> list[str]:
    """40 names, the nasty ones among them (sorted: the order a table input gets)."""
    names = [f"S{i:02d}" for i in range(STRATEGIES - len(NASTY_NAMES))] + list(NASTY_NAMES)
    return sorted(names) if sort else names


def pnl_matrix(names: list[str]) -> np.ndarray:
    """Deterministic daily P&L; the nasty-named strategies are the best performers, so they
    end up in the best portfolio (and in the result tables)."""
    rng = np.random.default_rng(11)
    pnl = rng.normal(0.0, 1.0, size=(DAYS, len(names))).round(3)
    for column, name in enumerate(names):
        if name in NASTY_NAMES:
            pnl[:, column] = np.abs(pnl[:, column]) + 0.5
    return pnl


def dates() -> list[str]:
    """Business days from 2024-01-01 (no weekends: 252 periods a year)."""
    days = np.busday_offset("2024-01-01", np.arange(DAYS), roll="forward")
    return [str(day) for day in days]


def write_csv(path: Path, *, sort: bool = False) -> Path:
    """The wide CSV an analyst drops: Date column plus one column per strategy."""
    names = strategy_names(sort=sort)
    pnl = pnl_matrix(strategy_names())[:, [strategy_names().index(n) for n in names]]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Date", *names])
        for day, row in zip(dates(), pnl, strict=True):
            writer.writerow([day, *(f"{v:.3f}" for v in row)])
    return path


def create_long_table(server: HeavyDBTestServer, table: str = "pnl_long") -> None:
    """The same data in long form, as a site keeps it in HeavyDB."""
    names = strategy_names()
    pnl = pnl_matrix(names)
    server.sql(f"CREATE TABLE {table} (trade_date DATE, strategy TEXT, pnl DOUBLE)")
    rows = [(day, name, float(pnl[d, s])) for d, day in enumerate(dates())
            for s, name in enumerate(names)]
    server.executemany(f"INSERT INTO {table} VALUES (CAST(? AS DATE), ?, ?)", rows)


def heavydb_config(server: HeavyDBTestServer, **changes: Any) -> HeavyDBConfig:
    """Point the backend at the test server (required mode unless changed)."""
    values: dict[str, Any] = {
        "mode": "required", "host": "127.0.0.1", "port": server.port, "user": "admin",
        "password": PASSWORD, "connect_timeout_seconds": 2.0, "query_timeout_seconds": 10.0,
        "load_batch_rows": 500,
    }
    values.update(changes)
    return HeavyDBConfig(**values)


def optimizer_config(heavydb: HeavyDBConfig | None = None) -> OptimizerConfig:
    """Two algorithms with small exact budgets: fast, and deterministic by seed."""
    return OptimizerConfig(
        optimizer=OptimizerSection(algorithms=["GA", "RS"],
                                   budget=BudgetConfig(max_evaluations=1000, max_seconds=60.0)),
        heavydb=heavydb or HeavyDBConfig())


def run(tmp_path: Path, config: OptimizerConfig, *, job_id: str, **request: Any) -> dict[str, Any]:
    """Run one job in-process and return its summary.json."""
    job = JobRequest.resolve(config, job_id=job_id, output_dir=tmp_path / job_id,
                             portfolio_sizes=(10,), seed=7, **request)
    run_job(job, config=config, checkpoint_dir=tmp_path / "checkpoints", error_config=ERROR_CONFIG)
    summary: dict[str, Any] = json.loads((tmp_path / job_id / "summary.json").read_text())
    return summary


def work_tables(server: HeavyDBTestServer) -> set[str]:
    """Per-job tables left on the server (there should be none between jobs)."""
    return {name for name in server.tables() if name.startswith("heavy_optimizer_job_")}
