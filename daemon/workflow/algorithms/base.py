"""The one loop every search algorithm shares (pymoo ``Algorithm``, ask/evaluate/tell).

:class:`SearchAlgorithm` owns what must not differ between algorithms: the central evaluation
counter (every scored portfolio counts once, swap neighbours included), exact evaluation budgets
(the last batch is trimmed), best-so-far tracking, progress reports for heartbeats, periodic
checkpoints of the whole search state, and turning internal failures into ``AlgorithmError``.
Subclasses implement ``_initialize()``, ``_ask()`` and ``_tell(X, F)``; local searches derive
from ``local_search.LocalSearch``, override ``_step()`` and score swap neighbours in O(days)
each, still counted here.

Reproducibility: an algorithm draws only from the generator given to ``setup``; that
generator's state is part of the checkpoint, so a run resumed from a state taken at an iteration
boundary ends exactly like the uninterrupted run. Only a time budget (``MaxSeconds``) makes the
outcome depend on the machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

import numpy as np

from daemon.error_handling.errors import (
    AlgorithmError,
    CheckpointLoadError,
    HeavyOptimizerError,
    MemoryLimitError,
)

from .contract import (
    AlgorithmResult,
    CheckpointCallback,
    FloatArray,
    IntArray,
    Problem,
    ProgressCallback,
    SearchProgress,
)
from .params import AlgorithmParams, reduce_population
from .termination import Termination

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Version of the state dict layout; bumped when a field changes meaning.
STATE_VERSION = 1


def algorithm_rng(seed: int, name: str) -> np.random.Generator:
    """Return the generator of algorithm ``name`` in a job seeded with ``seed``.

    Keyed by the name through a stable hash (not by position in a list), so adding, skipping or
    reordering algorithms never changes another algorithm's random stream.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return np.random.default_rng(
        np.random.SeedSequence([seed, int.from_bytes(digest[:8], "little")])
    )


def algorithm_rngs(seed: int, names: Iterable[str]) -> dict[str, np.random.Generator]:
    """Return one independent generator per algorithm name (see :func:`algorithm_rng`)."""
    return {name: algorithm_rng(seed, name) for name in names}


