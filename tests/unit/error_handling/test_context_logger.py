"""Tests of the log context (threads, tasks, bind) and of ContextLogger's error detail files."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.error_handling.config import LoggingConfig
from daemon.error_handling.context_logger import (
    ContextLogger,
    bind_context,
    context_of,
    current_context,
    set_context,
)
from daemon.error_handling.error_details import MAX_VALUE_CHARS, REDACTED
from daemon.error_handling.errors import DataValidationError
from daemon.error_handling.log_setup import MAIN_LOG_NAME, LoggingHandle, setup_error_logging

pytestmark = pytest.mark.timeout(30)

SetUp = Callable[..., LoggingHandle]


@pytest.fixture
def log_setup(tmp_path: Path) -> Iterator[SetUp]:
    """Set up logging under ``tmp_path/logs``; every handle is closed after the test."""
    handles: list[LoggingHandle] = []

    def setup(**fields: Any) -> LoggingHandle:
        config = LoggingConfig(**{"console_log_level": "CRITICAL", **fields})
        handles.append(setup_error_logging(config, log_directory=tmp_path / "logs"))
        return handles[-1]

    yield setup
    for handle in handles:
        handle.close()


def read_lines(path: Path, logger: str | None = None) -> list[dict[str, Any]]:
    """Parse every line as JSON (each must parse); keep those of ``logger`` if given."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [r for r in records if logger is None or r["logger"] == logger]


# -- the context --------------------------------------------------------------------------


def test_bind_adds_fields_and_restores_the_previous_context() -> None:
    set_context(job_id="job-1")
    with bind_context(stage="load", attempt=2) as bound:
        assert bound == {"job_id": "job-1", "stage": "load", "attempt": 2}
        set_context(stage="validate")
        assert current_context()["stage"] == "validate"
    assert current_context() == {"job_id": "job-1"}
    set_context(job_id=None)  # None removes a field
    assert current_context() == {}


def test_context_copy_cannot_change_the_context() -> None:
    set_context(job_id="job-1")
    copy = ContextLogger("t").context()
    copy["job_id"] = "tampered"
    assert current_context() == {"job_id": "job-1"}


def test_secrets_never_enter_the_context() -> None:
    with bind_context(
        job_id="job-1",
        api_token="tok-123",
        slack="https://hooks.slack.com/services/T01/B02/xyzSECRET",
        database="postgres://opt:pa55word@db:5432/prices",
    ):
        context = current_context()
    assert context["api_token"] == REDACTED
    assert "xyzSECRET" not in context["slack"]
    assert "pa55word" not in context["database"]
    assert context["job_id"] == "job-1"


