"""Job files that read HeavyDB instead of a CSV: validation and intake without an input file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from daemon.error_handling.errors import JobSpecError
from daemon.intake import IntakeScanner
from daemon.jobs import JobSpec, validate_job_spec
from daemon.registry import JobRegistry
from daemon.share import ShareLayout

pytestmark = pytest.mark.timeout(60)


def _validate(**fields: object) -> JobSpec:
    return validate_job_spec({"portfolio_size": 20, **fields}, source="job.json",
                             default_job_id="job")


def test_table_and_query_jobs_need_no_input_file() -> None:
    table = _validate(input_table="daily_pnl", execution_mode="server_side_heavydb")
    query = _validate(input_query="SELECT trade_date, strategy, pnl FROM daily_pnl")
    assert (table.input_file, table.input_table, table.input_query) == ("", "daily_pnl", None)
    assert (query.input_file, query.input_table) == ("", None)
    assert _validate(input_file="a.csv").input_table is None


@pytest.mark.parametrize(("fields", "reason"), [
    ({"input_file": "a.csv", "input_table": "t"}, "only one of 'input_file', 'input_table'"),
    ({"input_table": "t", "input_query": "SELECT 1"}, "only one of"),
    ({"input_table": 't"; DROP TABLE t; --'}, "'input_table' must be a table name"),
    ({"input_query": "SELECT 1; DROP TABLE t"}, "without ';'"),
    ({"input_query": "DELETE FROM t"}, "must start with SELECT"),
    ({}, "'input_file' is missing"),
])
def test_bad_inputs_are_named(fields: dict[str, object], reason: str) -> None:
    with pytest.raises(JobSpecError, match=reason.replace("(", r"\(")):
        _validate(**fields)


def test_intake_queues_a_table_job_without_waiting_for_a_csv(tmp_path: Path) -> None:
    # Given a job file that reads a HeavyDB table (no CSV anywhere)
    layout = ShareLayout(tmp_path / "share")
    layout.ensure()
    registry = JobRegistry(layout, host="h", daemon_pid=os.getpid(), daemon_started_at=1.0)
    scanner = IntakeScanner(layout, registry, settle_seconds=1.0, auto_jobs_from_csv=True,
                            default_portfolio_size=20, clock=lambda: 1000.0)
    (layout.queue / "tbl.json").write_text(json.dumps(
        {"job_id": "tbl", "input_table": "daily_pnl", "portfolio_size": 20,
         "execution_mode": "server_side_heavydb"}))
    # When intake scans (a job file that parses is whole: no settle wait for it)
    first = scanner.scan()
    # Then it is ready at once, with no input file to wait for
    assert [entry.job_id for entry in first.jobs] == ["tbl"] and not first.rejected
    assert first.pending == 0
    assert first.jobs[0].spec.input_file == "" and first.jobs[0].spec.input_table == "daily_pnl"
