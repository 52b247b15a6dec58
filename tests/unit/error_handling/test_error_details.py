"""Tests of redaction, bounded reprs, system sampling and atomic detail-file writes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import psutil
import pytest

from daemon.error_handling.error_details import (
    MAX_VALUE_CHARS,
    REDACTED,
    build_error_details,
    collect_system_state,
    is_secret_name,
    redact_mapping,
    safe_repr,
    scrub_text,
    scrub_urls,
    write_error_details,
)

pytestmark = pytest.mark.timeout(20)


@pytest.mark.parametrize(
    "name",
    [
        "password", "smtp_password", "PASSWD", "db_pwd", "client_secret", "token",
        "access_token", "api_key", "apiKey", "APIKEY", "key", "private_key", "webhook",
        "slack_webhook_url", "credential", "credentials_file", "auth", "auth_header",
        "Authorization", "session-cookie",
    ],
)  # fmt: skip
def test_secret_names_are_recognised(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name", ["monkey", "author", "keys", "job_id", "stage", "attempt", "population", "turkey"]
)
def test_ordinary_names_are_not_secrets(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("postgres://optimizer:S3cr3t!@db.local:5432/prices", "S3cr3t!"),
        ("posting to https://hooks.slack.com/services/T0001/B0002/AbCdEf123 now", "AbCdEf123"),
        ("EmailConfig(username='ops', password='hunter2', port=587)", "hunter2"),
        ("{'api_key': 'k-123', 'rows': 5}", "k-123"),
        ('{"webhook_url": "https://example.org/x"}', "example.org/x"),
        ("GET /prices?symbol=X&token=abc123&page=2", "abc123"),
        ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi"),
    ],
)
def test_scrub_text_hides_secrets_in_free_text(text: str, leaked: str) -> None:
    scrubbed = scrub_text(text)
    assert leaked not in scrubbed
    assert REDACTED in scrubbed


def test_scrub_urls_keeps_ordinary_text_and_the_url_user() -> None:
    plain = "loaded 42 rows from /mnt/share/queue/job.json"
    assert scrub_urls(plain) is plain
    assert scrub_urls("smtp://ops:pw@mail:25") == f"smtp://ops:{REDACTED}@mail:25"


def test_redact_mapping_hides_keys_and_scrubs_values() -> None:
    clean = redact_mapping(
        {
            "job_id": "job-7",
            "attempt": 2,
            "smtp_password": "hunter2",
            "source": "https://u:pw@host/x",
            "shape": (3, 4),
        }
    )
    assert clean == {
        "job_id": "job-7",
        "attempt": 2,
        "smtp_password": REDACTED,
        "source": f"https://u:{REDACTED}@host/x",
        "shape": "(3, 4)",
    }


def test_safe_repr_truncates_and_redacts_nested_dict_keys() -> None:
    long_text = safe_repr("x" * 5000)
    assert len(long_text) < MAX_VALUE_CHARS + 40
    assert long_text.endswith("more chars]")
    nested = safe_repr({"settings": {"token": "t0k3n", "rows": 3}, "name": "a"})
    assert "t0k3n" not in nested
    assert "'rows': 3" in nested


def test_safe_repr_survives_a_broken_repr() -> None:
    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

    assert "Broken" in safe_repr(Broken())


def test_system_state_has_every_probe_and_never_samples_cpu_over_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given cpu_percent would block (it is never to be called)
    def forbidden(*_args: Any, **_kwargs: Any) -> float:
        raise AssertionError("cpu_percent blocks; it must not be used")

    monkeypatch.setattr(psutil, "cpu_percent", forbidden)
    # When the state is sampled for a folder that does not exist yet
    state = collect_system_state(tmp_path / "logs" / "errors")
    # Then every probe answered, measuring disk at the nearest existing folder
    for key in ("memory", "disk", "load_average", "process", "pid", "host", "python_version"):
        assert key in state
    assert "error" not in state["memory"] and state["memory"]["total_mb"] > 0
    assert state["disk"]["path"] == str(tmp_path)
    assert state["process"]["rss_mb"] > 0
    assert len(state["load_average"]) == 3


def test_a_failing_probe_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def gone(_path: str) -> Any:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(psutil, "disk_usage", gone)
    state = collect_system_state(Path("/"))
    assert state["disk"] == {"error": "OSError: [Errno 5] Input/output error"}
    assert "total_mb" in state["memory"]


def _document(now: dt.datetime) -> dict[str, Any]:
    return build_error_details(
        "boom",
        logger_name="tests",
        level="ERROR",
        context={"job_id": "job 1/x"},
        exc=None,
        include_locals=False,
        caller=None,
        disk_path=Path("/"),
        now=now,
    )


def test_write_is_atomic_named_by_time_and_never_overwrites(tmp_path: Path) -> None:
    now = dt.datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=dt.UTC)
    first = write_error_details(tmp_path / "errors", _document(now), name_hint="job 1/x")
    second = write_error_details(tmp_path / "errors", _document(now), name_hint="job 1/x")
    assert first.name == "error_job_1_x_20260304_050607_890123.json"
    assert second.name == "error_job_1_x_20260304_050607_890123_1.json"
    assert sorted(p.name for p in (tmp_path / "errors").iterdir()) == [first.name, second.name]
    assert json.loads(first.read_text())["message"] == "boom"


@pytest.mark.timeout(10)
def test_scrubbing_long_text_stays_linear() -> None:
    # Regression: unbounded [\w-]* backtracked quadratically; 200 kB would never finish.
    huge = "x" * 200_000 + " token=abc " + "a:" * 50_000 + "https://" + "b" * 100_000
    scrubbed = scrub_text(huge)
    assert "abc" not in scrubbed
    assert len(scrubbed) > 400_000
