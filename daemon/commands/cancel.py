"""``heavy-optimizer cancel JOB_ID``: stop a job for good; it ends in failed/ as JOB_CANCELLED.

A queued job, or one waiting for an automatic retry, is moved to failed/ right here. A
running job belongs to the daemon's child process, which only the daemon may signal: this
verb leaves a request file named after the job in the share's cancel folder, and the daemon
stops the job at its next tick (SIGTERM, then SIGKILL after the grace period) and fails it.
Cancelled jobs are neither retried nor alerted on; ``heavy-optimizer retry`` runs one again.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from daemon.commands.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_TIMEOUT,
    add_share_options,
    ago,
    check_job_id,
    command_settings,
    current_user,
    describe_final,
    open_share,
    wait_for_final,
)
from daemon.error_handling.errors import JobQueueError, JobSpecError
from daemon.operator_registry import OperatorRegistry
from daemon.records import iso_utc
from daemon.share import ShareLayout

#: How often to look again when the job moves while being cancelled (claimed, released).
MAX_LOOKS = 5


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("cancel", help="cancel a queued, retrying or running job")
    parser.add_argument("job_id", metavar="JOB_ID")
    add_share_options(parser)
    parser.add_argument("--wait", action="store_true",
                        help="for a running job: wait until the daemon has stopped it")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds --wait waits (default: until the job is stopped)")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    if args.timeout is not None and (not args.wait or args.timeout <= 0):
        raise JobSpecError("--timeout needs --wait and a number of seconds above 0")
    layout = open_share(command_settings(args))
    registry = OperatorRegistry.for_this_process(layout)
    job_id = check_job_id(args.job_id)
    user = current_user()
    error = {"code": "JOB_CANCELLED", "type": "JobCancelled", "recoverable": False,
             "message": f"cancelled by {user} via heavy-optimizer cancel", "stage": "queue"}
    for _ in range(MAX_LOOKS):  # the job may move while we look (claimed, released)
        found = registry.locate(job_id)
        if found is None:
            raise JobQueueError(f"job {job_id} not found in {layout.root}")
        where, path = found
        if where in ("completed", "failed"):
            raise JobQueueError(f"job {job_id} is already {where}; nothing to cancel")
        if where == "processing":
            record = registry.read_record(path)
            _request_stop(layout, job_id, user, record.lease if record else None)
            if not args.wait:
                return EXIT_OK
            return _wait(layout, job_id, args.timeout)
        target = registry.cancel_waiting(job_id, error)
        if target is not None:
            state = "queued" if where == "queue" else "waiting for a retry"
            print(f"job {job_id} cancelled while {state}: "
                  f"{target.relative_to(layout.root)} says JOB_CANCELLED")
            return EXIT_OK
    raise JobQueueError(f"job {job_id} kept moving between registries; run cancel again")


def _request_stop(layout: ShareLayout, job_id: str, user: str,
                  lease: dict[str, Any] | None) -> None:
    """Leave the cancel request for the daemon (only the daemon may signal its children)."""
    layout.cancel_requests.mkdir(parents=True, exist_ok=True)
    request = layout.cancel_requests / job_id
    try:
        # Created in place, not renamed from a temp name: the daemon reads only the names in
        # this folder and removes names that are not running jobs, a temp name included.
        fd = os.open(request, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        print(f"job {job_id} is running; a cancel request is already waiting for the daemon")
        return
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"job_id": job_id, "by": user, "requested_at": iso_utc(time.time())}, handle)
    owner = (f" (held by the daemon on {lease.get('host')}, pid {lease.get('daemon_pid')}, lease "
             f"renewed {ago(lease.get('heartbeat_at'), time.time())})" if lease else "")
    print(f"job {job_id} is running{owner}; asked the daemon to stop it. It will end in "
          "failed/ with JOB_CANCELLED")


def _wait(layout: ShareLayout, job_id: str, timeout_seconds: float | None) -> int:
    found = wait_for_final(layout, job_id, timeout_seconds=timeout_seconds)
    if found is None:
        print(f"job {job_id} was not stopped within {timeout_seconds:g} s; is the daemon "
              f"running? (`heavy-optimizer status`)")
        return EXIT_TIMEOUT
    where, record = found
    for line in describe_final(layout, where, record):
        print(line)
    cancelled = where == "failed" and (record.get("error") or {}).get("code") == "JOB_CANCELLED"
    if not cancelled:
        print(f"job {job_id} ended before the cancel took effect")
    return EXIT_OK if cancelled else EXIT_FAILURE
