"""Budgets as objects: when a search stops, and how far along it is.

Every termination reports ``progress`` in [0, 1]; the search stops at 1. That number is what the
heartbeat shows and what annealing schedules follow, so a schedule spans the whole budget
whichever limit (evaluations or seconds) binds first. Compose limits with
:class:`TerminateIfAny` (pymoo ``TerminateIfAny``, tenacity ``stop_any``).

Evaluation budgets are exact: :meth:`Termination.evaluations_left` lets the search trim its last
batch, so a run never evaluates more than ``max_evaluations`` portfolios.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable


class Termination(ABC):
    """A stopping rule with a progress measure."""

    def start(self, *, elapsed_seconds: float = 0.0) -> None:  # noqa: B027 - optional hook
        """Begin (or resume) timing; ``elapsed_seconds`` were spent before a checkpoint."""

    @abstractmethod
    def progress(self, *, evaluations: int, best_fitness: float | None) -> float:
        """Return how far the search is towards this limit, clipped to [0, 1]."""

    def evaluations_left(self, *, evaluations: int) -> int | None:
        """Return how many more evaluations this limit allows, or ``None`` if it does not count."""
        return None

    def has_terminated(self, *, evaluations: int, best_fitness: float | None) -> bool:
        """Return whether the search must stop now."""
        return self.progress(evaluations=evaluations, best_fitness=best_fitness) >= 1.0


class MaxEvaluations(Termination):
    """Stop after ``max_evaluations`` fitness evaluations (one per portfolio scored)."""

    def __init__(self, max_evaluations: int) -> None:
        if max_evaluations < 0:
            raise ValueError(f"max_evaluations must be >= 0, got {max_evaluations}")
        self.max_evaluations = int(max_evaluations)

    def progress(self, *, evaluations: int, best_fitness: float | None) -> float:
        if self.max_evaluations == 0:
            return 1.0
        return min(1.0, evaluations / self.max_evaluations)

    def evaluations_left(self, *, evaluations: int) -> int | None:
        return max(0, self.max_evaluations - evaluations)


class MaxSeconds(Termination):
    """Stop after ``max_seconds`` of wall time on a monotonic clock.

    Args:
        max_seconds: The time cap; time spent before a checkpoint counts towards it.
        clock: Monotonic seconds; injectable so tests control time.
    """

    def __init__(self, max_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not max_seconds >= 0.0:
            raise ValueError(f"max_seconds must be >= 0, got {max_seconds}")
        self.max_seconds = float(max_seconds)
        self._clock = clock
        self._started_at: float | None = None

    def start(self, *, elapsed_seconds: float = 0.0) -> None:
        self._started_at = self._clock() - elapsed_seconds

    @property
    def elapsed_seconds(self) -> float:
        """Seconds since :meth:`start` (including time carried over from a checkpoint)."""
        if self._started_at is None:
            return 0.0
        return self._clock() - self._started_at

    def progress(self, *, evaluations: int, best_fitness: float | None) -> float:
        if self.max_seconds == 0.0:
            return 1.0
        return min(1.0, self.elapsed_seconds / self.max_seconds)


class TargetFitness(Termination):
    """Stop as soon as the best fitness reaches ``target`` (progress jumps from 0 to 1)."""

    def __init__(self, target: float) -> None:
        self.target = float(target)

    def progress(self, *, evaluations: int, best_fitness: float | None) -> float:
        return 1.0 if best_fitness is not None and best_fitness >= self.target else 0.0


class TerminateIfAny(Termination):
    """Stop when any part stops; progress is the furthest part's progress."""

    def __init__(self, *parts: Termination) -> None:
        if not parts:
            raise ValueError("TerminateIfAny needs at least one termination")
        self.parts = parts

    def start(self, *, elapsed_seconds: float = 0.0) -> None:
        for part in self.parts:
            part.start(elapsed_seconds=elapsed_seconds)

    def progress(self, *, evaluations: int, best_fitness: float | None) -> float:
        return max(
            p.progress(evaluations=evaluations, best_fitness=best_fitness) for p in self.parts
        )

    def evaluations_left(self, *, evaluations: int) -> int | None:
        limits = [
            left
            for part in self.parts
            if (left := part.evaluations_left(evaluations=evaluations)) is not None
        ]
        return min(limits) if limits else None


def budget_termination(
    *,
    max_evaluations: int | None,
    max_seconds: float | None,
    clock: Callable[[], float] = time.monotonic,
) -> Termination:
    """Return the usual per-algorithm budget: an evaluation budget and/or a time cap.

    Raises:
        ValueError: Both limits are ``None`` (a search without any limit never ends).
    """
    parts: list[Termination] = []
    if max_evaluations is not None:
        parts.append(MaxEvaluations(max_evaluations))
    if max_seconds is not None:
        parts.append(MaxSeconds(max_seconds, clock=clock))
    if not parts:
        raise ValueError("a budget needs max_evaluations or max_seconds")
    return parts[0] if len(parts) == 1 else TerminateIfAny(*parts)
