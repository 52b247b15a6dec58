"""``heavy-optimizer status [JOB_ID]``: the daemon and its jobs, read from the share.

Without a job id: the daemon's last published summary (is it alive, circuit breaker, waiting
for resources), the number of jobs in each registry, running jobs with stage and progress,
and jobs waiting for a retry. With one: where the job is, its live status, lease, final
error or output folder, and its checkpoints. The registries are the truth; the status files
are what the daemon last published, so their age is always shown.
"""

from __future__ import annotations

import argparse
import socket
import time
from typing import Any

import psutil

from daemon.commands.common import (
    EXIT_OK,
    REGISTRIES,
    add_share_options,
    ago,
    check_job_id,
    command_settings,
    describe_final,
    epoch_of,
    open_share,
    print_json,
    read_json,
)
from daemon.error_handling.checkpoint import CheckpointManager
from daemon.error_handling.config import CheckpointConfig
from daemon.error_handling.errors import JobQueueError
from daemon.operator_registry import OperatorRegistry
from daemon.records import JobRecord
from daemon.share import ShareLayout

#: How the overview names the registries of ``REGISTRIES``.
COUNT_LABELS = ("queued", "running", "waiting for retry", "completed", "failed")
#: A daemon summary older than this is stale: a live daemon rewrites it every few seconds.
STALE_SUMMARY_SECONDS = 60.0


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("status", help="show the daemon's state, or one job's")
    parser.add_argument("job_id", nargs="?", default=None, metavar="JOB_ID")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    add_share_options(parser)
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    layout = open_share(settings)
    registry = OperatorRegistry.for_this_process(layout)
    if args.job_id is None:
        overview = _overview(layout, registry)
        if args.json:
            print_json(overview)
        else:
            _print_overview(layout, overview)
        return EXIT_OK
    job = _job(layout, registry, check_job_id(args.job_id), settings.error_handling.checkpoint)
    if job is None:
        raise JobQueueError(f"job {args.job_id} not found in {layout.root}")
    if args.json:
        print_json(job)
    else:
        _print_job(layout, job)
    return EXIT_OK


# -- the whole share ------------------------------------------------------------------------


def _overview(layout: ShareLayout, registry: OperatorRegistry) -> dict[str, Any]:
    summary = read_json(layout.status / "current_status.json")
    running = []
    for record in registry.running():
        live = read_json(layout.status / f"{record.job_id}.json") or {}
        running.append({"job_id": record.job_id, "attempts": record.attempts,
                        "stage": live.get("stage"), "progress": live.get("progress"),
                        "heartbeat_at": live.get("heartbeat_at"), "lease": record.lease})
    retrying = [{"job_id": r.job_id, "attempts": r.attempts, "next_attempt_at": r.next_attempt_at,
                 "last_error": _last_error(r)} for r in registry.retrying()]
    return {"share": str(layout.root), "daemon": _daemon(summary), "counts": registry.counts(),
            "running": running, "retrying": retrying}


