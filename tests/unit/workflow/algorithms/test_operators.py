"""Operators on fixed-size index sets: size and distinctness invariants (property-based),
agreement with brute force, and the sampling distributions they promise."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.workflow.algorithms.aco import rank_heuristic
from daemon.workflow.algorithms.bo import best_surrogate_swaps
from daemon.workflow.algorithms.de import binomial_set_crossover, set_difference_mutation
from daemon.workflow.algorithms.operators import (
    contains,
    duplicate_mask,
    fill_holes,
    insert_members,
    repair,
    sample_outside,
    sample_subsets,
    sample_weighted_subsets,
    set_crossover,
    shared_members,
    swap_mutate,
)
from daemon.workflow.algorithms.pso import merge_possibilities

pytestmark = pytest.mark.timeout(60)
PROPERTY = settings(max_examples=60, deadline=None)


@st.composite
def populations(draw: st.DrawFn, min_k: int = 1) -> tuple[np.random.Generator, int, np.ndarray]:
    """A generator, a strategy count and a population of k-subsets of it."""
    n_strategies = draw(st.integers(min_value=max(2, min_k), max_value=40))
    k = draw(st.integers(min_value=min_k, max_value=n_strategies))
    rows = draw(st.integers(min_value=1, max_value=6))
    rng = np.random.default_rng(draw(st.integers(min_value=0, max_value=2**32 - 1)))
    X = np.stack([rng.permutation(n_strategies)[:k] for _ in range(rows)])
    return rng, n_strategies, X


def assert_valid(X: np.ndarray, n_strategies: int, k: int) -> None:
    assert X.ndim == 2 and X.shape[1] == k
    assert X.min(initial=0) >= 0 and X.max(initial=0) < n_strategies
    for row in X:
        assert len(set(row.tolist())) == k


# -- membership helpers ---------------------------------------------------------------------


@PROPERTY
@given(st.data())
def test_duplicate_mask_and_contains_match_brute_force(data: st.DataObject) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n, kx, ky = (
        data.draw(st.integers(1, 5)),
        data.draw(st.integers(1, 8)),
        data.draw(st.integers(0, 8)),
    )
    X, Y = rng.integers(0, 6, (n, kx)), rng.integers(0, 6, (n, ky))
    yielding = rng.random((n, kx)) < 0.5
    for r in range(n):
        row = X[r].tolist()
        assert duplicate_mask(X)[r].tolist() == [v in row[:i] for i, v in enumerate(row)]
        assert contains(X, Y)[r].tolist() == [v in Y[r].tolist() for v in row]
        # With yielding entries, each value keeps exactly one unmarked occurrence, and a
        # yielding one only when no other entry has that value.
        marked = duplicate_mask(X, yielding=yielding)[r]
        for value in set(row):
            where = [i for i, v in enumerate(row) if v == value]
            kept = [i for i in where if not marked[i]]
            assert len(kept) == 1
            if any(not yielding[r, i] for i in where):
                assert not yielding[r, kept[0]]


@PROPERTY
@given(populations(), st.data())
def test_shared_members_matches_contains(population: tuple, data: st.DataObject) -> None:
    rng, n_strategies, A = population
    B = np.stack([rng.permutation(n_strategies)[: A.shape[1]] for _ in range(A.shape[0])])
    a_in_b, b_in_a = shared_members(A, B)
    assert np.array_equal(a_in_b, contains(A, B))
    assert np.array_equal(b_in_a, contains(B, A))


# -- sampling -------------------------------------------------------------------------------


@PROPERTY
@given(st.integers(1, 60), st.data())
def test_sample_subsets_are_valid(n_strategies: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, n_strategies))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    assert_valid(sample_subsets(rng, n_strategies, k, 7), n_strategies, k)


@pytest.mark.parametrize(("n_strategies", "k"), [(8, 3), (8, 5)])  # rejection and dense paths
def test_sample_subsets_are_uniform(n_strategies: int, k: int) -> None:
    rng = np.random.default_rng(0)
    counts = Counter(tuple(sorted(row)) for row in sample_subsets(rng, n_strategies, k, 30_000))
    expected = 30_000 / len(list(itertools.combinations(range(n_strategies), k)))
    assert len(counts) == 56
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 100  # 55 degrees of freedom: the 0.999 quantile is about 93


def exact_successive(weights: list[float], k: int) -> dict[tuple[int, ...], float]:
    """Probability of each subset under one-at-a-time sampling proportional to weights."""
    probs: dict[tuple[int, ...], float] = {}
    for order in itertools.permutations(range(len(weights)), k):
        p, left = 1.0, sum(weights)
        for i in order:
            p *= weights[i] / left
            left -= weights[i]
        key = tuple(sorted(order))
        probs[key] = probs.get(key, 0.0) + p
    return probs


@pytest.mark.parametrize(
    ("weights", "k"),
    [([1.0, 2.0, 3.0, 4.0], 2), ([200.0, 1.0, 1.0, 1.0, 2.0], 3)],  # the second needs Gumbel
)
def test_weighted_subsets_follow_successive_sampling(weights: list[float], k: int) -> None:
    rng = np.random.default_rng(1)
    draws = sample_weighted_subsets(rng, np.array(weights), k, 40_000)
    assert_valid(draws, len(weights), k)
    counts = Counter(tuple(sorted(row)) for row in draws.tolist())
    exact = exact_successive(weights, k)
    chi2 = sum((counts[s] - 40_000 * p) ** 2 / (40_000 * p) for s, p in exact.items())
    assert chi2 < 3 * len(exact) + 30


def test_weighted_subsets_refuse_bad_weights() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        sample_weighted_subsets(rng, np.array([1.0, 0.0, 1.0]), 2, 3)
    with pytest.raises(ValueError):
        sample_weighted_subsets(rng, np.array([1.0, 1.0]), 3, 3)


@PROPERTY
@given(populations())
def test_sample_outside_avoids_the_portfolio(population: tuple) -> None:
    rng, n_strategies, X = population
    inside = np.zeros(n_strategies, dtype=bool)
    inside[X[0]] = True
    draws = sample_outside(rng, inside, 50)
    assert draws.size == (0 if inside.all() else 50)
    assert not inside[draws].any()


# -- repair and mutation --------------------------------------------------------------------


@PROPERTY
@given(populations(), st.data())
def test_fill_holes_changes_exactly_the_holes(population: tuple, data: st.DataObject) -> None:
    rng, n_strategies, X = population
    k = X.shape[1]
    holes = rng.random(X.shape) < 0.5
    holes &= np.cumsum(holes, axis=1) <= n_strategies - k  # never more holes than room
    out = fill_holes(rng, X, holes, n_strategies)
    assert_valid(out, n_strategies, k)
    assert np.array_equal(out[~holes], X[~holes])
    assert not contains(np.where(holes, out, -1), X).any()


@PROPERTY
@given(st.integers(2, 40), st.data())
def test_repair_keeps_first_occurrences(n_strategies: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, n_strategies))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    X = rng.integers(0, n_strategies, (5, k))
    out = repair(rng, X, n_strategies)
    assert_valid(out, n_strategies, k)
    first = ~duplicate_mask(X)
    assert np.array_equal(out[first], X[first])


@PROPERTY
@given(populations())
def test_swap_mutate_swaps_the_requested_number(population: tuple) -> None:
    rng, n_strategies, X = population
    n, k = X.shape
    swaps = rng.integers(0, k + 2, n)
    out = swap_mutate(rng, X, n_strategies, swaps)
    assert_valid(out, n_strategies, k)
    for row, before, want in zip(out, X, swaps, strict=True):
        assert len(set(row.tolist()) - set(before.tolist())) == min(want, k, n_strategies - k)


@PROPERTY
@given(populations())
def test_set_crossover_keeps_shared_members_and_stays_in_the_union(population: tuple) -> None:
    rng, n_strategies, A = population
    B = np.stack([rng.permutation(n_strategies)[: A.shape[1]] for _ in range(A.shape[0])])
    child = set_crossover(rng, A, B)
    assert_valid(child, n_strategies, A.shape[1])
    for c, a, b in zip(child.tolist(), A.tolist(), B.tolist(), strict=True):
        assert set(a) & set(b) <= set(c) <= set(a) | set(b)


@PROPERTY
@given(populations(), st.data())
def test_insert_members_swaps_in_valid_entrants_for_lowest_priority(
    population: tuple, data: st.DataObject
) -> None:
    rng, n_strategies, X = population
    n, k = X.shape
    m = data.draw(st.integers(1, 8))
    entrants = rng.integers(0, n_strategies, (n, m))
    enter = rng.random((n, m)) < 0.6
    priority = rng.random((n, k))
    out = insert_members(X, entrants, enter, priority)
    assert_valid(out, n_strategies, k)
    for r in range(n):
        new = [v for v in dict.fromkeys(entrants[r][enter[r]].tolist()) if v not in X[r]][:k]
        assert set(out[r].tolist()) - set(X[r].tolist()) == set(new)
        leaving = set(X[r].tolist()) - set(out[r].tolist())
        assert leaving == set(X[r][np.argsort(priority[r])][: len(new)].tolist())


# -- algorithm-specific operators -------------------------------------------------------------


@PROPERTY
@given(populations())
def test_differential_mutation_and_crossover_stay_valid(population: tuple) -> None:
    rng, n_strategies, X = population
    n, k = X.shape
    others = [np.stack([rng.permutation(n_strategies)[:k] for _ in range(n)]) for _ in range(3)]
    mutant = set_difference_mutation(rng, others[0], others[1], others[2], 0.7)
    assert_valid(mutant, n_strategies, k)
    trial = binomial_set_crossover(rng, X, mutant, 0.5)
    assert_valid(trial, n_strategies, k)
    for t, x, mu in zip(trial.tolist(), X.tolist(), mutant.tolist(), strict=True):
        assert set(t) <= set(x) | set(mu)
        if set(mu) - set(x):  # j_rand: at least one mutant member enters
            assert set(t) & (set(mu) - set(x))


def test_differential_mutation_moves_along_the_difference() -> None:
    rng = np.random.default_rng(0)
    base, plus, minus = np.array([[0, 1, 2, 3]]), np.array([[4, 5, 6, 7]]), np.array([[0, 1, 6, 7]])
    # F = 1: every member of plus - minus = {4, 5} enters, displacing minus - plus = {0, 1}
    assert sorted(set_difference_mutation(rng, base, plus, minus, 1.0)[0]) == [2, 3, 4, 5]
    # F = 0: nothing changes
    assert sorted(set_difference_mutation(rng, base, plus, minus, 0.0)[0]) == [0, 1, 2, 3]


def test_merge_possibilities_keeps_the_strongest_entry_per_strategy() -> None:
    idx = np.array([[3, 5, 3, 9, 5, 0]])
    possibility = np.array([[0.2, 0.9, 0.7, 0.0, 0.4, 0.1]])
    strategies, strengths = merge_possibilities(idx, possibility, 3)
    assert strategies[0].tolist() == [5, 3, 0]
    assert strengths[0].tolist() == [0.9, 0.7, 0.1]


def test_rank_heuristic_orders_by_score() -> None:
    assert rank_heuristic(np.array([3.0, -1.0, 10.0, 0.0])).tolist() == [0.75, 0.25, 1.0, 0.5]


@pytest.mark.parametrize("seed", range(40))
def test_best_surrogate_swap_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(3, 12))
    block, k = int(rng.integers(2, size + 1)), int(rng.integers(1, size))
    linear = rng.normal(size=(3, size))
    pair = np.zeros((3, block, block))
    upper = np.triu_indices(block, 1)
    pair[:, upper[0], upper[1]] = rng.normal(size=(3, upper[0].size))
    pair += pair.transpose(0, 2, 1)
    chosen = np.stack([rng.permutation(size)[:k] for _ in range(3)])

    def surrogate(c: int, members: list[int]) -> float:
        inner = [i for i in members if i < block]
        pairs = sum(pair[c, a, b] for a, b in itertools.combinations(inner, 2))
        return float(linear[c, members].sum() + pairs)

    gain, out_at, enter = best_surrogate_swaps(linear, pair, chosen)
    for c in range(3):
        now = surrogate(c, chosen[c].tolist())
        best = max(
            surrogate(c, [j if i == a else m for i, m in enumerate(chosen[c].tolist())]) - now
            for a in range(k)
            for j in range(size)
            if j not in chosen[c]
        )
        swapped = chosen[c].copy()
        swapped[out_at[c]] = enter[c]
        assert gain[c] == pytest.approx(best)
        assert surrogate(c, swapped.tolist()) - now == pytest.approx(best)
