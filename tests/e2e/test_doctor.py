"""``heavy-optimizer doctor`` against real local servers and a real share folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.share import ShareLayout
from tests.daemon_harness import make_config_dir
from tests.servers import slack_server, smtp_server, unused_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def _doctor(config: Path, share: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", "doctor", "--config-dir", str(config),
         "--share", str(share), *extra],
        capture_output=True, text=True, timeout=50,
    )


def _notifications(smtp_port: int, slack_url: str) -> dict:
    return {"notifications": {
        "enabled": True,
        "email": {"enabled": True, "smtp_server": "127.0.0.1", "smtp_port": smtp_port,
                  "use_tls": False, "recipients": ["ops@example.com"], "timeout_seconds": 3},
        "slack": {"enabled": True, "webhook_url": slack_url, "timeout_seconds": 3},
    }}


def test_healthy_setup_passes_and_test_alert_arrives(tmp_path: Path) -> None:
    share = tmp_path / "share"
    with smtp_server() as smtp, slack_server() as slack:
        config = make_config_dir(tmp_path / "cfg",
                                 error_handling=_notifications(smtp.port, slack.url))
        ShareLayout(share).ensure()
        result = _doctor(config, share, "--send-test-alert")
        assert smtp.wait_for_messages(1, timeout=10)
        assert slack.wait_for_requests(1, timeout=10)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for name in ("config", "share permissions", "disk", "file events", "email", "slack",
                 "test alert"):
        assert any(line.startswith("OK") and f" {name}:" in line for line in lines), name
    assert "doctor test alert" in json.dumps(slack.bodies)


def test_problems_are_failed_with_a_fix_hint(tmp_path: Path) -> None:
    config = make_config_dir(
        tmp_path / "cfg",
        job_processor={"scan_intervall": 3},
        error_handling=_notifications(unused_port(), f"http://127.0.0.1:{unused_port()}/hook"),
    )
    result = _doctor(config, tmp_path / "no-such-share")
    assert result.returncode == 1
    out = result.stdout
    assert "WARN  config:" in out and "did you mean 'job_processor.scan_interval'" in out
    assert "FAIL  share:" in out and "init-share" in out
    assert "FAIL  email:" in out and "FAIL  slack:" in out
    assert out.count("fix:") >= 4


def test_bad_config_type_is_one_clear_line(tmp_path: Path) -> None:
    config = make_config_dir(tmp_path / "cfg", job_processor={"max_concurrent_jobs": "three"})
    result = _doctor(config, tmp_path)
    assert result.returncode == 1
    assert "job_processor.max_concurrent_jobs" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
