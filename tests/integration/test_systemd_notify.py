"""sd_notify from a real daemon process, received on a real ``NOTIFY_SOCKET`` as systemd would.

The daemon runs as ``heavy-optimizer run`` with ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` set as
systemd sets them for ``Type=notify`` + ``WatchdogSec=2``; the tests read every datagram and
check the protocol: READY=1 only after the first scan, STATUS= lines that follow the jobs,
WATCHDOG=1 about every second (half the watchdog period) and never more than the period
apart, no pings while the process is frozen (SIGSTOP) or while only its main thread is held
(ptrace) with every other thread free to run, STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import platform
import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.daemon_harness import DaemonProcess, drop_job, make_config_dir, record, wait_for
from tests.paths import SAMPLES_DIR

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

#: What systemd passes for WatchdogSec=2.
WATCHDOG_USEC = 2_000_000
WATCHDOG_SECONDS = WATCHDOG_USEC / 1_000_000
#: The daemon pings every half period (daemon.systemd.WATCHDOG_PING_FRACTION).
PING_INTERVAL_SECONDS = WATCHDOG_SECONDS / 2
#: Blocking waits (poll, ppoll, select, pselect6, epoll_wait, epoll_pwait) by architecture:
#: a thread stopped inside one of them does not hold Python's GIL.
WAIT_SYSCALLS = {"x86_64": {7, 271, 23, 270, 232, 281}, "aarch64": {73, 72, 22}}
PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4206, 0x4207
WALL = 0x40000000


def _pings(daemon: DaemonProcess, since: float) -> list[float]:
    return [at for at, data in daemon.datagrams if at >= since and "WATCHDOG=1" in data]


def _collect(daemon: DaemonProcess, seconds: float) -> None:
    """Receive for ``seconds``, stamping each datagram as it arrives."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        daemon.read_notifications(min(0.1, remaining))


def _status_lines(daemon: DaemonProcess) -> list[str]:
    return [line for line in daemon.notifications if line.startswith("STATUS=")]


def _has_status(daemon: DaemonProcess, text: str) -> bool:
    daemon.read_notifications(0.1)
    return any(text in line for line in _status_lines(daemon))


def test_ready_status_watchdog_and_stopping_from_the_real_daemon(tmp_path: Path) -> None:
    share = tmp_path / "share"
    queue = share / "jobs" / "queue"
    queue.mkdir(parents=True)
    (share / "input").mkdir()
    shutil.copy(SAMPLES_DIR / "sensex_82x500.csv", share / "input" / "data.csv")
    # Given a job file the first scan must reject at once (a symlink is never followed)
    (queue / "evil.json").symlink_to("/etc/passwd")
    config = make_config_dir(tmp_path / "cfg")
    daemon = DaemonProcess(config, share, runner="tests.jobs:sleepy_job",
                           env={"WATCHDOG_USEC": str(WATCHDOG_USEC)}).start()
    try:
        # When it starts, READY=1 arrives with a status that already counts the scan's result
        daemon.wait_ready()
        ready = next(data for _, data in daemon.datagrams if "READY=1" in data)
        assert "STATUS=0 running, 0 queued, 0 retrying, 0 completed, 1 failed" in ready.split("\n")
        assert record(share, "failed", "evil") is not None
        # And the watchdog is pinged about every second, never a full period apart
        started = time.monotonic()
        _collect(daemon, 4.5)
        pings = _pings(daemon, started)
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert len(pings) >= 3, daemon.datagrams
        assert all(0.75 * PING_INTERVAL_SECONDS <= gap < WATCHDOG_SECONDS for gap in gaps), gaps
        # And STATUS= follows a job through running to completed
        drop_job(share, "short", sleep_seconds=1.0)
        wait_for(lambda: _has_status(daemon, ", 1 completed, "), timeout=30,
                 message="STATUS= counting the completed job")
        assert record(share, "completed", "short") is not None
        statuses = _status_lines(daemon)
        assert any(line.startswith("STATUS=1 running") for line in statuses), statuses
        # When the process is frozen (its main loop cannot run), the pings stop
        assert daemon.proc is not None
        pid = daemon.proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_for(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED,
                     timeout=5, message="daemon stopped")
            daemon.read_notifications()  # what it sent before it froze
            frozen = time.monotonic()
            _collect(daemon, WATCHDOG_SECONDS + 0.5)
            assert _pings(daemon, frozen) == [], "a frozen daemon must not ping the watchdog"
        finally:
            os.kill(pid, signal.SIGCONT)
        # And resume as soon as it runs again
        resumed = time.monotonic()
        wait_for(lambda: daemon.read_notifications(0.1) and _pings(daemon, resumed),
                 timeout=WATCHDOG_SECONDS, message="a ping after SIGCONT")
        # When systemd stops it, it says STOPPING=1 and exits 0
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        daemon.read_notifications(0.2)
    finally:
        daemon.close()
    assert "STOPPING=1" in daemon.notifications
    stopping_at = next(i for i, line in enumerate(daemon.notifications) if line == "STOPPING=1")
    assert "READY=1" not in daemon.notifications[stopping_at:]