def _daemon(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """The daemon's summary, plus whether its process exists (checkable on this host only)
    and whether the summary is stale (a live daemon rewrites it every few seconds)."""
    if summary is None:
        return None
    updated = epoch_of(summary.get("updated_at"))
    age = None if updated is None else time.time() - updated
    alive: bool | None = None
    if summary.get("host") == socket.gethostname() and isinstance(summary.get("pid"), int):
        alive = psutil.pid_exists(summary["pid"])
    stale = age is None or age > STALE_SUMMARY_SECONDS
    return {**summary, "age_seconds": age, "alive": alive, "stale": stale}


def _last_error(record: JobRecord) -> dict[str, Any] | None:
    error = record.history[-1].get("error") if record.history else None
    return error if isinstance(error, dict) else None


def _print_overview(layout: ShareLayout, overview: dict[str, Any]) -> None:
    now = time.time()
    print(f"share: {layout.root}")
    daemon = overview["daemon"]
    if daemon is None:
        print("daemon: no status published yet (has it ever run on this share?)")
    else:
        if daemon["alive"] is False:
            state = "NOT RUNNING"
        elif daemon["stale"]:
            state = "NOT UPDATING (hung, stopped, or cut off from the share)"
        else:
            state = daemon.get("state", "running")
        print(f"daemon: {state} on {daemon.get('host')} pid {daemon.get('pid')}, "
              f"last update {ago(daemon.get('updated_at'), now)}")
        breaker = daemon.get("circuit_breaker") or {}
        if breaker.get("open"):
            print(f"circuit breaker: OPEN until {breaker.get('open_until')} after "
                  f"{breaker.get('consecutive_failures')} failures in a row (not claiming)")
        else:
            print(f"circuit breaker: closed ({breaker.get('consecutive_failures', 0)} "
                  "failures in a row)")
        if daemon.get("resource_wait"):
            print(f"resources: new jobs wait: {daemon['resource_wait']}")
    counts = overview["counts"]
    print("jobs: " + ", ".join(f"{counts.get(name, 0)} {label}"
                               for name, label in zip(REGISTRIES, COUNT_LABELS, strict=True)))
    for job in overview["running"]:
        progress = job.get("progress")
        percent = f"{progress * 100:.0f}%" if isinstance(progress, int | float) else "?"
        lease = job.get("lease") or {}
        print(f"  running  {job['job_id']}: attempt {job['attempts']}, stage "
              f"{job.get('stage') or '?'}, {percent}, heartbeat "
              f"{ago(job.get('heartbeat_at') or lease.get('heartbeat_at'), now)} "
              f"(host {lease.get('host', '?')}, pid {lease.get('pid', '?')})")
    for job in overview["retrying"]:
        due = job.get("next_attempt_at")
        when = f"in {max(0.0, due - now):.0f} s" if isinstance(due, int | float) else "soon"
        code = (job.get("last_error") or {}).get("code", "?")
        print(f"  retrying {job['job_id']}: attempt {job['attempts']} failed ({code}), next "
              f"attempt {when}")


# -- one job --------------------------------------------------------------------------------


def _job(layout: ShareLayout, registry: OperatorRegistry, job_id: str,
         checkpoint_config: CheckpointConfig) -> dict[str, Any] | None:
    found = registry.locate(job_id)
    if found is None:
        return None
    where, path = found
    job: dict[str, Any] = {"job_id": job_id, "registry": where,
                           "file": str(path.relative_to(layout.root))}
    if where in ("completed", "failed"):
        job["final"] = read_json(path)
    else:
        record = registry.read_record(path)
        if record is not None:
            job.update(attempts=record.attempts, lease=record.lease,
                       next_attempt_at=record.next_attempt_at, last_error=_last_error(record))
    job["status"] = read_json(layout.status / f"{job_id}.json")
    try:
        checkpoints = CheckpointManager(job_id, layout.checkpoints,
                                        config=checkpoint_config).list_checkpoints()
    except ValueError:  # an id no checkpoint folder can have (a leading '.')
        checkpoints = []
    job["checkpoints"] = {"count": len(checkpoints),
                          "newest": checkpoints[-1].created_at if checkpoints else None}
    return job


def _print_job(layout: ShareLayout, job: dict[str, Any]) -> None:
    now = time.time()
    where = job["registry"]
    state = {"queue": "queued", "processing": "running", "retry": "waiting for a retry"}
    print(f"job {job['job_id']}: {state.get(where, where)} ({job['file']})")
    final = job.get("final")
    if final is not None:
        for line in describe_final(layout, where, final)[1:]:
            print(line)
        print(f"  finished {final.get('finished_at', '?')} after "
              f"{final.get('attempts', '?')} attempt(s)")
    if "attempts" in job:
        print(f"  attempts so far: {job['attempts']}")
    lease = job.get("lease")
    if lease:
        print(f"  lease: host {lease.get('host')}, daemon pid {lease.get('daemon_pid')}, job pid "
              f"{lease.get('pid')}, renewed {ago(lease.get('heartbeat_at'), now)}")
    if where == "retry" and isinstance(job.get("next_attempt_at"), int | float):
        print(f"  next attempt in {max(0.0, job['next_attempt_at'] - now):.0f} s")
    if job.get("last_error"):
        error = job["last_error"]
        print(f"  last error: {error.get('code', '?')}: {error.get('message', '')}")
    status = job.get("status")
    if status:
        progress = status.get("progress")
        percent = f", {progress * 100:.0f}%" if isinstance(progress, int | float) else ""
        stage = f", stage {status['stage']}" if status.get("stage") else ""
        beat = (f", heartbeat {ago(status['heartbeat_at'], now)}"
                if status.get("heartbeat_at") else "")
        print(f"  live status: {status.get('state', '?')}{stage}{percent}{beat} "
              f"(published {ago(status.get('updated_at'), now)})")
    checkpoints = job["checkpoints"]
    if checkpoints["count"]:
        print(f"  checkpoints: {checkpoints['count']}, newest {checkpoints['newest']}")
