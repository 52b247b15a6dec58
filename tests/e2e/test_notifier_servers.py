"""ErrorNotifier against real servers: aiosmtpd for email, a local http.server as Slack.

Every test drives the real sender thread, real sockets and real protocol code; only the
waits between attempts are injected (recorded, not slept).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from daemon.error_handling.config import (
    EmailConfig,
    NotificationsConfig,
    SlackChannels,
    SlackConfig,
)
from daemon.error_handling.errors import DataValidationError
from daemon.error_handling.notifier import ErrorNotifier
from tests.servers import SlackResponse, slack_server, smtp_server, unused_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

RECIPIENTS = ["quant-ops@example.com", "oncall@example.com"]
CHANNELS = SlackChannels(critical="#opt-critical", error="#opt-errors", warning="#opt-warn")


class RecordingSleep:
    """Injected ``sleep``: remembers each requested wait instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def email_config(
    port: int, *, host: str = "127.0.0.1", send_attempts: int = 3, **email: object
) -> NotificationsConfig:
    settings: dict[str, object] = {
        "enabled": True, "smtp_server": host, "smtp_port": port, "use_tls": False,
        "from_address": "optimizer@example.com", "recipients": RECIPIENTS,
        "timeout_seconds": 2.0,
    }
    settings.update(email)
    return NotificationsConfig(min_severity="INFO", send_attempts=send_attempts,
                               email=EmailConfig(**settings))  # type: ignore[arg-type]


def slack_config(
    url: str, *, include_stack_trace: bool = True, send_attempts: int = 3
) -> NotificationsConfig:
    return NotificationsConfig(
        min_severity="INFO",
        send_attempts=send_attempts,
        slack=SlackConfig(enabled=True, webhook_url=url, include_stack_trace=include_stack_trace,
                          channels=CHANNELS, timeout_seconds=2.0),
    )


def raised_data_error() -> DataValidationError:
    try:
        raise DataValidationError("column 'strat_17' row 42 is not numeric",
                                  context={"column": "strat_17", "row": 42})
    except DataValidationError as exc:
        return exc


