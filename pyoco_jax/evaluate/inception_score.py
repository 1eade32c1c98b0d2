"""Inception Score over any classifier's class probabilities: exp(E_x KL(p(y|x) || p(y))).

High when each clip is confidently one class (sharp p(y|x)) and the clips together cover the classes
(broad p(y)); it lies in [1, number of classes]. PYoCo's UCF-101 IS is this score over a C3D trained on
UCF-101; no installable package ships those weights, so that number cannot be reproduced here. The
framework scores the synthetic shapes with their own classifier instead (`clip_probabilities` of
`shape_accuracy.ShapeClassifier`); such a score compares runs of the same data, not papers.

The interval is a percentile bootstrap over clips (clips are resampled and the score recomputed), which
also covers the score's bias at small sample counts better than the usual spread over 10 splits.
"""

import numpy as np

BOOTSTRAP_DRAWS = 1000


def inception_score(probabilities: np.ndarray) -> float:
    """IS of (N, K) per-clip class probabilities (rows summing to 1), in float64."""
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise ValueError(f"inception_score needs (clips >= 1, classes >= 2) probabilities, got shape {p.shape}")
    if np.any(p < 0) or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("inception_score needs rows of probabilities (non-negative, summing to 1)")
    marginal = p.mean(axis=0)
    # 0 * log(0 / q) = 0: terms with p(y|x) = 0 add nothing.
    ratio = np.where(p > 0, p / np.where(marginal > 0, marginal, 1.0), 1.0)
    return float(np.exp(np.mean(np.sum(p * np.log(ratio), axis=1))))


def inception_score_interval(
    probabilities: np.ndarray, *, seed: int = 0, draws: int = BOOTSTRAP_DRAWS, level: float = 0.95
) -> tuple[float, float, float]:
    """(IS, low, high): the score and its percentile-bootstrap interval over clips at `level`."""
    p = np.asarray(probabilities, np.float64)
    score = inception_score(p)
    rng = np.random.default_rng(seed)
    scores = [inception_score(p[rng.integers(0, len(p), len(p))]) for _ in range(draws)]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(scores, [tail, 100 - tail])
    return score, float(low), float(high)
