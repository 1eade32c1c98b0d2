"""The Inception Score against closed forms and scipy's KL divergence, its bootstrap interval, and bad input."""

import numpy as np
import pytest
import scipy.stats

from pyoco_jax.evaluate.inception_score import inception_score, inception_score_interval


def test_confident_predictions_spread_evenly_over_k_classes_score_k():
    for classes in (2, 5, 101):
        probabilities = np.eye(classes)[np.arange(3 * classes) % classes]
        assert inception_score(probabilities) == pytest.approx(classes, rel=1e-12)


def test_identical_predictions_score_one():
    uniform = np.full((10, 4), 0.25)
    one_class = np.eye(4)[np.zeros(10, int)]
    assert inception_score(uniform) == pytest.approx(1.0, abs=1e-12)
    assert inception_score(one_class) == pytest.approx(1.0, abs=1e-12)


def test_matches_scipy_kl_divergence_on_random_predictions():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.full(7, 0.3), size=50)
    marginal = probabilities.mean(axis=0)
    expected = np.exp(np.mean([scipy.stats.entropy(row, marginal) for row in probabilities]))
    assert inception_score(probabilities) == pytest.approx(expected, rel=1e-10)
    assert 1.0 <= inception_score(probabilities) <= 7.0


def test_bootstrap_interval_holds_the_score_and_narrows_with_more_clips():
    rng = np.random.default_rng(1)
    few = rng.dirichlet(np.full(5, 0.5), size=32)
    many = rng.dirichlet(np.full(5, 0.5), size=512)
    score, low, high = inception_score_interval(few, seed=0)
    assert low <= score <= high
    _, many_low, many_high = inception_score_interval(many, seed=0)
    assert many_high - many_low < high - low
    assert inception_score_interval(few, seed=0) == (score, low, high)  # Seeded: reproducible.


def test_bad_input_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="classes >= 2"):
        inception_score(np.ones((4, 1)))
    with pytest.raises(ValueError, match="summing to 1"):
        inception_score(np.full((4, 3), 0.5))
