"""Drop to result through a real Samba server, as an analyst's Windows machine does it.

smbd exports a temporary share root with the options of ``samba/smb.conf.example``; the daemon
(a real ``heavy-optimizer run`` process) serves that folder as the Samba server's local path,
as in production; the analyst speaks SMB with a password (smbprotocol). Real optimisations
run with small budgets on the bundled sample CSVs, and every result is read back over SMB.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.daemon_harness import make_config_dir, running_daemon, wait_for
from tests.e2e.samba import SKIP_ENV, SambaServer, SmbClient, find_samba_tool
from tests.paths import SAMPLES_DIR

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

#: Longer than any stall the tests make while writing (files must not look finished early),
#: and more than ten scan intervals (every stall is seen by many scans).
SETTLE_SECONDS = 2.0
SCAN_INTERVAL_SECONDS = 0.2
#: A client's stall between two writes: several scans long, shorter than the settle time.
PAUSE_SECONDS = 0.6
JOBS = {"settle_seconds": SETTLE_SECONDS, "scan_interval": SCAN_INTERVAL_SECONDS}
OPTIMIZER = {"optimizer": {"algorithms": ["GA", "SA", "HC", "RS"]}}
REGISTRIES = ("queue", "processing", "retry", "completed", "failed")
JOB_TIMEOUT_SECONDS = 90.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return make_config_dir(tmp_path / "cfg", job_processor=JOBS, optimizer=OPTIMIZER)


def _job_ids(share: Path) -> dict[str, list[str]]:
    """Every job the daemon knows of, per registry (read on the server side)."""
    return {name: sorted(p.stem for p in (share / "jobs" / name).glob("*.json"))
            for name in REGISTRIES}


def _assert_no_job_yet(share: Path) -> None:
    assert _job_ids(share) == {name: [] for name in REGISTRIES}, \
        "a job was created before the upload finished"


def _summary_with(analyst: SmbClient, *, completed: int) -> dict[str, Any] | None:
    status = analyst.read_json("jobs/status/current_status.json")
    return status if status and status["counts"]["completed"] == completed else None


def _expected_fitness(csv_bytes: bytes, strategies: list[str], penalty_weight: float) -> float:
    """ROI / max drawdown (peak from 0) minus weight x mean pairwise correlation, from scratch."""
    frame = pd.read_csv(io.BytesIO(csv_bytes))
    pnl = frame[strategies].to_numpy(dtype=np.float64)
    cumulative = np.cumsum(pnl.sum(axis=1))
    peak = np.maximum.accumulate(np.concatenate([[0.0], cumulative]))[1:]
    max_drawdown = float(np.max(peak - cumulative))
    assert max_drawdown > 0, "sample portfolio without drawdown: pick another sample"
    correlations = np.corrcoef(pnl, rowvar=False)
    off_diagonal = correlations[~np.eye(len(strategies), dtype=bool)]
    mean_correlation = float(np.nan_to_num(off_diagonal).mean())
    return float(cumulative[-1] / max_drawdown - penalty_weight * mean_correlation)


def _check_results(analyst: SmbClient, job_id: str, csv_bytes: bytes,
                   sizes: range) -> dict[str, Any]:
    """Read a job's results over SMB and check them against the uploaded CSV."""
    record: dict[str, Any] = analyst.read_json(f"jobs/completed/{job_id}.json")
    assert record is not None and record["status"] == "completed", record
    summary = analyst.read_json(f"output/{job_id}/summary.json")
    # The job read exactly the bytes the analyst uploaded, all of them.
    assert summary["input_sha256"] == hashlib.sha256(csv_bytes).hexdigest()
    header = next(csv.reader(io.StringIO(csv_bytes.decode("utf-8-sig").split("\n", 1)[0])))
    best = summary["best"]
    strategies = best["strategies"]
    assert best["portfolio_size"] in sizes and len(strategies) == best["portfolio_size"]
    assert len(set(strategies)) == len(strategies)
    assert set(strategies) <= set(header) - {"Date", "Day"}
    assert best["fitness"] == pytest.approx(
        _expected_fitness(csv_bytes, strategies, summary["correlation_penalty_weight"]),
        rel=1e-9, abs=1e-9)
    assert best["fitness"] == max(run["best_fitness"] for run in summary["algorithms"])
    rows = list(csv.DictReader(io.StringIO(
        analyst.read_bytes(f"output/{job_id}/best_portfolio.csv").decode())))
    assert {row["strategy"] for row in rows} == set(strategies)
    text = analyst.read_bytes(f"output/{job_id}/optimization_summary.txt").decode()
    assert job_id in text and best["algorithm"] in text
    for chart in ("equity_curve.png", "drawdown.png", "algorithm_comparison.png"):
        assert analyst.read_bytes(f"output/{job_id}/{chart}").startswith(PNG_MAGIC), chart
    return record


