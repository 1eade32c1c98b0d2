"""Confidence intervals for a proportion (how often a classifier names the requested shape)."""

import math

Z_95 = 1.959963984540054  # Two-sided 95% normal quantile.


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of successes / trials: stays inside [0, 1] and keeps its coverage near 0 and 1,
    where the normal approximation does not."""
    if trials <= 0:
        raise ValueError("a proportion needs at least one trial")
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)
