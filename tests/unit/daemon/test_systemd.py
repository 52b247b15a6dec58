"""SystemdNotifier against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.systemd import SystemdNotifier

pytestmark = pytest.mark.timeout(20)

#: How long a test waits for a datagram that must arrive (generous; it arrives at once).
RECEIVE_TIMEOUT_SECONDS = 5.0


class FakeSystemd:
    """A bound datagram socket that collects what the notifier sends."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def receive(self, timeout: float = RECEIVE_TIMEOUT_SECONDS) -> list[str]:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode("utf-8").split("\n")

    def nothing_pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        return False


@pytest.fixture
def path_systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield FakeSystemd(sock, str(path))
    sock.close()


@pytest.fixture
def abstract_systemd() -> Iterator[FakeSystemd]:
    name = f"heavy-optimizer-test-{os.getpid()}-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    yield FakeSystemd(sock, "@" + name)
    sock.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _notifier(fake: FakeSystemd, **env: str) -> SystemdNotifier:
    return SystemdNotifier.from_environment({"NOTIFY_SOCKET": fake.env_value, **env})


def test_ready_status_and_stopping_reach_the_socket(path_systemd: FakeSystemd) -> None:
    # Given a notifier built from NOTIFY_SOCKET naming a real socket path
    notifier = _notifier(path_systemd)
    try:
        # When the daemon reports its life cycle
        assert notifier.ready("watching /mnt/share")
        first = path_systemd.receive()
        assert notifier.status("2 running,\n5 queued")
        second = path_systemd.receive()
        assert notifier.stopping("draining 2 jobs")
        third = path_systemd.receive()
    finally:
        notifier.close()
    # Then systemd sees READY=1, one-line STATUS= texts and STOPPING=1
    assert first == ["READY=1", "STATUS=watching /mnt/share"]
    assert second == ["STATUS=2 running, 5 queued"]
    assert third == ["STOPPING=1", "STATUS=draining 2 jobs"]


def test_reloading_carries_monotonic_usec(path_systemd: FakeSystemd) -> None:
    notifier = _notifier(path_systemd)
    try:
        assert notifier.reloading()
        lines = path_systemd.receive()
    finally:
        notifier.close()
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=") and int(lines[1].split("=")[1]) > 0


def test_abstract_socket_form_works(abstract_systemd: FakeSystemd) -> None:
    # Given NOTIFY_SOCKET in systemd's abstract '@name' form
    notifier = _notifier(abstract_systemd)
    try:
        # When / Then the message reaches the abstract socket
        assert notifier.ready()
        assert abstract_systemd.receive() == ["READY=1"]
    finally:
        notifier.close()


def test_watchdog_pings_are_rate_limited_to_half_the_period(path_systemd: FakeSystemd) -> None:
    # Given WATCHDOG_USEC=10 s, so a ping is due every 5 s
    notifier = _notifier(path_systemd, WATCHDOG_USEC="10000000")
    assert notifier.watchdog_interval_seconds == pytest.approx(5.0)
    try:
        # When the main loop ticks at t=0, 1, ..., 12
        sent_at = [t for t in range(13) if notifier.ping_watchdog_if_due(float(t))]
        received = [path_systemd.receive() for _ in sent_at]
    finally:
        notifier.close()
    # Then it pinged at once, then every 5 s, and each ping was a WATCHDOG=1 datagram
    assert sent_at == [0, 5, 10]
    assert received == [["WATCHDOG=1"]] * 3
    assert path_systemd.nothing_pending()


def test_explicit_watchdog_ping_restarts_the_period(path_systemd: FakeSystemd) -> None:
    clock = Clock()
    notifier = SystemdNotifier.from_environment(
        {"NOTIFY_SOCKET": path_systemd.env_value, "WATCHDOG_USEC": "4000000"}, clock=clock
    )
    try:
        assert notifier.watchdog()
        assert path_systemd.receive() == ["WATCHDOG=1"]
        assert not notifier.watchdog_due(clock.now + 1.9)
        assert notifier.watchdog_due(clock.now + 2.0)
    finally:
        notifier.close()


def test_no_pings_unless_the_main_loop_asks(path_systemd: FakeSystemd) -> None:
    # Given a notifier with a very short watchdog period and no running loop
    threads_before = threading.active_count()
    notifier = _notifier(path_systemd, WATCHDOG_USEC="1000")
    try:
        notifier.ready()
        assert path_systemd.receive() == ["READY=1"]
        # Then nothing pings on its own: no thread was started and no datagram arrives
        assert threading.active_count() == threads_before
        with pytest.raises(TimeoutError):
            path_systemd.receive(timeout=0.3)
        # And once the loop ticks again, a ping goes out
        assert notifier.ping_watchdog_if_due(1.0)
        assert path_systemd.receive() == ["WATCHDOG=1"]
    finally:
        notifier.close()


@pytest.mark.parametrize(
    ("pid_value", "ours"),
    [(None, True), ("OWN", True), ("1", False)],
)
def test_watchdog_belongs_to_watchdog_pid(
    path_systemd: FakeSystemd, pid_value: str | None, ours: bool
) -> None:
    env = {"NOTIFY_SOCKET": path_systemd.env_value, "WATCHDOG_USEC": "2000000"}
    if pid_value is not None:
        env["WATCHDOG_PID"] = str(os.getpid()) if pid_value == "OWN" else pid_value
    notifier = SystemdNotifier.from_environment(env)
    try:
        assert notifier.watchdog_enabled is ours
        assert notifier.ping_watchdog_if_due(0.0) is ours
        if ours:
            assert path_systemd.receive() == ["WATCHDOG=1"]
        else:
            assert path_systemd.nothing_pending()
    finally:
        notifier.close()


def test_invalid_watchdog_usec_disables_pings_with_a_warning(
    path_systemd: FakeSystemd, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="daemon.systemd"):
        notifier = _notifier(path_systemd, WATCHDOG_USEC="soon")
    assert not notifier.watchdog_enabled
    assert notifier.enabled
    assert "WATCHDOG_USEC" in caplog.text


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = SystemdNotifier.from_environment({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert not notifier.watchdog_enabled
    assert not notifier.ready("x")
    assert not notifier.status("x")
    assert not notifier.stopping()
    assert not notifier.ping_watchdog_if_due(0.0)


def test_socket_errors_are_logged_once_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given NOTIFY_SOCKET naming a socket nobody listens on
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    try:
        with caplog.at_level(logging.INFO, logger="daemon.systemd"):
            # When several messages fail
            results = [notifier.ready(), notifier.status("a"), notifier.status("b")]
        # Then none raised, each reported failure, and one warning was logged
        assert results == [False, False, False]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "gone.sock" in warnings[0].getMessage()

        # And when the socket appears, sending works again and that is logged once
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(str(tmp_path / "gone.sock"))
            with caplog.at_level(logging.INFO, logger="daemon.systemd"):
                assert notifier.status("back")
            sock.settimeout(RECEIVE_TIMEOUT_SECONDS)
            assert sock.recv(4096) == b"STATUS=back"
        finally:
            sock.close()
        assert "works again" in caplog.text
    finally:
        notifier.close()


def test_unsupported_socket_form_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="daemon.systemd"):
        notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert not notifier.ready()
    assert "vsock:2:1234" in caplog.text
