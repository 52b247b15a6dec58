"""The recovery manager: classify a failure, decide what to do, remember what was tried.

One :class:`ErrorRecoveryManager` serves one job. ``handle_error`` turns an exception (in
the job process) or an error record dict (in the daemon, from a child's report) into a
:class:`~.recovery_actions.RecoveryAction`: :func:`~.recovery_kinds.classify_error` names the
error's kind, and the strategy the config gives that kind decides (DESIGN 6). Attempts are
bounded by ``max_recovery_attempts`` and by ``recovery_timeout_seconds`` since the job's
first error; with ``history_path`` the history is a JSON file rewritten atomically on every
change, so the bounds hold across the child processes that run one job's attempts. Only one
process handles a job's errors at a time (the daemon runs attempts one after another), so
the file needs no lock.

Critical decisions and alerts: a decision that ends the job (``FailJob``) first saves the
job's ``state`` (from the context) as an emergency checkpoint ``emergency_<attempt>``, and so
does ``AdjustParameters`` (the run restarts with other sizes). A failed save is logged and
recorded in the history and never replaces the original error. A person is told once per
attempt, and only when the job fails and the kind's strategy has ``notify`` (severity
CRITICAL for critical errors such as a timeout or a configuration error, ERROR for
recoverable errors that ran out of attempts or time). Bad input (kind ``data``) does not
notify by default: the failure record tells the analyst what to fix, and operators are not
paged for it. Retries are routine and are not announced.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .atomic_io import atomic_write_json
from .config import RecoveryConfig, load_error_handling_config
from .errors import ConfigurationError
from .recovery_actions import CheckpointStore, FailJob, RecoveryAction, RecoveryState, decide
from .recovery_kinds import ERROR_KINDS, ErrorLike, classify_error, error_facts

logger = logging.getLogger(__name__)

#: History outcomes: waiting for the next run, the run after recovery succeeded, or failed.
PENDING, RECOVERED, FAILED = "pending", "recovered", "failed"


class FailureNotifier(Protocol):
    """The part of ``ErrorNotifier`` the recovery manager uses."""

    def notify_critical_error(
        self, error: BaseException, context: dict[str, Any] | None = ..., severity: str = ...
    ) -> bool: ...

    def notify(
        self, title: str, message: str, severity: str = ..., context: dict[str, Any] | None = ...
    ) -> bool: ...


# -- the manager --------------------------------------------------------------------------


class ErrorRecoveryManager:
    """Decides how one job recovers from each failure and keeps the job's recovery history.

    Args:
        checkpoint_manager: The job's ``CheckpointManager`` (resume targets, emergency saves).
        notifier: An ``ErrorNotifier``; ``None`` sends no alerts.
        job_id: The job this manager serves; leads every log line.
        config: The ``recovery`` section; ``None`` loads ``error_handling_config.json``.
        clock: Wall-clock seconds. Not monotonic on purpose: the first error's time is
            compared across processes (and daemon restarts), where monotonic clocks differ.
        rng: Source of backoff jitter; ``None`` uses a fresh ``random.Random()`` because
            jitter exists to differ between processes. Inject a seeded one in tests.
        history_path: JSON file holding the history across processes; ``None`` keeps it in
            memory only.

    Raises:
        ConfigurationError: ``history_path`` holds the history of another job.
    """

    def __init__(
        self,
        checkpoint_manager: CheckpointStore,
        notifier: FailureNotifier | None,
        job_id: str,
        *,
        config: RecoveryConfig | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        history_path: Path | None = None,
    ) -> None:
        self.job_id = job_id
        self._checkpoints = checkpoint_manager
        self._notifier = notifier
        self._config = config if config is not None else load_error_handling_config().recovery
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._history_path = Path(history_path) if history_path is not None else None
        self._entries: list[dict[str, Any]] = []
        self._first_error_at: float | None = None
        self._load_history()

    @property
    def history(self) -> list[dict[str, Any]]:
        """A copy of the history entries, oldest first, as of the last load or change."""
        return copy.deepcopy(self._entries)

    def handle_error(
        self, error: ErrorLike, context: dict[str, Any] | None = None
    ) -> RecoveryAction:
        """Decide what to do about one failure of this job, and record the decision.

        Args:
            error: The exception, or an error record dict reported by a job process.
            context: Facts about the failure, over the error's own context: ``state`` (a dict
                to keep as emergency checkpoint), ``population_size``/``batch_size`` (shrunk on
                memory errors), ``algorithm`` (skipped on algorithm errors), ``stage``.

        Returns:
            The action to take; ``FailJob`` when the job must stop.
        """
        self._load_history()
        kind = classify_error(error)
        facts = error_facts(error, kind)
        now = self._clock()
        first_error_at = self._first_error_at if self._first_error_at is not None else now
        state = RecoveryState(
            job_id=self.job_id,
            error=facts,
            kind=kind,
            attempt=len(self._entries) + 1,
            context={**facts.context, **(context or {})},
            config=self._config,
            kind_attempt=1 + sum(1 for e in self._entries if e.get("kind") == kind),
            elapsed_seconds=now - first_error_at,
            jitter=self._rng.random(),
            checkpoints=self._checkpoints,
        )
        strategy, action = decide(state)
        entry: dict[str, Any] = {
            "time": _iso(now),
            "error_type": facts.type,
            "error_code": facts.code,
            "message": facts.message,
            "kind": kind,
            "strategy": strategy,
            "action": action.to_dict(),
            "attempt": state.attempt,
            "outcome": FAILED if isinstance(action, FailJob) else PENDING,
        }
        if action.keeps_state:
            self._save_emergency_checkpoint(state, entry)
        if isinstance(action, FailJob) and state.strategy.notify:
            entry["notified"] = self._notify_failure(error, state, action, entry)
        self._first_error_at = first_error_at
        self._entries.append(entry)
        self._save_history()
        log = logger.error if isinstance(action, FailJob) else logger.warning
        log(
            "Job %s: %s error %s (attempt %d) -> %s: %s",
            self.job_id, kind, facts.code, state.attempt, action.kind, action.reason,
        )  # fmt: skip
        return action

    def record_outcome(self, success: bool) -> None:
        """Mark the last pending recovery as ``recovered`` or ``failed``.

        Args:
            success: Whether the run after the recovery action succeeded.
        """
        self._load_history()
        if not self._entries or self._entries[-1].get("outcome") != PENDING:
            logger.warning("Job %s: no pending recovery to record an outcome for", self.job_id)
            return
        self._entries[-1]["outcome"] = RECOVERED if success else FAILED
        self._entries[-1]["outcome_time"] = _iso(self._clock())
        self._save_history()

    def save_recovery_report(self, output_dir: Path) -> Path:
        """Write ``recovery_report_<job_id>.json`` into the job's output folder.

        Returns:
            The report's path.

        Raises:
            OSError: The report cannot be written.
        """
        self._load_history()
        outcomes = [e.get("outcome") for e in self._entries]
        report = {
            "job_id": self.job_id,
            "recovery_history": self.history,
            "total_attempts": len(self._entries),
            "successful_recoveries": outcomes.count(RECOVERED),
            "failed_recoveries": outcomes.count(FAILED),
        }
        path = Path(output_dir) / f"recovery_report_{self.job_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, report)
        logger.info("Job %s: recovery report written to %s", self.job_id, path)
        return path

    # -- side effects ---------------------------------------------------------------------

    def _save_emergency_checkpoint(self, state: RecoveryState, entry: dict[str, Any]) -> None:
        snapshot = state.context.get("state")
        if not self._config.save_emergency_checkpoints or not isinstance(snapshot, dict):
            return
        name = f"emergency_{state.attempt}"
        try:
            info = self._checkpoints.save_checkpoint(
                snapshot, name, description=f"emergency: {state.error.code}: {state.error.text}"
            )
        except Exception as exc:  # the original error must reach the caller, whatever this is
            logger.error(
                "Job %s: emergency checkpoint %s failed: %s", self.job_id, name, exc, exc_info=True
            )
            entry["emergency_checkpoint_error"] = f"{type(exc).__name__}: {exc}"
            return
        entry["emergency_checkpoint"] = name if info is not None else None

    def _notify_failure(
        self, error: ErrorLike, state: RecoveryState, action: FailJob, entry: dict[str, Any]
    ) -> bool:
        if self._notifier is None:
            return False
        severity = "CRITICAL" if state.is_critical else "ERROR"
        details = {
            "job_id": self.job_id,
            "error_code": state.error.code,
            "kind": state.kind,
            "attempt": state.attempt,
            "reason": action.reason,
            **{k: v for k, v in entry.items() if k.startswith("emergency_checkpoint")},
        }
        notifier = self._notifier
        try:
            if isinstance(error, BaseException):
                sent = notifier.notify_critical_error(error, context=details, severity=severity)
            else:
                title = f"Job {self.job_id} failed: {state.error.code}"
                sent = notifier.notify(title, action.reason, severity=severity, context=details)
        except Exception as exc:  # alerts never change a job's fate (STYLE 8)
            logger.error("Job %s: Failed to send alert: %s", self.job_id, exc, exc_info=True)
            return False
        return bool(sent)

    # -- persistence ----------------------------------------------------------------------

    def _load_history(self) -> None:
        if self._history_path is None or not self._history_path.exists():
            return
        try:
            data = json.loads(self._history_path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("recovery_history"), list):
                raise ValueError("not a recovery history object")
        except (OSError, ValueError) as exc:
            # Writes are atomic, so this is damage from outside; the next save replaces it.
            logger.error(
                "Job %s: cannot read recovery history %s, keeping the one in memory: %s",
                self.job_id, self._history_path, exc,
            )  # fmt: skip
            return
        if data.get("job_id") != self.job_id:
            raise ConfigurationError(
                f"recovery history {self._history_path} belongs to job {data.get('job_id')!r}, "
                f"not {self.job_id!r}",
                context={"path": str(self._history_path), "job_id": self.job_id},
            )
        self._entries = [dict(e) for e in data["recovery_history"] if isinstance(e, dict)]
        first = data.get("first_error_at")
        self._first_error_at = float(first) if isinstance(first, int | float) else None

    def _save_history(self) -> None:
        if self._history_path is None:
            return
        data = {
            "job_id": self.job_id,
            "first_error_at": self._first_error_at,
            "recovery_history": self._entries,
        }
        try:
            self._history_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self._history_path, data)
        except OSError as exc:
            # The decision still stands; the whole history is rewritten on the next change.
            logger.error(
                "Job %s: cannot save recovery history %s: %s", self.job_id, self._history_path, exc
            )


def _iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, tz=UTC).isoformat()


__all__ = [
    "ERROR_KINDS",
    "ErrorRecoveryManager",
    "FailureNotifier",
    "classify_error",
]
