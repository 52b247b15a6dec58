"""Email (SMTP) and Slack (incoming webhook) senders, and the retry loop around them.

Each channel renders an :class:`~.alerts.Alert` into its wire format and makes one delivery
attempt. A failed attempt raises :class:`~.errors.NotificationError` whose ``recoverable``
says whether trying again can help: refused connections, timeouts, SMTP 4xx and HTTP 429/5xx
can; authentication failures, refused recipients and other HTTP 4xx cannot.
:func:`send_with_retries` composes tenacity pieces around one channel: a number of attempts,
the wait a 429 asked for in ``Retry-After`` or else a short exponential backoff, and an event
that ends the retries when the notifier shuts down.

Secrets never enter messages: errors name the webhook as ``scheme://host/<redacted>`` and
every error text is scrubbed of the webhook URL and the SMTP password.
"""

from __future__ import annotations

import html
import json
import logging
import smtplib
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import tenacity

from .alerts import Alert
from .config import EmailConfig, SlackChannels, SlackConfig
from .errors import NotificationError

logger = logging.getLogger(__name__)

#: Slack attachment colour per severity.
SLACK_COLORS = {"CRITICAL": "danger", "ERROR": "#e8590c", "WARNING": "warning", "INFO": "good"}
#: Longest wait honoured from a ``Retry-After`` header; the sender thread blocks meanwhile.
MAX_RETRY_AFTER_SECONDS = 120.0
#: Backoff between attempts after a transient failure without ``Retry-After``.
BACKOFF_MULTIPLIER_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 8.0
#: Slack truncates long attachment texts; keep the end of a stack trace (the failing frame).
SLACK_MAX_STACK_CHARS = 2500
SLACK_MAX_TEXT_CHARS = 3000


class NotificationChannel(Protocol):
    """One way of delivering alerts; ``send`` makes one attempt."""

    name: str

    def send(self, alert: Alert) -> None:
        """Deliver ``alert`` once.

        Raises:
            NotificationError: The attempt failed; ``recoverable`` says whether to retry.
        """


class EmailChannel:
    """Send alerts as multipart (text + HTML) email over SMTP, SMTPS or STARTTLS.

    Args:
        config: The ``notifications.email`` section.
        local_hostname: Name used in EHLO and Message-ID (avoids a slow FQDN lookup).
    """

    name = "email"

    def __init__(self, config: EmailConfig, *, local_hostname: str) -> None:
        self._config = config
        self._local_hostname = local_hostname
        self._where = f"{config.smtp_server}:{config.smtp_port}"

    def send(self, alert: Alert) -> None:
        """Deliver ``alert`` to every recipient in one SMTP session."""
        message = build_email(
            alert,
            from_address=self._config.from_address,
            recipients=self._config.recipients,
            domain=self._local_hostname,
        )
        try:
            refused = self._deliver(message)
        except smtplib.SMTPNotSupportedError as exc:
            raise self._error(f"server lacks a required extension: {exc}", False) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise self._error(f"every recipient refused: {sorted(exc.recipients)}", False) from None
        except smtplib.SMTPResponseException as exc:
            reply = exc.smtp_error.decode("utf-8", "replace") if isinstance(
                exc.smtp_error, bytes) else str(exc.smtp_error)
            transient = 400 <= exc.smtp_code < 500
            raise self._error(f"answered {exc.smtp_code} {reply}", transient) from None
        except ssl.SSLCertVerificationError as exc:
            raise self._error(f"certificate not trusted: {exc.verify_message}", False) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise self._error(f"unreachable: {exc or type(exc).__name__}", True) from None
        if refused:
            logger.warning("Email alert %s: recipients refused: %s", alert.alert_id,
                           sorted(refused))

    def _deliver(self, message: EmailMessage) -> dict[str, Any]:
        config = self._config
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if config.use_ssl:
            smtp = smtplib.SMTP_SSL(config.smtp_server, config.smtp_port, context=context,
                                    local_hostname=self._local_hostname,
                                    timeout=config.timeout_seconds)
        else:
            smtp = smtplib.SMTP(config.smtp_server, config.smtp_port,
                                local_hostname=self._local_hostname,
                                timeout=config.timeout_seconds)
        with smtp:
            if config.use_tls and not config.use_ssl:
                smtp.starttls(context=context)
            if config.username:
                smtp.login(config.username, config.password)
            return smtp.send_message(
                message, from_addr=config.from_address, to_addrs=list(config.recipients)
            )

    def _error(self, reason: str, recoverable: bool) -> NotificationError:
        text = scrub(f"SMTP server {self._where} {reason}", [self._config.password])
        return NotificationError(text, recoverable=recoverable, context={"channel": self.name})


