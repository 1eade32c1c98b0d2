"""Confidence intervals over samples and seeds: a two-level (hierarchical) percentile bootstrap.

A study's arm has clips from several training seeds. Resampling clips alone would ignore that seeds
differ (a lucky seed would look like a real effect); each draw therefore picks seeds with replacement,
then clips with replacement within each picked seed, and recomputes the statistic on the pooled draw.
"""

from collections.abc import Callable, Sequence

import numpy as np

DRAWS = 1000
LEVEL = 0.95
Statistic = Callable[[np.ndarray], float]


def _items(groups: Sequence[np.ndarray], picked: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Items drawn with replacement within each picked group, as indices into the groups' concatenation."""
    sizes = np.array([len(group) for group in groups])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return np.concatenate([starts[g] + rng.integers(0, sizes[g], sizes[g]) for g in picked])


def _percentiles(values: list[float], level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def interval(
    groups: Sequence[np.ndarray], statistic: Statistic, *, draws: int = DRAWS, level: float = LEVEL, seed: int = 0
) -> tuple[float, float, float]:
    """(statistic of all items, low, high): the percentile interval at `level` of the hierarchical bootstrap.

    `groups`: one array per seed, items along axis 0 (per-clip values, or per-clip feature rows).
    """
    pooled = np.concatenate(groups)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        picked = rng.integers(0, len(groups), len(groups))
        values.append(statistic(pooled[_items(groups, picked, rng)]))
    return (float(statistic(pooled)), *_percentiles(values, level))


def paired_difference(
    first: Sequence[np.ndarray],
    second: Sequence[np.ndarray],
    statistic: Statistic,
    *,
    draws: int = DRAWS,
    level: float = LEVEL,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(statistic(first) - statistic(second), low, high), both arms drawing the same seeds in each draw.

    Seed i of one arm and of the other share what the seed fixes (the image run they start from), so
    drawing them together keeps that shared part out of the difference's spread.
    """
    if len(first) != len(second):
        raise ValueError(f"paired arms need the same seeds, got {len(first)} and {len(second)} groups")
    pooled = [np.concatenate(first), np.concatenate(second)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        picked = rng.integers(0, len(first), len(first))
        one, other = (pool[_items(arm, picked, rng)] for pool, arm in zip(pooled, (first, second), strict=True))
        values.append(statistic(one) - statistic(other))
    return (float(statistic(pooled[0]) - statistic(pooled[1])), *_percentiles(values, level))
