"""IntakeScanner on a real share folder, with an injected clock (and stat where a network
file system's view is simulated): readiness, validation, CSV drops and the intake ledger."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.csv_intake import LEDGER_NAME
from daemon.error_handling.errors import DataError
from daemon.intake import IntakeScanner, ScanReport
from daemon.registry import JobRegistry
from daemon.share import ShareLayout
from daemon.workflow.data import check_portfolio_size, load_strategy_csv
from tests.corpus import BROKEN_INPUTS, GOOD_CSV, VALID_FILES, VALID_JOB_IDS, write_files

pytestmark = pytest.mark.timeout(60)

SETTLE = 2.0


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ShareStat:
    """``os.lstat`` whose size/mtime/ctime can be pinned per file: what a network file system
    with coarse timestamps reports while a copy is still writing."""

    def __init__(self) -> None:
        self.pinned: dict[Path, dict[str, Any]] = {}

    def __call__(self, path: Path) -> os.stat_result:
        info = os.lstat(path)
        pins = self.pinned.get(Path(path))
        if not pins:
            return info
        extra = {name: getattr(info, name) for name in (
            "st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns", "st_ctime_ns")}
        fields = list(info[:10])
        if "mtime_ns" in pins:
            extra["st_mtime_ns"] = pins["mtime_ns"]
        if "ctime" in pins:
            extra["st_ctime"] = pins["ctime"]
        return os.stat_result(fields, extra)


class Share:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.layout = ShareLayout(root)
        self.layout.ensure()
        self.clock = FakeClock()
        self.wall = FakeClock(1_700_000_000.0)
        self.stat = ShareStat()
        self.registry = JobRegistry(self.layout, host="test-host", daemon_pid=os.getpid(),
                                    daemon_started_at=1.0, clock=self.wall)

    def scanner(self, *, auto: bool = True, input_wait: float = 30.0,
                default_size: int = 40) -> IntakeScanner:
        return IntakeScanner(self.layout, self.registry, settle_seconds=SETTLE,
                             auto_jobs_from_csv=auto, default_portfolio_size=default_size,
                             clock=self.clock, stat=self.stat, input_wait_seconds=input_wait)

    def scan(self, scanner: IntakeScanner, *, after: float = 0.0) -> ScanReport:
        self.clock.advance(after)
        return scanner.scan()

    def job(self, name: str, **spec: Any) -> Path:
        body = {"job_id": name, "input_file": "good.csv", "portfolio_size": 35, **spec}
        path = self.layout.queue / f"{name}.json"
        path.write_text(json.dumps(body))
        return path

    def failed(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.layout.failed.glob("*.json"))]


@pytest.fixture
def share(tmp_path: Path) -> Share:
    return Share(tmp_path)


def ids(report: ScanReport) -> list[str]:
    return [entry.job_id for entry in report.jobs]


# -- the corpus ------------------------------------------------------------------------------


def _failure_of(share: Share, drop: str) -> dict[str, Any]:
    name = Path(drop).name
    matches = [r for r in share.failed() if r.get("source_file") == name or (
        drop.startswith("input/") and r.get("job_type") == "csv_drop"
        and r.get("input_file") == name)]
    assert len(matches) == 1, f"{drop}: expected one failed record, found {len(matches)}"
    return matches[0]


def test_every_intake_level_broken_input_fails_with_its_reason(share: Share) -> None:
    scanner = share.scanner(input_wait=30.0)
    for broken in BROKEN_INPUTS:
        write_files(share.root, broken.files)
    write_files(share.root, VALID_FILES)
    intake_level = [b for b in BROKEN_INPUTS if b.stage == "intake"]
    run_level = [b for b in BROKEN_INPUTS if b.stage == "run"]
    assert len(intake_level) >= 25
    share.scan(scanner)
    share.scan(scanner, after=SETTLE)  # settled; jobs missing their input start waiting
    report = share.scan(scanner, after=31)  # waited long enough: missing input is an error
    for broken in intake_level:
        record = _failure_of(share, broken.drop)
        assert broken.reason in record["error"]["message"], broken.name
        assert record["error"]["stage"] == "intake" and record["status"] == "failed"
        if broken.drop.startswith("jobs/queue/"):
            assert not os.path.lexists(share.root / broken.drop), broken.name
    assert sorted(ids(report)) == sorted([*VALID_JOB_IDS, *(b.name for b in run_level)])
    for job_id in VALID_JOB_IDS:
        assert (share.layout.queue / f"{job_id}.json").exists()
    # The launcher's own fields are kept for the result record.
    launcher = next(e for e in report.jobs if e.job_id == "valid_launcher")
    assert launcher.spec.input_file == "good.csv"
    assert launcher.spec.raw["client_info"]["username"] == "analyst"
    # Scanning again fails nothing twice and makes no job of a CSV named by a job file.
    count = len(share.failed())
    again = share.scan(scanner, after=5)
    assert len(share.failed()) == count and again.created == [] and again.rejected == []


@pytest.mark.parametrize("broken", [b for b in BROKEN_INPUTS if b.stage == "run"],
                         ids=lambda b: b.name)
def test_run_level_broken_inputs_fail_when_the_data_is_loaded(tmp_path: Path,
                                                              broken: Any) -> None:
    write_files(tmp_path, broken.files)
    spec = json.loads((tmp_path / broken.drop).read_text())
    with pytest.raises(DataError) as caught:
        data = load_strategy_csv(tmp_path / "input" / spec["input_file"])
        check_portfolio_size(data, spec["portfolio_size"])
    assert broken.reason in str(caught.value)


# -- settling ---------------------------------------------------------------------------------


def test_preallocated_csv_is_not_used_until_written(share: Share) -> None:
    """Windows copies may create the file at full size first; a coarse-mtime network file
    system then shows no change while it fills. The NUL bytes still left give it away."""
    scanner = share.scanner()
    path = share.layout.input / "big.csv"
    content = GOOD_CSV.encode()
    path.write_bytes(b"\0" * len(content))
    share.stat.pinned[path] = {"mtime_ns": 5}
    for _ in range(3):
        report = share.scan(scanner, after=SETTLE + 1)
        assert report.created == [] and report.rejected == [] and report.pending == 1
    half = len(content) // 2
    path.write_bytes(content[:half] + b"\0" * (len(content) - half))
    report = share.scan(scanner, after=SETTLE + 1)
    assert report.created == [] and report.pending == 1
    path.write_bytes(content)
    assert share.scan(scanner, after=SETTLE + 1).created == ["big"]
    spec = json.loads((share.layout.queue / "big.json").read_text())
    assert spec == {"job_id": "big", "input_file": "big.csv", "portfolio_size": 40,
                    "job_type": "csv_drop", "source": "csv"}


def test_csv_drop_waits_until_size_and_mtime_stop_changing(share: Share) -> None:
    scanner = share.scanner()
    path = share.layout.input / "grow.csv"
    lines = GOOD_CSV.splitlines(keepends=True)
    with path.open("w") as handle:
        for line in lines:
            handle.write(line)
            handle.flush()
            assert share.scan(scanner, after=SETTLE / 2).created == []
    assert share.scan(scanner).created == []
    assert share.scan(scanner, after=SETTLE).created == ["grow"]


def test_job_file_written_in_chunks_is_neither_picked_nor_failed_early(share: Share) -> None:
    """Also: the CSV it names settles first, but is not made a job of its own meanwhile."""
    scanner = share.scanner(auto=True)
    (share.layout.input / "good.csv").write_text(GOOD_CSV)
    text = json.dumps({"job_id": "slow", "input_file": "good.csv", "portfolio_size": 35,
                       "client_info": {"note": "x" * 200}}, indent=2)
    path = share.layout.queue / "slow.json"
    chunks = [text[i:i + 60] for i in range(0, len(text), 60)]
    with path.open("w") as handle:
        for chunk in chunks[:-1]:  # each chunk within the settle time; together much longer
            handle.write(chunk)
            handle.flush()
            report = share.scan(scanner, after=SETTLE * 0.75)
            assert report.jobs == [] and report.rejected == [] and report.created == [], chunk
        handle.write(chunks[-1])
    assert len(chunks) * SETTLE * 0.75 > 3 * SETTLE
    # Once whole it parses, and a file that parses needs no settle wait (its CSV has settled)
    assert ids(share.scan(scanner)) == ["slow"]
    assert share.failed() == []


def test_job_waits_for_its_csv_to_finish_copying(share: Share) -> None:
    scanner = share.scanner(input_wait=3.0)
    share.job("copying")
    csv_path = share.layout.input / "good.csv"
    share.scan(scanner)
    with csv_path.open("w") as handle:  # the copy takes longer than input_wait: still fine
        for line in GOOD_CSV.splitlines(keepends=True):
            handle.write(line)
            handle.flush()
            report = share.scan(scanner, after=SETTLE * 0.75)
            assert report.jobs == [] and report.rejected == [] and report.pending >= 1
    share.scan(scanner)
    assert ids(share.scan(scanner, after=SETTLE)) == ["copying"]


def test_job_dropped_before_its_csv_is_kept_until_the_csv_arrives(share: Share) -> None:
    scanner = share.scanner(input_wait=30.0)
    share.job("early")
    share.scan(scanner)
    assert share.scan(scanner, after=SETTLE).pending == 1
    share.scan(scanner, after=20)
    (share.layout.input / "good.csv").write_text(GOOD_CSV)
    share.scan(scanner, after=1)
    assert ids(share.scan(scanner, after=SETTLE)) == ["early"]
    assert share.failed() == []


# -- CSV drops: one job per upload ------------------------------------------------------------


def settle_csv(share: Share, scanner: IntakeScanner) -> list[str]:
    created = share.scan(scanner).created
    return created + share.scan(scanner, after=SETTLE).created


def test_a_csv_becomes_exactly_one_job_across_scans_and_restarts(share: Share) -> None:
    scanner = share.scanner()
    path = share.layout.input / "Data Set_ps20.csv"
    path.write_text(GOOD_CSV)
    assert settle_csv(share, scanner) == ["Data_Set_ps20"]
    spec = json.loads((share.layout.queue / "Data_Set_ps20.json").read_text())
    assert spec["portfolio_size"] == 20 and spec["input_file"] == "Data Set_ps20.csv"
    report = share.scan(scanner, after=SETTLE)
    assert report.created == [] and ids(report) == ["Data_Set_ps20"]
    assert report.jobs[0].source == "csv"
    restarted = share.scanner()  # a new daemon: the ledger on the share remembers
    assert settle_csv(share, restarted) == [] and settle_csv(share, restarted) == []
    record = share.registry.claim(report.jobs[0])
    assert record is not None and record.source == "csv"
    share.registry.complete(record, {"best_fitness": 1.0})
    assert settle_csv(share, restarted) == []
    # A new upload over the same name is a new job, named after its mtime.
    path.write_text(GOOD_CSV + "2024-01-07," + ",".join(["1"] * 40) + "\n")
    mtime_ns = 1_718_000_000 * 10**9
    os.utime(path, ns=(mtime_ns, mtime_ns))
    stamp = time.strftime("%Y%m%d%H%M%S", time.localtime(mtime_ns / 1e9))
    assert settle_csv(share, restarted) == [f"Data_Set_ps20_{stamp}"]
    assert settle_csv(share, share.scanner()) == []
    ledger = json.loads((share.layout.state / LEDGER_NAME).read_text())["files"]
    assert ledger["Data Set_ps20.csv"]["job_id"] == f"Data_Set_ps20_{stamp}"


def test_two_daemons_scanning_one_share_make_one_job_per_csv(share: Share) -> None:
    first, second = share.scanner(), share.scanner()
    for n in range(5):
        (share.layout.input / f"d{n}.csv").write_text(GOOD_CSV)
    created: list[str] = []
    for _ in range(4):  # alternate, as two daemons' rescans interleave
        created += first.scan().created + second.scan().created
        share.clock.advance(SETTLE)
    assert sorted(created) == [f"d{n}" for n in range(5)]
    ledger = json.loads((share.layout.state / LEDGER_NAME).read_text())["files"]
    assert {entry["state"] for entry in ledger.values()} == {"queued"}


def test_csv_named_by_a_job_file_is_not_made_a_second_job(share: Share) -> None:
    scanner = share.scanner()
    share.job("explicit", input_file="shared.csv")
    (share.layout.input / "shared.csv").write_text(GOOD_CSV)
    assert settle_csv(share, scanner) == []
    report = share.scan(scanner, after=SETTLE)
    assert ids(report) == ["explicit"]
    record = share.registry.claim(report.jobs[0])
    assert record is not None
    share.registry.complete(record, {})
    assert settle_csv(share, share.scanner()) == []


def test_csvs_present_when_csv_intake_first_starts_are_not_run(share: Share) -> None:
    old = share.layout.input / "old.csv"
    old.write_text(GOOD_CSV)
    scanner = share.scanner()
    assert settle_csv(share, scanner) == []
    assert settle_csv(share, share.scanner()) == []
    os.utime(old, ns=(2 * 10**18, 2 * 10**18))  # copied again
    assert len(settle_csv(share, scanner)) == 1


def test_a_damaged_ledger_is_set_aside_without_rerunning_old_csvs(share: Share) -> None:
    scanner = share.scanner()
    (share.layout.input / "data.csv").write_text(GOOD_CSV)
    assert settle_csv(share, scanner) == ["data"]
    (share.layout.state / LEDGER_NAME).write_text('{"version": 1, "files": {"data.csv": 3}}')
    restarted = share.scanner()
    assert settle_csv(share, restarted) == [] and settle_csv(share, restarted) == []
    assert len(list(share.layout.state.glob(f"{LEDGER_NAME}.damaged-*"))) == 1
    ledger = json.loads((share.layout.state / LEDGER_NAME).read_text())["files"]
    assert ledger["data.csv"]["state"] == "preexisting"


def test_a_crash_between_ledger_and_job_file_is_finished_on_restart(share: Share) -> None:
    scanner = share.scanner()
    (share.layout.input / "data.csv").write_text(GOOD_CSV)
    assert settle_csv(share, scanner) == ["data"]
    (share.layout.queue / "data.json").unlink()
    ledger_path = share.layout.state / LEDGER_NAME
    ledger = json.loads(ledger_path.read_text())
    ledger["files"]["data.csv"]["state"] = "pending"
    ledger_path.write_text(json.dumps(ledger))
    assert settle_csv(share, share.scanner()) == []
    assert json.loads((share.layout.queue / "data.json").read_text())["job_id"] == "data"


def test_csv_drop_with_a_taken_id_gets_a_stamped_id(share: Share) -> None:
    scanner = share.scanner()
    (share.layout.completed / "report.json").write_text("{}")
    (share.layout.input / "report.csv").write_text(GOOD_CSV)
    [job_id] = settle_csv(share, scanner)
    assert job_id.startswith("report_") and len(job_id) == len("report_") + 14


# -- order, duplicates, leftovers --------------------------------------------------------------


def test_ready_jobs_come_by_priority_then_age_with_the_wait_reported(share: Share) -> None:
    scanner = share.scanner(auto=False)
    (share.layout.input / "good.csv").write_text(GOOD_CSV)
    arrivals = {"old_low": (0, 100.0), "new_high": (5, 300.0), "old_high": (5, 200.0),
                "newest_low": (0, 400.0)}
    for name, (priority, ago) in arrivals.items():
        share.stat.pinned[share.job(name, priority=priority)] = {"ctime": share.wall() - ago}
    share.scan(scanner)
    report = share.scan(scanner, after=SETTLE)
    assert ids(report) == ["new_high", "old_high", "newest_low", "old_low"]
    assert report.oldest_wait_seconds == pytest.approx(400.0)


def test_duplicate_job_ids_in_the_queue(share: Share) -> None:
    scanner = share.scanner(auto=False)
    (share.layout.input / "good.csv").write_text(GOOD_CSV)
    first = share.job("a", job_id="same")
    share.stat.pinned[first] = {"ctime": 10.0}
    second = share.job("b", job_id="same", portfolio_size=50)
    copy = share.job("c", job_id="same")
    share.scan(scanner)
    report = share.scan(scanner, after=SETTLE)
    assert ids(report) == ["same"] and report.jobs[0].path == first
    assert not copy.exists() and not second.exists()  # identical copy removed, other failed
    [failed] = share.failed()
    assert "job id 'same' is already queued as a.json" in failed["error"]["message"]
    assert failed["portfolio_size"] == 50 and failed["job_id"] == "same"


def test_drop_of_a_running_job(share: Share) -> None:
    scanner = share.scanner(auto=False)
    (share.layout.input / "good.csv").write_text(GOOD_CSV)
    share.job("job1")
    share.scan(scanner)
    record = share.registry.claim(share.scan(scanner, after=SETTLE).jobs[0])
    assert record is not None
    same = share.job("job1")  # the same file again: it is that job, not a new one
    share.scan(scanner)
    assert share.scan(scanner, after=SETTLE).rejected == [] and not same.exists()
    share.job("job1", portfolio_size=60)  # a different job under a running id
    report = share.scan(scanner)  # a file that parses is whole: decided at once
    [failed] = [json.loads(p.read_text()) for p in report.rejected]
    assert "job id 'job1' is already running; use a new job_id" in failed["error"]["message"]
    assert report.rejected[0].name.startswith("job1.rejected-")


def test_a_requeued_record_is_ready_at_once(share: Share) -> None:
    scanner = share.scanner(auto=False)
    (share.layout.input / "good.csv").write_text(GOOD_CSV)
    share.job("job1")
    share.scan(scanner)
    record = share.registry.claim(share.scan(scanner, after=SETTLE).jobs[0])
    assert record is not None
    share.registry.requeue(record, resume=True, refund_attempt=False)
    [entry] = share.scan(scanner).jobs  # no settle wait for a daemon-written record
    assert entry.record is not None and entry.record.attempts == 1
