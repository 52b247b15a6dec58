"""``heavy-optimizer submit``: a CSV and a job file the real intake accepts, or a clear refusal."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from daemon.intake import IntakeScanner
from daemon.share import ShareLayout
from tests.corpus import GOOD_CSV
from tests.unit.commands.cli_support import Cli, daemon_registry, fail_job

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    path = tmp_path / "upload" / "strategies_ps12.csv"
    path.parent.mkdir()
    path.write_text(GOOD_CSV)
    return path


def scanner(share: ShareLayout) -> IntakeScanner:
    """The daemon's intake (settling off, CSV drops on), as if a daemon were running."""
    return IntakeScanner(share, daemon_registry(share), settle_seconds=0,
                         auto_jobs_from_csv=True, default_portfolio_size=35)


def hidden_files(folder: Path) -> list[str]:
    return [name for name in os.listdir(folder) if name.startswith(".")]


def test_submitted_job_is_ready_for_the_daemon_and_its_csv_is_not_a_second_job(
        cli: Cli, share: ShareLayout, csv: Path) -> None:
    # Given: a running daemon's intake that already knows the share (new CSVs become jobs)
    intake = scanner(share)
    # When
    result = cli("submit", str(csv), "--algorithms", "ga, sa", "--seed", "7",
                 "--priority", "5", "--fitness", "ratio")
    # Then: the job is queued under the CSV's stem, with the size from its _ps suffix
    assert result.code == 0, result.err
    assert "submitted job strategies_ps12" in result.out
    spec = json.loads((share.queue / "strategies_ps12.json").read_text())
    assert spec["input_file"] == "strategies_ps12.csv" and spec["portfolio_size"] == 12
    assert spec["algorithms"] == ["GA", "SA"] and spec["seed"] == 7 and spec["priority"] == 5
    assert spec["client_info"]["tool"] == "heavy-optimizer submit"
    assert (share.input / "strategies_ps12.csv").read_text() == GOOD_CSV
    assert hidden_files(share.input) == [] and hidden_files(share.queue) == []
    # And: the daemon's intake finds it ready and does not make a job of the CSV itself
    report = intake.scan()
    assert [entry.job_id for entry in report.jobs] == ["strategies_ps12"]
    assert report.created == [] and report.rejected == []
    assert report.jobs[0].spec.portfolio_sizes == (12,) and report.jobs[0].priority == 5


def test_size_range_and_quiet_output(cli: Cli, share: ShareLayout, csv: Path) -> None:
    result = cli("submit", str(csv), "--portfolio-size", "10-14", "--job-id", "sweep",
                 "--quiet")
    assert result.code == 0 and result.out == "sweep\n"
    assert json.loads((share.queue / "sweep.json").read_text())["portfolio_size"] == [10, 14]
    assert scanner(share).scan().jobs[0].spec.portfolio_sizes == (10, 11, 12, 13, 14)


def test_same_csv_twice_reuses_the_file_and_gets_a_new_job_id(
        cli: Cli, share: ShareLayout, csv: Path) -> None:
    assert cli("submit", str(csv)).code == 0
    second = cli("submit", str(csv))
    assert second.code == 0 and "identical file reused" in second.out
    queued = sorted(p.name for p in share.queue.iterdir())
    assert len(queued) == 2 and queued[0] == "strategies_ps12.json"
    assert queued[1].startswith("strategies_ps12_")
    assert sorted(p.name for p in share.input.iterdir()) == ["data.csv", "strategies_ps12.csv"]


def test_a_different_csv_of_the_same_name_is_never_replaced(
        cli: Cli, share: ShareLayout, tmp_path: Path) -> None:
    # Given: input/data.csv belongs to earlier jobs; the analyst has another data.csv
    other = tmp_path / "data.csv"
    other.write_text(GOOD_CSV.replace("2024-01-01,", "2024-01-01,9"))
    # When
    refused = cli("submit", str(other))
    # Then: refused with the way out; the share's file and queue are untouched
    assert refused.code == 1 and "--input-name" in refused.err
    assert refused.err.count("\n") == 1
    assert (share.input / "data.csv").read_text() == GOOD_CSV
    assert list(share.queue.iterdir()) == []
    # And: under another name it goes through
    renamed = cli("submit", str(other), "--input-name", "data_v2.csv")
    assert renamed.code == 0, renamed.err
    assert json.loads((share.queue / "data_v2.json").read_text())["input_file"] == "data_v2.csv"


def test_an_explicit_job_id_that_is_taken_is_refused_with_the_retry_hint(
        cli: Cli, share: ShareLayout, csv: Path) -> None:
    fail_job(share, "nightly")
    result = cli("submit", str(csv), "--job-id", "nightly")
    assert result.code == 1
    assert "heavy-optimizer retry nightly" in result.err and "jobs/failed/" in result.err
    assert list(share.queue.iterdir()) == []


@pytest.mark.parametrize(("extra", "message"), [
    (["--portfolio-size", "5"], "--portfolio-size"),
    (["--portfolio-size", "20-10"], "--portfolio-size"),
    (["--algorithms", "GA,XYZ"], "XYZ"),
    (["--fitness", "luck"], "fitness"),
    (["--seed", "-1"], "seed"),
    (["--job-id", "bad id"], "not a job id"),
    (["--input-name", "../escape.csv"], "--input-name"),
    (["--input-name", "data.txt"], ".csv"),
    (["--timeout", "5"], "--wait"),
])
def test_bad_options_are_usage_errors_and_write_nothing(
        cli: Cli, share: ShareLayout, csv: Path, extra: list[str], message: str) -> None:
    result = cli("submit", str(csv), *extra)
    assert result.code == 2
    assert message in result.err and result.err.count("\n") == 1
    assert "Traceback" not in result.err
    assert list(share.queue.iterdir()) == []
    assert sorted(os.listdir(share.input)) == ["data.csv"]


def test_a_missing_or_headerless_csv_is_refused(cli: Cli, share: ShareLayout,
                                                tmp_path: Path) -> None:
    missing = cli("submit", str(tmp_path / "nope.csv"))
    assert missing.code == 2 and "nope.csv" in missing.err
    headerless = tmp_path / "plain.csv"
    headerless.write_text("1,2,3\n4,5,6\n")
    result = cli("submit", str(headerless))
    assert result.code == 2 and "plain.csv" in result.err
    assert list(share.queue.iterdir()) == []


def test_wait_without_a_daemon_times_out_with_status_3(
        cli: Cli, share: ShareLayout, csv: Path) -> None:
    result = cli("submit", str(csv), "--wait", "--timeout", "0.3")
    assert result.code == 3
    assert "has not finished after 0.3 s" in result.out
    assert (share.queue / "strategies_ps12.json").exists()  # the job itself goes on


def test_refuses_a_folder_that_is_not_a_share(cli: Cli, csv: Path, tmp_path: Path) -> None:
    result = cli("submit", str(csv), share_root=tmp_path / "elsewhere")
    assert result.code == 2 and "init-share" in result.err
    assert not (tmp_path / "elsewhere").exists()
