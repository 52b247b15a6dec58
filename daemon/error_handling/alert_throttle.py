"""Rolling-window rate limit and duplicate grouping for alerts.

A failing job can raise the same error hundreds of times an hour; operators need one alert
and a count, not a flood. Two rules decide whether an alert goes out:

* Grouping: alerts share a group when their fingerprints match. The first one is sent and
  opens the group's window (one hour); repeats inside the window are only counted. The count
  is reported by the next alert of the group sent after the window, or by a summary alert
  when the window ends (:meth:`AlertThrottle.due_summaries`).
* Rate limit: at most ``limit_per_hour`` alerts in any rolling hour (not per clock hour, so
  ten alerts at 09:50 block the eleventh until 10:50, not until 10:00).

The class is pure bookkeeping over an injected "now"; it neither logs nor sends, and it is
not thread-safe (the notifier holds a lock around it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from .alerts import Alert

#: Length of the rate-limit window and of a duplicate group's window.
WINDOW_SECONDS = 3600.0


class AdmissionOutcome(StrEnum):
    """What the throttle decided for one alert."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    RATE_LIMITED = "rate_limited"


class Admission(NamedTuple):
    """The decision, the alert to send (with its repeat count set) and the group's count."""

    outcome: AdmissionOutcome
    alert: Alert
    #: Duplicates counted in the group so far (for DUPLICATE and RATE_LIMITED).
    suppressed: int = 0


@dataclass
class _Group:
    opened_at: float
    template: Alert
    suppressed: int = 0


class AlertThrottle:
    """Decide which alerts are sent: one per failure per hour, and a cap per rolling hour.

    Args:
        limit_per_hour: Most alerts sent in any window of ``window_seconds``.
        window_seconds: Length of the rolling window and of each group's window.
    """

    def __init__(self, *, limit_per_hour: int, window_seconds: float = WINDOW_SECONDS) -> None:
        if limit_per_hour < 1:
            raise ValueError("limit_per_hour must be at least 1")
        self._limit = limit_per_hour
        self._window_seconds = window_seconds
        self._sent_at: deque[float] = deque()
        self._groups: dict[str, _Group] = {}

    def admit(self, alert: Alert, now: float) -> Admission:
        """Decide whether ``alert`` is sent; an accepted alert counts towards the limit."""
        group = self._groups.get(alert.fingerprint)
        if group is not None and now - group.opened_at < self._window_seconds:
            group.suppressed += 1
            return Admission(AdmissionOutcome.DUPLICATE, alert, group.suppressed)
        if not self.has_room(now):
            if group is not None:  # still a repeat of a sent alert: keep its count
                group.suppressed += 1
            return Admission(
                AdmissionOutcome.RATE_LIMITED, alert, group.suppressed if group else 0
            )
        if group is not None and group.suppressed:
            alert = alert.summary(repeated=group.suppressed, now=now)
        self.record_sent(alert, now)
        return Admission(AdmissionOutcome.ACCEPTED, alert)

    def due_summaries(self, now: float) -> tuple[list[Alert], int]:
        """Close groups whose window ended; return summary alerts to send and how many wait.

        A closed group with counted duplicates yields a summary alert ("... repeated N
        times"), which counts towards the limit and opens a new window. A summary that does
        not fit under the limit waits for a later call; the second value counts those.
        """
        summaries: list[Alert] = []
        waiting = 0
        for key, group in list(self._groups.items()):
            if now - group.opened_at < self._window_seconds:
                continue
            if not group.suppressed:
                del self._groups[key]
            elif self.has_room(now):
                summary = group.template.summary(repeated=group.suppressed, now=now)
                self.record_sent(summary, now)
                summaries.append(summary)
            else:
                waiting += 1
        return summaries, waiting

    def pending_counts(self) -> dict[str, int]:
        """Titles of open groups with duplicates not yet reported, and their counts."""
        return {g.template.title: g.suppressed for g in self._groups.values() if g.suppressed}

    def has_room(self, now: float) -> bool:
        """Whether one more alert fits under the limit at ``now``."""
        while self._sent_at and now - self._sent_at[0] >= self._window_seconds:
            self._sent_at.popleft()
        return len(self._sent_at) < self._limit

    def record_sent(self, alert: Alert, at: float) -> None:
        """Count an alert as sent at ``at`` and open its group (also for re-queued alerts)."""
        self._sent_at.append(at)
        if len(self._sent_at) > 1 and self._sent_at[-2] > at:  # re-queued alerts are older
            self._sent_at = deque(sorted(self._sent_at))
        self._groups[alert.fingerprint] = _Group(opened_at=at, template=alert)
