"""Fixtures shared by the model tests."""

import numpy as np
import pytest


@pytest.fixture
def inputs():
    """(x, t, context, labels, fps) for B=2 clips of 3 frames at 8x8."""
    rng = np.random.default_rng(42)
    x = rng.standard_normal((2, 3, 8, 8, 3), np.float32)
    context = rng.standard_normal((2, 5, 12), np.float32)
    return x, np.array([3.0, 700.0], np.float32), context, np.array([0, 2]), np.array([4.0, 12.0], np.float32)
