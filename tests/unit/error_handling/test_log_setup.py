"""Tests of setup_error_logging: JSON files, levels, rotation, hooks, idempotence, clean-up."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from daemon.error_handling.config import ErrorHandlingConfig, LoggingConfig
from daemon.error_handling.context_logger import ContextFilter, bind_context
from daemon.error_handling.log_setup import (
    ERRORS_LOG_NAME,
    MAIN_LOG_NAME,
    LoggingHandle,
    setup_error_logging,
)

pytestmark = pytest.mark.timeout(30)

SetUp = Callable[..., LoggingHandle]


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs"


@pytest.fixture
def log_setup(log_dir: Path) -> Iterator[SetUp]:
    """Set up logging in ``log_dir``; every handle is closed after the test."""
    handles: list[LoggingHandle] = []

    def setup(**fields: Any) -> LoggingHandle:
        config = LoggingConfig(**{"console_log_level": "CRITICAL", **fields})
        handles.append(setup_error_logging(config, log_directory=log_dir))
        return handles[-1]

    yield setup
    for handle in handles:
        handle.close()


def parse(path: Path) -> list[dict[str, Any]]:
    """Every line must be one JSON object."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def ours() -> list[logging.Handler]:
    """Root handlers installed by setup_error_logging (they carry the context filter)."""
    root = logging.getLogger()
    return [h for h in root.handlers if any(isinstance(f, ContextFilter) for f in h.filters)]


def test_json_lines_in_both_files_and_only_errors_in_the_error_log(
    log_setup: SetUp, log_dir: Path
) -> None:
    # Given logging set up with the file level at DEBUG
    log_setup(file_log_level="DEBUG")
    log = logging.getLogger("tests.levels")
    # When lines of every level are logged, one with an exception
    with bind_context(job_id="job-1"):
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        try:
            raise KeyError("k")
        except KeyError:
            log.exception("x")
        log.critical("c")
    # Then every line of both files parses, and the error log holds ERROR and above only
    main = [r for r in parse(log_dir / MAIN_LOG_NAME) if r["logger"] == "tests.levels"]
    errors = [r for r in parse(log_dir / ERRORS_LOG_NAME) if r["logger"] == "tests.levels"]
    assert [r["level"] for r in main] == ["DEBUG", "INFO", "WARNING", "ERROR", "ERROR", "CRITICAL"]
    assert [r["message"] for r in errors] == ["e", "x", "c"]
    assert {r["level"] for r in parse(log_dir / ERRORS_LOG_NAME)} <= {"ERROR", "CRITICAL"}
    assert all(r["job_id"] == "job-1" and r["time"] for r in main)
    assert "KeyError: 'k'" in errors[1]["exc_info"]


def test_file_level_filters_the_main_log(log_setup: SetUp, log_dir: Path) -> None:
    log_setup(file_log_level="WARNING")
    log = logging.getLogger("tests.filelevel")
    log.info("dropped")
    log.warning("kept")
    assert [r["message"] for r in parse(log_dir / MAIN_LOG_NAME)] == ["kept"]


def test_include_context_false_omits_context_but_keeps_host_and_pid(
    log_setup: SetUp, log_dir: Path
) -> None:
    log_setup(include_context=False)
    with bind_context(job_id="job-1", stage="load"):
        logging.getLogger("tests.nocontext").info("hello")
    (line,) = parse(log_dir / MAIN_LOG_NAME)
    assert "job_id" not in line and "stage" not in line and "context" not in line
    assert line["host"] and line["pid"]


def test_a_context_key_clashing_with_a_field_is_prefixed(log_setup: SetUp, log_dir: Path) -> None:
    log_setup()
    with bind_context(level="deep", job_id="j"):
        logging.getLogger("tests.clash").info("hello")
    (line,) = parse(log_dir / MAIN_LOG_NAME)
    assert line["level"] == "INFO"
    assert line["context_level"] == "deep"


def test_console_shows_the_human_form_with_context(
    log_setup: SetUp, capsys: pytest.CaptureFixture[str]
) -> None:
    log_setup(console_log_level="INFO")
    with bind_context(job_id="job-7", stage="report"):
        logging.getLogger("tests.console").info("wrote %d charts", 3)
    err = capsys.readouterr().err
    assert "INFO     tests.console [job_id=job-7 stage=report]: wrote 3 charts" in err