def copy_state(value: Any) -> Any:
    """Deep-copy a state value made of dicts, lists, numpy arrays and JSON scalars."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {key: copy_state(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [copy_state(item) for item in value]
    return value


class SearchAlgorithm(ABC):
    """Base of the eight searches over k-subsets of strategies.

    Typical use::

        algo = make_algorithm("GA", params)
        algo.setup(problem, algorithm_rng(seed, "GA"), termination)
        result = algo.run(progress=heartbeat, on_checkpoint=save)

    Resume: ``setup`` a fresh instance the same way, ``set_state(saved)``, then ``run``.

    Args:
        params: This algorithm's parameter dataclass; defaults to its documented defaults.
    """

    #: Registry name ("GA", "PSO", ...): used in results, heartbeats, errors and rng keys.
    name: ClassVar[str]
    #: The frozen dataclass holding this algorithm's parameters.
    params_type: ClassVar[type[Any]]

    def __init__(self, params: AlgorithmParams | None = None) -> None:
        if params is None:
            params = self.params_type()
        if not isinstance(params, self.params_type):
            raise TypeError(f"{self.name} needs {self.params_type.__name__}, got {type(params)}")
        self.params: Any = params
        self._problem: Problem | None = None
        self._rng: np.random.Generator | None = None
        self._termination: Termination | None = None
        self._reset()

    def _reset(self) -> None:
        self._initialized = False
        self._iteration = 0
        self._evaluations = 0
        self._elapsed_before_seconds = 0.0
        self._run_clock: Callable[[], float] | None = None
        self._run_started = 0.0
        self._best_x: IntArray | None = None
        self._best_fitness: float | None = None
        self._convergence: list[tuple[int, float]] = []

    # -- public API ----------------------------------------------------------------------

    def setup(self, problem: Problem, rng: np.random.Generator, termination: Termination) -> None:
        """Bind the problem, this algorithm's own generator and its budget; clears any state."""
        if not 1 <= problem.k <= problem.n_strategies:
            raise AlgorithmError(
                f"{self.name}: portfolio size {problem.k} is not in 1..{problem.n_strategies}",
                context={"algorithm": self.name},
            )
        self._problem = problem
        self._rng = rng
        self._termination = termination
        self._reset()
        self._prepare()

    def run(
        self,
        *,
        progress: ProgressCallback | None = None,
        on_checkpoint: CheckpointCallback | None = None,
        checkpoint_interval_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> AlgorithmResult:
        """Search until the termination says stop, and return the best portfolio found.

        Args:
            progress: Called after every iteration with a :class:`SearchProgress`; keep it cheap.
            on_checkpoint: Called with :meth:`get_state` at an iteration boundary whenever
                ``checkpoint_interval_seconds`` have passed since the last call (or the start).
            checkpoint_interval_seconds: Seconds between checkpoints.
            clock: Monotonic seconds for elapsed time and the checkpoint interval.

        Raises:
            AlgorithmError: The search failed; ``context`` names the algorithm and iteration.
            MemoryLimitError: The search ran out of memory (smaller populations may fit).
        """
        termination = self._require(self._termination)
        self._run_clock, self._run_started = clock, clock()
        termination.start(elapsed_seconds=self._elapsed_before_seconds)
        last_checkpoint = self._run_started
        logger.debug("%s: search starts at iteration %d", self.name, self._iteration)
        try:
            while True:
                before = self._evaluations
                if not self._initialized:
                    if self.evaluations_left == 0:
                        break
                    self._initialize()
                    self._initialized = True
                elif self._has_terminated():
                    break
                else:
                    self._step()
                    if self._evaluations == before:
                        logger.debug("%s: a step scored nothing; the search cannot move", self.name)
                        break
                self._iteration += 1
                if progress is not None:
                    progress(self.progress_report())
                if (
                    on_checkpoint is not None
                    and clock() - last_checkpoint >= checkpoint_interval_seconds
                ):
                    on_checkpoint(self.get_state())
                    last_checkpoint = clock()
        except HeavyOptimizerError as exc:
            exc.context.setdefault("algorithm", self.name)
            raise
        except MemoryError as exc:
            raise MemoryLimitError(
                f"{self.name}: out of memory at iteration {self._iteration}",
                context=self._error_context(),
            ) from exc
        except Exception as exc:
            raise AlgorithmError(
                f"{self.name} failed at iteration {self._iteration}: {type(exc).__name__}: {exc}",
                context=self._error_context(),
            ) from exc
        finally:
            self._elapsed_before_seconds = self.elapsed_seconds
            self._run_clock = None
        return self.result()

    def result(self) -> AlgorithmResult:
        """Return the best portfolio so far.

        Raises:
            AlgorithmError: Nothing has been evaluated yet (a zero budget).
        """
        if self._best_x is None or self._best_fitness is None:
            raise AlgorithmError(
                f"{self.name}: the budget allowed no evaluation", context=self._error_context()
            )
        return AlgorithmResult(
            algorithm=self.name,
            best_x=np.sort(self._best_x),
            best_fitness=self._best_fitness,
            evaluations=self._evaluations,
            iterations=self._iteration,
            elapsed_seconds=self.elapsed_seconds,
            convergence=tuple(self._convergence),
        )

    def ask(self) -> IntArray:
        """Return the next batch of portfolios to score (population algorithms)."""
        return np.asarray(self._ask(), dtype=np.intp)

    def tell(self, X: IntArray, F: FloatArray) -> None:
        """Feed back the fitness ``F`` of the scored rows ``X`` (from :meth:`evaluate`)."""
        self._tell(np.asarray(X, dtype=np.intp), np.asarray(F, dtype=np.float64))

    def evaluate(self, X: IntArray) -> FloatArray:
        """Score portfolios ``X (n, k)``, counting each; trims ``X`` to the budget left.

        Returns:
            Fitness of the first ``len(F)`` rows of ``X``; fewer than ``n`` only when the
            evaluation budget ends inside this batch.
        """
        rows = np.asarray(X, dtype=np.intp)[: self.evaluations_left]
        if rows.shape[0] == 0:
            return np.empty(0)
        F = np.asarray(self.problem.evaluate(rows), dtype=np.float64)
        self._record(F, lambda i: rows[i])
        return F

    # -- state ---------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Return the whole search state: JSON values and numpy arrays only (a deep copy)."""
        return {
            "version": STATE_VERSION,
            "algorithm": self.name,
            "params": dataclasses.asdict(self.params),
            "initialized": self._initialized,
            "iteration": self._iteration,
            "evaluations": self._evaluations,
            "elapsed_seconds": self.elapsed_seconds,
            "best_x": None if self._best_x is None else self._best_x.copy(),
            "best_fitness": self._best_fitness,
            "convergence_evaluations": np.array([e for e, _ in self._convergence], dtype=np.int64),
            "convergence_fitness": np.array([f for _, f in self._convergence], dtype=np.float64),
            "rng": copy_state(self.rng.bit_generator.state),
            "search": copy_state(self._get_state()) if self._initialized else {},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`get_state` after ``setup`` with the same problem.

        Raises:
            CheckpointLoadError: The state belongs to another algorithm, other parameters or
                another layout version; the caller should start this algorithm afresh.
        """
        self._require(self._problem)
        expected = {
            "version": STATE_VERSION,
            "algorithm": self.name,
            "params": dataclasses.asdict(self.params),
        }
        for key, value in expected.items():
            if state.get(key) != value:
                raise CheckpointLoadError(
                    f"{self.name}: checkpoint {key} {state.get(key)!r} does not match {value!r}",
                    context={"algorithm": self.name, "key": key},
                )
        self._initialized = bool(state["initialized"])
        self._iteration = int(state["iteration"])
        self._evaluations = int(state["evaluations"])
        self._elapsed_before_seconds = float(state["elapsed_seconds"])
        best_x = state["best_x"]
        self._best_x = None if best_x is None else np.array(best_x, dtype=np.intp)
        best_f = state["best_fitness"]
        self._best_fitness = None if best_f is None else float(best_f)
        self._convergence = [
            (int(e), float(f))
            for e, f in zip(
                state["convergence_evaluations"], state["convergence_fitness"], strict=True
            )
        ]
        self.rng.bit_generator.state = copy_state(state["rng"])
        if self._initialized:
            self._set_state(copy_state(state["search"]))

    def with_reduced_population(self, factor: float) -> SearchAlgorithm:
        """Return a fresh instance whose population/batch sizes are scaled by ``factor``.

        Used by the recovery manager after a memory error (``AdjustParameters``); the new
        instance must be set up again and starts from scratch.
        """
        return type(self)(reduce_population(self.params, factor))

    # -- read-only views -----------------------------------------------------------------

    @property
    def problem(self) -> Problem:
        return self._require(self._problem)

    @property
    def rng(self) -> np.random.Generator:
        return self._require(self._rng)

    @property
    def evaluations(self) -> int:
        return self._evaluations

    @property
    def best_fitness(self) -> float | None:
        return self._best_fitness

    @property
    def best_x(self) -> IntArray | None:
        """The best portfolio so far (unsorted; do not modify)."""
        return self._best_x

    @property
    def evaluations_left(self) -> int:
        """Evaluations the budget still allows (a very large number if it has no such limit)."""
        left = self._require(self._termination).evaluations_left(evaluations=self._evaluations)
        return np.iinfo(np.int64).max if left is None else left

    @property
    def search_progress(self) -> float:
        """The termination's progress in [0, 1]; schedules (temperature, inertia) follow it."""
        value = self._require(self._termination).progress(
            evaluations=self._evaluations, best_fitness=self._best_fitness
        )
        return min(1.0, max(0.0, value))

    @property
    def elapsed_seconds(self) -> float:
        """Seconds spent searching, including time before the checkpoint this run resumed."""
        if self._run_clock is None:
            return self._elapsed_before_seconds
        return self._elapsed_before_seconds + self._run_clock() - self._run_started

    def progress_report(self) -> SearchProgress:
        """Return the current :class:`SearchProgress`."""
        return SearchProgress(
            algorithm=self.name,
            iteration=self._iteration,
            evaluations=self._evaluations,
            best_fitness=self._best_fitness,
            progress=self.search_progress,
            elapsed_seconds=self.elapsed_seconds,
        )

    # -- hooks for subclasses --------------------------------------------------------------

    def _prepare(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Derive constants from the problem (not state: recomputed after a resume)."""

    @abstractmethod
    def _initialize(self) -> None:
        """Create and score the starting state (the first iteration)."""

    def _step(self) -> None:
        """One iteration; the default is ask, evaluate, tell."""
        X = self.ask()
        F = self.evaluate(X)
        self.tell(X[: F.shape[0]], F)

    def _ask(self) -> IntArray:
        raise NotImplementedError(f"{self.name} overrides _step and has no ask/tell")

    def _tell(self, X: IntArray, F: FloatArray) -> None:
        raise NotImplementedError(f"{self.name} overrides _step and has no ask/tell")

    @abstractmethod
    def _get_state(self) -> dict[str, Any]:
        """Return the subclass's search state (JSON values and numpy arrays)."""

    @abstractmethod
    def _set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`_get_state` returned."""

    # -- internals -------------------------------------------------------------------------

    def _record(self, F: FloatArray, row: Callable[[int], IntArray]) -> None:
        if np.isnan(F).any():
            raise AlgorithmError(f"{self.name}: the problem returned NaN fitness")
        self._evaluations += F.shape[0]
        i = int(np.argmax(F))
        if self._best_fitness is None or F[i] > self._best_fitness:
            self._best_fitness = float(F[i])
            self._best_x = np.array(row(i), dtype=np.intp)
            self._convergence.append((self._evaluations, self._best_fitness))

    def _has_terminated(self) -> bool:
        return self._require(self._termination).has_terminated(
            evaluations=self._evaluations, best_fitness=self._best_fitness
        )

    def _error_context(self) -> dict[str, Any]:
        return {
            "algorithm": self.name,
            "iteration": self._iteration,
            "evaluations": self._evaluations,
        }

    def _require(self, value: T | None) -> T:
        if value is None:
            raise AlgorithmError(
                f"{self.name}: call setup() first", context={"algorithm": self.name}
            )
        return value
