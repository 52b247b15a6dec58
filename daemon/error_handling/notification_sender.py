"""The background thread that delivers alerts, so callers of the notifier never wait.

It is the only thread that talks to SMTP servers and webhooks. A queue of outbox entries
feeds it; when the queue stays empty it calls an idle hook (the notifier uses it to send
"repeated N times" summaries of duplicate groups whose hour ended).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from .outbox import OutboxEntry

logger = logging.getLogger(__name__)

#: How often the idle sender checks for duplicate groups whose hour ended.
GROUP_CHECK_INTERVAL_SECONDS = 60.0


class NotificationSenderThread(threading.Thread):
    """Deliver queued alerts one at a time; the only thread that talks to SMTP and Slack.

    Not a daemon thread: it writes outbox and history files, which must not be cut off
    mid-write at interpreter exit. ``request_stop`` drains the queue, then ends;
    ``request_force_stop`` ends after the current attempt (``stop_event`` also interrupts
    retry waits).

    Args:
        deliver: Sends one entry through every channel; called on this thread.
        on_idle: Called when no alert arrived for ``idle_interval_seconds``.
        idle_interval_seconds: See ``on_idle``.
    """

    def __init__(
        self,
        deliver: Callable[[OutboxEntry], None],
        *,
        on_idle: Callable[[], Any],
        idle_interval_seconds: float = GROUP_CHECK_INTERVAL_SECONDS,
    ) -> None:
        super().__init__(name="notification-sender", daemon=False)
        self.stop_event = threading.Event()
        self._deliver = deliver
        self._on_idle = on_idle
        self._idle_interval_seconds = idle_interval_seconds
        self._cond = threading.Condition()
        self._queue: deque[OutboxEntry] = deque()
        self._busy = False
        self._draining = False

    def put(self, entry: OutboxEntry) -> None:
        """Queue an entry for delivery."""
        with self._cond:
            self._queue.append(entry)
            self._cond.notify_all()

    def queued(self) -> int:
        """Entries not yet taken for delivery."""
        with self._cond:
            return len(self._queue)

    def request_stop(self) -> None:
        """Finish every queued entry, then end."""
        with self._cond:
            self._draining = True
            self._cond.notify_all()

    def request_force_stop(self) -> None:
        """End after the current attempt; queued entries stay queued (and in the outbox)."""
        self.stop_event.set()
        with self._cond:
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the queue is empty and nothing is being sent; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def run(self) -> None:
        while not self.stop_event.is_set():
            with self._cond:
                if not self._queue and not self._draining:
                    self._cond.wait(self._idle_interval_seconds)
                if self.stop_event.is_set() or (self._draining and not self._queue):
                    return
                entry = self._queue.popleft() if self._queue else None
                self._busy = entry is not None
            if entry is None:
                self._on_idle()
                continue
            try:
                self._deliver(entry)
            except Exception:  # a bug here must not end the sender: later alerts still go
                logger.exception("Notification sender: unexpected error; alert dropped: %s",
                                 entry.alert.subject)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
