"""The HeavyDB backend when the server misbehaves: down, dropping, slow, refusing.

Every case runs the real heavyai client against tests/heavydb_server.py over TCP; faults are
injected by the server per RPC (drop the connection, answer late) or by stopping it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.error_handling.errors import DatabaseError, DatabaseQueryError
from daemon.error_handling.recovery_kinds import classify_error
from daemon.job_runner import HEAVYDB_OUTAGE_MARKER, run_optimization_job
from daemon.share import ShareLayout
from daemon.workflow.backends.base import InputSpec
from daemon.workflow.backends.heavydb import HeavyDBSource, OutageTracker, check_heavydb
from daemon.workflow.backends.selection import select_source
from daemon.workflow.data import load_strategy_csv
from daemon.workflow.pipeline import JobRequest, run_job
from tests.heavydb_server import Fault, HeavyDBTestServer
from tests.heavydb_support import (
    ERROR_CONFIG,
    FAST_RETRY,
    create_long_table,
    heavydb_config,
    optimizer_config,
    server,
    work_tables,
    write_csv,
)

pytestmark = pytest.mark.timeout(120)
__all__ = ["server"]  # the fixture, imported for pytest


def _csv_spec(tmp_path: Path, job_id: str = "job") -> InputSpec:
    return InputSpec(job_id=job_id, input_path=write_csv(tmp_path / "pnl.csv"))


def test_down_server_in_required_mode_is_a_recoverable_database_error(
        tmp_path: Path, server: HeavyDBTestServer) -> None:
    # Given a server that is down
    server.stop()
    source = HeavyDBSource(heavydb_config(server), retry_config=FAST_RETRY)
    # When a job loads through it
    with pytest.raises(DatabaseError) as caught:
        source.load(_csv_spec(tmp_path))
    # Then it fails after the retry budget with a reason, recoverable (the daemon retries it)
    error = caught.value
    assert error.recoverable and classify_error(error) == "database"
    assert f"127.0.0.1:{server.port}" in error.message
    assert "3 attempt(s)" in error.message and "'required'" in error.message
    assert server.calls["connect"] == 0  # refused at the port probe


def test_optional_mode_falls_back_with_one_alert_per_outage(
        tmp_path: Path, server: HeavyDBTestServer) -> None:
    # Given optional mode, an outage marker shared by job processes, and a recorded alert sink
    csv_path = write_csv(tmp_path / "pnl.csv")
    config = optimizer_config(heavydb_config(server, mode="optional"))
    marker = tmp_path / "state" / HEAVYDB_OUTAGE_MARKER
    alerts: list[tuple[str, str, str]] = []

    def job(job_id: str) -> dict[str, Any]:
        request = JobRequest.resolve(config, job_id=job_id, input_path=csv_path,
                                     output_dir=tmp_path / job_id, portfolio_sizes=(10,),
                                     seed=7, execution_mode="server_side_heavydb")
        source = select_source(
            request.input_spec(config), execution_mode=request.execution_mode,
            config=config.heavydb, retry_config=FAST_RETRY,
            outage=OutageTracker(marker=marker, alert=lambda *a: alerts.append(a)))
        run_job(request, config=config, checkpoint_dir=tmp_path / "ckpt",
                error_config=ERROR_CONFIG, source=source)
        result: dict[str, Any] = json.loads((tmp_path / job_id / "summary.json").read_text())
        return result

    # When two jobs run while the server is down, then one after it is back
    server.stop()
    first, second = job("during-1"), job("during-2")
    assert marker.exists()
    server.start()
    after = job("after")
    # Then both outage jobs ran on numpy, saying why; one WARNING alert, one INFO on recovery
    for summary in (first, second):
        backend = summary["data"]["backend"]
        assert backend["name"] == "numpy" and backend["requested"] == "heavydb"
        assert "unreachable" in backend["fallback_reason"]
    assert [a[2] for a in alerts] == ["WARNING", "INFO"]
    assert "fall back to numpy" in alerts[0][0] and "reachable again" in alerts[1][0]
    assert after["data"]["backend"]["name"] == "heavydb" and not marker.exists()
    # and the fallback found the same portfolio the server path finds
    assert first["best"]["strategies"] == after["best"]["strategies"]


def test_connection_dropped_mid_load_is_retried_on_a_new_connection(
        tmp_path: Path, server: HeavyDBTestServer) -> None:
    # Given a server that drops the connection on the first bulk-load request
    server.inject("load_table_binary_arrow", Fault(drop=True, times=1))
    spec = _csv_spec(tmp_path)
    source = HeavyDBSource(heavydb_config(server), retry_config=FAST_RETRY)
    # When the job loads
    data = source.load(spec)
    # Then the second attempt loaded everything (3 batches) and nothing is left behind
    assert spec.input_path is not None
    assert np.array_equal(data.pnl, load_strategy_csv(spec.input_path).pnl)
    assert server.calls["load_table_binary_arrow"] == 1 + 3
    # attempt 1, its cleanup on a fresh connection (the first one broke), attempt 2
    assert server.calls["connect"] == 3
    assert work_tables(server) == set()


def test_a_server_that_keeps_dropping_exhausts_the_budget_and_cleans_up(
        tmp_path: Path, server: HeavyDBTestServer) -> None:
    # Given a server that drops every bulk load
    server.inject("load_table_binary_arrow", Fault(drop=True))
    source = HeavyDBSource(heavydb_config(server), retry_config=FAST_RETRY)
    # When a job loads, Then it fails after three attempts with the transport's reason
    with pytest.raises(DatabaseError, match=r"bulk load .* failed.*3 attempt\(s\)"):
        source.load(_csv_spec(tmp_path))
    assert server.calls["load_table_binary_arrow"] == 3
    # and each attempt's half-loaded table was dropped on a fresh connection
    assert work_tables(server) == set()


@pytest.mark.parametrize("mode", ["required", "optional"])
def test_slow_answers_time_out(tmp_path: Path, server: HeavyDBTestServer, mode: str) -> None:
    # Given a server that answers queries later than the configured timeout
    server.inject("sql_execute", Fault(delay_seconds=5.0))
    config = heavydb_config(server, mode=mode, query_timeout_seconds=0.3)
    source = HeavyDBSource(config, retry_config=FAST_RETRY)
    spec = _csv_spec(tmp_path)
    # When a job loads
    if mode == "required":
        # Then it gives up after the retry budget, naming the timeout
        with pytest.raises(DatabaseError, match="timeout"):
            source.load(spec)
    else:
        # Then (optional) it continues on numpy
        assert spec.input_path is not None
        assert source.load(spec).names == load_strategy_csv(spec.input_path).names
        assert source.describe()["name"] == "numpy"
    assert server.calls["sql_execute"] >= 3


def test_refused_statements_and_logins_fail_at_once_with_the_servers_message(
        tmp_path: Path, server: HeavyDBTestServer) -> None:
    cases: list[tuple[dict[str, Any], InputSpec, str]] = [
        ({}, InputSpec(job_id="j", input_query="SELECT * FROM no_such_table"), "no_such_table"),
        ({"user": "reader", "password": "reader"}, _csv_spec(tmp_path),
         "Violation of access privileges"),
        ({"password": "wrong"}, _csv_spec(tmp_path), "Invalid credentials"),
        ({"mode": "optional", "user": "reader", "password": "reader"}, _csv_spec(tmp_path),
         "Violation of access privileges"),
    ]
    for changes, spec, message in cases:
        connects = server.calls["connect"]
        source = HeavyDBSource(heavydb_config(server, **changes), retry_config=FAST_RETRY)
        with pytest.raises(DatabaseQueryError, match=message) as caught:
            source.load(spec)
        # one attempt only, not recoverable, classified as a setup problem (no retry later)
        assert server.calls["connect"] == connects + 1, changes
        assert not caught.value.recoverable
        assert classify_error(caught.value) == "configuration"
    assert work_tables(server) == set()


def test_doctor_reports_reachability_version_and_write_permission(
        server: HeavyDBTestServer) -> None:
    good = check_heavydb(heavydb_config(server))
    assert [status for status, _, _ in good] == ["OK", "OK", "OK"]
    assert "HeavyDB 8.0.1 reachable" in good[1][1]
    reader = check_heavydb(heavydb_config(server, user="reader", password="reader"))
    assert reader[2][0] == "FAIL" and "cannot create tables" in reader[2][1]
    assert "grant" in reader[2][2]
    server.stop()
    down = check_heavydb(heavydb_config(server))
    assert down[-1][0] == "FAIL" and "not reachable" in down[-1][1]
    assert check_heavydb(heavydb_config(server, mode="optional"))[-1][0] == "WARN"
    assert check_heavydb(heavydb_config(server, mode="off")) == [
        ("OK", "HeavyDB backend is off (heavydb.mode = 'off')", "")]
    assert work_tables(server) == set()


def _share_with_config(tmp_path: Path, server: HeavyDBTestServer, mode: str) -> tuple[
        ShareLayout, Path]:
    layout = ShareLayout(tmp_path / "share")
    layout.ensure()
    config_dir = tmp_path / "config"
    config_dir.mkdir(exist_ok=True)
    heavydb = {"mode": mode, "host": "127.0.0.1", "port": server.port, "user": "admin",
               "password": "HyperInteractive", "connect_timeout_seconds": 2.0,
               "query_timeout_seconds": 10.0}
    (config_dir / "optimizer_config.json").write_text(json.dumps({
        "optimizer": {"algorithms": ["GA", "RS"], "budget": {"max_evaluations": 1000}},
        "heavydb": heavydb}))
    (config_dir / "error_handling_config.json").write_text(json.dumps({
        "retry": {"max_delay": 0.0, "database_errors": {"max_attempts": 2,
                                                         "initial_delay": 0.0}},
        "notifications": {"enabled": False}}))
    return layout, config_dir


def test_daemon_job_runner_runs_table_jobs_and_falls_back_for_csv_jobs(
        tmp_path: Path, server: HeavyDBTestServer) -> None:
    # Given a share whose config points at the server in optional mode
    create_long_table(server)
    layout, config_dir = _share_with_config(tmp_path, server, "optional")
    write_csv(layout.input / "pnl.csv")

    def payload(job_id: str, spec: dict[str, Any], input_file: str) -> dict[str, Any]:
        return {"job_id": job_id, "share_root": str(layout.root), "config_dir": str(config_dir),
                "input_file": input_file, "portfolio_sizes": [10], "seed": 3,
                "spec": {"job_id": job_id, "portfolio_size": 10, **spec}}

    beats: list[dict[str, Any]] = []
    # When the daemon's runner gets a table job, and (server down) a CSV job asking HeavyDB
    table = run_optimization_job(payload("tbl", {"input_table": "pnl_long"}, ""),
                                 beats.append, lambda: None)
    server.stop()
    fallback = run_optimization_job(
        payload("csv", {"input_file": "pnl.csv", "execution_mode": "server_side_heavydb"},
                "pnl.csv"), beats.append, lambda: None)
    # Then the first ran on HeavyDB, the second on numpy with the outage remembered
    assert table["backend"] == "heavydb" and len(table["best_portfolio"]) == 10
    assert fallback["backend"] == "numpy"
    assert (layout.state / HEAVYDB_OUTAGE_MARKER).exists()
    assert {beat["stage"] for beat in beats} >= {"load", "report"}
    # and a table job cannot fall back: it waits for the server (recoverable)
    with pytest.raises(DatabaseError, match="exists only on the server"):
        run_optimization_job(payload("tbl2", {"input_table": "pnl_long"}, ""),
                             beats.append, lambda: None)
