"""The contract every search algorithm keeps (pymoo-style): determinism by seed, exact budgets,
progress reports, resume equal to an uninterrupted run, valid output, typed failures."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import pytest

from daemon.error_handling.errors import (
    AlgorithmError,
    CheckpointLoadError,
    MemoryLimitError,
)
from daemon.workflow.algorithms import (
    ALGORITHMS,
    MaxEvaluations,
    MaxSeconds,
    SearchProgress,
    TargetFitness,
    TerminateIfAny,
    algorithm_rng,
    budget_termination,
    make_algorithm,
)
from daemon.workflow.algorithms.base import AlgorithmResult, SearchAlgorithm
from daemon.workflow.fitness import PortfolioProblem

from .conftest import structured_pnl

pytestmark = pytest.mark.timeout(60)

NAMES = list(ALGORITHMS)
#: Not a multiple of any batch size, so exactness needs the last batch trimmed.
BUDGET = 2_503


def run(
    problem: PortfolioProblem, name: str, seed: int, budget: int = BUDGET, **kwargs: Any
) -> tuple[SearchAlgorithm, AlgorithmResult]:
    algorithm = make_algorithm(name)
    algorithm.setup(problem, algorithm_rng(seed, name), MaxEvaluations(budget))
    return algorithm, algorithm.run(**kwargs)


def same_result(a: AlgorithmResult, b: AlgorithmResult) -> bool:
    return (
        np.array_equal(a.best_x, b.best_x)
        and a.best_fitness == b.best_fitness
        and a.evaluations == b.evaluations
        and a.iterations == b.iterations
        and a.convergence == b.convergence
    )


def encode(value: Any) -> Any:
    """A state as strict-JSON values, arrays as tagged lists; asserts the value types."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype), "shape": value.shape}
    if isinstance(value, dict):
        return {key: encode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [encode(item) for item in value]
    assert value is None or isinstance(value, bool | int | float | str), type(value)
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict) and "__ndarray__" in value:
        return np.array(value["__ndarray__"], dtype=value["dtype"]).reshape(value["shape"])
    if isinstance(value, dict):
        return {key: decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value


def json_roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    """Serialise a state as a checkpoint would (strict JSON) and read it back."""
    return decode(json.loads(json.dumps(encode(state), allow_nan=False)))


def ticking_clock(step: float = 1.0) -> Any:
    """A fake monotonic clock that advances ``step`` seconds on every reading."""
    ticks = itertools.count()
    return lambda: next(ticks) * step


# -- determinism, budget, output ------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_result_and_other_seeds_differ(
    medium_problem: PortfolioProblem, name: str
) -> None:
    # Given two runs with one seed and one with another
    _, first = run(medium_problem, name, seed=1)
    _, again = run(medium_problem, name, seed=1)
    _, other = run(medium_problem, name, seed=2)
    # Then the same seed repeats exactly, and another seed takes another path
    assert same_result(first, again)
    assert first.convergence != other.convergence


@pytest.mark.parametrize("name", NAMES)
def test_budget_is_exact_and_output_valid(medium_problem: PortfolioProblem, name: str) -> None:
    # When an algorithm runs on an evaluation budget that no batch size divides
    algorithm, result = run(medium_problem, name, seed=3)
    # Then it used exactly that budget and returns k distinct valid indices, sorted
    assert result.evaluations == BUDGET == algorithm.evaluations
    assert result.best_x.shape == (medium_problem.k,)
    assert len(set(result.best_x.tolist())) == medium_problem.k
    assert result.best_x.min() >= 0 and result.best_x.max() < medium_problem.n_strategies
    assert np.all(np.diff(result.best_x) > 0)
    # And the reported fitness is the fitness of that portfolio
    rescored = medium_problem.evaluate(result.best_x[np.newaxis, :])[0]
    assert result.best_fitness == pytest.approx(rescored, rel=1e-9, abs=1e-9)
    # And the convergence record is increasing in both coordinates and ends at the best
    evaluations, best = zip(*result.convergence, strict=True)
    assert list(evaluations) == sorted(evaluations) and list(best) == sorted(best)
    assert best[-1] == result.best_fitness