class SlackChannel:
    """Post alerts to a Slack incoming webhook.

    Args:
        config: The ``notifications.slack`` section.
    """

    name = "slack"

    def __init__(self, config: SlackConfig) -> None:
        self._config = config
        self._where = redact_url(config.webhook_url)
        self._opener = urllib.request.build_opener()

    def send(self, alert: Alert) -> None:
        """POST the alert's JSON payload once; HTTP 2xx is success."""
        payload = build_slack_payload(
            alert,
            channels=self._config.channels,
            include_stack_trace=self._config.include_stack_trace,
        )
        request = urllib.request.Request(
            self._config.webhook_url,
            data=json.dumps(payload).encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with self._opener.open(request, timeout=self._config.timeout_seconds) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                body = exc.read(200).decode("utf-8", "replace")
                retry_after = parse_retry_after(exc.headers.get("Retry-After"))
            transient = exc.code == 429 or exc.code >= 500
            raise self._error(f"answered HTTP {exc.code}: {body.strip()}", transient,
                              retry_after=retry_after if exc.code == 429 else None) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise self._error(f"unreachable: {reason or type(exc).__name__}", True) from None

    def _error(
        self, reason: str, recoverable: bool, *, retry_after: float | None = None
    ) -> NotificationError:
        text = scrub(f"Slack webhook {self._where} {reason}", [self._config.webhook_url])
        return NotificationError(text, recoverable=recoverable, retry_after_seconds=retry_after,
                                 context={"channel": self.name})


def build_email(
    alert: Alert, *, from_address: str, recipients: Iterable[str], domain: str
) -> EmailMessage:
    """Render an alert as a multipart/alternative email with text and HTML parts."""
    message = EmailMessage()
    message["Subject"] = alert.subject
    message["From"] = from_address
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(alert.created_at, usegmt=True)
    message["Message-ID"] = make_msgid(idstring=alert.alert_id, domain=domain)
    message["X-Heavy-Optimizer-Alert-Id"] = alert.alert_id
    message["X-Heavy-Optimizer-Severity"] = alert.severity
    message.set_content(render_text(alert))
    message.add_alternative(render_html(alert), subtype="html")
    return message


def render_text(alert: Alert) -> str:
    """The plain-text body of an alert email."""
    parts = [alert.subject, "", alert.message, ""]
    if alert.repeated:
        parts += [alert.repeated_text, ""]
    parts += [f"{label}: {value}" for label, value in alert.fields()]
    if alert.context:
        parts += ["", "Context:"] + [f"  {key}: {value}" for key, value in alert.context.items()]
    if alert.stack_trace:
        parts += ["", "Stack trace:", alert.stack_trace.rstrip()]
    parts += ["", f"Alert id: {alert.alert_id}"]
    return "\n".join(parts) + "\n"


def render_html(alert: Alert) -> str:
    """The HTML body of an alert email; every value is escaped."""
    esc = html.escape
    color = {"CRITICAL": "#c92a2a", "ERROR": "#e8590c", "WARNING": "#f08c00"}.get(
        alert.severity, "#2b8a3e")
    rows = "".join(
        f"<tr><th align='left'>{esc(label)}</th><td>{esc(value)}</td></tr>"
        for label, value in alert.fields()
    )
    context = "".join(
        f"<tr><th align='left'>{esc(str(key))}</th><td>{esc(str(value))}</td></tr>"
        for key, value in alert.context.items()
    )
    body = [
        f"<h2 style='color:{color}'>{esc(alert.subject)}</h2>",
        f"<p style='white-space:pre-wrap'>{esc(alert.message)}</p>",
    ]
    if alert.repeated:
        body.append(f"<p><strong>{esc(alert.repeated_text)}</strong></p>")
    body.append(f"<table>{rows}</table>")
    if context:
        body.append(f"<h3>Context</h3><table>{context}</table>")
    if alert.stack_trace:
        body.append(f"<h3>Stack trace</h3><pre>{esc(alert.stack_trace)}</pre>")
    body.append(f"<p><small>Alert id {esc(alert.alert_id)}</small></p>")
    return "<html><body>" + "\n".join(body) + "</body></html>\n"


def build_slack_payload(
    alert: Alert, *, channels: SlackChannels, include_stack_trace: bool
) -> dict[str, Any]:
    """Render an alert as an incoming-webhook payload with one coloured attachment."""
    text = alert.message[:SLACK_MAX_TEXT_CHARS]
    if alert.repeated:
        text = f"{text}\n_{alert.repeated_text}_"
    fields = [
        {"title": label, "value": value, "short": label not in ("Location", "Error")}
        for label, value in alert.fields()
    ]
    if include_stack_trace and alert.stack_trace:
        trace = alert.stack_trace.rstrip()[-SLACK_MAX_STACK_CHARS:]
        fields.append({"title": "Stack trace", "value": f"```{trace}```", "short": False})
    payload: dict[str, Any] = {
        "text": alert.subject,
        "attachments": [
            {
                "fallback": alert.subject,
                "color": SLACK_COLORS[alert.severity],
                "title": alert.title,
                "text": text,
                "fields": fields,
                "footer": f"{alert.source} on {alert.host} (alert {alert.alert_id})",
                "ts": int(alert.created_at),
            }
        ],
    }
    channel = slack_channel_for(alert.severity, channels)
    if channel:
        payload["channel"] = channel
    return payload


def slack_channel_for(severity: str, channels: SlackChannels) -> str:
    """The channel override for a severity ("" keeps the webhook's own channel).

    INFO has no channel of its own and goes where warnings go.
    """
    if severity == "CRITICAL":
        return channels.critical
    if severity == "ERROR":
        return channels.error
    return channels.warning


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def redact_url(url: str) -> str:
    """``https://hooks.slack.com/services/T/B/secret`` -> ``https://hooks.slack.com/<redacted>``."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme or '?'}://{host}/<redacted>"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each non-empty secret (and a URL's path) in ``text``."""
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, "<redacted>")
        path = urlsplit(secret).path
        if len(path) > 1:
            text = text.replace(path, "/<redacted>")
    return text


