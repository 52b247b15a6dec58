"""Operators on fixed-size sets of distinct strategy indices, as pure functions of ``rng``.

A portfolio is a row of ``k`` distinct indices in ``0..n_strategies-1``; a population is an
``(n, k)`` integer array, and every operator maps populations to populations row by row,
vectorised. Order inside a row carries no meaning. Each function that draws takes the caller's
``np.random.Generator`` as its first argument, so a search is reproducible from its seed and no
global random state exists (pymoo ``Operator.do``; against DEAP's ``random``).

Invariant kept by every function returning a population: each row holds ``k`` distinct valid
indices.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.intp]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

#: Redraw rounds before filling the remaining holes of a row from its exact complement; the
#: rejection rounds are cheap while k is small against n_strategies, the fallback keeps
#: dense cases (k close to n_strategies) bounded.
_REJECTION_ROUNDS = 16
#: Above this k / n_strategies, uniform subsets come from random keys instead of rejection.
_DENSE_FRACTION = 0.25
#: With-replacement rounds of weighted sampling before the exact Gumbel completion.
_WEIGHTED_ROUNDS = 3


def duplicate_mask(X: IntArray, yielding: BoolArray | None = None) -> BoolArray:
    """Return ``(n, k)``: True where an entry repeats another entry of its row that comes first.

    Entries come in row order, except that ``yielding`` entries (if given) come after all
    others: of two equal entries, the yielding one is marked the repeat.
    """
    if yielding is None:
        order = np.argsort(X, axis=1, kind="stable")
    else:
        order = np.lexsort((yielding, X), axis=1)
    ordered = np.take_along_axis(X, order, axis=1)
    repeated = np.zeros(X.shape, dtype=bool)
    repeated[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    mask = np.zeros(X.shape, dtype=bool)
    np.put_along_axis(mask, order, repeated, axis=1)
    return mask


def contains(X: IntArray, Y: IntArray) -> BoolArray:
    """Return ``(n, kx)``: whether each entry of ``X``'s row also occurs in ``Y``'s row."""
    if Y.shape[1] == 0 or X.size == 0:
        return np.zeros(X.shape, dtype=bool)
    # Offset each row into its own value range, then one sorted search answers every row;
    # searching with sorted needles is cache-friendly (measured fastest at k = 35).
    low = min(int(X.min()), int(Y.min()))
    span = max(int(X.max()), int(Y.max())) - low + 1
    offset = (np.arange(X.shape[0], dtype=np.int64) * span - low)[:, np.newaxis]
    haystack = np.sort(Y + offset, axis=None)
    needles = (X + offset).ravel()
    order = np.argsort(needles)
    ordered = needles[order]
    at = np.searchsorted(haystack, ordered)
    at[at == haystack.size] = 0
    found = np.empty(needles.size, dtype=bool)
    found[order] = haystack[at] == ordered
    return found.reshape(X.shape)


def shared_members(A: IntArray, B: IntArray) -> tuple[BoolArray, BoolArray]:
    """Return ``(A in B, B in A)`` membership masks for rows of distinct members.

    One sort of the rows' union answers both directions: with distinct rows, a value occurs
    twice in the union exactly when both rows hold it.
    """
    union = np.concatenate([A, B], axis=1)
    order = np.argsort(union, axis=1, kind="stable")
    ordered = np.take_along_axis(union, order, axis=1)
    pair = ordered[:, 1:] == ordered[:, :-1]
    both = np.zeros(union.shape, dtype=bool)
    both[:, 1:] |= pair
    both[:, :-1] |= pair
    mask = np.empty(union.shape, dtype=bool)
    np.put_along_axis(mask, order, both, axis=1)
    return mask[:, : A.shape[1]], mask[:, A.shape[1] :]


def fill_holes(
    rng: np.random.Generator, X: IntArray, holes: BoolArray, n_strategies: int
) -> IntArray:
    """Return ``X`` with every hole replaced by a strategy absent from the original row.

    A hole never receives a value its row held before (so a mutated position really changes)
    nor one another entry of the row holds afterwards. Uniform over the allowed values. Costs
    O(holes * k) per redraw round, so sparse holes in a large population are cheap.

    Raises:
        ValueError: A row has more holes than strategies outside it.
    """
    out = X.copy()
    k = X.shape[1]
    # With n >= 2k any k holes fit among the n - k outside strategies; skip the count.
    if n_strategies < 2 * k and (holes.sum(axis=1) > n_strategies - _distinct_count(X)).any():
        raise ValueError("more holes than strategies outside the row")
    pending = holes.copy()
    rows, cols = np.nonzero(pending)  # row-major: within a row, earlier columns first
    columns = np.arange(k)
    for _ in range(_REJECTION_ROUNDS):
        if rows.size == 0:
            return out
        values = rng.integers(0, n_strategies, rows.size)
        out[rows, cols] = values
        held_before = (X[rows] == values[:, np.newaxis]).any(axis=1)
        same = out[rows] == values[:, np.newaxis]
        same[np.arange(rows.size), cols] = False
        # Of two equal new values in a row the later column yields; settled entries never do.
        counts = ~pending[rows] | (columns[np.newaxis, :] < cols[:, np.newaxis])
        clash = held_before | (same & counts).any(axis=1)
        pending[rows[~clash], cols[~clash]] = False
        rows, cols = rows[clash], cols[clash]
    for row in np.unique(rows):
        keep = out[row][~pending[row]]
        free = np.setdiff1d(np.arange(n_strategies), np.concatenate([X[row], keep]))
        out[row, pending[row]] = rng.choice(free, int(pending[row].sum()), replace=False)
    return out


def _distinct_count(X: IntArray) -> IntArray:
    if X.shape[1] == 0:
        return np.zeros(X.shape[0], dtype=np.intp)
    return np.asarray(X.shape[1] - duplicate_mask(X).sum(axis=1), dtype=np.intp)


def repair(rng: np.random.Generator, X: IntArray, n_strategies: int) -> IntArray:
    """Return ``X`` with repeated entries replaced by random strategies missing from the row."""
    return fill_holes(rng, X, duplicate_mask(X), n_strategies)


def sample_subsets(rng: np.random.Generator, n_strategies: int, k: int, size: int) -> IntArray:
    """Return ``(size, k)`` uniformly random k-subsets of ``0..n_strategies-1``."""
    if not 0 <= k <= n_strategies:
        raise ValueError(f"cannot choose k={k} of {n_strategies} strategies")
    if k > _DENSE_FRACTION * n_strategies:
        keys = rng.random((size, n_strategies))
        return np.asarray(np.argpartition(keys, k - 1, axis=1)[:, :k], dtype=np.intp)
    # Relabelling strategies leaves the redraw process unchanged, so the resulting subset is
    # uniform over all k-subsets.
    return repair(rng, rng.integers(0, n_strategies, (size, k)), n_strategies)


def sample_weighted_subsets(
    rng: np.random.Generator, weights: FloatArray, k: int, size: int
) -> IntArray:
    """Return ``(size, k)`` subsets drawn one member at a time with probability ∝ ``weights``.

    Successive sampling without replacement (an ant adding strategies to its portfolio) is
    simulated cheaply: draw with replacement and skip repeats, which yields the same sequence
    distribution; rows still short after a few rounds are completed exactly by Gumbel top-r
    over the strategies not yet chosen (the same conditional distribution).

    Raises:
        ValueError: A weight is not positive and finite, or ``k`` exceeds the strategy count.
    """
    w = np.asarray(weights, dtype=np.float64)
    if not (np.isfinite(w).all() and (w > 0).all()):
        raise ValueError("weights must be positive and finite")
    if k > w.size:
        raise ValueError(f"cannot choose k={k} of {w.size} strategies")
    cdf = np.cumsum(w)
    draws = np.empty((size, 0), dtype=np.intp)
    for round_ in range(_WEIGHTED_ROUNDS):
        more = rng.random((size, 2 * k * 2**round_)) * cdf[-1]
        draws = np.concatenate([draws, _search_sorted(cdf, more)], axis=1)
        np.minimum(draws, w.size - 1, out=draws)  # u * total may round up to total
        first = ~duplicate_mask(draws)
        if (first.sum(axis=1) >= k).all():
            break
    # Stable sort puts first occurrences first, in draw order.
    order = np.argsort(~first, axis=1, kind="stable")[:, :k]
    out = np.take_along_axis(draws, order, axis=1)
    short = np.flatnonzero(first.sum(axis=1) < k)
    if short.size:
        logw = np.log(w)
        for row in short:
            chosen = draws[row][first[row]]
            keys = logw + rng.gumbel(size=w.size)
            keys[chosen] = -np.inf
            rest = k - chosen.size
            out[row] = np.concatenate([chosen, np.argpartition(-keys, rest - 1)[:rest]])
    return out


def sample_outside(rng: np.random.Generator, inside: BoolArray, count: int) -> IntArray:
    """Return ``count`` uniform draws (with repeats) from the strategies where ``inside`` is
    False; empty when every strategy is inside.

    ``inside`` is a ``(n_strategies,)`` membership mask of the current portfolio.
    """
    n_outside = inside.size - int(inside.sum())
    if n_outside == 0:
        return np.empty(0, dtype=np.intp)
    if n_outside < (1.0 - _DENSE_FRACTION) * inside.size:
        return np.asarray(rng.choice(np.flatnonzero(~inside), count), dtype=np.intp)
    draws = rng.integers(0, inside.size, count)
    clash = inside[draws]
    while clash.any():
        draws[clash] = rng.integers(0, inside.size, int(clash.sum()))
        clash = inside[draws]
    return np.asarray(draws, dtype=np.intp)


def _search_sorted(cdf: FloatArray, values: FloatArray) -> IntArray:
    """``np.searchsorted(cdf, values, side="right")``, searching in sorted order: measured
    several times faster on a large ``cdf`` because consecutive lookups share cache lines."""
    flat = values.ravel()
    order = np.argsort(flat)
    found = np.empty(flat.size, dtype=np.intp)
    found[order] = np.searchsorted(cdf, flat[order], side="right")
    return found.reshape(values.shape)


def swap_mutate(
    rng: np.random.Generator, X: IntArray, n_strategies: int, n_swaps: IntArray
) -> IntArray:
    """Return ``X`` with ``n_swaps[i]`` members of row ``i`` swapped for outside strategies.

    ``n_swaps`` is clipped to what the row allows (``k`` and ``n_strategies - k``).
    """
    n, k = X.shape
    swaps = np.minimum(np.asarray(n_swaps, dtype=np.intp), min(k, n_strategies - k))
    rank = np.argsort(rng.random((n, k)), axis=1)
    holes = rank < swaps[:, np.newaxis]
    return fill_holes(rng, X, holes, n_strategies)


def set_crossover(rng: np.random.Generator, A: IntArray, B: IntArray) -> IntArray:
    """Return children of parent rows ``A`` and ``B``: keep the members both share, then fill
    up to ``k`` with a uniform pick from the union's remaining members.

    The child is distinct by construction (the union without repeats), which is the repair
    step: no child needs fixing afterwards.
    """
    n, k = A.shape
    a_shared, b_in_a = shared_members(A, B)
    keys = rng.random((n, 2 * k))
    keys[:, :k][a_shared] = -1.0  # always kept
    keys[:, k:][b_in_a] = np.inf  # the same strategy again: never picked twice
    union = np.concatenate([A, B], axis=1)
    pick = np.argpartition(keys, k - 1, axis=1)[:, :k]
    return np.asarray(np.take_along_axis(union, pick, axis=1), dtype=np.intp)


def insert_members(
    X: IntArray, entrants: IntArray, enter: BoolArray, keep_priority: FloatArray
) -> IntArray:
    """Return ``X`` with the entering candidates swapped in for its lowest-priority members.

    Args:
        X: ``(n, k)`` portfolios.
        entrants: ``(n, m)`` candidate strategies, in order of preference.
        enter: ``(n, m)`` which candidates enter; candidates already in the row, repeats and
            any beyond ``k`` are ignored.
        keep_priority: ``(n, k)``; members with the lowest values leave first.
    """
    n, k = X.shape
    m = entrants.shape[1]
    valid = enter & ~contains(entrants, X)
    # Ignore repeats among entering candidates: give non-entering ones unique sentinels.
    sentinel = -1 - np.arange(m)
    valid &= ~duplicate_mask(np.where(valid, entrants, sentinel))
    count = np.minimum(valid.sum(axis=1), k)
    width = min(m, k)
    enter_order = np.argsort(~valid, axis=1, kind="stable")[:, :width]
    leave_order = np.argsort(keep_priority, axis=1, kind="stable")[:, :width]
    selected = np.arange(width)[np.newaxis, :] < count[:, np.newaxis]
    rows = np.broadcast_to(np.arange(n)[:, np.newaxis], (n, width))
    out = X.copy()
    incoming = np.take_along_axis(entrants, enter_order, axis=1)
    out[rows[selected], leave_order[selected]] = incoming[selected]
    return out