@pytest.mark.parametrize("name", NAMES)
def test_progress_is_monotone_and_ends_at_one(medium_problem: PortfolioProblem, name: str) -> None:
    reports: list[SearchProgress] = []
    _, result = run(medium_problem, name, seed=4, progress=reports.append)
    progress = [r.progress for r in reports]
    assert all(0.0 <= p <= 1.0 for p in progress)
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    assert [r.iteration for r in reports] == list(range(1, result.iterations + 1))
    assert all(r.algorithm == name for r in reports)
    assert reports[-1].evaluations == result.evaluations
    assert reports[-1].best_fitness == result.best_fitness


# -- checkpoints and resume -----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_resume_from_mid_run_state_equals_uninterrupted_run(
    medium_problem: PortfolioProblem, name: str
) -> None:
    # Given an uninterrupted run that checkpointed at every iteration boundary
    states: list[dict[str, Any]] = []
    _, whole = run(
        medium_problem,
        name,
        seed=5,
        on_checkpoint=states.append,
        checkpoint_interval_seconds=0.0,
        clock=ticking_clock(),
    )
    assert len(states) == whole.iterations >= 3
    # When a fresh instance, seeded differently, resumes from a mid-run state read back
    # from strict JSON
    middle = json_roundtrip(states[len(states) // 2])
    resumed = make_algorithm(name)
    resumed.setup(medium_problem, algorithm_rng(999, name), MaxEvaluations(BUDGET))
    resumed.set_state(middle)
    assert resumed.evaluations == middle["evaluations"] < BUDGET
    # Then it ends exactly where the uninterrupted run ended
    assert same_result(resumed.run(), whole)


def scribble(value: Any) -> None:
    """Overwrite every array inside a state, in place."""
    if isinstance(value, np.ndarray):
        value.fill(7)
    elif isinstance(value, dict):
        for item in value.values():
            scribble(item)
    elif isinstance(value, list):
        for item in value:
            scribble(item)


def canonical(state: dict[str, Any]) -> str:
    return json.dumps(encode(state), sort_keys=True, allow_nan=False)


@pytest.mark.parametrize("name", NAMES)
def test_state_is_json_and_arrays_and_a_deep_copy(
    medium_problem: PortfolioProblem, name: str
) -> None:
    algorithm, _ = run(medium_problem, name, seed=6, budget=700)
    state = algorithm.get_state()
    before = canonical(state)  # also asserts the value types
    # Scribbling over the returned state must not reach into the algorithm
    scribble(state)
    assert canonical(algorithm.get_state()) == before
    # ... nor over a state after it was restored
    restored = make_algorithm(name)
    restored.setup(medium_problem, algorithm_rng(6, name), MaxEvaluations(700))
    source = algorithm.get_state()
    restored.set_state(source)
    scribble(source)
    assert canonical(restored.get_state()) == before


def test_checkpoints_follow_the_interval(medium_problem: PortfolioProblem) -> None:
    # Given a clock that ticks one second per reading and a 10-second interval
    states: list[dict[str, Any]] = []
    _, result = run(
        medium_problem,
        "SA",
        seed=1,
        on_checkpoint=states.append,
        checkpoint_interval_seconds=10.0,
        clock=ticking_clock(),
    )
    # Then checkpoints come every few iterations, not every one, and each at a boundary
    assert 0 < len(states) < result.iterations
    iterations = [s["iteration"] for s in states]
    assert iterations == sorted(set(iterations))
    # And without a callback nothing is captured, with a huge interval nothing either
    none: list[dict[str, Any]] = []
    run(medium_problem, "SA", seed=1, on_checkpoint=none.append, checkpoint_interval_seconds=1e9)
    assert none == []


def test_state_of_another_algorithm_or_params_is_refused(medium_problem: PortfolioProblem) -> None:
    ga, _ = run(medium_problem, "GA", seed=1, budget=500)
    de = make_algorithm("DE")
    de.setup(medium_problem, algorithm_rng(1, "DE"), MaxEvaluations(500))
    with pytest.raises(CheckpointLoadError, match="algorithm"):
        de.set_state(ga.get_state())
    smaller = make_algorithm("GA", {"population_size": 50})
    smaller.setup(medium_problem, algorithm_rng(1, "GA"), MaxEvaluations(500))
    with pytest.raises(CheckpointLoadError, match="params"):
        smaller.set_state(ga.get_state())


# -- budgets other than evaluations ---------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_time_cap_stops_the_search(medium_problem: PortfolioProblem, name: str) -> None:
    # Given a clock advancing 10 ms per reading and a 1-second cap (no evaluation budget)
    clock = ticking_clock(0.01)
    algorithm = make_algorithm(name)
    algorithm.setup(medium_problem, algorithm_rng(1, name), MaxSeconds(1.0, clock=clock))
    reports: list[SearchProgress] = []
    result = algorithm.run(progress=reports.append, clock=clock)
    # Then it stops once the cap has passed, reporting full progress
    assert reports[-1].progress == 1.0
    assert result.evaluations > 0


def test_target_fitness_stops_early(medium_problem: PortfolioProblem) -> None:
    _, free = run(medium_problem, "HC", seed=1)
    target = free.convergence[len(free.convergence) // 2][1]
    algorithm = make_algorithm("HC")
    algorithm.setup(
        medium_problem,
        algorithm_rng(1, "HC"),
        TerminateIfAny(MaxEvaluations(BUDGET), TargetFitness(target)),
    )
    stopped = algorithm.run()
    assert stopped.best_fitness >= target
    assert stopped.evaluations < free.evaluations


def test_a_zero_budget_is_an_algorithm_error(medium_problem: PortfolioProblem) -> None:
    algorithm = make_algorithm("GA")
    algorithm.setup(medium_problem, algorithm_rng(1, "GA"), MaxEvaluations(0))
    with pytest.raises(AlgorithmError, match="no evaluation"):
        algorithm.run()


def test_run_before_setup_is_an_algorithm_error() -> None:
    with pytest.raises(AlgorithmError, match="setup"):
        make_algorithm("RS").run()


def test_only_one_portfolio_possible(medium_problem: PortfolioProblem) -> None:
    # k = n: every algorithm must return the one portfolio and stop, not spin
    problem = PortfolioProblem(structured_pnl(1, 5), 5)
    for name in NAMES:
        algorithm = make_algorithm(name)
        algorithm.setup(problem, algorithm_rng(1, name), MaxEvaluations(2_000))
        assert algorithm.run().best_x.tolist() == [0, 1, 2, 3, 4]


# -- failures -------------------------------------------------------------------------------


class FailingProblem(PortfolioProblem):
    """A real problem whose scoring fails from the ``fail_at``-th call on (fault injection)."""

    def __init__(self, *args: Any, error: BaseException, fail_at: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.error, self.fail_at, self.calls = error, fail_at, 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls >= self.fail_at:
            raise self.error

    def evaluate(self, X: Any) -> np.ndarray:
        self._maybe_fail()
        return super().evaluate(X)

    def fitness_from_aggregate(self, agg: Any) -> np.ndarray:
        self._maybe_fail()
        return super().fitness_from_aggregate(agg)


@pytest.mark.parametrize("name", NAMES)
def test_internal_failure_becomes_algorithm_error_naming_the_algorithm(name: str) -> None:
    problem = FailingProblem(
        structured_pnl(1, 30), 5, error=RuntimeError("disk on fire"), fail_at=3
    )
    algorithm = make_algorithm(name)
    algorithm.setup(problem, algorithm_rng(1, name), MaxEvaluations(BUDGET))
    with pytest.raises(AlgorithmError) as caught:
        algorithm.run()
    assert caught.value.context["algorithm"] == name
    assert caught.value.context["evaluations"] >= 0
    assert name in str(caught.value) and "disk on fire" in str(caught.value)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert caught.value.recoverable


def test_out_of_memory_becomes_memory_limit_error() -> None:
    problem = FailingProblem(structured_pnl(1, 30), 5, error=MemoryError(), fail_at=2)
    algorithm = make_algorithm("GA")
    algorithm.setup(problem, algorithm_rng(1, "GA"), MaxEvaluations(BUDGET))
    with pytest.raises(MemoryLimitError) as caught:
        algorithm.run()
    assert caught.value.context["algorithm"] == "GA"


def test_nan_fitness_is_an_algorithm_error() -> None:
    pnl = structured_pnl(1, 30)
    problem = PortfolioProblem(pnl, 5)
    problem.evaluate = lambda X: np.full(np.shape(X)[0], np.nan)  # type: ignore[method-assign]
    algorithm = make_algorithm("RS")
    algorithm.setup(problem, algorithm_rng(1, "RS"), MaxEvaluations(10))
    with pytest.raises(AlgorithmError, match="NaN"):
        algorithm.run()


# -- recovery: smaller populations ----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_reduced_population_still_runs(medium_problem: PortfolioProblem, name: str) -> None:
    algorithm = make_algorithm(name)
    smaller = algorithm.with_reduced_population(0.5)
    assert type(smaller) is type(algorithm)
    for field in type(algorithm.params).population_fields:
        before, after = getattr(algorithm.params, field), getattr(smaller.params, field)
        assert after == max(4, before // 2)
    smaller.setup(
        medium_problem,
        algorithm_rng(1, name),
        budget_termination(max_evaluations=600, max_seconds=None),
    )
    assert smaller.run().evaluations == 600


# -- terminations ---------------------------------------------------------------------------


def test_max_evaluations_progress_and_left() -> None:
    limit = MaxEvaluations(200)
    assert limit.progress(evaluations=50, best_fitness=None) == 0.25
    assert limit.evaluations_left(evaluations=150) == 50
    assert limit.evaluations_left(evaluations=250) == 0
    assert limit.has_terminated(evaluations=200, best_fitness=1.0)
    assert MaxEvaluations(0).has_terminated(evaluations=0, best_fitness=None)
    with pytest.raises(ValueError):
        MaxEvaluations(-1)


def test_max_seconds_counts_time_before_a_checkpoint() -> None:
    now = [100.0]
    limit = MaxSeconds(10.0, clock=lambda: now[0])
    limit.start(elapsed_seconds=4.0)  # resumed after 4 s of earlier work
    assert limit.progress(evaluations=0, best_fitness=None) == pytest.approx(0.4)
    now[0] += 5.0
    assert limit.elapsed_seconds == pytest.approx(9.0)
    assert not limit.has_terminated(evaluations=0, best_fitness=None)
    now[0] += 1.0
    assert limit.has_terminated(evaluations=0, best_fitness=None)
    assert limit.evaluations_left(evaluations=0) is None


def test_target_and_any_composition() -> None:
    target = TargetFitness(2.0)
    assert target.progress(evaluations=0, best_fitness=None) == 0.0
    assert target.progress(evaluations=0, best_fitness=1.9) == 0.0
    assert target.progress(evaluations=0, best_fitness=2.0) == 1.0
    both = TerminateIfAny(MaxEvaluations(100), MaxEvaluations(40), target)
    assert both.progress(evaluations=20, best_fitness=0.0) == 0.5
    assert both.evaluations_left(evaluations=20) == 20
    assert both.has_terminated(evaluations=0, best_fitness=3.0)
    with pytest.raises(ValueError):
        TerminateIfAny()


def test_budget_termination_shapes() -> None:
    assert isinstance(budget_termination(max_evaluations=5, max_seconds=None), MaxEvaluations)
    assert isinstance(budget_termination(max_evaluations=None, max_seconds=1.0), MaxSeconds)
    assert isinstance(budget_termination(max_evaluations=5, max_seconds=1.0), TerminateIfAny)
    with pytest.raises(ValueError):
        budget_termination(max_evaluations=None, max_seconds=None)
