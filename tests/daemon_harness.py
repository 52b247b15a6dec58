"""A real daemon process for tests: config folder, share, readiness via sd_notify, cleanup.

The daemon runs as ``python -m daemon.cli run`` in its own session, exactly as systemd would
start it; the harness binds a real ``NOTIFY_SOCKET`` to learn when it is ready, and on exit
kills every process left in that session (job processes of a SIGKILLed daemon included), so
no test leaves orphans behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psutil

from daemon.error_handling.atomic_io import atomic_write_json

T = TypeVar("T")

#: Job-processor settings that make tests fast; each test overrides what it exercises.
FAST_JOB_PROCESSOR: dict[str, Any] = {
    "scan_interval": 0.2,
    "settle_seconds": 0.3,
    "heartbeat_interval": 0.2,
    "checkpoint_interval": 0.05,  # mid-algorithm checkpoints, so kills land inside stages
    "job_timeout": 120,
    "kill_grace_seconds": 1.0,
    "drain_timeout": 20,
    "max_concurrent_jobs": 2,
    "max_retry_attempts": 3,
    "observer": "inotify",
    "resource_monitoring": {"enabled": False},
    "recovery": {"stuck_job_check_interval": 0.5},
    "notifications": {"daily_summary": False},
}
#: Optimizer settings for real optimisation jobs in tests: small exact budgets.
FAST_OPTIMIZER: dict[str, Any] = {
    "optimizer": {"budget": {"max_evaluations": 3000, "max_seconds": 60,
                             "evaluations_per_algorithm": {"BO": 500}},
                  "checkpoint_interval": 0.05},
}


def wait_for(predicate: Callable[[], T], *, timeout: float, interval: float = 0.05,
             message: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(
            merged.get(key), dict) else value
    return merged


def make_config_dir(folder: Path, *, job_processor: dict[str, Any] | None = None,
                    optimizer: dict[str, Any] | None = None,
                    error_handling: dict[str, Any] | None = None) -> Path:
    """Write the three config files (fast test defaults plus ``overrides``) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = _merge(FAST_JOB_PROCESSOR, job_processor or {})
    (folder / "job_processor_config.json").write_text(json.dumps({"job_processor": jobs}))
    (folder / "optimizer_config.json").write_text(
        json.dumps(_merge(FAST_OPTIMIZER, optimizer or {})))
    eh = _merge({"notifications": {"enabled": False}}, error_handling or {})
    (folder / "error_handling_config.json").write_text(json.dumps(eh))
    return folder


def drop_job(share: Path, job_id: str, **fields: Any) -> Path:
    """Write a job file into jobs/queue/ atomically, as a well-behaved client does."""
    queue = share / "jobs" / "queue"
    queue.mkdir(parents=True, exist_ok=True)
    spec = {"job_id": job_id, "input_file": "data.csv", "portfolio_size": 10, **fields}
    return atomic_write_json(queue / f"{job_id}.json", spec)


def record(share: Path, registry: str, job_id: str) -> dict[str, Any] | None:
    """The job's record in ``jobs/<registry>/``, or None."""
    path = share / "jobs" / registry / f"{job_id}.json"
    try:
        value: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return value


class DaemonProcess:
    """``heavy-optimizer run`` as a real child process."""

    def __init__(self, config_dir: Path, share: Path, *, runner: str | None = None,
                 env: dict[str, str] | None = None, abstract_notify_socket: bool = False,
                 command_prefix: Sequence[str] = ()) -> None:
        """Args beyond the obvious: ``abstract_notify_socket`` binds ``NOTIFY_SOCKET`` in the
        abstract namespace (``@name``, as systemd may pass it) instead of a path;
        ``command_prefix`` runs the daemon through a wrapper that execs the rest of the line.
        """
        self.config_dir = config_dir
        self.share = share
        self.runner = runner
        self.extra_env = env or {}
        self.abstract_notify_socket = abstract_notify_socket
        self.command_prefix = list(command_prefix)
        self.proc: subprocess.Popen[bytes] | None = None
        self._notify: socket.socket | None = None
        self.notifications: list[str] = []
        #: (monotonic arrival time, datagram) of every message, in arrival order.
        self.datagrams: list[tuple[float, str]] = []
        self.log_path = share.parent / f"daemon-{id(self)}.out"

    def start(self) -> DaemonProcess:
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if self.abstract_notify_socket:
            name = f"heavy-optimizer-test-{os.getpid()}-{id(self)}"
            self._notify.bind("\0" + name)
            address = "@" + name
        else:
            address = str(self.share.parent / f"notify-{id(self)}.sock")
            self._notify.bind(address)
        env = {**os.environ, "NOTIFY_SOCKET": address, **self.extra_env}
        if self.runner:
            env["HEAVY_OPTIMIZER_JOB_RUNNER"] = self.runner
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [*self.command_prefix, sys.executable, "-m", "daemon.cli", "run",
                 "--config-dir", str(self.config_dir), "--share", str(self.share)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=env,
            )
        return self

    def read_notifications(self, timeout: float = 0.0) -> list[str]:
        """Receive what has arrived (waiting up to ``timeout`` for the first datagram).

        Returns:
            Every line received so far; :attr:`datagrams` keeps them per message, timed.
        """
        assert self._notify is not None
        self._notify.settimeout(timeout if timeout > 0 else 0.001)
        with contextlib.suppress(TimeoutError, BlockingIOError):
            while True:
                data = self._notify.recv(4096).decode()
                self.datagrams.append((time.monotonic(), data))
                self.notifications.extend(data.splitlines())
                self._notify.settimeout(0.001)
        return self.notifications

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited early:\n{self.output()}")
            return "READY=1" in self.read_notifications(0.1)

        wait_for(ready, timeout=timeout, message="daemon READY=1")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def session_pids(self) -> list[int]:
        if self.proc is None:
            return []
        pids = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getsid(proc.pid) == self.proc.pid:
                    pids.append(proc.pid)
        return pids

    def close(self) -> None:
        """Kill the daemon and everything it started; always safe to call."""
        if self.proc is not None:
            for pid in self.session_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        if self._notify is not None:
            self._notify.close()
            self._notify = None

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def running_daemon(config_dir: Path, share: Path, **kwargs: Any) -> Iterator[DaemonProcess]:
    """Start a daemon, wait for READY=1, and clean up everything afterwards."""
    with DaemonProcess(config_dir, share, **kwargs) as daemon:
        daemon.wait_ready()
        yield daemon
