"""What happens to a job after its process ends: complete, retry, or fail — with a reason.

The supervisor hands every exited job here. The child's last message says what it thinks
happened; the supervisor's kill reason (timeout, stuck, memory, shutdown) and the exit code
say what really happened. Failures go through the recovery manager, bounded by the job's
durable attempt counter, so a job that kills its process every time ends in failed/.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from daemon.config import Settings
from daemon.error_handling.checkpoint import CheckpointManager
from daemon.error_handling.notifier import ErrorNotifier
from daemon.error_handling.recovery import ErrorRecoveryManager, classify_error
from daemon.error_handling.recovery_actions import AdjustParameters, FailJob
from daemon.job_process import JobProcess
from daemon.operator_alerts import OperatorAlerts
from daemon.registry import JobRecord, JobRegistry
from daemon.share import ShareLayout
from daemon.status import StatusBoard

logger = logging.getLogger(__name__)

#: Error records the supervisor writes for deaths the child could not report itself.
_KILL_ERRORS = {
    "timeout": ("JOB_TIMEOUT", "JobTimeoutError", False,
                "the job exceeded its time limit of {limit:.0f} s and was stopped; its last "
                "checkpoint is kept"),
    "stuck": ("JOB_STUCK", "JobStuckError", True,
              "the job made no progress for {stuck:.0f} s and was killed"),
    "memory": ("MEMORY_LIMIT", "MemoryLimitError", True,
               "the job used more than {memory:.0f} MB and was killed"),
    "cancel": ("JOB_CANCELLED", "JobCancelled", False, "the job was cancelled by an operator"),
}


class OutcomeHandler:
    """Moves finished jobs to their next registry and tells people when it matters."""

    def __init__(self, settings: Settings, layout: ShareLayout, registry: JobRegistry,
                 status: StatusBoard, *, notifier: ErrorNotifier | None,
                 alerts: OperatorAlerts) -> None:
        self.settings = settings
        self.layout = layout
        self.registry = registry
        self.status = status
        self.notifier = notifier if settings.jobs.enable_notifications else None
        self.alerts = alerts

    def payload(self, record: JobRecord, *, job_runner: str, config_dir: str | None,
                timeout_seconds: float) -> dict[str, Any]:
        """What the job process needs: JSON values only (it crosses a process boundary).

        Algorithms, fitness and seed come from the validated spec, not the client's raw file:
        validation accepts ``["ga", "SA"]`` or ``"GA,SA"`` and normalises them.
        """
        spec = record.job_spec()
        return {
            "job_id": record.job_id,
            "runner": job_runner,
            "spec": record.spec,
            "share_root": str(self.layout.root),
            "config_dir": config_dir,
            "input_file": record.input_file,
            "portfolio_sizes": list(record.portfolio_sizes),
            "algorithms": list(spec.algorithms) if spec.algorithms else None,
            "fitness": spec.fitness,
            "seed": spec.seed,
            "resume": record.resume,
            "adjustments": dict(record.adjustments),
            "attempt": record.attempts,
            "timeout_seconds": timeout_seconds,
            "heartbeat_interval": self.settings.jobs.heartbeat_interval,
            "job_log": str(self.layout.job_logs / f"{record.job_id}.log"),
            "debug": self.settings.jobs.logging.debug_mode,
        }

    def _recovery(self, job_id: str) -> ErrorRecoveryManager:
        checkpoints = CheckpointManager(job_id=job_id, base_dir=self.layout.checkpoints,
                                        config=self.settings.error_handling.checkpoint)
        return ErrorRecoveryManager(
            checkpoints, self.notifier, job_id, config=self.settings.error_handling.recovery,
            history_path=self.layout.checkpoints / job_id / "recovery_history.json",
        )

    def handle_exit(self, record: JobRecord, child: JobProcess) -> bool | None:
        """Decide and apply the outcome of an exited job.

        Returns:
            True on success, False on a failure that may point at the service (a crash, a
            timeout, a database down: the circuit breaker counts it), None when the outcome
            says nothing about the service's health (requeued for shutdown, cancelled by a
            person, or failed because of its own input).
        """
        message = child.final_message or {}
        self.status.forget(record.job_id)
        if child.kill_reason == "shutdown" or (message.get("type") == "stopped"
                                               and child.kill_reason is None):
            self.registry.requeue(record, resume=True, refund_attempt=True)
            self.status.job(record.job_id, {"state": "queued", "resume": True,
                                            "attempts": record.attempts - 1}, force=True)
            logger.info("%s: stopped for shutdown; requeued to resume from its checkpoint",
                        record.job_id)
            return None
        if message.get("type") == "result" and child.exitcode == 0:
            result = dict(message.get("result") or {})
            result["execution_time"] = round(child.elapsed_seconds(time.monotonic()), 3)
            self.registry.complete(record, result)
            self.status.job(record.job_id, {"state": "completed", "progress": 1.0,
                                            "attempts": record.attempts}, force=True)
            logger.info("%s: completed on attempt %d", record.job_id, record.attempts)
            return True
        error = self._error_of(child, message)
        if child.kill_reason == "cancel":  # a person decided: no recovery, no alert
            self.registry.fail(record, error)
            (self.layout.cancel_requests / record.job_id).unlink(missing_ok=True)
            self.status.job(record.job_id, {"state": "cancelled", "attempts": record.attempts},
                            force=True)
            return None
        self._fail_or_retry(record, error)
        return None if classify_error(error) == "data" else False

    def _error_of(self, child: JobProcess, message: dict[str, Any]) -> dict[str, Any]:
        jobs = self.settings.jobs
        stage = child.heartbeat.get("stage")
        if child.kill_reason in _KILL_ERRORS:
            code, kind, recoverable, text = _KILL_ERRORS[child.kill_reason]
            return {"code": code, "type": kind, "recoverable": recoverable, "stage": stage,
                    "message": text.format(limit=child.timeout_seconds,
                                           stuck=jobs.stuck_job_threshold,
                                           memory=jobs.max_job_memory_mb)}
        if message.get("type") == "error":
            error = dict(message["error"])
            error.setdefault("stage", stage)
            return error
        exit_code = child.exitcode
        how = (f"was killed by signal {-exit_code}" if exit_code is not None and exit_code < 0
               else f"exited with status {exit_code} without a result")
        return {"code": "JOB_CRASHED", "type": "JobCrashError", "recoverable": True,
                "stage": stage, "message": f"the job process {how}"}

    def _fail_or_retry(self, record: JobRecord, error: dict[str, Any]) -> None:
        jobs = self.settings.jobs
        recovery = self._recovery(record.job_id)
        action = recovery.handle_error(error, {"stage": error.get("stage"),
                                               "attempt": record.attempts})
        exhausted = record.attempts >= jobs.max_retry_attempts
        # job_processor.recovery switches: the operator may want failures (or stuck jobs) to
        # stop at failed/ for a person to look at, rather than be retried automatically.
        stuck = error.get("code") == "JOB_STUCK"
        not_allowed = not jobs.recovery.enabled or (
            stuck and not jobs.recovery.auto_retry_stuck_jobs)
        if isinstance(action, FailJob) or exhausted or not_allowed:
            reason = error["message"]
            if not isinstance(action, FailJob):
                reason = (f"gave up after {record.attempts} attempts; last error: {reason}"
                          if exhausted else f"{reason} (automatic retry is off for this failure)")
                self.alerts.job_failed(record.job_id, reason, error)
            recovery.record_outcome(False)
            self.registry.fail(record, {**error, "message": reason})
            self.status.job(record.job_id, {"state": "failed", "error": error["code"],
                                            "attempts": record.attempts}, force=True)
            logger.error("%s: failed: %s", record.job_id, reason)
            return
        adjustments = dict(record.adjustments)
        if isinstance(action, AdjustParameters):
            factor = float(action.changes.get("reduce_factor", 0.5))
            adjustments["population_scale"] = adjustments.get("population_scale", 1.0) * factor
        delay = max(action.delay_seconds, 0.0)
        self.registry.schedule_retry(record, delay_seconds=delay, resume=True,
                                     adjustments=adjustments, error=error)
        self.status.job(record.job_id, {"state": "retrying", "attempts": record.attempts,
                                        "next_attempt_in_seconds": delay,
                                        "error": error["code"]}, force=True)
        logger.warning("%s: attempt %d failed (%s); retrying in %.1f s from its checkpoint",
                       record.job_id, record.attempts, error["code"], delay)

    def recover_abandoned(self, record: JobRecord) -> None:
        """A job whose daemon died: resume it, or fail it when attempts are exhausted."""
        cancel_request = self.layout.cancel_requests / record.job_id
        if cancel_request.exists():
            code, kind, _, text = _KILL_ERRORS["cancel"]
            self.registry.fail(record, {"code": code, "type": kind, "stage": None,
                                        "message": text})
            cancel_request.unlink(missing_ok=True)
            return
        if record.attempts >= self.settings.jobs.max_retry_attempts:
            self.registry.fail(record, {
                "code": "JOB_CRASHED", "type": "JobCrashError", "stage": None,
                "message": f"gave up after {record.attempts} attempts; the daemon running it "
                           "stopped unexpectedly",
            })
            return
        self.registry.requeue(record, resume=True, refund_attempt=False)
        logger.warning("%s: recovered from a stopped daemon; requeued to resume", record.job_id)