def test_abstract_notify_socket(tmp_path: Path) -> None:
    config = make_config_dir(tmp_path / "cfg")
    daemon = DaemonProcess(config, tmp_path / "share", abstract_notify_socket=True,
                           env={"WATCHDOG_USEC": str(WATCHDOG_USEC)}).start()
    try:
        # Given NOTIFY_SOCKET=@name, the daemon reaches the abstract socket: READY=1, pings
        daemon.wait_ready()
        started = time.monotonic()
        wait_for(lambda: daemon.read_notifications(0.1) and _pings(daemon, started),
                 timeout=WATCHDOG_SECONDS * 2, message="WATCHDOG=1 on the abstract socket")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        daemon.read_notifications(0.2)
    finally:
        daemon.close()
    assert "STOPPING=1" in daemon.notifications
    assert "Cannot notify systemd" not in daemon.output()


def _ptrace(request: int, pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    libc.ptrace.restype = ctypes.c_long
    if libc.ptrace(request, pid, None, None) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"ptrace({request:#x}, {pid}): {os.strerror(error)}")


def _hold_main_thread_in_its_wait(pid: int) -> None:
    """Stop only the main thread (tid == pid), while it waits in poll() without the GIL."""
    waits = WAIT_SYSCALLS.get(platform.machine())
    if waits is None:
        pytest.skip(f"no syscall table for {platform.machine()}")
    try:
        _ptrace(PTRACE_SEIZE, pid)
    except OSError as exc:
        pytest.skip(f"ptrace is not permitted here: {exc}")
    for _ in range(50):
        _ptrace(PTRACE_INTERRUPT, pid)
        os.waitpid(pid, WALL)
        syscall = Path(f"/proc/{pid}/syscall").read_text().split()[0]
        if syscall.isdigit() and int(syscall) in waits:
            return
        # Caught between waits (running Python, maybe holding the GIL): let it go on.
        _ptrace(PTRACE_DETACH, pid)
        _ptrace(PTRACE_SEIZE, pid)
        time.sleep(0.01)
    raise AssertionError("the main thread was never caught in its wait")


def _thread_states(pid: int) -> dict[int, str]:
    states = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as stat:
            states[int(tid)] = stat.read().rsplit(")", 1)[1].split()[0]
    return states


def test_watchdog_stops_when_only_the_main_loop_is_blocked(tmp_path: Path) -> None:
    config = make_config_dir(tmp_path / "cfg")
    daemon = DaemonProcess(config, tmp_path / "share",
                           env={"WATCHDOG_USEC": str(WATCHDOG_USEC)}).start()
    try:
        daemon.wait_ready()
        assert daemon.proc is not None
        pid = daemon.proc.pid
        # Given the daemon's threads (watcher, scheduler, notifier) besides the main loop
        assert len(_thread_states(pid)) > 1
        # When only the main thread is held (inside its wait, so the GIL is free)
        _hold_main_thread_in_its_wait(pid)
        try:
            daemon.read_notifications()
            held = time.monotonic()
            _collect(daemon, WATCHDOG_SECONDS + 0.5)
            states = _thread_states(pid)
        finally:
            _ptrace(PTRACE_DETACH, pid)
        # Then no other thread pinged for it: systemd would restart the hung daemon
        assert states.pop(pid) == "t"
        assert "t" not in states.values() and "T" not in states.values(), states
        assert _pings(daemon, held) == [], "the watchdog must be pinged by the main loop only"
        # And the pings come back once the loop runs again
        released = time.monotonic()
        wait_for(lambda: daemon.read_notifications(0.1) and _pings(daemon, released),
                 timeout=WATCHDOG_SECONDS, message="a ping after the main loop resumed")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    finally:
        daemon.close()
