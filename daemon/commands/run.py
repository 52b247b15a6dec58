"""``heavy-optimizer run``: the long-running daemon (what the systemd unit starts)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from daemon.config import load_settings
from daemon.error_handling.log_setup import setup_error_logging
from daemon.error_handling.notifier import ErrorNotifier
from daemon.scheduler import MaintenanceScheduler
from daemon.share import ShareLayout
from daemon.supervisor import Supervisor
from daemon.watcher import ShareWatcher, choose_observer
from daemon.worker import DEFAULT_RUNNER

logger = logging.getLogger(__name__)


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("run", help="run the daemon: watch the share and run jobs")
    parser.add_argument("--config-dir", type=Path, default=None,
                        help="folder with the three config files (default: "
                             "$HEAVY_OPTIMIZER_CONFIG_DIR, then ./config)")
    parser.add_argument("--share", type=Path, default=None, help="override share_root")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    settings = load_settings(args.config_dir, share_root=args.share)
    supervisor_config_dir = str(args.config_dir) if args.config_dir else None
    logging_handle = setup_error_logging(settings.error_handling)
    for warning in settings.warnings:
        logger.warning("%s", warning)
    outbox = ShareLayout(Path(settings.jobs.share_root)).state / "outbox"
    notifier = ErrorNotifier(settings.error_handling, outbox_dir=outbox)
    # A site-specific or test job runner ("module:function"); the optimisation by default.
    runner = os.environ.get("HEAVY_OPTIMIZER_JOB_RUNNER") or DEFAULT_RUNNER
    supervisor = Supervisor(settings, config_dir=supervisor_config_dir, notifier=notifier,
                            job_runner=runner)
    observer = choose_observer(supervisor.layout.root, settings.jobs.observer)
    watcher = ShareWatcher.for_layout(
        supervisor.layout, observer=observer,
        polling_interval_seconds=settings.jobs.scan_interval,
        on_hint=lambda _path: supervisor.request("rescan"),
    )
    # The periodic rescan also revives a watcher whose observer died (events are only hints).
    supervisor.on_rescan = lambda: watcher.wait_for_hint(0)
    scheduler = MaintenanceScheduler.from_settings(
        settings, request=supervisor.request,
        send_summary=lambda title, message: notifier.notify(title, message, "INFO"),
    )
    supervisor.install_signal_handlers()
    logger.info("daemon starting on share %s with the %s observer", supervisor.layout.root,
                observer)
    try:
        watcher.start()
        scheduler.start()
        return supervisor.run()
    finally:
        scheduler.shutdown()
        watcher.stop()
        notifier.close(timeout=10)
        logging_handle.close()
