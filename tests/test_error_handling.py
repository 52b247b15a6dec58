#!/usr/bin/env python3
"""The error-handling library end to end, through its public names only.

Operators were told to run this file directly after an install to check a server:

    python3 tests/test_error_handling.py

It is also part of the pytest suite. Each test wires several parts together the way the
daemon does (a failing job step, the recovery manager, checkpoints, alerts to real local
servers, context logs), so a broken seam between them shows up here even when every unit
test of the parts passes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the repo importable, then hand to pytest
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pytest

from daemon.error_handling import (
    AdjustParameters,
    CheckpointManager,
    ContextLogger,
    ErrorHandlingConfig,
    ErrorNotifier,
    ErrorRecoveryManager,
    FailJob,
    JobTimeoutError,
    NetworkError,
    RetryError,
    load_error_handling_config,
    retry_on_network_error,
    setup_error_logging,
)
from daemon.error_handling.config import (
    EmailConfig,
    LoggingConfig,
    NotificationsConfig,
    SlackConfig,
)
from tests.servers import slack_server, smtp_server

pytestmark = pytest.mark.timeout(60)


def _notifications(smtp_port: int, slack_url: str) -> NotificationsConfig:
    return NotificationsConfig(
        enabled=True,
        rate_limit_per_hour=10,
        email=EmailConfig(enabled=True, smtp_server="127.0.0.1", smtp_port=smtp_port,
                          use_tls=False, recipients=["ops@example.com"], timeout_seconds=5),
        slack=SlackConfig(enabled=True, webhook_url=slack_url, timeout_seconds=5),
    )


def test_shipped_config_loads() -> None:
    config = load_error_handling_config(
        Path(__file__).resolve().parents[1] / "config" / "error_handling_config.json"
    )
    assert isinstance(config, ErrorHandlingConfig)
    assert config.enabled


def test_memory_failure_is_recovered_with_a_smaller_population(tmp_path: Path) -> None:
    # Given a job step that runs out of memory above a population of 50
    checkpoints = CheckpointManager(job_id="job-mem", base_dir=tmp_path / "checkpoints")
    checkpoints.save_checkpoint({"stage": "preprocess", "weights": np.arange(5.0)}, "preprocess")
    recovery = ErrorRecoveryManager(checkpoints, None, "job-mem")
    population = 200

    def step(size: int) -> float:
        if size > 50:
            raise MemoryError(f"cannot allocate a population of {size}")
        return float(size)

    # When the recovery manager handles each failure until the step succeeds
    while True:
        try:
            result = step(population)
            recovery.record_outcome(True)
            break
        except MemoryError as exc:
            action = recovery.handle_error(exc, {"stage": "algorithm:GA",
                                                 "population_size": population})
            assert isinstance(action, AdjustParameters)
            population = action.changes["population_size"]

    # Then the population was halved twice and the report says so
    assert result == 50.0
    report = json.loads(recovery.save_recovery_report(tmp_path).read_text())
    assert report["job_id"] == "job-mem"
    assert report["total_attempts"] == 2
    assert report["successful_recoveries"] == 1
    state = checkpoints.load_checkpoint()
    assert np.array_equal(state["weights"], np.arange(5.0))


def test_timeout_fails_the_job_and_alerts_people(tmp_path: Path) -> None:
    with smtp_server() as smtp, slack_server() as slack:
        notifier = ErrorNotifier(_notifications(smtp.port, slack.url))
        try:
            recovery = ErrorRecoveryManager(
                CheckpointManager(job_id="job-bad", base_dir=tmp_path), notifier, "job-bad"
            )
            error = JobTimeoutError("the job exceeded its time limit of 300 s")
            action = recovery.handle_error(error, {"stage": "algorithm:GA:k35"})
            assert isinstance(action, FailJob)
            assert "time limit of 300 s" in action.reason
            assert notifier.flush(timeout=20)
        finally:
            notifier.close()
        assert smtp.wait_for_messages(1, timeout=10)
        assert slack.wait_for_requests(1, timeout=10)
        assert "job-bad" in smtp.messages[0].message["Subject"]
        assert "job-bad" in json.dumps(slack.bodies[0])


def test_network_retries_then_gives_up_with_the_last_error() -> None:
    waits: list[float] = []
    calls = 0

    @retry_on_network_error(max_attempts=3, initial_delay=0.5, sleep=waits.append)
    def send() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionResetError("peer reset")

    with pytest.raises(RetryError) as caught:
        send()
    assert calls == 3 and caught.value.attempts == 3
    assert isinstance(caught.value.last_exception, ConnectionResetError)
    assert len(waits) == 2 and waits[1] > waits[0]


def test_error_detail_file_has_context_and_no_secrets(tmp_path: Path) -> None:
    handle = setup_error_logging(LoggingConfig(log_directory=str(tmp_path),
                                               console_log_level="CRITICAL"))
    try:
        log = ContextLogger("tests.error_handling")
        log.set_context(job_id="job-ctx", stage="load")
        smtp_password = "hunter2-do-not-log"  # noqa: F841 - a local the detail file must redact
        try:
            raise NetworkError("share unreachable")
        except NetworkError:
            detail = log.error("load failed", exc_info=True, include_locals=True)
        log.clear_context()
    finally:
        handle.close()
    assert detail is not None and detail.name.startswith("error_job-ctx_")
    text = detail.read_text()
    assert "hunter2" not in text
    record = json.loads(text)
    assert record["context"]["job_id"] == "job-ctx"
    lines = (tmp_path / "heavy_optimizer_errors.log").read_text().splitlines()
    assert any(json.loads(line).get("job_id") == "job-ctx" for line in lines)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