class _WaitRetryAfter(tenacity.wait.wait_base):
    """Wait what the server asked for in ``Retry-After``, else use ``fallback``."""

    def __init__(self, fallback: tenacity.wait.wait_base) -> None:
        self._fallback = fallback

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, NotificationError) and error.retry_after_seconds is not None:
            return min(error.retry_after_seconds, MAX_RETRY_AFTER_SECONDS)
        return self._fallback(retry_state)


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, NotificationError) and error.recoverable


def send_with_retries(
    channel: NotificationChannel,
    alert: Alert,
    *,
    attempts: int,
    sleep: Callable[[float], Any],
    stop_event: threading.Event,
) -> None:
    """Deliver ``alert`` through ``channel``, retrying transient failures.

    Args:
        channel: Where to send.
        alert: What to send.
        attempts: Most delivery attempts in total.
        sleep: Waits between attempts (injectable so tests need not sleep).
        stop_event: Once set, no further attempt is made (shutdown).

    Raises:
        NotificationError: The last failure, when no attempt succeeded.
    """

    def log_retry(state: tenacity.RetryCallState) -> None:
        wait = state.next_action.sleep if state.next_action else 0.0
        error = state.outcome.exception() if state.outcome else None
        logger.warning("%s notification attempt %d of %d failed (%s); retrying in %.1f s",
                       channel.name, state.attempt_number, attempts, error, wait)

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_when_event_set(stop_event),
        wait=_WaitRetryAfter(
            tenacity.wait_exponential(multiplier=BACKOFF_MULTIPLIER_SECONDS,
                                      max=BACKOFF_MAX_SECONDS)
        ),
        retry=tenacity.retry_if_exception(_is_transient),
        sleep=sleep,
        before_sleep=log_retry,
        reraise=True,
    )
    retrying(channel.send, alert)