@pytest.mark.timeout(10)
def test_missing_samba_fails_with_the_fix_unless_skipping_was_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SKIP_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception, match="apt-get install samba"):
        find_samba_tool("smbd-not-installed")
    monkeypatch.setenv(SKIP_ENV, "1")
    with pytest.raises(pytest.skip.Exception, match="smbd-not-installed was not found"):
        find_samba_tool("smbd-not-installed")


def test_csv_drop_and_job_file_over_smb_end_in_results_read_over_smb(
    config: Path, samba: SambaServer, analyst: SmbClient
) -> None:
    csv_bytes = (SAMPLES_DIR / "sensex_82x500.csv").read_bytes()
    with running_daemon(config, samba.root):
        # Given the daemon serving the share, when the analyst drops a CSV with a size suffix
        analyst.write_bytes("input/sensex_ps10.csv", csv_bytes)
        analyst.wait_for_json("jobs/completed/sensex_ps10.json", timeout=JOB_TIMEOUT_SECONDS)
        # And then a job file (written as .tmp and renamed, as a careful launcher does) that
        # sweeps sizes on the same CSV, with fields the daemon does not know
        spec = {"job_id": "nightly-42", "input_file": "sensex_ps10.csv",
                "portfolio_size": [10, 12], "algorithms": ["GA", "HC"], "seed": 7,
                "client_info": {"computer_name": "DESKTOP-QUANT", "drive_letter": "Z:"},
                "execution_mode": "server_side"}
        analyst.write_bytes("jobs/queue/nightly-42.json.tmp", json.dumps(spec).encode())
        analyst.rename("jobs/queue/nightly-42.json.tmp", "jobs/queue/nightly-42.json")
        analyst.wait_for_json("jobs/completed/nightly-42.json", timeout=JOB_TIMEOUT_SECONDS)
        # The daemon's summary, which clients poll, catches up
        status = wait_for(lambda: _summary_with(analyst, completed=2), timeout=30,
                          message="current_status.json counting both jobs")
    # Then both results are right and complete, read over SMB
    csv_job = _check_results(analyst, "sensex_ps10", csv_bytes, range(10, 11))
    assert csv_job["input_file"] == "sensex_ps10.csv"
    sweep = _check_results(analyst, "nightly-42", csv_bytes, range(10, 13))
    assert sweep["client_info"] == spec["client_info"] and sweep["seed"] == 7
    summary = analyst.read_json("output/nightly-42/summary.json")
    assert {run["algorithm"] for run in summary["algorithms"]} == {"GA", "HC"}
    assert status is not None and status["counts"]["failed"] == 0 and status["running"] == 0
    # And nothing else ran; the daemon's private state is not visible to clients
    assert _job_ids(samba.root)["completed"] == ["nightly-42", "sensex_ps10"]
    assert ".heavy_optimizer" not in analyst.listdir()
    assert (samba.root / ".heavy_optimizer").is_dir()


def test_slow_upload_becomes_one_job_only_after_it_finished(
    config: Path, samba: SambaServer, analyst: SmbClient
) -> None:
    csv_bytes = (SAMPLES_DIR / "sensex_82x2500.csv").read_bytes()  # 3.8 MB
    step = len(csv_bytes) // 6 + 1
    pieces = [csv_bytes[i:i + step] for i in range(0, len(csv_bytes), step)]
    with running_daemon(config, samba.root):
        # When a large CSV arrives in six writes with stalls longer than the scan interval
        analyst.write_in_pieces("input/wide_ps12.csv", pieces, pause_seconds=PAUSE_SECONDS,
                                while_paused=lambda: _assert_no_job_yet(samba.root))
        analyst.wait_for_json("jobs/completed/wide_ps12.json", timeout=JOB_TIMEOUT_SECONDS)
    # Then (no job existed during any stall) exactly one job ran, on the whole file
    record = _check_results(analyst, "wide_ps12", csv_bytes, range(12, 13))
    assert record["attempts"] == 1
    summary = analyst.read_json("output/wide_ps12/summary.json")
    assert summary["data"]["strategies"] == 2500, summary["data"]
    assert _job_ids(samba.root) == {**{name: [] for name in REGISTRIES},
                                    "completed": ["wide_ps12"]}


