"""Parameters of the eight searches: the schema of ``optimizer_config.json``'s "algorithms".

One frozen dataclass per algorithm; the defaults here equal the documented defaults in
``config/optimizer_config.json``. :func:`load_algorithms_config` builds them from JSON through
``build_dataclass``, so an unknown key is reported with the closest known key and a wrong type
is refused with the file and key named. Each class names its ``population_fields``: the sizes
the recovery manager may shrink after a memory error (:func:`reduce_population`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from daemon.error_handling.settings import build_dataclass

P = TypeVar("P")

#: Floor of a reduced population or batch size (DE needs a target and three donors).
_MIN_POPULATION = 4


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _open_probability(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value}")


@dataclass(frozen=True)
class GAParams:
    """Genetic algorithm: tournament selection, set crossover, swap mutation, elitism."""

    population_fields: ClassVar[tuple[str, ...]] = ("population_size",)

    population_size: int = 400
    tournament_size: int = 3
    crossover_probability: float = 0.9
    #: Expected members swapped per child (each member swaps with probability mean / k).
    mutation_swaps_mean: float = 1.0
    #: Best individuals copied unchanged into the next generation (at most population - 1).
    n_elite: int = 2

    def __post_init__(self) -> None:
        if self.population_size < 2:
            raise ValueError("population_size must be at least 2")
        if self.tournament_size < 1:
            raise ValueError("tournament_size must be at least 1")
        if self.n_elite < 0:
            raise ValueError("n_elite must be >= 0")
        _probability("crossover_probability", self.crossover_probability)
        if self.mutation_swaps_mean < 0:
            raise ValueError("mutation_swaps_mean must be >= 0")


@dataclass(frozen=True)
class PSOParams:
    """Set-based particle swarm (S-PSO): velocities are membership possibilities."""

    population_fields: ClassVar[tuple[str, ...]] = ("swarm_size",)

    swarm_size: int = 100
    #: Inertia falls linearly from start to end over the budget's progress.
    inertia_start: float = 0.9
    inertia_end: float = 0.4
    #: Attraction to the particle's own best (c1) and to the swarm's best (c2).
    cognitive_weight: float = 2.0
    social_weight: float = 2.0
    #: "Craziness" (Kennedy & Eberhart 1995): expected random strategies added to each
    #: velocity per step, with a uniform possibility; the swarm's only source of strategies
    #: that no particle has held.
    craziness: float = 2.0

    def __post_init__(self) -> None:
        if self.swarm_size < 2:
            raise ValueError("swarm_size must be at least 2")
        _probability("inertia_start", self.inertia_start)
        _probability("inertia_end", self.inertia_end)
        if self.cognitive_weight < 0 or self.social_weight < 0 or self.craziness < 0:
            raise ValueError("cognitive_weight, social_weight and craziness must be >= 0")


@dataclass(frozen=True)
class SAParams:
    """Simulated annealing over single swaps, geometric cooling across the whole budget."""

    population_fields: ClassVar[tuple[str, ...]] = ("max_batch_size",)

    #: Probability of accepting an average worsening move at the start and at the end; the
    #: temperatures follow from moves sampled around the starting portfolio.
    initial_acceptance: float = 0.01
    final_acceptance: float = 1e-8
    #: Random swaps scored at the start to calibrate the temperatures.
    calibration_moves: int = 200
    #: Neighbours scored per step, about 1 / acceptance rate within these bounds: a step
    #: costs far more Python overhead than a neighbour, so small batches waste time, not
    #: insight (moves after the first accepted one are discarded but counted).
    min_batch_size: int = 8
    max_batch_size: int = 256

    def __post_init__(self) -> None:
        _open_probability("initial_acceptance", self.initial_acceptance)
        _open_probability("final_acceptance", self.final_acceptance)
        if self.final_acceptance > self.initial_acceptance:
            raise ValueError("final_acceptance must not exceed initial_acceptance")
        if min(self.calibration_moves, self.min_batch_size, self.max_batch_size) < 1:
            raise ValueError("calibration_moves and the batch sizes must be at least 1")


@dataclass(frozen=True)
class DEParams:
    """Differential evolution (rand/1/bin) with set difference and set crossover."""

    population_fields: ClassVar[tuple[str, ...]] = ("population_size",)

    population_size: int = 100
    #: F: probability that each member of the difference x_r2 - x_r3 is applied.
    differential_weight: float = 0.5
    #: CR: probability that each differing member of the mutant enters the trial.
    crossover_rate: float = 0.9

    def __post_init__(self) -> None:
        if self.population_size < 4:
            raise ValueError("population_size must be at least 4 (target + three donors)")
        _probability("differential_weight", self.differential_weight)
        _probability("crossover_rate", self.crossover_rate)


@dataclass(frozen=True)
class ACOParams:
    """Max-min ant system in the hypercube framework; heuristic from single-strategy quality."""

    population_fields: ClassVar[tuple[str, ...]] = ("n_ants",)

    n_ants: int = 100
    #: Exponents of pheromone (alpha) and heuristic (beta) in the choice weight.
    alpha: float = 1.0
    beta: float = 2.0
    evaporation_rate: float = 0.1
    #: Max-min floor, as the share of choice weight (before alpha/beta) that strategies
    #: outside a fully reinforced portfolio keep: tau_min = s k / ((1 - s)(n - k)), so the
    #: floor scales with the number of strategies and every strategy stays reachable.
    pheromone_min_share: float = 0.1
    #: Share of the deposit from the best-so-far ant (the rest from the iteration best).
    best_so_far_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.n_ants < 1:
            raise ValueError("n_ants must be at least 1")
        if self.alpha < 0 or self.beta < 0:
            raise ValueError("alpha and beta must be >= 0")
        _open_probability("evaporation_rate", self.evaporation_rate)
        _open_probability("pheromone_min_share", self.pheromone_min_share)
        _probability("best_so_far_weight", self.best_so_far_weight)


@dataclass(frozen=True)
class HCParams:
    """Best-improvement hill climbing over swaps, with random restarts."""

    population_fields: ClassVar[tuple[str, ...]] = ("max_neighbours_per_step",)

    #: Bounds of the neighbourhood sample scored per step (it halves after an improvement
    #: and doubles after a failure); the whole neighbourhood when it is smaller.
    min_neighbours_per_step: int = 8
    max_neighbours_per_step: int = 2048
    #: Failed steps in a row at the largest sample before a random restart (with the whole
    #: neighbourhood scored, one failure already proves a local optimum).
    max_failed_steps: int = 3

    def __post_init__(self) -> None:
        if min(self.min_neighbours_per_step, self.max_neighbours_per_step) < 1:
            raise ValueError("neighbours per step must be at least 1")
        if self.max_failed_steps < 1:
            raise ValueError("max_failed_steps must be at least 1")


@dataclass(frozen=True)
class BOParams:
    """Bayesian optimisation (BOCS-style): Bayesian regression, Thompson sampling."""

    population_fields: ClassVar[tuple[str, ...]] = ("batch_size",)

    #: Strategies the surrogate models: the best by single-strategy quality, at least 2k (all
    #: strategies when there are fewer).
    pool_size: int = 512
    #: Pairwise (second-order) terms among this many best pool members.
    pairwise_pool_size: int = 16
    #: Random portfolios from the pool scored before the first model fit.
    n_initial: int = 100
    #: Thompson samples (new portfolios) per iteration.
    batch_size: int = 100
    #: Prior variance of each coefficient relative to the noise variance (w | s2 ~ N(0, s2 v)).
    prior_variance: float = 1.0
    #: Swap passes of the surrogate local search per Thompson sample.
    surrogate_search_steps: int = 10

    def __post_init__(self) -> None:
        if self.pool_size < 2 or self.n_initial < 2 or self.batch_size < 1:
            raise ValueError("pool_size and n_initial must be >= 2, batch_size >= 1")
        if self.pairwise_pool_size < 0 or self.surrogate_search_steps < 0:
            raise ValueError("pairwise_pool_size and surrogate_search_steps must be >= 0")
        _positive("prior_variance", self.prior_variance)


@dataclass(frozen=True)
class RSParams:
    """Uniform random search: the baseline every other algorithm must beat."""

    population_fields: ClassVar[tuple[str, ...]] = ("batch_size",)

    batch_size: int = 1024

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")


AlgorithmParams = (
    GAParams | PSOParams | SAParams | DEParams | ACOParams | HCParams | BOParams | RSParams
)


@dataclass(frozen=True)
class AlgorithmsConfig:
    """The "algorithms" section of ``optimizer_config.json``: one object per algorithm."""

    GA: GAParams = GAParams()
    PSO: PSOParams = PSOParams()
    SA: SAParams = SAParams()
    DE: DEParams = DEParams()
    ACO: ACOParams = ACOParams()
    HC: HCParams = HCParams()
    BO: BOParams = BOParams()
    RS: RSParams = RSParams()

    def params_for(self, name: str) -> AlgorithmParams:
        """Return the parameters of algorithm ``name`` ("GA", "PSO", ...)."""
        value: AlgorithmParams = getattr(self, name)
        return value


def load_algorithms_config(
    raw: Any, *, source: str, path: str = "algorithms", unknown: list[str] | None = None
) -> AlgorithmsConfig:
    """Build the "algorithms" section from parsed JSON.

    Raises:
        ConfigurationError: A wrong type or an invalid value, naming ``source`` and the key.
    """
    return build_dataclass(AlgorithmsConfig, raw, source=source, path=path, unknown=unknown)


def reduce_population(params: P, factor: float) -> P:
    """Return ``params`` with its ``population_fields`` scaled by ``factor``.

    Sizes never drop below ``_MIN_POPULATION`` (nor grow), so every algorithm stays valid.

    Raises:
        ValueError: ``factor`` is not in (0, 1].
    """
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"reduce factor must be in (0, 1], got {factor}")
    fields: tuple[str, ...] = getattr(params, "population_fields", ())
    changes = {}
    for name in fields:
        size = getattr(params, name)
        changes[name] = min(size, max(_MIN_POPULATION, int(size * factor)))
    return dataclasses.replace(params, **changes)  # type: ignore[type-var]
