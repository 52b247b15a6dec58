"""ErrorRecoveryManager: one strategy per error kind, bounds, history, reports, alerts.

Checkpoints are real (``CheckpointManager`` on ``tmp_path``). Alerts go to a recording
double of the notifier: real delivery by SMTP and Slack is tested with the notifier itself,
and what matters here is which alert the recovery manager asks for, and how often. One test
uses a real ``ErrorNotifier`` with notifications off to check the two fit together.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import pytest

from daemon.error_handling.checkpoint import CheckpointManager
from daemon.error_handling.config import (
    CheckpointConfig,
    NotificationsConfig,
    RecoveryConfig,
)
from daemon.error_handling.errors import (
    AlgorithmError,
    CheckpointLoadError,
    ConfigurationError,
    CriticalError,
    DatabaseError,
    DatabaseQueryError,
    DataValidationError,
    JobCrashError,
    JobStuckError,
    JobTimeoutError,
    MemoryLimitError,
    NetworkError,
)
from daemon.error_handling.notifier import ErrorNotifier
from daemon.error_handling.recovery import ErrorRecoveryManager, classify_error
from daemon.error_handling.recovery_actions import (
    AdjustParameters,
    FailJob,
    ResumeFromCheckpoint,
    RetryAfter,
    SkipAlgorithm,
)
from daemon.error_handling.retry import RetryError, retry

pytestmark = pytest.mark.timeout(30)

JOB = "job_recovery"


class FakeClock:
    """Wall clock under test control; each reading advances it a little (distinct times)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