def test_upload_stalled_longer_than_settle_time_waits_for_the_client_to_close(
    config: Path, samba: SambaServer, analyst: SmbClient
) -> None:
    csv_bytes = (SAMPLES_DIR / "sensex_82x500.csv").read_bytes()
    step = len(csv_bytes) // 3 + 1
    pieces = [csv_bytes[i:i + step] for i in range(0, len(csv_bytes), step)]
    with running_daemon(config, samba.root):
        # When a plain upload (no preallocation) stalls for longer than the settle time, so
        # size and mtime stand still while the client still holds the file open
        analyst.write_in_pieces("input/stalled_ps10.csv", pieces,
                                pause_seconds=SETTLE_SECONDS + 1.0,
                                while_paused=lambda: _assert_no_job_yet(samba.root))
        analyst.wait_for_json("jobs/completed/stalled_ps10.json", timeout=JOB_TIMEOUT_SECONDS)
    # Then the daemon saw smbd still writing (the read lease was refused) and waited
    record = _check_results(analyst, "stalled_ps10", csv_bytes, range(10, 11))
    assert record["attempts"] == 1


def test_windows_copy_preallocated_then_filled_becomes_one_job_after_it_finished(
    config: Path, samba: SambaServer, analyst: SmbClient
) -> None:
    source = SAMPLES_DIR / "sensex_82x500.csv"
    csv_bytes = source.read_bytes()
    step = len(csv_bytes) // 3 + 1
    pieces = [csv_bytes[i:i + step] for i in range(0, len(csv_bytes), step)]
    with running_daemon(config, samba.root):
        # When Explorer-style copying makes the file full size at once, then fills it, with
        # stalls longer than the settle time (size and mtime stand still: only the unwritten
        # zeros at its end show it is not finished)
        analyst.write_in_pieces("input/copied_ps10.csv", pieces, preallocate=True,
                                pause_seconds=SETTLE_SECONDS + 1.0,
                                while_paused=lambda: _assert_no_job_yet(samba.root))
        # and finally sets the source's modification time, as a copy does
        analyst.set_mtime("input/copied_ps10.csv", source.stat().st_mtime)
        analyst.wait_for_json("jobs/completed/copied_ps10.json", timeout=JOB_TIMEOUT_SECONDS)
    # Then exactly one job ran, on the complete file
    record = _check_results(analyst, "copied_ps10", csv_bytes, range(10, 11))
    assert record["attempts"] == 1
    assert _job_ids(samba.root) == {**{name: [] for name in REGISTRIES},
                                    "completed": ["copied_ps10"]}


def test_job_file_written_in_pieces_over_smb_is_run_not_failed(
    config: Path, samba: SambaServer, analyst: SmbClient
) -> None:
    csv_bytes = (SAMPLES_DIR / "sensex_82x500.csv").read_bytes()
    with running_daemon(config, samba.root):
        # When a launcher opens its job file, writes the part naming the CSV, copies the CSV,
        # then writes the rest of the job file and closes it (invalid JSON until the end)
        head = b'{"job_id": "piecewise", "input_file": "piecewise.csv", '
        middle = b'"portfolio_size": 10, "algorithms": ["HC", "RS"], '
        tail = b'"seed": 3}'

        def copy_csv_once() -> None:
            if not (samba.root / "input" / "piecewise.csv").exists():
                analyst.write_bytes("input/piecewise.csv", csv_bytes)

        analyst.write_in_pieces("jobs/queue/piecewise.json", [head, middle, tail],
                                pause_seconds=PAUSE_SECONDS, while_paused=copy_csv_once)
        record = analyst.wait_for_json("jobs/completed/piecewise.json",
                                       timeout=JOB_TIMEOUT_SECONDS)
    # Then the job ran as written, and the CSV it names did not become a job of its own
    assert record["seed"] == 3 and record["algorithms"] == ["HC", "RS"]
    _check_results(analyst, "piecewise", csv_bytes, range(10, 11))
    assert _job_ids(samba.root) == {**{name: [] for name in REGISTRIES},
                                    "completed": ["piecewise"]}
