"""``heavy-optimizer doctor``: check everything the daemon depends on, one line per check.

Each check answers OK, WARN or FAIL with a hint saying how to fix it, so an operator can run
this first when something looks wrong. Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import shutil
import smtplib
import socket
import ssl
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.config import Settings, load_settings
from daemon.error_handling.errors import ConfigurationError
from daemon.share import ShareLayout
from daemon.watcher import choose_observer


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    status: str  # OK | WARN | FAIL
    name: str
    message: str
    hint: str = ""


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("doctor", help="check config, share, disk, alerts and HeavyDB")
    parser.add_argument("--config-dir", type=Path, default=None)
    parser.add_argument("--share", type=Path, default=None, help="override share_root")
    parser.add_argument("--send-test-alert", action="store_true",
                        help="also send a test alert through every configured channel")
    parser.set_defaults(handler=main)


def _config_checks(settings: Settings) -> Iterator[Check]:
    if settings.warnings:
        for warning in settings.warnings:
            yield Check("WARN", "config", warning, "fix the key name or remove it")
    else:
        yield Check("OK", "config", "all three config files are valid")


def _share_checks(settings: Settings) -> Iterator[Check]:
    layout = ShareLayout(settings.share_root)
    if not layout.root.is_dir():
        yield Check("FAIL", "share", f"{layout.root} does not exist",
                    f"mount the share or run `heavy-optimizer init-share {layout.root}`")
        return
    missing = [str(f.relative_to(layout.root)) for f in layout.folders() if not f.is_dir()]
    if missing:
        yield Check("WARN", "share folders", f"missing: {', '.join(missing)}",
                    "the daemon creates them at start, or run `heavy-optimizer init-share`")
    unwritable = []
    for folder in (f for f in layout.folders() if f.is_dir()):
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-", suffix=".tmp"):
                pass
        except OSError as exc:
            unwritable.append(f"{folder} ({exc.strerror})")
    if unwritable:
        yield Check("FAIL", "share permissions", f"cannot write in {', '.join(unwritable)}",
                    "give the service user write access (see README: Install)")
    else:
        yield Check("OK", "share permissions", f"every folder under {layout.root} is writable")
    usage = shutil.disk_usage(layout.root)
    used = 100.0 * (usage.total - usage.free) / usage.total
    threshold = settings.jobs.resource_monitoring.disk_threshold
    status = "FAIL" if used >= threshold else "WARN" if used >= threshold - 10 else "OK"
    yield Check(status, "disk", f"{used:.0f}% used, {usage.free / 2**30:.1f} GiB free "
                f"(new jobs wait above {threshold:.0f}%)", "free space or prune checkpoints")
    kind = choose_observer(layout.root, "auto")
    configured = settings.jobs.observer
    if configured == "inotify" and kind == "polling":
        yield Check("FAIL", "file events", f"{layout.root} is a network mount: inotify cannot "
                    "see other clients' writes", 'set "observer": "polling" or "auto"')
    else:
        effective = kind if configured == "auto" else configured
        yield Check("OK", "file events", f"using the {effective} observer "
                    f"(config: {configured}); the periodic rescan runs every "
                    f"{settings.jobs.scan_interval:g} s regardless")


def _smtp_check(settings: Settings) -> Iterator[Check]:
    email = settings.error_handling.notifications.email
    if not (settings.error_handling.notifications.enabled and email.enabled):
        yield Check("OK", "email", "email alerts are off")
        return
    try:
        factory = smtplib.SMTP_SSL if email.use_ssl else smtplib.SMTP
        with factory(email.smtp_server, email.smtp_port, timeout=email.timeout_seconds) as smtp:
            smtp.ehlo()
            if email.use_tls and not email.use_ssl:
                smtp.starttls(context=ssl.create_default_context())
            if email.username:
                smtp.login(email.username, email.password)
        yield Check("OK", "email", f"SMTP {email.smtp_server}:{email.smtp_port} accepts us")
    except (OSError, smtplib.SMTPException) as exc:
        yield Check("FAIL", "email", f"SMTP {email.smtp_server}:{email.smtp_port}: {exc}",
                    "check smtp_server/smtp_port/use_tls and HEAVY_OPTIMIZER_SMTP_PASSWORD")


def _slack_check(settings: Settings) -> Iterator[Check]:
    slack = settings.error_handling.notifications.slack
    if not (settings.error_handling.notifications.enabled and slack.enabled):
        yield Check("OK", "slack", "Slack alerts are off")
        return
    url = urllib.parse.urlsplit(slack.webhook_url)
    if not url.hostname:
        yield Check("FAIL", "slack", "no webhook URL configured",
                    "set HEAVY_OPTIMIZER_SLACK_WEBHOOK_URL (kept out of config files)")
        return
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=slack.timeout_seconds).close()
        yield Check("OK", "slack", f"webhook host {url.hostname}:{port} is reachable")
    except OSError as exc:
        yield Check("FAIL", "slack", f"webhook host {url.hostname}:{port}: {exc}",
                    "check the proxy/firewall for outbound HTTPS")


def _heavydb_checks(settings: Settings) -> Iterator[Check]:
    section = getattr(settings.optimizer, "heavydb", None)
    if section is None or getattr(section, "mode", "off") == "off":
        yield Check("OK", "heavydb", "HeavyDB backend is off")
        return
    from daemon.workflow.backends.heavydb import check_heavydb

    for status, message, hint in check_heavydb(section):
        yield Check(status, "heavydb", message, hint)


def _test_alert(settings: Settings) -> Iterator[Check]:
    from daemon.error_handling.notifier import ErrorNotifier

    with ErrorNotifier(settings.error_handling) as notifier:
        accepted = notifier.notify("heavy-optimizer doctor test alert",
                                   "If you read this, alerts reach you.", "WARNING")
        delivered = accepted and notifier.flush(timeout=30)
    if delivered:
        yield Check("OK", "test alert", "sent; check your inbox and Slack channel")
    else:
        yield Check("FAIL", "test alert", "not delivered (see the log lines above)",
                    "fix the email/slack checks first")


def run_checks(settings: Settings, *, send_test_alert: bool = False) -> list[Check]:
    """Every check, in the order an operator would fix things."""
    sources: list[Callable[[Settings], Iterator[Check]]] = [
        _config_checks, _share_checks, _smtp_check, _slack_check, _heavydb_checks,
    ]
    if send_test_alert:
        sources.append(_test_alert)
    return [check for source in sources for check in source(settings)]


def main(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config_dir, share_root=args.share)
    except ConfigurationError as exc:
        print(f"FAIL  config: {exc.message}\n      fix: correct the file and key named above")
        return 1
    checks = run_checks(settings, send_test_alert=args.send_test_alert)
    for check in checks:
        print(f"{check.status:<5} {check.name}: {check.message}")
        if check.hint and check.status != "OK":
            print(f"      fix: {check.hint}")
    failed = sum(check.status == "FAIL" for check in checks)
    print(f"\n{len(checks)} checks, {failed} failed")
    return 1 if failed else 0
