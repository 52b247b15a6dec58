"""Tell systemd how the daemon is doing (``sd_notify``), with the standard library only.

With ``Type=notify`` systemd waits for ``READY=1`` before it calls the service started, shows
``STATUS=`` lines in ``systemctl status``, and with ``WatchdogSec`` restarts the service when
``WATCHDOG=1`` pings stop. The pings come only from the supervisor's main loop through
:meth:`SystemdNotifier.ping_watchdog_if_due`; there is no background thread on purpose: a
thread would keep pinging while the main loop hangs, and the watchdog would never fire.

Outside systemd (``NOTIFY_SOCKET`` unset) every method is a cheap no-op. A notification is
never worth crashing for: socket errors are logged once per run of failures and swallowed.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)

#: Fraction of ``WATCHDOG_USEC`` between pings; systemd's own advice is "about half".
WATCHDOG_PING_FRACTION = 0.5


class SystemdNotifier:
    """Sends ``sd_notify`` messages to the socket systemd gave the service.

    Args:
        address: The ``NOTIFY_SOCKET`` value: a file system path, or ``@name`` for an
            abstract socket. ``None`` makes every method a no-op.
        watchdog_interval_seconds: Seconds between watchdog pings; ``None`` disables pings.
        clock: Monotonic seconds, used only by :meth:`watchdog` (the loop passes ``now``).
    """

    def __init__(
        self,
        *,
        address: str | None,
        watchdog_interval_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._address = _socket_address(address) if address else None
        self.watchdog_interval_seconds = watchdog_interval_seconds if self._address else None
        self._clock = clock
        self._socket: socket.socket | None = None
        self._last_ping: float | None = None
        self._failing = False

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str] = os.environ,
        *,
        pid: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> SystemdNotifier:
        """Build a notifier from ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``.

        The watchdog is ours only when ``WATCHDOG_PID`` is unset or names this process;
        otherwise another process of the unit owns the pings.

        Args:
            environ: The environment to read (``os.environ`` unless a test passes one).
            pid: This process's id; ``os.getpid()`` when omitted.
            clock: Monotonic seconds for :meth:`watchdog`.
        """
        address = environ.get("NOTIFY_SOCKET") or None
        interval: float | None = None
        usec_text = environ.get("WATCHDOG_USEC", "")
        owner_text = environ.get("WATCHDOG_PID", "")
        if address and usec_text:
            usec = _positive_int(usec_text)
            owner = _positive_int(owner_text) if owner_text else None
            if usec is None or (owner_text and owner is None):
                logger.warning(
                    "Ignoring the systemd watchdog: WATCHDOG_USEC=%r WATCHDOG_PID=%r are not "
                    "positive integers", usec_text, owner_text,
                )  # fmt: skip
            elif owner is None or owner == (os.getpid() if pid is None else pid):
                interval = usec / 1_000_000 * WATCHDOG_PING_FRACTION
        return cls(address=address, watchdog_interval_seconds=interval, clock=clock)

    @property
    def enabled(self) -> bool:
        """Whether messages go anywhere (the process runs under systemd with a socket)."""
        return self._address is not None

    @property
    def watchdog_enabled(self) -> bool:
        """Whether systemd expects watchdog pings from this process."""
        return self.watchdog_interval_seconds is not None

    # -- messages ---------------------------------------------------------------------------

    def ready(self, status: str | None = None) -> bool:
        """Say start-up is complete (``READY=1``), optionally with a status line."""
        return self.notify("READY=1", *self._status_lines(status))

    def status(self, text: str) -> bool:
        """Set the one-line status ``systemctl status`` shows."""
        return self.notify(*self._status_lines(text))

    def reloading(self) -> bool:
        """Say a reload began (``RELOADING=1`` with the ``MONOTONIC_USEC`` systemd 253 wants).

        Call :meth:`ready` when the reload is done.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> bool:
        """Say shutdown began (``STOPPING=1``), so systemd does not mistake the drain for a hang."""
        return self.notify("STOPPING=1", *self._status_lines(status))

    def watchdog(self) -> bool:
        """Ping the watchdog now (``WATCHDOG=1``) and restart the rate-limit period."""
        if not self.watchdog_enabled:
            return False
        self._last_ping = self._clock()
        return self.notify("WATCHDOG=1")

    def watchdog_due(self, now: float) -> bool:
        """Whether a ping is due at monotonic time ``now`` (never when the watchdog is off)."""
        if self.watchdog_interval_seconds is None:
            return False
        return self._last_ping is None or now - self._last_ping >= self.watchdog_interval_seconds

    def ping_watchdog_if_due(self, now: float) -> bool:
        """Ping when due; the main loop calls this every tick, and it is the only pinger.

        Args:
            now: The loop's monotonic time.

        Returns:
            Whether a ping was sent.
        """
        if not self.watchdog_due(now):
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")

    def notify(self, *lines: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines.

        Returns:
            Whether the message was sent; ``False`` when not under systemd or on a socket
            error (logged once until a send succeeds again).
        """
        if self._address is None or not lines:
            return False
        payload = "\n".join(lines).encode("utf-8", errors="replace")
        try:
            if self._socket is None:
                # Non-blocking: a notify socket nobody drains must never stall the main loop
                # (which would also stop the watchdog pings that prove the loop is alive).
                kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                self._socket = socket.socket(socket.AF_UNIX, kind)
            self._socket.sendto(payload, self._address)
        except OSError as exc:
            if not self._failing:
                logger.warning("Cannot notify systemd at %r: %s", self._display_address(), exc)
            self._failing = True
            return False
        if self._failing:
            logger.info("Notifying systemd works again")
            self._failing = False
        return True

    def close(self) -> None:
        """Close the socket; a later message opens a new one."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _status_lines(self, text: str | None) -> tuple[str, ...]:
        if text is None:
            return ()
        # One datagram line per key: a newline in the text would start a bogus key.
        return (f"STATUS={' '.join(text.split())}",)

    def _display_address(self) -> str:
        address = self._address or ""
        return "@" + address[1:] if address.startswith("\0") else address


def _socket_address(value: str) -> str | None:
    """The ``sendto`` address for a ``NOTIFY_SOCKET`` value; ``None`` when unsupported."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    logger.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract @name; not notifying", value)
    return None


def _positive_int(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value > 0 else None


__all__ = ["WATCHDOG_PING_FRACTION", "SystemdNotifier"]