def test_urls_with_secrets_are_scrubbed_from_messages(log_setup: SetUp, log_dir: Path) -> None:
    log_setup()
    logging.getLogger("tests.scrub").warning(
        "posting to %s via %s",
        "https://hooks.slack.com/services/T1/B2/SeCrEt",
        "http://proxy-user:proxy-pass@proxy:3128",
    )
    text = (log_dir / MAIN_LOG_NAME).read_text()
    assert "SeCrEt" not in text and "proxy-pass" not in text
    assert "proxy-user" in text


def test_files_rotate_by_size_and_keep_backup_count(log_setup: SetUp, log_dir: Path) -> None:
    # Given tiny log files (about 1 kB) and two backups
    log_setup(max_log_size_mb=0.001, backup_count=2)
    log = logging.getLogger("tests.rotate")
    # When far more than three files' worth is logged
    for n in range(200):
        log.error("line %03d %s", n, "x" * 40)
    # Then backups appear, no more than backup_count, each under the size, each valid JSON
    for name in (MAIN_LOG_NAME, ERRORS_LOG_NAME):
        files = sorted(log_dir.glob(name + "*"))
        assert [f.name for f in files] == [name, name + ".1", name + ".2"]
        for file in files:
            assert file.stat().st_size <= 1048 + 400  # one line may overshoot the limit
            assert all(r["logger"] == "tests.rotate" for r in parse(file))
    newest = parse(log_dir / MAIN_LOG_NAME)[-1]
    assert newest["message"].startswith("line 199")


def test_setting_up_twice_does_not_duplicate_handlers(log_setup: SetUp, log_dir: Path) -> None:
    # Given logging set up twice
    first = log_setup()
    second = log_setup(file_log_level="INFO")
    # When one line is logged
    logging.getLogger("tests.twice").warning("once")
    # Then the root has one set of our handlers and the line is written once
    assert len(ours()) == 3
    assert set(ours()) == set(second.handlers)
    assert not set(first.handlers) & set(logging.getLogger().handlers)
    assert [r["message"] for r in parse(log_dir / MAIN_LOG_NAME)] == ["once"]


def test_close_removes_handlers_and_restores_hooks_and_level(log_setup: SetUp) -> None:
    root = logging.getLogger()
    level, hook, thread_hook = root.level, sys.excepthook, threading.excepthook
    handle = log_setup(file_log_level="DEBUG")
    assert sys.excepthook is not hook and threading.excepthook is not thread_hook
    assert root.level == logging.DEBUG
    handle.close()
    handle.close()  # idempotent
    assert ours() == []
    assert (root.level, sys.excepthook, threading.excepthook) == (level, hook, thread_hook)
    assert all(getattr(h, "stream", None) is None for h in handle.handlers[1:])  # files closed


def test_whole_config_is_accepted(log_dir: Path) -> None:
    config = ErrorHandlingConfig().with_share_root(log_dir.parent)
    with setup_error_logging(config) as handle:
        assert handle.log_directory == log_dir
        assert (log_dir / MAIN_LOG_NAME).exists()
    assert ours() == []


@pytest.mark.timeout(10)
def test_uncaught_thread_exception_is_logged_as_critical(log_setup: SetUp, log_dir: Path) -> None:
    # Given logging set up
    log_setup()

    # When a thread dies of an exception nobody catches
    def crash() -> None:
        with bind_context(job_id="job-crash"):
            raise RuntimeError("thread boom")

    thread = threading.Thread(target=crash, name="doomed-worker")
    thread.start()
    thread.join(5)
    # Then it is in the error log as CRITICAL, with its context and a detail file
    (line,) = parse(log_dir / ERRORS_LOG_NAME)
    assert line["level"] == "CRITICAL"
    assert "doomed-worker" in line["message"] and "thread boom" in line["message"]
    assert line["job_id"] == "job-crash"
    details = json.loads(Path(line["error_detail_file"]).read_text())
    assert details["exception"]["frames"][-1]["function"] == "crash"


def test_uncaught_main_thread_exception_is_logged_as_critical(
    log_setup: SetUp, log_dir: Path
) -> None:
    log_setup()
    try:
        raise ValueError("main boom")
    except ValueError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    (line,) = parse(log_dir / ERRORS_LOG_NAME)
    assert line["level"] == "CRITICAL"
    assert line["message"] == "Uncaught exception: ValueError: main boom"


def test_ctrl_c_goes_to_the_previous_hook(
    log_setup: SetUp, log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[type[BaseException]] = []

    def previous(kind: type[BaseException], _e: BaseException, _tb: TracebackType | None) -> None:
        seen.append(kind)

    monkeypatch.setattr(sys, "excepthook", previous)
    log_setup()
    sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)
    assert seen == [KeyboardInterrupt]
    assert parse(log_dir / ERRORS_LOG_NAME) == []
