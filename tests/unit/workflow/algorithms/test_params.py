"""Algorithm parameters: the documented defaults file, validation, the registry, every key
honoured, the population reduction used by recovery, and per-algorithm random streams."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.error_handling.errors import ConfigurationError
from daemon.workflow.algorithms import (
    ALGORITHMS,
    AlgorithmsConfig,
    MaxEvaluations,
    algorithm_rng,
    algorithm_rngs,
    load_algorithms_config,
    make_algorithm,
)
from daemon.workflow.algorithms.params import GAParams, SAParams, reduce_population
from daemon.workflow.fitness import PortfolioProblem

pytestmark = pytest.mark.timeout(60)

CONFIG = Path(__file__).resolve().parents[4] / "config" / "optimizer_config.json"


def config_file() -> dict[str, Any]:
    return json.loads(CONFIG.read_text(encoding="utf-8"))


# -- the documented defaults ----------------------------------------------------------------


def test_config_file_documents_exactly_the_code_defaults() -> None:
    # Given the shipped config file's "algorithms" section
    raw = config_file()["algorithms"]
    unknown: list[str] = []
    loaded = load_algorithms_config(raw, source=str(CONFIG), unknown=unknown)
    # Then it names every parameter of every algorithm, nothing else, at the code defaults
    assert unknown == []
    assert loaded == AlgorithmsConfig()
    for name, cls in ALGORITHMS.items():
        fields = {f.name for f in dataclasses.fields(cls.params_type)}
        assert set(raw[name]) == fields, name


def test_config_file_optimizer_section() -> None:
    optimizer = config_file()["optimizer"]
    assert optimizer["algorithms"] == list(ALGORITHMS)
    assert optimizer["budget"]["max_evaluations"] > 0 and optimizer["budget"]["max_seconds"] > 0
    assert {"seed", "correlation_penalty_weight", "fitness_metric", "checkpoint_interval"} <= set(
        optimizer
    )


def test_unknown_key_is_reported_with_the_closest_known_key() -> None:
    unknown: list[str] = []
    config = load_algorithms_config(
        {"GA": {"populaton_size": 10}}, source="optimizer_config.json", unknown=unknown
    )
    assert GAParams() == config.GA
    assert len(unknown) == 1
    assert "algorithms.GA.populaton_size" in unknown[0]
    assert "algorithms.GA.population_size" in unknown[0]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"GA": {"population_size": "big"}}, "algorithms.GA.population_size"),
        ({"SA": {"initial_acceptance": True}}, "algorithms.SA.initial_acceptance"),
        ({"GA": {"crossover_probability": 1.5}}, "crossover_probability"),
        ({"SA": {"initial_acceptance": 0.001, "final_acceptance": 0.01}}, "final_acceptance"),
        ({"ACO": {"evaporation_rate": 1.0}}, "evaporation_rate"),
        ({"DE": {"population_size": 3}}, "population_size"),
    ],
)
def test_wrong_types_and_values_are_refused_naming_the_key(
    section: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_algorithms_config(section, source="optimizer_config.json")


# -- registry -------------------------------------------------------------------------------


def test_registry_and_factory() -> None:
    assert list(ALGORITHMS) == ["GA", "PSO", "SA", "DE", "ACO", "HC", "BO", "RS"]
    for name, cls in ALGORITHMS.items():
        assert cls.name == name
        assert isinstance(make_algorithm(name), cls)
    assert make_algorithm("GA", {"population_size": 12}).params.population_size == 12
    assert make_algorithm("GA", GAParams(n_elite=0)).params.n_elite == 0
    with pytest.raises(ConfigurationError, match="unknown algorithm"):
        make_algorithm("XX")
    with pytest.raises(ConfigurationError, match="GAParams"):
        make_algorithm("GA", SAParams())
    with pytest.raises(ConfigurationError, match="population_size"):
        make_algorithm("GA", {"population_size": 1.5})


# -- every key honoured ---------------------------------------------------------------------

#: Another valid value for every parameter, with overrides that make it matter within a short
#: run (for example, HC's restart rule only matters when neighbourhoods are sampled).
ALTERNATIVES: dict[tuple[str, str], tuple[Any, dict[str, Any]]] = {
    ("GA", "population_size"): (60, {}),
    ("GA", "tournament_size"): (5, {}),
    ("GA", "crossover_probability"): (0.3, {}),
    ("GA", "mutation_swaps_mean"): (3.0, {}),
    ("GA", "n_elite"): (0, {}),
    ("PSO", "swarm_size"): (30, {}),
    ("PSO", "inertia_start"): (0.5, {}),
    ("PSO", "inertia_end"): (0.9, {}),
    ("PSO", "cognitive_weight"): (0.5, {}),
    ("PSO", "social_weight"): (0.5, {}),
    ("PSO", "craziness"): (0.0, {}),
    ("SA", "initial_acceptance"): (0.3, {}),
    ("SA", "final_acceptance"): (1e-3, {}),
    ("SA", "calibration_moves"): (20, {}),
    ("SA", "min_batch_size"): (1, {}),
    ("SA", "max_batch_size"): (16, {}),
    ("DE", "population_size"): (30, {}),
    ("DE", "differential_weight"): (0.9, {}),
    ("DE", "crossover_rate"): (0.2, {}),
    ("ACO", "n_ants"): (20, {}),
    ("ACO", "alpha"): (2.0, {}),
    ("ACO", "beta"): (0.0, {}),
    ("ACO", "evaporation_rate"): (0.5, {}),
    ("ACO", "pheromone_min_share"): (0.5, {"evaporation_rate": 0.5}),
    ("ACO", "best_so_far_weight"): (1.0, {}),
    ("HC", "min_neighbours_per_step"): (64, {}),
    ("HC", "max_neighbours_per_step"): (32, {}),
    ("HC", "max_failed_steps"): (1, {"max_neighbours_per_step": 32}),
    ("BO", "pool_size"): (30, {}),
    ("BO", "pairwise_pool_size"): (4, {}),
    ("BO", "n_initial"): (20, {}),
    ("BO", "batch_size"): (30, {}),
    ("BO", "prior_variance"): (100.0, {}),
    ("BO", "surrogate_search_steps"): (0, {}),
    ("RS", "batch_size"): (100, {}),
}


def test_the_alternatives_cover_every_parameter() -> None:
    every = {
        (name, f.name)
        for name, cls in ALGORITHMS.items()
        for f in dataclasses.fields(cls.params_type)
    }
    assert set(ALTERNATIVES) == every


def trajectory(problem: PortfolioProblem, name: str, params: dict[str, Any]) -> str:
    algorithm = make_algorithm(name, params)
    algorithm.setup(problem, algorithm_rng(3, name), MaxEvaluations(2_000))
    result = algorithm.run()
    state = algorithm.get_state()["search"]
    arrays = {key: np.asarray(value).tolist() for key, value in state.items() if key != "current"}
    return json.dumps([result.convergence, result.best_x.tolist(), arrays], default=str)


@pytest.mark.parametrize(("name", "key"), sorted(ALTERNATIVES))
def test_every_key_is_honoured(medium_problem: PortfolioProblem, name: str, key: str) -> None:
    # Given the same seed and budget, when one parameter changes, the search changes
    value, base = ALTERNATIVES[name, key]
    assert trajectory(medium_problem, name, base) != trajectory(
        medium_problem, name, {**base, key: value}
    )


# -- recovery ------------------------------------------------------------------------------


def test_reduce_population_scales_only_population_fields() -> None:
    params = GAParams(population_size=100, tournament_size=7)
    assert reduce_population(params, 0.5) == GAParams(population_size=50, tournament_size=7)
    assert reduce_population(GAParams(population_size=6), 0.1).population_size == 4
    assert reduce_population(GAParams(population_size=3), 0.5).population_size == 3
    for factor in (0.0, 1.5):
        with pytest.raises(ValueError):
            reduce_population(params, factor)


# -- random streams ------------------------------------------------------------------------


def test_rngs_are_keyed_by_name_not_position() -> None:
    some = algorithm_rngs(42, ["GA", "SA"])
    more = algorithm_rngs(42, ["RS", "SA", "GA", "BO"])
    assert some["GA"].random() == more["GA"].random()
    assert some["SA"].random() == more["SA"].random()
    assert algorithm_rng(42, "GA").random() != algorithm_rng(42, "SA").random()
    assert algorithm_rng(42, "GA").random() != algorithm_rng(43, "GA").random()
    with pytest.raises(ValueError):
        algorithm_rng(-1, "GA")
