"""The eight searches over k-subsets of strategies, by registry name.

``ALGORITHMS`` maps "GA", "PSO", "SA", "DE", "ACO", "HC", "BO", "RS" to their classes;
:func:`make_algorithm` builds one from its parameter dataclass or a JSON-like mapping. Each
algorithm gets its own generator from :func:`algorithm_rng` (keyed by name) and a budget from
:mod:`.termination`; see :mod:`.base` for the shared loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.error_handling.errors import ConfigurationError
from daemon.error_handling.settings import build_dataclass

from .aco import AntColony
from .base import (
    AlgorithmResult,
    SearchAlgorithm,
    SearchProgress,
    algorithm_rng,
    algorithm_rngs,
)
from .bo import BayesianOptimization
from .de import DifferentialEvolution
from .ga import GeneticAlgorithm
from .hc import HillClimbing
from .params import AlgorithmParams, AlgorithmsConfig, load_algorithms_config
from .pso import ParticleSwarm
from .rs import RandomSearch
from .sa import SimulatedAnnealing
from .termination import (
    MaxEvaluations,
    MaxSeconds,
    TargetFitness,
    TerminateIfAny,
    Termination,
    budget_termination,
)

#: Registry of algorithm classes by the names used in config, results and heartbeats.
ALGORITHMS: dict[str, type[SearchAlgorithm]] = {
    cls.name: cls
    for cls in (
        GeneticAlgorithm,
        ParticleSwarm,
        SimulatedAnnealing,
        DifferentialEvolution,
        AntColony,
        HillClimbing,
        BayesianOptimization,
        RandomSearch,
    )
}


def make_algorithm(
    name: str, params: AlgorithmParams | Mapping[str, Any] | None = None
) -> SearchAlgorithm:
    """Return a new algorithm ``name`` with ``params`` (its dataclass, a mapping, or defaults).

    A mapping goes through ``build_dataclass``: unknown keys are reported with the closest
    known key and wrong types are refused.

    Raises:
        ConfigurationError: Unknown algorithm name, or invalid parameters.
    """
    cls = ALGORITHMS.get(name)
    if cls is None:
        raise ConfigurationError(
            f"unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}",
            context={"algorithm": name},
        )
    built: AlgorithmParams | None
    if isinstance(params, Mapping):
        built = build_dataclass(
            cls.params_type, dict(params), source="algorithm parameters", path=f"algorithms.{name}"
        )
    else:
        built = params
    try:
        return cls(built)
    except TypeError as exc:
        raise ConfigurationError(str(exc), context={"algorithm": name}) from exc


__all__ = [
    "ALGORITHMS",
    "AlgorithmResult",
    "AlgorithmsConfig",
    "MaxEvaluations",
    "MaxSeconds",
    "SearchAlgorithm",
    "SearchProgress",
    "TargetFitness",
    "TerminateIfAny",
    "Termination",
    "algorithm_rng",
    "algorithm_rngs",
    "budget_termination",
    "load_algorithms_config",
    "make_algorithm",
]
