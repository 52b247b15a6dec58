"""``heavy-optimizer logs``: log lines written by the real logging set-up, rendered and tailed."""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from daemon.commands.logs import tail_lines
from daemon.error_handling.config import LoggingConfig
from daemon.error_handling.context_logger import ContextLogger, bind_context
from daemon.error_handling.log_setup import MAIN_LOG_NAME, setup_error_logging
from daemon.share import ShareLayout
from tests.paths import REPO_ROOT
from tests.unit.commands.cli_support import Cli

pytestmark = pytest.mark.timeout(30)

LINE = r"^\S+ {level} +{logger} {message}"


@pytest.fixture
def logged(share: ShareLayout) -> ShareLayout:
    """The daemon's log files after some work: context lines, two jobs' errors, details."""
    with setup_error_logging(LoggingConfig(console_log_level="CRITICAL"),
                             log_directory=share.logs):
        log = ContextLogger("daemon.supervisor")
        logging.getLogger("daemon.intake").info("scan found %d jobs", 2)
        with bind_context(job_id="job-1", stage="load"):
            log.info("loading input")
            try:
                raise ValueError("bad cell in row 7")
            except ValueError:
                log.error("load failed")
        with bind_context(job_id="job-10"):
            log.error("other job failed", exc_info=False)
        log.info("tick done")
    return share


def test_last_lines_rendered_with_context(cli: Cli, logged: ShareLayout) -> None:
    result = cli("logs", "-n", "3")
    assert result.code == 0, result.err
    lines = [line for line in result.out.splitlines() if not line.startswith("    ")]
    assert len(lines) == 3
    assert re.match(LINE.format(level="ERROR", logger=r"daemon\.supervisor",
                                message=r"load failed \[job_id=job-1 stage=load\]$"), lines[0])
    assert re.match(LINE.format(level="ERROR", logger=r"daemon\.supervisor",
                                message=r"other job failed \[job_id=job-10\]$"), lines[1])
    assert re.match(LINE.format(level="INFO", logger=r"daemon\.supervisor",
                                message="tick done$"), lines[2])
    assert "    ValueError: bad cell in row 7" in result.out  # the traceback, indented


def test_errors_of_one_job_and_its_detail_files(cli: Cli, logged: ShareLayout) -> None:
    everything = cli("logs", "--errors")
    assert "load failed" in everything.out and "other job failed" in everything.out
    assert "scan found" not in everything.out
    # When: only job-1 (whose id is a prefix of job-10)
    result = cli("logs", "--errors", "--job", "job-1")
    # Then: its error line and its detail file, nothing of job-10
    assert result.code == 0
    assert "load failed" in result.out and "other job failed" not in result.out
    details = [line for line in result.out.splitlines() if line.startswith("error details:")]
    assert len(details) == 1
    detail = Path(details[0].split(": ", 1)[1])
    assert detail.parent == logged.logs / "errors" and detail.name.startswith("error_job-1_")
    assert json.loads(detail.read_text())["context"]["job_id"] == "job-1"


def test_a_jobs_own_log(cli: Cli, logged: ShareLayout) -> None:
    # Given: the job log as the worker's JSON formatter writes it (asctime renamed to time)
    (logged.job_logs / "job-1.log").write_text(
        json.dumps({"time": "2025-07-30 15:45:01,123", "levelname": "INFO",
                    "name": "daemon.workflow.pipeline", "message": "stage load done"}) + "\n"
        + "plain text from a library\n")
    result = cli("logs", "--job", "job-1")
    assert result.code == 0
    assert result.out.splitlines()[:2] == [
        "2025-07-30 15:45:01,123 INFO     daemon.workflow.pipeline stage load done",
        "plain text from a library"]
    # And: a job without a log file but with error details still shows them
    gone = cli("logs", "--job", "job-10")
    assert gone.code == 0 and "no log file" in gone.err and "error_job-10_" in gone.out
    nothing = cli("logs", "--job", "never-ran")
    assert nothing.code == 1 and "no log file" in nothing.err


@pytest.mark.parametrize("count", [0, 1, 7, 1999, 2000, 5000])
@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_tail_reads_exactly_the_last_lines_across_blocks(
        tmp_path: Path, count: int, ending: str) -> None:
    # Lines up to ~300 bytes, so many cross the 64 kB read blocks
    lines = [f"{i}:" + "x" * (i * 37 % 300) for i in range(2000)]
    path = tmp_path / "big.log"
    path.write_bytes(("\r\n" if ending == "\r\n" else "\n").join(lines).encode() + (
        ending.encode()))
    found, (inode, offset) = tail_lines(path, count)
    assert found == lines[len(lines) - min(count, len(lines)):] if count else found == []
    assert inode == os.stat(path).st_ino and offset == path.stat().st_size


def test_follow_prints_new_lines_across_rotation_until_ctrl_c(
        logged: ShareLayout, config_dir: Path) -> None:
    log = logged.logs / MAIN_LOG_NAME
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "logs", "--follow", "-n", "1", "--share",
         str(logged.root), "--config-dir", str(config_dir)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def read_all() -> None:
        for line in stdout:
            lines.put(line)

    reader = threading.Thread(target=read_all)
    reader.start()

    def next_line() -> str:
        return lines.get(timeout=15).rstrip("\n")

    def entry(message: str) -> str:
        return json.dumps({"time": "t", "level": "INFO", "logger": "test", "message": message,
                           "job_id": "job-1"}) + "\n"

    try:
        assert next_line().endswith("tick done")
        with log.open("a") as handle:  # appended
            handle.write(entry("appended"))
        assert next_line() == "t INFO     test appended [job_id=job-1]"
        log.rename(log.with_name(MAIN_LOG_NAME + ".1"))  # rotated, as the handler does
        log.write_text(entry("after rotation"))
        assert next_line() == "t INFO     test after rotation [job_id=job-1]"
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=15)
        reader.join(timeout=15)
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert code == 0 and "Traceback" not in err