class RecordingNotifier:
    """Test double with the two methods the manager calls; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def notify_critical_error(
        self,
        error: BaseException,
        context: dict[str, Any] | None = None,
        severity: str = "CRITICAL",
    ) -> bool:
        self.calls.append(("critical", {"error": error, "context": context, "severity": severity}))
        return True

    def notify(
        self,
        title: str,
        message: str,
        severity: str = "INFO",
        context: dict[str, Any] | None = None,
    ) -> bool:
        call = {"title": title, "message": message, "severity": severity, "context": context}
        self.calls.append(("message", call))
        return True


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def checkpoints(tmp_path: Path, clock: FakeClock) -> CheckpointManager:
    return CheckpointManager(JOB, tmp_path / "checkpoints", config=CheckpointConfig(), clock=clock)


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


def make_manager(
    checkpoints: CheckpointManager,
    notifier: RecordingNotifier | ErrorNotifier | None,
    clock: FakeClock,
    **overrides: Any,
) -> ErrorRecoveryManager:
    config = overrides.pop("config", RecoveryConfig())
    return ErrorRecoveryManager(
        checkpoints, notifier, JOB, config=config, clock=clock, rng=random.Random(7), **overrides
    )


def with_strategy(config: RecoveryConfig, kind: str, **changes: Any) -> RecoveryConfig:
    strategy = dataclasses.replace(getattr(config.strategies, kind), **changes)
    return dataclasses.replace(
        config, strategies=dataclasses.replace(config.strategies, **{kind: strategy})
    )


def save_stages(checkpoints: CheckpointManager, *names: str) -> None:
    for index, name in enumerate(names):
        checkpoints.save_checkpoint({"stage": name, "index": index}, name)


# -- strategies ---------------------------------------------------------------------------


def test_memory_error_frees_memory_and_halves_sizes_then_retries(
    checkpoints: CheckpointManager, notifier: RecordingNotifier, clock: FakeClock
) -> None:
    # Given a job that ran out of memory with population 100 and batch 64
    manager = make_manager(checkpoints, notifier, clock)
    # When the error is handled
    action = manager.handle_error(
        MemoryLimitError("RSS 15.8 GB over the limit"),
        {"population_size": 100, "batch_size": 64},
    )
    # Then both sizes are halved and the retry waits the memory strategy's first delay
    assert isinstance(action, AdjustParameters)
    assert action.changes == {"population_size": 50, "batch_size": 32}
    assert 5.0 <= action.delay_seconds <= 5.5
    assert "RSS 15.8 GB" in action.reason
    assert notifier.calls == []  # a retry is not announced


def test_memory_reduce_factor_comes_from_config_and_sizes_stay_positive(
    checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    config = with_strategy(RecoveryConfig(), "memory", reduce_factor=0.25)
    manager = make_manager(checkpoints, None, clock, config=config)
    # A builtin MemoryError (no message) is a memory error too
    action = manager.handle_error(MemoryError(), {"population_size": 200, "batch_size": 2})
    assert isinstance(action, AdjustParameters)
    assert action.changes == {"population_size": 50, "batch_size": 1}
    assert manager.history[0]["error_code"] == "MEMORY_LIMIT"


def test_memory_error_saves_emergency_checkpoint_of_the_state(
    checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    manager = make_manager(checkpoints, None, clock)
    state = {"stage": "algorithm:GA", "generation": 17, "best": [1.5, 2.5]}
    manager.handle_error(MemoryLimitError("oom"), {"population_size": 10, "state": state})
    assert [c.name for c in checkpoints.list_checkpoints()] == ["emergency_1"]
    assert checkpoints.load_checkpoint("emergency_1") == state
    assert manager.history[0]["emergency_checkpoint"] == "emergency_1"


def test_network_errors_retry_with_growing_delays_then_fail_and_notify_once(
    checkpoints: CheckpointManager, notifier: RecordingNotifier, clock: FakeClock
) -> None:
    # Given the default bound of 3 recoveries and the network strategy (2 s, doubling)
    manager = make_manager(checkpoints, notifier, clock)
    # When the SMTP relay stays unreachable
    actions = [manager.handle_error(NetworkError("smtp relay unreachable")) for _ in range(4)]
    # Then three retries wait longer each time, within the jitter of the doubling curve
    delays = [a.delay_seconds for a in actions[:3]]
    assert all(isinstance(a, RetryAfter) for a in actions[:3])
    for delay, base in zip(delays, (2.0, 4.0, 8.0), strict=True):
        assert base <= delay <= base * 1.1
    assert delays == sorted(delays) and len(set(delays)) == 3
    # And the fourth failure gives up, naming the bound and the last error
    final = actions[3]
    assert isinstance(final, FailJob)
    assert final.reason == "gave up after 3 recovery attempts: smtp relay unreachable"
    assert final.error_code == "NETWORK_ERROR"
    # And a person is told exactly once, when the job fails (recoverable error: ERROR)
    assert len(notifier.calls) == 1
    method, call = notifier.calls[0]
    assert method == "critical" and call["severity"] == "ERROR"
    assert call["context"]["reason"] == final.reason
    assert [e["outcome"] for e in manager.history] == ["pending"] * 3 + ["failed"]


def test_transient_database_error_retries_but_rejected_query_fails(
    checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    manager = make_manager(checkpoints, None, clock)
    assert isinstance(manager.handle_error(DatabaseError("connection reset")), RetryAfter)
    action = manager.handle_error(DatabaseQueryError("syntax error near SELEC"))
    assert action == FailJob("syntax error near SELEC", "DATABASE_QUERY_ERROR")


def test_data_error_fails_fast_with_its_message_and_pages_nobody_by_default(
    checkpoints: CheckpointManager, notifier: RecordingNotifier, clock: FakeClock
) -> None:
    # Bad input is the analyst's to fix: the failure record says how, operators are not paged
    manager = make_manager(checkpoints, notifier, clock)
    error = DataValidationError("pnl.csv: column 'Strategy_12' row 7: 'n/a' is not a number")
    action = manager.handle_error(error)
    assert action == FailJob(
        "pnl.csv: column 'Strategy_12' row 7: 'n/a' is not a number", "DATA_VALIDATION_ERROR"
    )
    assert notifier.calls == []


def test_data_error_alert_when_the_site_asks_for_it(
    checkpoints: CheckpointManager, notifier: RecordingNotifier, clock: FakeClock
) -> None:
    config = with_strategy(RecoveryConfig(), "data", notify=True)
    manager = make_manager(checkpoints, notifier, clock, config=config)
    error = DataValidationError("pnl.csv: duplicate column 'S7'")
    manager.handle_error(error)
    assert len(notifier.calls) == 1
    method, call = notifier.calls[0]
    assert (method, call["error"], call["severity"]) == ("critical", error, "CRITICAL")


def test_checkpoint_error_resumes_from_newest_valid_older_checkpoint(
    checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    # Given three checkpoints, the newest one corrupted on the share
    save_stages(checkpoints, "load", "validate", "preprocess")
    newest = checkpoints.directory / "preprocess.ckpt"
    newest.write_bytes(b"garbage" + newest.read_bytes()[7:])
    manager = make_manager(checkpoints, None, clock)
    # When loading failed without naming a fallback
    action = manager.handle_error(CheckpointLoadError("checksum mismatch"))
    # Then the job resumes from the newest checkpoint that verifies
    assert isinstance(action, ResumeFromCheckpoint)
    assert action.checkpoint_name == "validate"
    assert action.delay_seconds == 0.0


def test_checkpoint_error_uses_the_previous_checkpoint_it_names(
    checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    save_stages(checkpoints, "load", "validate")
    manager = make_manager(checkpoints, None, clock)
    action = manager.handle_error(CheckpointLoadError("validate is truncated", previous="load"))
    assert action == ResumeFromCheckpoint("load", 0.0, reason=action.reason)


def test_checkpoint_error_from_the_real_manager_resumes_from_its_previous(
    checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    save_stages(checkpoints, "load", "validate", "preprocess")
    (checkpoints.directory / "preprocess.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointLoadError) as caught:
        checkpoints.load_checkpoint()
    action = make_manager(checkpoints, None, clock).handle_error(caught.value)
    assert isinstance(action, ResumeFromCheckpoint) and action.checkpoint_name == "validate"


def test_algorithm_error_skips_that_algorithm(
    checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    manager = make_manager(checkpoints, None, clock)
    from_error = manager.handle_error(AlgorithmError("PSO diverged", context={"algorithm": "PSO"}))
    from_context = manager.handle_error(AlgorithmError("nan fitness"), {"algorithm": "DE"})
    assert isinstance(from_error, SkipAlgorithm) and from_error.algorithm == "PSO"
    assert isinstance(from_context, SkipAlgorithm) and from_context.algorithm == "DE"
    assert "PSO diverged" in from_error.reason


def test_algorithm_error_without_algorithm_name_resumes_instead(
    checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    save_stages(checkpoints, "load")
    action = make_manager(checkpoints, None, clock).handle_error(AlgorithmError("boom"))
    assert isinstance(action, ResumeFromCheckpoint) and action.checkpoint_name == "load"


@pytest.mark.parametrize(
    "error", [JobCrashError("killed by SIGKILL"), JobStuckError("no heartbeat for 900 s")]
)
def test_crash_and_stuck_resume_from_latest_checkpoint(
    error: Exception, checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    save_stages(checkpoints, "load", "validate", "algorithm_GA")
    action = make_manager(checkpoints, None, clock).handle_error(error)
    assert isinstance(action, ResumeFromCheckpoint)
    assert action.checkpoint_name == "algorithm_GA"
    assert 5.0 <= action.delay_seconds <= 5.5


def test_crash_without_checkpoints_starts_over(
    checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    action = make_manager(checkpoints, None, clock).handle_error(JobCrashError("segfault"))
    assert isinstance(action, ResumeFromCheckpoint) and action.checkpoint_name is None


def test_timeout_fails_and_keeps_checkpoints(
    checkpoints: CheckpointManager, notifier: RecordingNotifier, clock: FakeClock
) -> None:
    save_stages(checkpoints, "load", "validate")
    manager = make_manager(checkpoints, notifier, clock)
    action = manager.handle_error(JobTimeoutError("job exceeded 7200 s"))
    assert action == FailJob("job exceeded 7200 s", "JOB_TIMEOUT")
    assert [c.name for c in checkpoints.list_checkpoints()] == ["load", "validate"]
    assert [call["severity"] for _, call in notifier.calls] == ["CRITICAL"]


def test_configuration_error_fails(checkpoints: CheckpointManager, clock: FakeClock) -> None:
    error = ConfigurationError("optimizer_config.json: population_size must be >= 2")
    action = make_manager(checkpoints, None, clock).handle_error(error)
    assert action == FailJob(error.message, "CONFIGURATION_ERROR")


def test_unknown_error_resumes_from_latest_checkpoint(
    checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    save_stages(checkpoints, "load")
    action = make_manager(checkpoints, None, clock).handle_error(ValueError("odd"))
    assert isinstance(action, ResumeFromCheckpoint) and action.checkpoint_name == "load"
    assert 10.0 <= action.delay_seconds <= 11.0


def test_exhausted_retry_decorator_is_classified_by_its_last_error(
    checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    # Given a call retried by the real decorator until its attempts ran out
    @retry(max_attempts=2, delay=0.0, exceptions=(NetworkError,), sleep=lambda _s: None)
    def send() -> None:
        raise NetworkError("slack webhook timed out")

    with pytest.raises(RetryError) as caught:
        send()
    # Then recovery answers the network failure underneath
    assert classify_error(caught.value) == "network"
    manager = make_manager(checkpoints, None, clock)
    action = manager.handle_error(caught.value)
    assert isinstance(action, RetryAfter)
    assert (manager.history[0]["kind"], manager.history[0]["error_code"]) == (
        "network",
        "RETRY_EXHAUSTED",
    )


# -- bounds and switches ------------------------------------------------------------------


def test_attempt_bound_counts_every_recovery_of_the_job(
    checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    config = dataclasses.replace(RecoveryConfig(), max_recovery_attempts=2)
    manager = make_manager(checkpoints, None, clock, config=config)
    assert isinstance(manager.handle_error(JobCrashError("first")), ResumeFromCheckpoint)
    assert isinstance(manager.handle_error(NetworkError("second")), RetryAfter)
    action = manager.handle_error(JobStuckError("third"))
    assert action == FailJob("gave up after 2 recovery attempts: third", "JOB_STUCK")


def test_recovery_timeout_is_measured_from_the_first_error(
    checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    config = dataclasses.replace(RecoveryConfig(), recovery_timeout_seconds=3600.0)
    manager = make_manager(checkpoints, None, clock, config=config)
    assert isinstance(manager.handle_error(NetworkError("down")), RetryAfter)
    clock.now += 3000
    assert isinstance(manager.handle_error(NetworkError("still down")), RetryAfter)
    clock.now += 601
    action = manager.handle_error(NetworkError("down for good"))
    assert isinstance(action, FailJob)
    assert action.reason.startswith("gave up: recovery ran 3601 s since the first error")
    assert action.reason.endswith("(limit 3600 s): down for good")


def test_recovery_timeout_holds_across_processes(
    tmp_path: Path, checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    history_path = tmp_path / "history.json"
    make_manager(checkpoints, None, clock, history_path=history_path).handle_error(
        JobCrashError("killed")
    )
    clock.now += 3601
    later = make_manager(checkpoints, None, clock, history_path=history_path)
    action = later.handle_error(JobCrashError("killed again"))
    assert isinstance(action, FailJob) and action.reason.startswith("gave up: recovery ran")


def test_critical_error_fails_whatever_its_kind_strategy_says(
    checkpoints: CheckpointManager, notifier: RecordingNotifier, clock: FakeClock
) -> None:
    # An unclassified critical error (kind "unknown", whose strategy resumes) and a data
    # error under a config that asks to retry data errors: the hierarchy's verdict wins.
    config = with_strategy(RecoveryConfig(), "data", action="retry")
    manager = make_manager(checkpoints, notifier, clock, config=config)
    unknown = manager.handle_error(CriticalError("controller reports inconsistent state"))
    data = manager.handle_error(DataValidationError("row 3 is empty"))
    assert unknown == FailJob("controller reports inconsistent state", "CRITICAL_ERROR")
    assert data == FailJob("row 3 is empty", "DATA_VALIDATION_ERROR")
    assert [e["strategy"] for e in manager.history] == ["critical_error", "critical_error"]
    # only the kind whose strategy notifies ("unknown") pages; data errors do not by default
    assert [call["severity"] for _, call in notifier.calls] == ["CRITICAL"]


def test_disabled_recovery_fails_every_error(
    checkpoints: CheckpointManager, notifier: RecordingNotifier, clock: FakeClock
) -> None:
    config = dataclasses.replace(RecoveryConfig(), enabled=False)
    manager = make_manager(checkpoints, notifier, clock, config=config)
    assert manager.handle_error(NetworkError("share offline")) == FailJob(
        "share offline", "NETWORK_ERROR"
    )
    assert manager.handle_error(JobCrashError("killed")) == FailJob("killed", "JOB_CRASHED")
    # network has notify=true, crash has notify=false
    assert len(notifier.calls) == 1


# -- emergency checkpoints and alerts -----------------------------------------------------


def test_critical_error_saves_emergency_checkpoint_and_notifies(
    checkpoints: CheckpointManager, notifier: RecordingNotifier, clock: FakeClock
) -> None:
    # Given a job that has run two retries already
    manager = make_manager(checkpoints, notifier, clock)
    manager.handle_error(NetworkError("blip"))
    manager.handle_error(NetworkError("blip"))
    state = {"stage": "preprocess", "selected": ["S1", "S7"]}
    # When a critical error arrives with the job's state
    error = JobTimeoutError("job exceeded its 300 s limit")
    action = manager.handle_error(error, {"state": state, "stage": "preprocess"})
    # Then the state is kept as an emergency checkpoint named after the attempt
    assert isinstance(action, FailJob)
    assert checkpoints.load_checkpoint("emergency_3") == state
    # And one CRITICAL alert names the checkpoint
    assert len(notifier.calls) == 1
    _, call = notifier.calls[0]
    assert call["error"] is error and call["severity"] == "CRITICAL"
    assert call["context"]["emergency_checkpoint"] == "emergency_3"
    assert manager.history[-1]["notified"] is True


def test_failing_emergency_save_does_not_mask_the_original_error(
    checkpoints: CheckpointManager, notifier: RecordingNotifier, clock: FakeClock
) -> None:
    # Given a state the checkpoint format cannot store
    manager = make_manager(checkpoints, notifier, clock)
    error = JobTimeoutError("job exceeded 60 s")
    action = manager.handle_error(error, {"state": {"handle": object()}})
    # Then the decision is still about the timeout, and the save failure is recorded
    assert action == FailJob("job exceeded 60 s", "JOB_TIMEOUT")
    assert checkpoints.list_checkpoints() == []
    entry = manager.history[-1]
    assert entry["emergency_checkpoint_error"].startswith("CheckpointSaveError")
    assert "emergency_checkpoint" not in entry
    assert notifier.calls[0][1]["error"] is error
    assert "emergency_checkpoint_error" in notifier.calls[0][1]["context"]


def test_no_emergency_checkpoint_when_config_says_so(
    checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    config = dataclasses.replace(RecoveryConfig(), save_emergency_checkpoints=False)
    manager = make_manager(checkpoints, None, clock, config=config)
    manager.handle_error(DataValidationError("bad"), {"state": {"stage": "load"}})
    assert checkpoints.list_checkpoints() == []


def test_real_notifier_with_notifications_off_fits_the_manager(
    checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    notifier = ErrorNotifier(NotificationsConfig(enabled=False), clock=clock)
    try:
        manager = make_manager(checkpoints, notifier, clock)
        action = manager.handle_error(DataValidationError("bad"))
        record = {"type": "JobTimeoutError", "code": "JOB_TIMEOUT", "message": "too slow"}
        manager.handle_error(record)
    finally:
        notifier.close()
    assert isinstance(action, FailJob)
    assert [e.get("notified", False) for e in manager.history] == [False, False]


def test_error_records_are_notified_as_messages(
    checkpoints: CheckpointManager, notifier: RecordingNotifier, clock: FakeClock
) -> None:
    manager = make_manager(checkpoints, notifier, clock)
    record = {"type": "JobTimeoutError", "code": "JOB_TIMEOUT", "message": "ran 7300 s"}
    action = manager.handle_error(record)
    assert action == FailJob("ran 7300 s", "JOB_TIMEOUT")
    assert len(notifier.calls) == 1
    method, call = notifier.calls[0]
    assert method == "message"
    assert call["title"] == f"Job {JOB} failed: JOB_TIMEOUT"
    assert (call["message"], call["severity"]) == ("ran 7300 s", "CRITICAL")


def test_error_record_of_a_stuck_child_resumes(
    checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    save_stages(checkpoints, "load")
    record = JobStuckError("no heartbeat for 600 s").to_dict()
    action = make_manager(checkpoints, None, clock).handle_error(record)
    assert isinstance(action, ResumeFromCheckpoint) and action.checkpoint_name == "load"


# -- history, persistence and report ------------------------------------------------------


def test_history_survives_across_processes_via_history_path(
    tmp_path: Path, checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    history_path = tmp_path / "state" / f"{JOB}.recovery.json"
    # Given one process that handled two crashes
    first = make_manager(checkpoints, None, clock, history_path=history_path)
    first.handle_error(JobCrashError("killed 1"))
    first.record_outcome(False)
    first.handle_error(JobCrashError("killed 2"))
    # When a new process (a new manager) handles the next crash
    second = make_manager(checkpoints, None, clock, history_path=history_path)
    assert [e["message"] for e in second.history] == ["killed 1", "killed 2"]
    third = second.handle_error(JobCrashError("killed 3"))
    # Then counting went on: third attempt, third backoff step (5 s * 4)
    assert isinstance(third, ResumeFromCheckpoint)
    assert 20.0 <= third.delay_seconds <= 22.0
    assert second.history[-1]["attempt"] == 3
    # And the bound holds across processes
    assert isinstance(first.handle_error(JobCrashError("killed 4")), FailJob)
    on_disk = json.loads(history_path.read_text())
    assert on_disk["job_id"] == JOB
    assert [e["attempt"] for e in on_disk["recovery_history"]] == [1, 2, 3, 4]
    assert [e["outcome"] for e in on_disk["recovery_history"]] == [
        "failed", "pending", "pending", "failed",
    ]  # fmt: skip


def test_history_file_of_another_job_is_refused(
    tmp_path: Path, checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    history_path = tmp_path / "history.json"
    make_manager(checkpoints, None, clock, history_path=history_path).handle_error(
        JobCrashError("x")
    )
    with pytest.raises(ConfigurationError, match="belongs to job"):
        ErrorRecoveryManager(checkpoints, None, "other_job", config=RecoveryConfig(),
                             history_path=history_path)  # fmt: skip


def test_recovery_report_counts_outcomes(
    tmp_path: Path, checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    manager = make_manager(checkpoints, None, clock)
    manager.handle_error(JobCrashError("killed"))
    manager.record_outcome(True)
    manager.handle_error(NetworkError("share offline"), {"stage": "load"})
    manager.record_outcome(False)
    manager.handle_error(DataValidationError("pnl.csv: empty"))
    manager.record_outcome(True)  # nothing pending: ignored
    path = manager.save_recovery_report(tmp_path / "output" / JOB)
    assert path == tmp_path / "output" / JOB / f"recovery_report_{JOB}.json"
    report = json.loads(path.read_text())
    assert report["job_id"] == JOB
    assert report["total_attempts"] == 3
    assert report["successful_recoveries"] == 1
    assert report["failed_recoveries"] == 2
    entries = report["recovery_history"]
    assert [e["outcome"] for e in entries] == ["recovered", "failed", "failed"]
    assert [e["kind"] for e in entries] == ["crash", "network", "data"]
    assert [e["action"]["kind"] for e in entries] == ["resume_checkpoint", "retry", "fail"]
    assert entries[2]["error_code"] == "DATA_VALIDATION_ERROR"
    assert entries[2]["message"] == "pnl.csv: empty"
    assert {"time", "error_type", "strategy", "attempt"} <= set(entries[0])


def test_damaged_history_file_is_replaced_on_the_next_change(
    tmp_path: Path, checkpoints: CheckpointManager, clock: FakeClock
) -> None:
    history_path = tmp_path / "history.json"
    history_path.write_text("{not json")
    manager = make_manager(checkpoints, None, clock, history_path=history_path)
    assert manager.history == []
    manager.handle_error(JobCrashError("killed"))
    assert [e["message"] for e in json.loads(history_path.read_text())["recovery_history"]] == [
        "killed"
    ]


def test_history_property_is_a_copy(checkpoints: CheckpointManager, clock: FakeClock) -> None:
    manager = make_manager(checkpoints, None, clock)
    manager.handle_error(JobCrashError("x"))
    manager.history[0]["outcome"] = "tampered"
    assert manager.history[0]["outcome"] == "pending"
