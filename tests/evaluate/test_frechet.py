"""The Frechet distance against closed forms and scipy, Gaussian fitting, and the real-stats file cache."""

import numpy as np
import pytest
import scipy.linalg

from pyoco_jax.evaluate.frechet import (
    FeatureStats,
    FrechetToReference,
    fit_gaussian,
    frechet_distance,
    frechet_distance_of,
)
from pyoco_jax.evaluate.real_stats import cached_stats, stats_path


def random_spd(rng: np.random.Generator, dim: int, rank: int | None = None) -> np.ndarray:
    """A random symmetric PSD matrix (full rank unless `rank` is given) with entries of order 1."""
    factor = rng.normal(size=(dim, rank or 2 * dim))
    return factor @ factor.T / factor.shape[1]


def scipy_reference(mean1, cov1, mean2, cov2) -> float:
    """The usual pytorch-fid / StyleGAN-V formula: sqrtm of the non-symmetric product."""
    root = scipy.linalg.sqrtm(cov1 @ cov2).real
    return float(np.sum((mean1 - mean2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(root))


def test_one_dimensional_gaussians_match_closed_form():
    for m1, s1, m2, s2 in [(0.0, 1.0, 0.0, 1.0), (1.5, 0.3, -2.0, 2.5), (10.0, 4.0, 10.0, 0.5)]:
        got = frechet_distance(np.array([m1]), np.array([[s1**2]]), np.array([m2]), np.array([[s2**2]]))
        assert got == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-12, abs=1e-12)


def test_diagonal_covariances_match_closed_form():
    rng = np.random.default_rng(0)
    mean1, mean2 = rng.normal(size=32), rng.normal(size=32)
    var1, var2 = rng.uniform(0.1, 3.0, size=32), rng.uniform(0.1, 3.0, size=32)
    expected = np.sum((mean1 - mean2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert frechet_distance(mean1, np.diag(var1), mean2, np.diag(var2)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("dim, zeros, rel", [(48, 0, 1e-12), (400, 145, 1e-6)])
def test_commuting_covariances_match_closed_form(dim, zeros, rel):
    """Shared eigenvectors: d^2 = sum (sqrt(a_i) - sqrt(b_i))^2. Singular cases (zero variances, as with fewer
    clips than I3D's 400 features) lose ~1e-8 relative to square roots of round-off; measured 1.6e-8."""
    rng = np.random.default_rng(1)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    var1, var2 = rng.uniform(0.0, 2.0, size=dim), rng.uniform(0.0, 2.0, size=dim)
    var1[:zeros], var2[dim // 2 : dim // 2 + zeros] = 0.0, 0.0
    cov1, cov2 = (basis * var1) @ basis.T, (basis * var2) @ basis.T
    mean = rng.normal(size=dim)
    expected = np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert frechet_distance(mean, cov1, mean, cov2) == pytest.approx(expected, rel=rel)


def test_identical_gaussians_are_at_distance_zero():
    rng = np.random.default_rng(2)
    for rank in (None, 20):  # full rank, and singular like 20 clips' covariance of 64-d features
        cov, mean = random_spd(rng, 64, rank), rng.normal(size=64)
        assert frechet_distance(mean, cov, mean, cov) <= 1e-9 * np.trace(cov)


def test_matches_scipy_sqrtm_on_random_spd_matrices():
    """Well-conditioned full-rank 64-d covariances: eigh route and scipy agree to 1e-12 relative (measured 1e-15)."""
    rng = np.random.default_rng(3)
    for _ in range(5):
        mean1, mean2 = rng.normal(size=64), rng.normal(size=64)
        cov1, cov2 = random_spd(rng, 64), random_spd(rng, 64)
        expected = scipy_reference(mean1, cov1, mean2, cov2)
        assert frechet_distance(mean1, cov1, mean2, cov2) == pytest.approx(expected, rel=1e-12)


def test_singular_covariances_are_finite_and_close_to_scipy():
    """Fewer samples than dimensions (FVD's small protocols): within 1e-6 of scipy (measured 3e-8), whose sqrtm
    of the singular product is itself the less accurate one (it picks up imaginary parts)."""
    rng = np.random.default_rng(4)
    stats1, stats2 = fit_gaussian(rng.normal(size=(40, 64))), fit_gaussian(rng.normal(1.0, 2.0, size=(40, 64)))
    got = frechet_distance_of(stats1, stats2)
    assert np.isfinite(got) and got > 0
    assert got == pytest.approx(scipy_reference(stats1.mean, stats1.cov, stats2.mean, stats2.cov), rel=1e-6)


def test_distance_is_symmetric():
    rng = np.random.default_rng(5)
    mean1, mean2 = rng.normal(size=16), rng.normal(size=16)
    cov1, cov2 = random_spd(rng, 16), random_spd(rng, 16, rank=5)
    assert frechet_distance(mean1, cov1, mean2, cov2) == pytest.approx(
        frechet_distance(mean2, cov2, mean1, cov1), rel=1e-12
    )


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shapes disagree"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_fit_recovers_known_mean_and_covariance():
    """Within 5 standard errors: sqrt(S_ii / N) for means, sqrt((S_ii S_jj + S_ij^2) / N) for covariances."""
    rng = np.random.default_rng(6)
    true_mean, true_cov, count = np.array([1.0, -2.0, 0.5, 3.0]), random_spd(rng, 4), 20_000
    stats = fit_gaussian(rng.multivariate_normal(true_mean, true_cov, size=count).astype(np.float32))
    variances = np.diag(true_cov)
    assert stats.count == count and stats.mean.dtype == np.float64 and stats.cov.dtype == np.float64
    assert np.all(np.abs(stats.mean - true_mean) < 5 * np.sqrt(variances / count))
    cov_error = np.sqrt((np.outer(variances, variances) + true_cov**2) / count)
    assert np.all(np.abs(stats.cov - true_cov) < 5 * cov_error)


def test_fit_needs_two_samples():
    with pytest.raises(ValueError, match="N >= 2"):
        fit_gaussian(np.zeros((1, 8)))


def test_feature_stats_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    stats = fit_gaussian(rng.normal(size=(10, 6)))
    stats.save(tmp_path / "stats.npz")
    loaded = FeatureStats.load(tmp_path / "stats.npz")
    assert loaded.count == 10
    np.testing.assert_array_equal(loaded.mean, stats.mean)
    np.testing.assert_array_equal(loaded.cov, stats.cov)


def test_stats_path_names_every_choice(tmp_path):
    path = stats_path(tmp_path, "ucf101", "train", "fvd256_16f", 3)
    assert path == tmp_path / "fvd_stats" / "ucf101_train_fvd256_16f_seed3.npz"
    with pytest.raises(ValueError, match="unknown FVD protocol"):
        stats_path(tmp_path, "ucf101", "train", "fvd9_12f", 3)
    with pytest.raises(ValueError, match="dataset"):
        stats_path(tmp_path, "../ucf101", "train", "fvd256_16f", 3)


def test_cached_stats_computes_once_then_reads(tmp_path):
    calls = []

    def compute() -> FeatureStats:
        calls.append(1)
        return fit_gaussian(np.random.default_rng(8).normal(size=(12, 5)))

    path = stats_path(tmp_path, "ucf101", "train", "fvd256_8f", 0)
    first = cached_stats(path, compute)
    second = cached_stats(path, compute)
    assert len(calls) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left behind
    np.testing.assert_array_equal(first.cov, second.cov)
    assert second.count == 12


def test_cached_stats_leaves_nothing_when_compute_fails(tmp_path):
    def compute() -> FeatureStats:
        raise RuntimeError("I3D failed")

    path = tmp_path / "fvd_stats" / "x.npz"
    with pytest.raises(RuntimeError):
        cached_stats(path, compute)
    assert not path.exists()


@pytest.mark.parametrize("rows", [12, 30, 80])  # Fewer rows than dimensions, and more.
def test_distance_to_a_fixed_reference_equals_the_general_formula(rows):
    rng = np.random.default_rng(rows)
    reference = fit_gaussian(rng.normal(size=(200, 40)) @ rng.normal(size=(40, 40)))
    features = rng.normal(0.3, 1.5, size=(rows, 40))
    expected = frechet_distance_of(reference, fit_gaussian(features))
    # 1e-8: the general formula square-roots the singular covariance's round-off-sized null eigenvalues.
    assert FrechetToReference(reference)(features) == pytest.approx(expected, rel=1e-8)
