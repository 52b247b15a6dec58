"""ErrorNotifier's decisions: severity filter, rolling rate limit, grouping, outbox, restart.

Time is a fake clock moved by hand, so an hour passes instantly; delivery goes to a real
local webhook server (``tests.servers.slack_server``) so what "accepted" means is checked
against what really arrived.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.error_handling.alert_throttle import AdmissionOutcome, AlertThrottle
from daemon.error_handling.alerts import (
    alert_from_error,
    alert_from_message,
    fingerprint,
    normalise_message,
)
from daemon.error_handling.config import (
    ErrorHandlingConfig,
    MasterSwitch,
    NotificationsConfig,
    SlackChannels,
    SlackConfig,
)
from daemon.error_handling.errors import ConfigurationError, DataLoadError
from daemon.error_handling.notification_channels import (
    build_slack_payload,
    parse_retry_after,
    redact_url,
    scrub,
)
from daemon.error_handling.notifier import ErrorNotifier
from daemon.error_handling.outbox import Outbox, OutboxEntry
from daemon.error_handling.settings import build_dataclass
from tests.servers import slack_server

pytestmark = pytest.mark.timeout(30)


def at(hour: int, minute: int) -> float:
    return datetime(2025, 3, 14, hour, minute, tzinfo=UTC).timestamp()


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config_for(url: str, **overrides: object) -> NotificationsConfig:
    settings: dict[str, object] = {
        "min_severity": "INFO",
        "rate_limit_per_hour": 10,
        "send_attempts": 1,
        "slack": SlackConfig(enabled=True, webhook_url=url, timeout_seconds=2.0),
    }
    settings.update(overrides)
    return NotificationsConfig(**settings)  # type: ignore[arg-type]


def load_error(path: str) -> DataLoadError:
    try:
        raise DataLoadError(f"cannot read {path}: file is empty")
    except DataLoadError as exc:
        return exc


# -- fingerprint ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("job 1234 failed after 17 s", "job 98 failed after 3.5 s"),
        ("lost /mnt/share/queue/job_a.csv", "lost /mnt/share/queue/other/job_b.csv"),
        ("lost C:\\Users\\ana\\pnl.csv", "lost \\\\fileserver\\quant\\pnl2.csv"),
        ("object at 0x7f3a2c1b9e50", "object at 0x55d0c0ffee00"),
        ("commit 3f9a2b7c1d4e5f60 broke", "commit a1b2c3d4e5f60718 broke"),
        (
            "job 6f1c1e0a-8b0e-4c5e-9a43-2b9f4f7e1d2a stuck",
            "job 0e6a1a4b-77c2-4a4d-8f0e-0c1d2e3f4a5b stuck",
        ),
        ("at 2025-03-14T09:50:01Z worker died", "at 2024-12-01 23:10:59.123+01:00 worker died"),
        ("heartbeat missed at 09:50:01", "heartbeat missed at 17:03"),
    ],
)
def test_volatile_parts_do_not_change_the_fingerprint(first: str, second: str) -> None:
    assert normalise_message(first) == normalise_message(second)
    assert fingerprint("DataLoadError", "load", first) == fingerprint(
        "DataLoadError", "load", second
    )


def test_fingerprint_separates_type_stage_and_wording() -> None:
    base = fingerprint("DataLoadError", "load", "file 3 is empty")
    assert fingerprint("NetworkError", "load", "file 3 is empty") != base
    assert fingerprint("DataLoadError", "report", "file 3 is empty") != base
    assert fingerprint("DataLoadError", "load", "file 3 is missing") != base
    assert normalise_message("deadline: 0 of 5 algorithms") == "deadline: <n> of <n> algorithms"
    assert normalise_message("and/or stays; beefcafe stays") == "and/or stays; beefcafe stays"


def test_alert_from_error_carries_location_trace_and_redacted_context() -> None:
    error = load_error("/mnt/share/queue/a.csv")
    alert = alert_from_error(error, severity="ERROR", source="heavy-optimizer", host="h1",
                             now=at(9, 0), context={"job_id": 7, "stage": "load",
                                                    "smtp_password": "x", "ratio": float("nan")})
    assert alert.job_id == "7" and alert.stage == "load"
    assert alert.error_code == "DATA_LOAD_ERROR"
    assert alert.location is not None and "test_notifier.py:" in alert.location
    assert alert.stack_trace is not None and "raise DataLoadError" in alert.stack_trace
    assert alert.context["smtp_password"] == "<redacted>"
    assert alert.context["ratio"] == "nan"  # JSON has no NaN; kept as text
    assert alert.subject == (
        "[ERROR] heavy-optimizer: DataLoadError: cannot read /mnt/share/queue/a.csv: file is "
        "empty (job 7)"
    )
    assert alert.location_text.startswith("h1 / load / ")


# -- rate limit and grouping ---------------------------------------------------------------


def test_rate_limit_is_a_rolling_hour_not_the_clock_hour(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock(at(9, 50))
    with slack_server() as slack:
        with ErrorNotifier(config_for(slack.url), clock=clock) as notifier:
            # Given ten different alerts at 09:50 (the limit)
            assert all(notifier.notify(f"Job {c} failed", "x", "ERROR") for c in "ABCDEFGHIJ")
            # When the eleventh comes at 10:05 (a new clock hour, same rolling hour)
            clock.now = at(10, 5)
            refused = notifier.notify("Job K failed", "x", "ERROR")
            # ... and another at 10:51 (the 09:50 alerts are out of the window)
            clock.now = at(10, 51)
            accepted_later = notifier.notify("Job L failed", "x", "ERROR")
            assert notifier.flush(timeout=20)
        titles = [body["attachments"][0]["title"] for body in slack.bodies]
    # Then 10:05 was refused and logged, 10:51 went out
    assert refused is False
    assert accepted_later is True
    assert len(titles) == 11 and "Job K failed" not in titles and titles[-1] == "Job L failed"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("rate limit of 10 per hour" in w and "Job K failed" in w for w in warnings)


def test_duplicates_are_grouped_counted_and_reported_when_the_hour_ends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock(at(9, 0))
    with slack_server() as slack:
        with ErrorNotifier(config_for(slack.url), clock=clock, outbox_dir=tmp_path) as notifier:
            # Given the same failure five times in ten minutes (paths and ids differ)
            results = []
            for minute in range(5):
                clock.now = at(9, 2 * minute)
                results.append(notifier.notify_critical_error(
                    load_error(f"/mnt/share/queue/job_{minute}.csv"), {"stage": "load"}))
            assert notifier.flush(timeout=20)
            assert len(slack.requests) == 1
            # When the group's hour ends
            clock.now = at(10, 1)
            assert notifier.send_group_summaries() == 1
            assert notifier.flush(timeout=20)
        bodies = slack.bodies
    # Then one alert was sent at once and one summary mentions the four repeats
    assert results == [True, False, False, False, False]
    assert len(bodies) == 2
    summary = bodies[1]
    assert "(repeated 4 times)" in summary["text"]
    assert "repeated 4 times" in summary["attachments"][0]["text"]
    grouped = [r for r in caplog.records if "grouped as a duplicate" in r.getMessage()]
    assert len(grouped) == 4 and all(r.levelno == logging.INFO for r in grouped)
    outcomes = [json.loads(line)["outcome"] for line in
                (tmp_path / "history.jsonl").read_text().splitlines()]
    assert sorted(outcomes) == ["duplicate"] * 4 + ["sent"] * 2  # sends finish in background


def test_next_alert_after_the_window_carries_the_repeat_count() -> None:
    clock = FakeClock(at(9, 0))
    with slack_server() as slack:
        with ErrorNotifier(config_for(slack.url), clock=clock) as notifier:
            assert notifier.notify("Share slow", "latency 900 ms", "WARNING")
            clock.now = at(9, 30)
            assert not notifier.notify("Share slow", "latency 1200 ms", "WARNING")
            clock.now = at(10, 0)  # exactly one hour later: a new window
            assert notifier.notify("Share slow", "latency 950 ms", "WARNING")
            assert not notifier.notify("Share slow", "latency 951 ms", "WARNING")
            assert notifier.flush(timeout=20)
        texts = [body["text"] for body in slack.bodies]
    assert texts == [
        "[WARNING] heavy-optimizer: Share slow",
        "[WARNING] heavy-optimizer: Share slow (repeated 1 times)",
    ]


def test_summary_waits_when_the_rate_limit_is_full() -> None:
    throttle = AlertThrottle(limit_per_hour=2)
    first = alert_from_message("disk", "90 %", severity="WARNING", context=None, source="s",
                               host="h", now=at(9, 0))
    again = alert_from_message("disk", "91 %", severity="WARNING", context=None, source="s",
                               host="h", now=at(9, 1))
    other = alert_from_message("cpu", "hot", severity="WARNING", context=None, source="s",
                               host="h", now=at(9, 59))
    assert throttle.admit(first, at(9, 0)).outcome is AdmissionOutcome.ACCEPTED
    assert throttle.admit(again, at(9, 1)).outcome is AdmissionOutcome.DUPLICATE
    assert throttle.admit(other, at(9, 59)).outcome is AdmissionOutcome.ACCEPTED
    third = alert_from_message("net", "down", severity="WARNING", context=None, source="s",
                               host="h", now=at(10, 0))
    assert throttle.admit(third, at(10, 0)).outcome is AdmissionOutcome.ACCEPTED
    # the disk group ended at 10:00 but the rolling hour holds cpu (9:59) and net (10:00)
    assert throttle.due_summaries(at(10, 30)) == ([], 1)
    summaries, waiting = throttle.due_summaries(at(10, 59))
    assert waiting == 0 and [(s.title, s.repeated) for s in summaries] == [("disk", 1)]


# -- filters -------------------------------------------------------------------------------


def test_alerts_below_min_severity_are_not_sent() -> None:
    with slack_server() as slack:
        with ErrorNotifier(config_for(slack.url, min_severity="ERROR")) as notifier:
            assert notifier.notify("fyi", "x", "WARNING") is False
            assert notifier.notify("fyi", "x", "INFO") is False
            assert notifier.notify("bad", "x", "ERROR") is True
            assert notifier.flush(timeout=20)
        assert [body["attachments"][0]["title"] for body in slack.bodies] == ["bad"]


@pytest.mark.parametrize(
    "make_config",
    [
        lambda url: config_for(url, enabled=False),
        lambda url: ErrorHandlingConfig(error_handling=MasterSwitch(enabled=False),
                                        notifications=config_for(url)),
        lambda url: config_for(url, slack=SlackConfig(enabled=True, webhook_url="")),
    ],
    ids=["notifications-off", "master-switch-off", "no-channel"],
)
def test_disabled_config_sends_nothing_and_starts_no_thread(
    make_config: Callable[[str], NotificationsConfig | ErrorHandlingConfig],
) -> None:
    with slack_server() as slack:
        threads_before = threading.active_count()
        with ErrorNotifier(make_config(slack.url)) as notifier:
            assert threading.active_count() == threads_before
            assert notifier.notify_critical_error(load_error("/x.csv")) is False
            assert notifier.notify("t", "m", "CRITICAL") is False
            assert notifier.flush(timeout=1)
        assert slack.requests == []


def test_unknown_severity_is_a_caller_bug() -> None:
    with ErrorNotifier(NotificationsConfig(enabled=False)) as notifier, pytest.raises(
        ValueError, match="unknown severity 'FATAL'"
    ):
        notifier.notify("t", "m", "FATAL")


def test_closed_notifier_refuses_and_close_is_idempotent() -> None:
    with slack_server() as slack:
        notifier = ErrorNotifier(config_for(slack.url))
        notifier.close()
        notifier.close()
        assert notifier.notify("late", "m", "ERROR") is False
        assert slack.requests == []


def test_config_refuses_zero_rate_limit() -> None:
    with pytest.raises(ConfigurationError, match="rate_limit_per_hour"):
        build_dataclass(NotificationsConfig, {"rate_limit_per_hour": 0}, source="x.json")


# -- outbox and restart --------------------------------------------------------------------


def test_alert_pending_at_shutdown_is_delivered_after_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    outbox = tmp_path / "outbox"
    # Given a notifier whose webhook hangs, stopped while the alert is in flight
    with slack_server(hold=True) as hanging:
        slack = SlackConfig(enabled=True, webhook_url=hanging.url, timeout_seconds=0.3)
        first = ErrorNotifier(config_for(hanging.url, send_attempts=3, slack=slack),
                              outbox_dir=outbox)
        assert first.notify("Job 12 crashed", "exit -9", "CRITICAL", {"job_id": "12"})
        assert hanging.wait_for_requests(1, timeout=10)
        first.close(timeout=0.1)  # gives up waiting; the socket timeout ends the attempt
        assert len(list(outbox.glob("alert-*.json"))) == 1
    # When a new notifier opens the same outbox with a working webhook
    with slack_server() as working:
        with ErrorNotifier(config_for(working.url), outbox_dir=outbox) as second:
            assert second.flush(timeout=20)
        titles = [body["attachments"][0]["title"] for body in working.bodies]
    # Then the alert arrives, the outbox is empty and the history says sent
    assert titles == ["Job 12 crashed"]
    assert list(outbox.glob("alert-*.json")) == []
    records = Outbox(outbox, clock=lambda: 0.0).history()
    assert [r["outcome"] for r in records] == ["sent"]
    assert records[0]["channels"] == {"slack": "sent"}
    assert any("re-queuing 1 alerts" in r.getMessage() for r in caplog.records)
    assert any("stays in outbox" in r.getMessage() for r in caplog.records)


def test_close_drains_the_queue_before_stopping() -> None:
    with slack_server() as slack:
        notifier = ErrorNotifier(config_for(slack.url))
        for name in ("A", "B", "C"):
            assert notifier.notify(f"Job {name} failed", "x", "ERROR")
        notifier.close(timeout=20)  # no flush: close itself must send what is queued
        titles = sorted(body["attachments"][0]["title"] for body in slack.bodies)
    assert titles == ["Job A failed", "Job B failed", "Job C failed"]


def test_outbox_skips_channels_that_already_delivered(tmp_path: Path) -> None:
    alert = alert_from_message("done", "m", severity="ERROR", context=None, source="s",
                               host="h", now=at(9, 0))
    Outbox(tmp_path, clock=lambda: 0.0).save(OutboxEntry(alert, delivered=["slack"]))
    with slack_server() as slack:
        with ErrorNotifier(config_for(slack.url), outbox_dir=tmp_path) as notifier:
            assert notifier.flush(timeout=20)
        assert slack.requests == []
    assert list(tmp_path.glob("alert-*.json")) == []


def test_corrupt_outbox_entry_is_set_aside_and_others_still_sent(tmp_path: Path) -> None:
    good = alert_from_message("good", "m", severity="ERROR", context=None, source="s",
                              host="h", now=at(9, 0))
    box = Outbox(tmp_path, clock=lambda: 0.0)
    box.save(OutboxEntry(good))
    (tmp_path / "alert-0bad.json").write_text('{"format": 1, "alert": {"title": 3}}')
    (tmp_path / "alert-1bad.json").write_bytes(b"\x80\x81 not json")
    (tmp_path / ".alert-x.json.abc.tmp").write_text("half")
    with slack_server() as slack:
        with ErrorNotifier(config_for(slack.url), outbox_dir=tmp_path) as notifier:
            assert notifier.flush(timeout=20)
        assert [body["attachments"][0]["title"] for body in slack.bodies] == ["good"]
    assert sorted(p.name for p in tmp_path.glob("alert-*")) == [
        "alert-0bad.json.corrupt", "alert-1bad.json.corrupt"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_outbox_entry_is_json_written_atomically(tmp_path: Path) -> None:
    alert = alert_from_message("t", "m", severity="ERROR", context={"job_id": "j"},
                               source="s", host="h", now=at(9, 0))
    box = Outbox(tmp_path, clock=lambda: 0.0)
    box.save(OutboxEntry(alert))
    (path,) = tmp_path.glob("alert-*.json")
    data = json.loads(path.read_text())
    assert data["alert"]["job_id"] == "j" and data["delivered"] == []
    assert [e.alert for e in box.pending()] == [alert]
    assert list(tmp_path.iterdir()) == [path]  # no temp files left behind


# -- rendering and secrets -----------------------------------------------------------------


def test_webhook_url_is_redacted_and_secrets_scrubbed() -> None:
    url = "https://hooks.slack.com/services/T000/B000/XXXXsecret"
    assert redact_url(url) == "https://hooks.slack.com/<redacted>"
    assert "XXXXsecret" not in scrub(f"POST {url} failed; path /services/T000/B000/XXXXsecret",
                                     [url])
    assert scrub("login pw=hunter2", ["hunter2", ""]) == "login pw=<redacted>"


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("1", 1.0), ("2.5", 2.5), ("-3", 0.0), (None, None), ("soon", None)],
)
def test_retry_after_header(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_info_goes_to_the_warning_channel_and_empty_channel_is_omitted() -> None:
    alert = alert_from_message("t", "m", severity="INFO", context=None, source="s", host="h",
                               now=at(9, 0))
    with_channel = build_slack_payload(alert, channels=SlackChannels(warning="#w"),
                                       include_stack_trace=True)
    without = build_slack_payload(alert, channels=SlackChannels(), include_stack_trace=True)
    assert with_channel["channel"] == "#w"
    assert "channel" not in without