@pytest.mark.timeout(10)
def test_each_thread_logs_its_own_context(log_setup: SetUp, tmp_path: Path) -> None:
    # Given two threads that bind different job ids and log interleaved
    log_setup()
    barrier = threading.Barrier(2, timeout=5)
    plain = logging.getLogger("tests.worker")

    def work(job: str) -> None:
        with bind_context(job_id=job, stage="optimise"):
            barrier.wait()
            for n in range(30):
                plain.info("line %d of %s", n, job)

    threads = [threading.Thread(target=work, args=(j,), name=j) for j in ("job-a", "job-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    # Then every line carries its own thread's job id
    lines = read_lines(tmp_path / "logs" / MAIN_LOG_NAME, "tests.worker")
    assert len(lines) == 60
    for record in lines:
        assert record["message"].endswith(record["job_id"])
        assert record["thread"] == record["job_id"]
        assert record["stage"] == "optimise"


def test_a_new_thread_starts_with_an_empty_context(log_setup: SetUp, tmp_path: Path) -> None:
    log_setup()
    plain = logging.getLogger("tests.main")
    set_context(job_id="main-job")
    seen: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: seen.append(current_context()), name="fresh")
    thread.start()
    thread.join(5)
    plain.info("from main")
    assert seen == [{}]
    (line,) = read_lines(tmp_path / "logs" / MAIN_LOG_NAME, "tests.main")
    assert line["job_id"] == "main-job"


def test_each_asyncio_task_logs_its_own_context(log_setup: SetUp, tmp_path: Path) -> None:
    # Given tasks created inside a bound block, each binding its own job id
    log_setup()
    plain = logging.getLogger("tests.tasks")

    async def job(job_id: str) -> None:
        with bind_context(job_id=job_id):
            for n in range(10):
                plain.info("step %d of %s", n, job_id)
                await asyncio.sleep(0)  # let the other task run between lines

    async def main() -> None:
        with bind_context(run="nightly"):
            await asyncio.gather(job("job-x"), job("job-y"))

    asyncio.run(main())
    lines = read_lines(tmp_path / "logs" / MAIN_LOG_NAME, "tests.tasks")
    assert len(lines) == 20
    assert [r["job_id"] for r in lines[:4]] == ["job-x", "job-y", "job-x", "job-y"]  # interleaved
    for record in lines:
        assert record["message"].endswith(record["job_id"])
        assert record["run"] == "nightly"  # inherited from the creating context


def test_plain_logger_lines_carry_context_host_and_pid(log_setup: SetUp, tmp_path: Path) -> None:
    log_setup()
    with bind_context(job_id="job-9", stage="load", attempt=1):
        logging.getLogger("tests.plain").warning("slow read of %s", "prices.csv")
    (line,) = read_lines(tmp_path / "logs" / MAIN_LOG_NAME)
    assert line["message"] == "slow read of prices.csv"
    assert line["level"] == "WARNING"
    assert (line["job_id"], line["stage"], line["attempt"]) == ("job-9", "load", 1)
    assert line["host"] == socket.gethostname()
    assert line["pid"] == os.getpid()


def test_context_logger_reports_the_callers_line(caplog: pytest.LogCaptureFixture) -> None:
    log = ContextLogger("tests.caller")
    with caplog.at_level(logging.DEBUG, logger="tests.caller"), bind_context(job_id="j"):
        log.info("hello %s", "world")
        log.error("no exception here")
    info, error = caplog.records
    assert info.funcName == error.funcName == "test_context_logger_reports_the_callers_line"
    assert info.getMessage() == "hello world"
    assert dict(info.context) == {"job_id": "j"}  # type: ignore[attr-defined]
    assert error.exc_info is None  # no active exception: no "NoneType: None" traceback


# -- error detail files -------------------------------------------------------------------


def _load_prices(path: str, password: str) -> None:
    api_key = "k-live-123456"  # noqa: F841 - read from the frame
    webhook_url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"  # noqa: F841 - read from the frame
    db_url = "postgres://optimizer:dbpa55@db.local/prices"  # noqa: F841 - read from the frame
    settings = {"token": "t0k3n-value", "rows": 5}  # noqa: F841 - read from the frame
    big = "y" * 5000
    rows = 17
    raise DataValidationError(
        f"{path}: row {rows}: not a number", context={"path": path, "row": rows}
    ) from ValueError(f"could not convert {big[:3]!r}")


def test_error_writes_a_detail_file_with_frames_locals_and_system_state(
    log_setup: SetUp, tmp_path: Path
) -> None:
    # Given logging set up and an error raised deep inside a job
    log_setup()
    log = ContextLogger("tests.job")
    with bind_context(job_id="job-42", stage="load", smtp_password="hunter2"):
        try:
            _load_prices("/share/queue/prices.csv", password="hunter2")
        except DataValidationError:
            # When it is reported
            path = log.error("Loading %s failed", "prices.csv")
    # Then a detail file named after the job holds the whole story
    assert path is not None
    assert path.parent == tmp_path / "logs" / "errors"
    assert re.fullmatch(r"error_job-42_\d{8}_\d{6}_\d{6}\.json", path.name)
    text = path.read_text(encoding="utf-8")
    for secret in ("hunter2", "k-live-123456", "XXXXSECRET", "dbpa55", "t0k3n-value"):
        assert secret not in text
    details = json.loads(text)
    assert details["message"] == "Loading prices.csv failed"
    assert details["logger"] == "tests.job"
    assert details["context"] == {"job_id": "job-42", "stage": "load", "smtp_password": REDACTED}
    exception = details["exception"]
    assert exception["type"] == "daemon.error_handling.errors.DataValidationError"
    assert exception["details"]["context"] == {"path": "/share/queue/prices.csv", "row": 17}
    assert exception["chain"][0]["type"] == "ValueError"
    innermost = exception["frames"][-1]
    assert innermost["function"] == "_load_prices"
    assert innermost["file"].endswith("test_context_logger.py")
    assert innermost["code"].startswith("raise DataValidationError(")
    local_values = innermost["locals"]
    assert local_values["password"] == REDACTED
    assert local_values["api_key"] == REDACTED
    assert local_values["webhook_url"] == REDACTED
    assert local_values["rows"] == "17"
    assert "'rows': 5" in local_values["settings"]
    assert local_values["db_url"].startswith("'postgres://optimizer:***@")
    assert len(local_values["big"]) < MAX_VALUE_CHARS + 40 and "more chars" in local_values["big"]
    assert exception["frames"][0]["function"] == (
        "test_error_writes_a_detail_file_with_frames_locals_and_system_state"
    )
    system = details["system"]
    for key in ("memory", "disk", "load_average", "process", "pid", "host", "python_version"):
        assert key in system
    assert system["pid"] == os.getpid()
    # And the error log line points at the file
    (line,) = read_lines(tmp_path / "logs" / MAIN_LOG_NAME, "tests.job")
    assert line["error_detail_file"] == str(path)
    assert "DataValidationError" in line["exc_info"]


def test_an_error_reported_outside_its_block_keeps_the_blocks_context(tmp_path: Path) -> None:
    # Given an exception that left a bound block (the block's context is gone now)
    log = ContextLogger("tests.outside", error_dir=tmp_path / "errors")
    with bind_context(run="nightly"):
        try:
            with bind_context(job_id="job-5", stage="optimise"):
                raise MemoryError("population too large")
        except MemoryError as exc:
            assert current_context() == {"run": "nightly"}
            assert context_of(exc) == {"run": "nightly", "job_id": "job-5", "stage": "optimise"}
            # When it is reported by an outer handler
            path = log.error("job failed")
    # Then the detail file has the context where the error happened
    assert path is not None and path.name.startswith("error_job-5_")
    details = json.loads(path.read_text())
    assert details["context"] == {"run": "nightly", "job_id": "job-5", "stage": "optimise"}


def test_error_without_an_exception_records_the_calling_stack(tmp_path: Path) -> None:
    log = ContextLogger("tests.stack", error_dir=tmp_path / "errors")
    marker = "find me"  # a local of the calling frame
    path = log.error("queue folder vanished")
    assert path is not None and marker
    details = json.loads(path.read_text())
    assert details["exception"] is None
    caller = details["stack"][-1]
    assert caller["function"] == "test_error_without_an_exception_records_the_calling_stack"
    assert caller["locals"]["marker"] == "'find me'"
    assert path.name.startswith("error_tests.stack_")  # no job id: the logger name


def test_config_can_turn_off_locals_and_detail_files(log_setup: SetUp, tmp_path: Path) -> None:
    log_setup(include_locals=False)
    log = ContextLogger("tests.nolocals")
    try:
        _load_prices("p.csv", password="hunter2")
    except DataValidationError as exc:
        path = log.error("failed", exc_info=exc, include_locals=True)  # config is the ceiling
    assert path is not None
    frames = json.loads(path.read_text())["exception"]["frames"]
    assert frames and all("locals" not in frame for frame in frames)

    log_setup(error_detail_files=False)
    assert log.critical("failed again") is None
    assert list((tmp_path / "logs" / "errors").iterdir()) == [path]


def test_a_failing_detail_file_never_reaches_the_caller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an error folder that cannot be created (a file is in the way)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    log = ContextLogger("tests.blocked", error_dir=blocker / "errors")
    # When an error is reported
    with caplog.at_level(logging.WARNING, logger="tests.blocked"):
        try:
            raise RuntimeError("original problem")
        except RuntimeError:
            path = log.exception("job failed")
    # Then the error is still logged, with a warning about the file, and nothing is raised
    assert path is None
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.ERROR, "job failed") in messages
    assert any(
        level == logging.WARNING and "Could not write error detail file" in text
        for level, text in messages
    )
