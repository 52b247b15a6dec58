"""``ErrorNotifier``: alert people by email and Slack without ever slowing a job down.

The caller's thread only decides (severity filter, duplicate grouping, rolling rate limit),
writes the alert to the outbox and puts it on a queue; a background sender thread does the
network work with retries. So a dead SMTP server or Slack outage never blocks or fails a job:
the outcome shows in the log ("notification sent via ...", "Failed to send ...") and in the
outbox's ``history.jsonl``. Alerts still in the outbox when the process stops are sent by the
next notifier that opens the same folder.

Typical use::

    with ErrorNotifier(config, outbox_dir=share / "notifications") as notifier:
        try:
            run_job()
        except HeavyOptimizerError as exc:
            notifier.notify_critical_error(exc, {"job_id": job_id, "stage": "load"})
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from .alert_throttle import Admission, AdmissionOutcome, AlertThrottle
from .alerts import Alert, alert_from_error, alert_from_message, severity_rank
from .config import ErrorHandlingConfig, NotificationsConfig, Severity
from .errors import NotificationError
from .notification_channels import (
    EmailChannel,
    NotificationChannel,
    SlackChannel,
    send_with_retries,
)
from .notification_sender import NotificationSenderThread
from .outbox import Outbox, OutboxEntry

logger = logging.getLogger(__name__)


class ErrorNotifier:
    """Send alerts by email and Slack with severity routing, grouping and a rate limit.

    Args:
        config: The ``notifications`` section, or the whole error-handling config (whose
            master switch and environment secrets are then applied).
        outbox_dir: Folder for pending alerts and ``history.jsonl``; defaults to
            ``config.outbox_directory``; none means alerts live in memory only.
        clock: Wall-clock time in seconds; drives the rolling hour (injectable for tests).
        sleep: Waits between delivery attempts; defaults to a wait that ``close`` can cut.
        source: Name shown in subjects, e.g. ``[CRITICAL] heavy-optimizer: ...``.
    """

    def __init__(
        self,
        config: NotificationsConfig | ErrorHandlingConfig,
        *,
        outbox_dir: str | Path | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] | None = None,
        source: str = "heavy-optimizer",
    ) -> None:
        if isinstance(config, ErrorHandlingConfig):
            config = config.effective().notifications
        self._config = config
        self._clock = clock
        self._source = source
        self._host = socket.gethostname()
        self._min_rank = severity_rank(config.min_severity)
        self._lock = threading.Lock()
        self._throttle = AlertThrottle(limit_per_hour=config.rate_limit_per_hour)
        self._closed = False
        self._channels = self._build_channels(config) if config.enabled else []
        self._outbox: Outbox | None = None
        self._sender: NotificationSenderThread | None = None
        if not self._channels:
            logger.info("Notifications are off (disabled or no channel configured)")
            return
        self._outbox = self._open_outbox(outbox_dir or config.outbox_directory)
        self._sender = NotificationSenderThread(self._deliver, on_idle=self.send_group_summaries)
        self._sleep: Callable[[float], Any] = sleep or self._sender.stop_event.wait
        self._requeue_outbox()
        self._sender.start()

    @property
    def outbox_directory(self) -> Path | None:
        """The outbox folder in use, if any."""
        return self._outbox.directory if self._outbox else None

    def notify_critical_error(
        self,
        error: BaseException,
        context: dict[str, Any] | None = None,
        severity: str = "CRITICAL",
    ) -> bool:
        """Alert about an exception: its type, message, location and stack trace.

        Args:
            error: The exception; a ``HeavyOptimizerError`` adds its code and context.
            context: Extra facts (``job_id`` and ``stage`` are shown and used for grouping).
            severity: CRITICAL, ERROR, WARNING or INFO.

        Returns:
            Whether the alert was accepted for sending (False when notifications are off,
            below ``min_severity``, rate-limited or a grouped duplicate).

        Raises:
            ValueError: ``severity`` is not a known severity.
        """
        severity_rank(severity)
        try:
            alert = alert_from_error(error, severity=cast(Severity, severity), context=context,
                                     source=self._source, host=self._host, now=self._clock())
        except Exception:  # an odd exception must not turn an alert into a new failure
            logger.exception("Could not build an alert for %s", type(error).__name__)
            return False
        return self._submit(alert)

    def notify(
        self,
        title: str,
        message: str,
        severity: str = "INFO",
        context: dict[str, Any] | None = None,
    ) -> bool:
        """Alert with a title and message (job finished, disk nearly full, ...).

        Returns:
            Whether the alert was accepted for sending; see :meth:`notify_critical_error`.

        Raises:
            ValueError: ``severity`` is not a known severity.
        """
        severity_rank(severity)
        alert = alert_from_message(title, message, severity=cast(Severity, severity),
                                   context=context, source=self._source, host=self._host,
                                   now=self._clock())
        return self._submit(alert)

    def send_group_summaries(self) -> int:
        """Send "repeated N times" summaries for duplicate groups whose hour ended.

        The sender thread calls this when idle, and every ``notify`` call does too; it is
        public so a scheduler can force the check. Returns the number of summaries queued.
        """
        if self._sender is None:
            return 0
        with self._lock:
            if self._closed:
                return 0
            summaries, waiting = self._throttle.due_summaries(self._clock())
        if waiting:
            logger.warning("%d duplicate summaries wait for room under the rate limit of %d "
                           "per hour", waiting, self._config.rate_limit_per_hour)
        for summary in summaries:
            logger.info("Duplicate group ended; sending summary: %s", summary.subject)
            self._enqueue(summary)
        return len(summaries)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued alert was sent or finally failed; False on timeout."""
        return self._sender.wait_idle(timeout) if self._sender is not None else True

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (for up to ``timeout`` seconds), then stop the sender.

        Alerts not sent by then stay in the outbox for the next start. After the timeout
        the sender gets at most one more channel timeout to finish its current attempt.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            unreported = self._throttle.pending_counts()
        for title, count in unreported.items():
            logger.info("Notifier closing: %d grouped duplicates of %r were not reported",
                        count, title)
        if self._sender is None:
            return
        self._sender.request_stop()
        self._sender.join(timeout)
        if self._sender.is_alive():
            self._sender.request_force_stop()
            self._sender.join(self._attempt_timeout_seconds())
        left = self._sender.queued()
        if left:
            where = f"kept in outbox {self._outbox.directory}" if self._outbox else "lost"
            logger.warning("Notifier closed with %d alerts unsent (%s)", left, where)
        if self._sender.is_alive():
            logger.error("Notification sender did not stop; a server is not answering")

    def __enter__(self) -> ErrorNotifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- caller side ---------------------------------------------------------------------

    def _submit(self, alert: Alert) -> bool:
        if self._sender is None:
            logger.debug("Notifications are off; not sent: %s", alert.subject)
            return False
        if severity_rank(alert.severity) < self._min_rank:
            logger.debug("Below min_severity %s; not sent: %s", self._config.min_severity,
                         alert.subject)
            return False
        with self._lock:
            if self._closed:
                logger.warning("Notifier is closed; not sent: %s", alert.subject)
                return False
            admission = self._throttle.admit(alert, self._clock())
        accepted = self._apply(admission)
        self.send_group_summaries()
        return accepted

    def _apply(self, admission: Admission) -> bool:
        alert = admission.alert
        if admission.outcome is AdmissionOutcome.ACCEPTED:
            self._enqueue(alert)
            return True
        if admission.outcome is AdmissionOutcome.DUPLICATE:
            logger.info("Notification grouped as a duplicate (%d this hour), not re-sent: %s",
                        admission.suppressed, alert.subject)
        else:
            logger.warning("Notification rate limit of %d per hour reached; not sent: %s",
                           self._config.rate_limit_per_hour, alert.subject)
        if self._outbox is not None:
            self._outbox.record(alert, admission.outcome.value)
        return False

    def _enqueue(self, alert: Alert) -> None:
        assert self._sender is not None
        entry = OutboxEntry(alert)
        if self._outbox is not None:
            try:
                self._outbox.save(entry)
            except (OSError, ValueError) as exc:
                logger.error("Outbox %s: cannot store alert (%s); it is queued in memory only",
                             self._outbox.directory, exc)
        self._sender.put(entry)

    # -- sender side ---------------------------------------------------------------------

    def _deliver(self, entry: OutboxEntry) -> None:
        assert self._sender is not None
        alert = entry.alert
        results = dict.fromkeys(entry.delivered, "sent")
        for channel in self._channels:
            if channel.name in entry.delivered:
                continue
            try:
                send_with_retries(channel, alert, attempts=self._config.send_attempts,
                                  sleep=self._sleep, stop_event=self._sender.stop_event)
            except NotificationError as exc:
                if exc.recoverable and self._sender.stop_event.is_set():
                    self._keep_for_next_start(entry)  # shutdown cut the retries short
                    return
                logger.error("Failed to send %s notification: %s [alert: %s]",
                             channel.name, exc, alert.subject)
                results[channel.name] = "failed"
            except Exception:
                logger.exception("Failed to send %s notification: unexpected error "
                                 "[alert: %s]", channel.name, alert.subject)
                results[channel.name] = "failed"
            else:
                logger.info("notification sent via %s: %s", channel.name, alert.subject)
                results[channel.name] = "sent"
                entry.delivered.append(channel.name)
                self._save_progress(entry)
        self._finish(entry, results)

    def _save_progress(self, entry: OutboxEntry) -> None:
        if self._outbox is None:
            return
        try:
            self._outbox.save(entry)
        except (OSError, ValueError) as exc:
            logger.error("Outbox %s: cannot record delivery of alert %s: %s",
                         self._outbox.directory, entry.alert.alert_id, exc)

    def _finish(self, entry: OutboxEntry, results: dict[str, str]) -> None:
        if self._outbox is None:
            return
        sent = sum(1 for result in results.values() if result == "sent")
        outcome = "sent" if sent == len(results) else "failed" if not sent else "partial"
        try:
            self._outbox.remove(entry.alert.alert_id)
        except OSError as exc:
            logger.error("Outbox %s: cannot remove finished alert %s: %s",
                         self._outbox.directory, entry.alert.alert_id, exc)
        self._outbox.record(entry.alert, outcome, results)

    def _keep_for_next_start(self, entry: OutboxEntry) -> None:
        where = f"stays in outbox {self._outbox.directory}" if self._outbox else "is lost"
        logger.warning("Notifier stopping before delivery; alert %s: %s", where,
                       entry.alert.subject)

    # -- construction --------------------------------------------------------------------

    def _build_channels(self, config: NotificationsConfig) -> list[NotificationChannel]:
        channels: list[NotificationChannel] = []
        if config.email.enabled:
            if config.email.recipients:
                channels.append(EmailChannel(config.email, local_hostname=self._host))
            else:
                logger.warning("Email notifications are enabled but have no recipients; off")
        if config.slack.enabled:
            if config.slack.webhook_url:
                channels.append(SlackChannel(config.slack))
            else:
                logger.warning("Slack notifications are enabled but have no webhook_url "
                               "(set HEAVY_OPTIMIZER_SLACK_WEBHOOK_URL); off")
        return channels

    def _open_outbox(self, directory: str | Path | None) -> Outbox | None:
        if not directory:
            return None
        try:
            return Outbox(directory, clock=self._clock)
        except OSError as exc:
            logger.error("Cannot open notification outbox %s (%s); pending alerts will not "
                         "survive a restart", directory, exc)
            return None

    def _requeue_outbox(self) -> None:
        assert self._sender is not None
        if self._outbox is None:
            return
        entries = self._outbox.pending()
        if entries:
            logger.info("Outbox %s: re-queuing %d alerts left by an earlier run",
                        self._outbox.directory, len(entries))
        for entry in entries:
            self._throttle.record_sent(entry.alert, entry.alert.created_at)
            self._sender.put(entry)

    def _attempt_timeout_seconds(self) -> float:
        timeouts = [self._config.email.timeout_seconds, self._config.slack.timeout_seconds]
        return 2 * max(timeouts) + 1.0  # connect and read may each take the full timeout
