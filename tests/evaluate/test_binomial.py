"""The Wilson interval against scipy's, and its edges."""

import pytest
from scipy.stats import binomtest

from pyoco_jax.evaluate.binomial import wilson_interval


@pytest.mark.parametrize(("successes", "trials"), [(50, 64), (0, 10), (10, 10), (1, 3), (128, 256)])
def test_the_wilson_interval_is_scipys(successes, trials):
    expected = binomtest(successes, trials).proportion_ci(method="wilson")
    assert wilson_interval(successes, trials) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_a_proportion_needs_a_trial():
    with pytest.raises(ValueError, match="at least one trial"):
        wilson_interval(0, 0)
