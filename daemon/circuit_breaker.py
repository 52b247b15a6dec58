"""The daemon's circuit breaker: stop claiming after too many failures in a row.

A broken dependency (a full disk, a database that is down, a bad config push) makes every
job fail the same way; without a breaker the daemon would burn through the whole queue and
turn every job into a failure record. With it, intake pauses for a cool-down, one alert says
so, and the queue waits for the cause to be fixed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CircuitBreaker:
    """Stops claiming after too many failures in a row (a broken dependency burns no queue)."""

    threshold: int
    cooldown_seconds: float
    consecutive_failures: int = 0
    open_until: float = 0.0

    def record(self, success: bool, now: float) -> bool:
        """Count an outcome; returns True when this failure first opened the breaker.

        Every failure at or over the threshold opens it again: after the cooldown, the next
        job is a trial, and if it fails too the daemon pauses again instead of running the
        rest of the queue into the same broken dependency. Only the first opening of a streak
        returns True (one alert per streak).
        """
        if success:
            self.consecutive_failures = 0
            return False
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.threshold:
            self.open_until = now + self.cooldown_seconds
        return self.consecutive_failures == self.threshold

    def is_open(self, now: float) -> bool:
        return now < self.open_until
