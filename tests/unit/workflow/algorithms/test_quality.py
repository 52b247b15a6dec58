"""Search quality: exact optima of enumerable instances, beating random search on real data,
and the behaviour that makes each method what it claims to be."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.workflow.algorithms import (
    ALGORITHMS,
    MaxEvaluations,
    TargetFitness,
    TerminateIfAny,
    algorithm_rng,
    make_algorithm,
)
from daemon.workflow.algorithms.aco import AntColony, rank_heuristic
from daemon.workflow.algorithms.bo import BayesianOptimization
from daemon.workflow.data import load_strategy_csv
from daemon.workflow.fitness import PortfolioProblem

from .conftest import enumerated

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[4]
#: The evaluation budget of config/optimizer_config.json (its time cap is left out so the
#: outcome does not depend on the machine).
DEFAULT_EVALUATIONS = json.loads((REPO / "config" / "optimizer_config.json").read_text())[
    "optimizer"
]["budget"]["max_evaluations"]


@pytest.mark.parametrize("instance", [0, 1])
@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_finds_the_exact_optimum_of_small_instances(name: str, instance: int) -> None:
    # Given 16 strategies, k = 4 (1,820 portfolios) and the optimum found by enumeration
    known = enumerated(instance)
    hits = 0
    for seed in range(10):
        # When the algorithm runs with its defaults and default evaluation budget (stopping
        # early once it holds the optimum, which only shortens successful runs)
        algorithm = make_algorithm(name)
        algorithm.setup(
            known.problem,
            algorithm_rng(seed, name),
            TerminateIfAny(
                MaxEvaluations(DEFAULT_EVALUATIONS), TargetFitness(known.best_fitness - 1e-9)
            ),
        )
        hits += set(algorithm.run().best_x.tolist()) == known.best_x
    # Then it finds the exact optimum on at least 9 of 10 seeds
    assert hits >= 9


@pytest.fixture(scope="module")
def sensex_problem() -> PortfolioProblem:
    data = load_strategy_csv(REPO / "samples" / "sensex_82x500.csv")
    return PortfolioProblem(data.pnl, 10)


#: Reduced budget for the real-data comparison (BO's model updates dominate test time).
SENSEX_EVALUATIONS = 2_000
SENSEX_SEEDS = range(3)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALGORITHMS if n != "RS"])
def test_beats_random_search_on_real_data(sensex_problem: PortfolioProblem, name: str) -> None:
    def best(algorithm_name: str, seed: int) -> float:
        algorithm = make_algorithm(algorithm_name)
        algorithm.setup(
            sensex_problem, algorithm_rng(seed, algorithm_name), MaxEvaluations(SENSEX_EVALUATIONS)
        )
        return algorithm.run().best_fitness

    # Given uniform random search with the same seeds and evaluation budget
    random_best = max(best("RS", seed) for seed in SENSEX_SEEDS)
    # Then every run of the algorithm beats the best random-search run
    assert all(best(name, seed) > random_best for seed in SENSEX_SEEDS)


# -- what makes each method itself ----------------------------------------------------------


def test_aco_beta_weights_the_heuristic(medium_problem: PortfolioProblem) -> None:
    # Given ants after one iteration, with the heuristic off (beta 0) and strong (beta 4)
    heuristic = rank_heuristic(medium_problem.strategy_scores())

    def mean_heuristic_of_proposals(beta: float) -> float:
        ants = make_algorithm("ACO", {"beta": beta, "n_ants": 400})
        ants.setup(medium_problem, algorithm_rng(1, "ACO"), MaxEvaluations(400))
        ants.run()
        assert isinstance(ants, AntColony)
        return float(heuristic[ants.ask()].mean())

    # Then a larger beta draws better single strategies
    assert mean_heuristic_of_proposals(4.0) > mean_heuristic_of_proposals(0.0) + 0.15


def test_sa_accepts_worse_moves_early_and_almost_none_late(
    medium_problem: PortfolioProblem,
) -> None:
    sa = make_algorithm("SA", {"initial_acceptance": 0.3})
    sa.setup(medium_problem, algorithm_rng(1, "SA"), MaxEvaluations(30_000))
    current: list[tuple[float, float]] = []

    def record(report: Any) -> None:
        current.append((report.progress, sa.get_state()["search"]["current"]["fitness"]))

    sa.run(progress=record)
    worse = [
        progress
        for (progress, f), (_, previous) in zip(current[1:], current, strict=False)
        if f < previous
    ]
    early = sum(p < 0.3 for p in worse)
    late = sum(p > 0.7 for p in worse)
    assert early > 20
    assert late < early / 5


def test_hc_moves_to_the_best_neighbour_and_restarts(medium_problem: PortfolioProblem) -> None:
    # Given hill climbing on a neighbourhood small enough to be scored whole each step
    k, n = medium_problem.k, medium_problem.n_strategies
    states: list[dict[str, Any]] = []
    hc = make_algorithm("HC", {"min_neighbours_per_step": k * (n - k)})
    hc.setup(medium_problem, algorithm_rng(1, "HC"), MaxEvaluations(6_000))
    hc.run(on_checkpoint=states.append, checkpoint_interval_seconds=0.0)
    restarts = moves = 0
    for previous, state in itertools.pairwise(states):
        before, after = previous["search"], state["search"]
        if after["restarts"] > before["restarts"]:
            restarts += 1
            continue
        x, moved = before["current"]["x"], after["current"]
        scored = state["evaluations"] - previous["evaluations"]
        if set(moved["x"].tolist()) == set(x.tolist()) or scored < k * (n - k):
            continue  # no move, or the last step cut short by the budget
        moves += 1
        # Then every move is to the best of all k * (n - k) neighbours
        neighbours = np.array(
            [
                [j if i == p else m for i, m in enumerate(x.tolist())]
                for p in range(k)
                for j in range(n)
                if j not in x
            ]
        )
        best = medium_problem.evaluate(neighbours).max()
        assert moved["fitness"] == pytest.approx(best, rel=1e-9)
        assert moved["fitness"] > before["current"]["fitness"]
    assert moves > 5 and restarts >= 2


def test_ga_elitism_never_loses_the_best(medium_problem: PortfolioProblem) -> None:
    states: list[dict[str, Any]] = []
    ga = make_algorithm("GA", {"population_size": 50})
    ga.setup(medium_problem, algorithm_rng(1, "GA"), MaxEvaluations(3_000))
    ga.run(on_checkpoint=states.append, checkpoint_interval_seconds=0.0)
    best = [float(s["search"]["fitness"].max()) for s in states]
    assert best == sorted(best) and best[-1] > best[0]


def test_bo_surrogate_learns_the_fitness() -> None:
    # Given BO after 300 evaluations of a 1,820-portfolio problem
    known = enumerated(0)
    bo = make_algorithm("BO")
    bo.setup(known.problem, algorithm_rng(1, "BO"), MaxEvaluations(300))
    bo.run()
    assert isinstance(bo, BayesianOptimization)
    # Then its posterior mean tracks the true fitness over every portfolio, most unseen
    every = np.array(list(itertools.combinations(range(16), 4)))
    truth = known.problem.evaluate(every)
    assert np.corrcoef(bo.predict_mean(every), truth)[0, 1] > 0.8


def test_bo_never_scores_a_portfolio_twice() -> None:
    known = enumerated(1)
    bo = make_algorithm("BO", {"pairwise_pool_size": 0})
    bo.setup(known.problem, algorithm_rng(2, "BO"), MaxEvaluations(1_500))
    bo.run()
    scored = np.sort(bo.get_state()["search"]["scored"], axis=1)
    assert len({tuple(row) for row in scored.tolist()}) == len(scored) == 1_500