def history(outbox: Path) -> list[dict[str, object]]:
    lines = (outbox / "history.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def messages_logged(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and text in r.getMessage()]


# -- email ---------------------------------------------------------------------------------


def test_email_arrives_with_subject_recipients_text_and_html(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with smtp_server() as smtp:
        # Given a notifier mailing a real SMTP server
        with ErrorNotifier(email_config(smtp.port), outbox_dir=tmp_path) as notifier:
            # When a job reports a data error
            accepted = notifier.notify_critical_error(
                raised_data_error(), {"job_id": "job-42", "stage": "validate"}
            )
            assert accepted
            assert notifier.flush(timeout=20)
        # Then one message reached every recipient, with both parts
        assert smtp.wait_for_messages(1, timeout=5)
        received = smtp.messages[0]
    assert received.rcpt_tos == RECIPIENTS
    message = received.message
    assert message["Subject"] == (
        "[CRITICAL] heavy-optimizer: DataValidationError: column 'strat_17' row 42 is not "
        "numeric (job job-42)"
    )
    assert message["To"] == ", ".join(RECIPIENTS)
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    text_body, html_body = text.get_content(), html.get_content()
    assert "Job ID: job-42" in text_body
    assert "DATA_VALIDATION_ERROR" in text_body
    assert "raise DataValidationError" in text_body  # the stack trace
    assert "validate" in text_body and "test_notifier_servers.py" in text_body
    assert "column &#x27;strat_17&#x27;" in html_body  # escaped, not raw HTML
    assert "<pre>" in html_body
    assert messages_logged(caplog, logging.INFO, "notification sent via email")
    assert [h["outcome"] for h in history(tmp_path)] == ["sent"]
    assert list(tmp_path.glob("alert-*.json")) == []


def test_email_logs_in_with_auth_and_never_logs_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "s3cret-smtp-Pa55"
    with smtp_server(credentials={"optimizer": password}) as smtp:
        config = email_config(smtp.port, username="optimizer", password=password)
        with ErrorNotifier(config) as notifier:
            assert notifier.notify("Disk nearly full", "share at 93 %", severity="WARNING")
            assert notifier.flush(timeout=20)
        assert smtp.wait_for_messages(1, timeout=5)
    assert smtp.messages[0].login == "optimizer"
    assert smtp.auth_attempts == [("optimizer", True)]
    assert password not in caplog.text


def test_email_wrong_password_fails_once_without_retrying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    sleep = RecordingSleep()
    with smtp_server(credentials={"optimizer": "right"}) as smtp:
        config = email_config(smtp.port, username="optimizer", password="wrong-Pa55")
        with ErrorNotifier(config, sleep=sleep) as notifier:
            assert notifier.notify("t", "m", severity="ERROR")
            assert notifier.flush(timeout=20)
    # 535 is permanent: one session (smtplib tries PLAIN, then LOGIN), no wait, failed
    assert set(smtp.auth_attempts) == {("optimizer", False)}
    assert len(smtp.auth_attempts) <= 2
    assert sleep.calls == []
    assert smtp.messages == []
    failures = messages_logged(caplog, logging.ERROR, "Failed to send email notification")
    assert len(failures) == 1 and "535" in failures[0]
    assert "wrong-Pa55" not in caplog.text


def test_transient_smtp_refusal_is_retried_until_accepted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with smtp_server(refuse_with="451 4.3.0 Try again later") as smtp:

        def sleep_then_accept(seconds: float) -> None:
            sleeps.append(seconds)
            smtp.refuse_with = None  # the server recovers during the backoff

        sleeps: list[float] = []
        with ErrorNotifier(email_config(smtp.port), sleep=sleep_then_accept) as notifier:
            assert notifier.notify("t", "m", severity="ERROR")
            assert notifier.flush(timeout=20)
        assert smtp.wait_for_messages(1, timeout=5)
    assert len(sleeps) == 1
    assert not messages_logged(caplog, logging.ERROR, "Failed to send")
    assert messages_logged(caplog, logging.WARNING, "email notification attempt 1 of 3 failed")


def test_permanent_smtp_refusal_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sleep = RecordingSleep()
    with smtp_server(refuse_with="554 5.7.1 Message rejected") as smtp, ErrorNotifier(
        email_config(smtp.port), sleep=sleep
    ) as notifier:
        assert notifier.notify("t", "m", severity="ERROR")
        assert notifier.flush(timeout=20)
    assert sleep.calls == []
    failures = messages_logged(caplog, logging.ERROR, "Failed to send email notification")
    assert len(failures) == 1 and "554" in failures[0]


def test_tls_required_but_not_offered_refuses_to_send_in_clear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with smtp_server() as smtp:
        with ErrorNotifier(email_config(smtp.port, use_tls=True)) as notifier:
            assert notifier.notify("t", "m", severity="ERROR")
            assert notifier.flush(timeout=20)
        assert smtp.messages == []
    assert messages_logged(caplog, logging.ERROR, "Failed to send email notification")


def test_smtp_server_down_is_logged_and_the_caller_is_unaffected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sleep = RecordingSleep()
    # Given no SMTP server at all (connection refused)
    with ErrorNotifier(email_config(unused_port()), sleep=sleep, outbox_dir=tmp_path) as notifier:
        # When an alert is raised, the caller gets its answer without an exception
        assert notifier.notify_critical_error(raised_data_error(), {"job_id": "job-7"})
        assert notifier.flush(timeout=20)
    # Then every attempt was made, the failure logged at ERROR and recorded in the history
    assert len(sleep.calls) == 2
    failures = messages_logged(caplog, logging.ERROR, "Failed to send email notification")
    assert len(failures) == 1 and "unreachable" in failures[0]
    assert [h["outcome"] for h in history(tmp_path)] == ["failed"]
    assert list(tmp_path.glob("alert-*.json")) == []


# -- Slack ---------------------------------------------------------------------------------


@pytest.mark.parametrize("include_stack_trace", [True, False])
def test_slack_payload_has_colour_channel_job_and_optional_trace(include_stack_trace: bool) -> None:
    with slack_server() as slack:
        config = slack_config(slack.url, include_stack_trace=include_stack_trace)
        with ErrorNotifier(config) as notifier:
            assert notifier.notify_critical_error(
                raised_data_error(), {"job_id": "job-42", "stage": "validate"}
            )
            assert notifier.flush(timeout=20)
        assert slack.wait_for_requests(1, timeout=5)
        (payload,) = slack.bodies
    assert payload["channel"] == "#opt-critical"
    attachment = payload["attachments"][0]
    assert attachment["color"] == "danger"
    fields = {f["title"]: f["value"] for f in attachment["fields"]}
    assert fields["Job ID"] == "job-42"
    assert fields["Time"].endswith("+00:00")
    location = fields["Location"]
    assert "/ validate /" in location and "test_notifier_servers.py:" in location
    assert ("Stack trace" in fields) is include_stack_trace
    if include_stack_trace:
        assert "raise DataValidationError" in fields["Stack trace"]
    assert payload["text"].startswith("[CRITICAL] heavy-optimizer: DataValidationError")


@pytest.mark.parametrize(
    ("severity", "color", "channel"),
    [
        ("ERROR", "#e8590c", "#opt-errors"),
        ("WARNING", "warning", "#opt-warn"),
        ("INFO", "good", "#opt-warn"),
    ],
)
def test_slack_routes_by_severity(severity: str, color: str, channel: str) -> None:
    with slack_server() as slack:
        with ErrorNotifier(slack_config(slack.url)) as notifier:
            assert notifier.notify("Job finished", "42 strategies chosen", severity=severity)
            assert notifier.flush(timeout=20)
        assert slack.wait_for_requests(1, timeout=5)
        (payload,) = slack.bodies
    assert payload["channel"] == channel
    assert payload["attachments"][0]["color"] == color


def test_slack_429_waits_retry_after_then_delivers_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    sleep = RecordingSleep()
    responses: list[int | SlackResponse] = [
        SlackResponse(429, {"Retry-After": "1"}, "rate_limited"), 200]
    with slack_server(responses) as slack:
        with ErrorNotifier(slack_config(slack.url), sleep=sleep) as notifier:
            assert notifier.notify("t", "m", severity="ERROR")
            assert notifier.flush(timeout=20)
        statuses = [request.status for request in slack.requests]
    assert statuses == [429, 200]
    assert sleep.calls == [1.0]
    assert len(messages_logged(caplog, logging.INFO, "notification sent via slack")) == 1
    assert not messages_logged(caplog, logging.ERROR, "Failed to send")


def test_slack_500_everywhere_fails_in_background_without_blocking_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sleep = RecordingSleep()
    # Given a webhook that holds every request until released, then answers 500
    with slack_server([500], hold=True) as slack:
        notifier = ErrorNotifier(slack_config(slack.url, send_attempts=3), sleep=sleep)
        try:
            # When the caller raises an alert
            accepted = notifier.notify("Job crashed", "exit code -9", severity="CRITICAL")
            # Then notify() has returned while the server has not answered yet
            assert accepted
            assert slack.wait_for_requests(1, timeout=10)
            assert not notifier.flush(timeout=0.05)  # the send is still in flight
            slack.release()
            assert notifier.flush(timeout=20)
        finally:
            notifier.close()
        assert len(slack.requests) == 3
    assert len(sleep.calls) == 2
    failures = messages_logged(caplog, logging.ERROR, "Failed to send slack notification")
    assert len(failures) == 1 and "HTTP 500" in failures[0]
    assert slack.secret not in caplog.text
    assert "/services/T0TEST" not in caplog.text


def test_slack_404_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sleep = RecordingSleep()
    with slack_server([404]) as slack:
        with ErrorNotifier(slack_config(slack.url), sleep=sleep) as notifier:
            assert notifier.notify("t", "m", severity="ERROR")
            assert notifier.flush(timeout=20)
        assert len(slack.requests) == 1
    assert sleep.calls == []
    assert messages_logged(caplog, logging.ERROR, "Failed to send slack notification")


def test_dead_smtp_does_not_stop_slack_and_history_says_partial(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with slack_server() as slack:
        config = NotificationsConfig(
            min_severity="INFO",
            send_attempts=2,
            email=email_config(unused_port()).email,
            slack=slack_config(slack.url).slack,
        )
        with ErrorNotifier(config, outbox_dir=tmp_path, sleep=RecordingSleep()) as notifier:
            assert notifier.notify_critical_error(raised_data_error(), {"job_id": "job-9"})
            assert notifier.flush(timeout=20)
        assert len(slack.requests) == 1
    (line,) = history(tmp_path)
    assert line["outcome"] == "partial"
    assert line["channels"] == {"email": "failed", "slack": "sent"}
    assert line["severity"] == "CRITICAL" and line["job_id"] == "job-9"


def test_mail_and_slack_both_receive_one_alert() -> None:
    with smtp_server() as smtp, slack_server() as slack:
        config = NotificationsConfig(
            min_severity="INFO",
            email=email_config(smtp.port).email,
            slack=slack_config(slack.url).slack,
        )
        with ErrorNotifier(config) as notifier:
            assert notifier.notify("Job done", "ok", severity="WARNING", context={"job_id": "j1"})
            assert notifier.flush(timeout=20)
        assert smtp.wait_for_messages(1, timeout=5)
        assert len(slack.requests) == 1
    assert smtp.messages[0].message["Subject"] == "[WARNING] heavy-optimizer: Job done (job j1)"
    assert slack.bodies[0]["text"] == "[WARNING] heavy-optimizer: Job done (job j1)"
