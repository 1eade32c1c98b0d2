"""PYoCo priors against the formulas of Ge et al. 2023 (see PAPERS.md).

Statistics use 4000 clips x 32 pixels = 128k draws per frame: the standard error
of a mean is ~0.003 and of a correlation ~0.003, so tolerances of 0.02 are
>6 standard errors (no flakes) yet far below any formula error they guard.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from pyoco_jax.noise import frame_correlation, progressive_coefficient, progressive_matrix, sample_noise

F = 8
SHAPE = (4000, F, 4, 4, 2)
TOL = 0.02
CASES = [(prior, alpha) for prior in ("mixed", "progressive") for alpha in (0.5, 1.0, 2.0)]


def _frames(noise: jax.Array, frame_axis: int = 1) -> np.ndarray:
    """(F, N) matrix: each row holds every draw of one frame."""
    x = np.moveaxis(np.asarray(noise, np.float64), frame_axis, 0)
    return x.reshape(x.shape[0], -1)


@pytest.mark.parametrize("prior,alpha", [("iid", 1.0)] + CASES)
def test_marginals_are_standard_normal(prior, alpha):
    frames = _frames(sample_noise(jax.random.key(1), SHAPE, prior, alpha))
    np.testing.assert_allclose(frames.mean(axis=1), 0.0, atol=TOL)
    np.testing.assert_allclose(frames.var(axis=1), 1.0, atol=TOL)
    for row in frames[[0, F // 2, F - 1]]:
        # Kolmogorov-Smirnov against N(0,1) on 20k draws: D < 0.015 is p >~ 0.03 for a true normal.
        assert stats.kstest(row[:20000], "norm").statistic < 0.015


@pytest.mark.parametrize("prior,alpha", CASES)
def test_empirical_correlation_matches_theory(prior, alpha):
    frames = _frames(sample_noise(jax.random.key(2), SHAPE, prior, alpha))
    np.testing.assert_allclose(np.corrcoef(frames), frame_correlation(prior, alpha, F), atol=TOL)


def test_paper_reference_values():
    assert frame_correlation("mixed", 1.0, 2)[0, 1] == pytest.approx(0.5)
    assert frame_correlation("mixed", 2.0, 2)[0, 1] == pytest.approx(0.8)
    assert frame_correlation("progressive", 1.0, 2)[0, 1] == pytest.approx(0.7071, abs=1e-4)
    assert frame_correlation("progressive", 2.0, 2)[0, 1] == pytest.approx(0.8944, abs=1e-4)
    assert frame_correlation("progressive", 2.0, 6)[0, 5] == pytest.approx(0.5724, abs=1e-4)


@pytest.mark.parametrize("prior", ["mixed", "progressive"])
def test_alpha_zero_is_iid(prior):
    frames = _frames(sample_noise(jax.random.key(3), SHAPE, prior, 0.0))
    np.testing.assert_allclose(np.corrcoef(frames), np.eye(F), atol=TOL)
    np.testing.assert_array_equal(frame_correlation(prior, 0.0, F), np.eye(F))


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_progressive_is_autoregressive(alpha):
    """eps^i - c eps^(i-1) is the fresh innovation: independent of eps^(i-1), variance 1 - c^2."""
    c = progressive_coefficient(alpha)
    frames = _frames(sample_noise(jax.random.key(4), SHAPE, "progressive", alpha))
    for i in range(1, F):
        innovation = frames[i] - c * frames[i - 1]
        assert abs(np.corrcoef(innovation, frames[i - 1])[0, 1]) < TOL
        assert innovation.var() == pytest.approx(1.0 / (1.0 + alpha * alpha), abs=TOL)
        if i >= 2:  # Markov: no dependence on older frames either.
            assert abs(np.corrcoef(innovation, frames[i - 2])[0, 1]) < TOL


def _sequential_progressive(z: np.ndarray, alpha: float, buggy: bool = False) -> np.ndarray:
    """The paper's loop over frames (axis 1); `buggy` writes `1:i+1` instead of `i:i+1`."""
    c = progressive_coefficient(alpha)
    s = np.sqrt(1.0 / (1.0 + alpha * alpha))
    noise = z.copy()
    for i in range(1, z.shape[1]):
        target = slice(1, i + 1) if buggy else slice(i, i + 1)
        noise[:, target] = c * noise[:, i - 1 : i] + s * z[:, i : i + 1]
    return noise


def test_progressive_matches_the_loop_not_the_indexing_bug():
    alpha = 2.0
    key = jax.random.key(5)
    shape = (64, F, 3, 3, 2)
    ours = np.asarray(sample_noise(key, shape, "progressive", alpha), np.float64)
    z = np.asarray(jax.random.normal(key, shape, jnp.float32), np.float64)
    np.testing.assert_allclose(ours, _sequential_progressive(z, alpha), atol=1e-5)
    buggy = _sequential_progressive(z, alpha, buggy=True)
    assert np.abs(ours - buggy).max() > 0.5
    # The bug makes frames 1..F-1 identical; the prior's lag-(F-2) correlation is c^(F-2).
    frames = _frames(sample_noise(jax.random.key(6), SHAPE, "progressive", alpha))
    expected = progressive_coefficient(alpha) ** (F - 2)
    assert np.corrcoef(frames[1], frames[F - 1])[0, 1] == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("prior", ["iid", "mixed", "progressive"])
def test_deterministic_per_key_and_jittable(prior):
    fn = jax.jit(lambda k: sample_noise(k, (2, F, 4, 4, 3), prior, 1.5))
    a, b = fn(jax.random.key(7)), fn(jax.random.key(7))
    np.testing.assert_array_equal(a, b)
    eager = sample_noise(jax.random.key(7), (2, F, 4, 4, 3), prior, 1.5)
    np.testing.assert_allclose(a, eager, atol=1e-6)  # Fused jit arithmetic rounds differently.
    assert not np.array_equal(a, fn(jax.random.key(8)))


@pytest.mark.parametrize("frame_axis", [0, 2, -1])
def test_any_frame_axis(frame_axis):
    shape = [1000, 5, 5]
    shape.insert(frame_axis % 4, F)
    noise = sample_noise(jax.random.key(9), tuple(shape), "progressive", 1.0, frame_axis=frame_axis)
    frames = _frames(noise, frame_axis)
    np.testing.assert_allclose(np.corrcoef(frames), frame_correlation("progressive", 1.0, F), atol=0.03)


def test_graph_does_not_grow_with_frames():
    def size(frames):
        jaxpr = jax.make_jaxpr(lambda k: sample_noise(k, (1, frames, 2, 2, 1), "progressive", 2.0))(jax.random.key(0))
        return len(jaxpr.eqns)

    assert size(4) == size(64)


def test_dtype_and_matrix_rows_have_unit_norm():
    assert sample_noise(jax.random.key(0), (1, F, 2), "mixed", 1.0, dtype=jnp.bfloat16).dtype == jnp.bfloat16
    np.testing.assert_allclose((progressive_matrix(1.3, 12) ** 2).sum(axis=1), 1.0, atol=1e-12)


def test_bad_arguments_name_the_config_key():
    with pytest.raises(ValueError, match="noise.prior"):
        sample_noise(jax.random.key(0), (1, F), "gaussian")
    with pytest.raises(ValueError, match="noise.alpha"):
        frame_correlation("mixed", -1.0, F)
