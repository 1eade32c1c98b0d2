"""Gaussian statistics of features and the Frechet distance between two Gaussians (the statistics side of FVD).

    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))

(S1 S2)^(1/2) is not symmetric, and scipy.linalg.sqrtm on it goes complex or inaccurate when the
covariances are singular (fewer clips than feature dimensions). Its trace equals that of the
symmetric PSD matrix (sqrt(S1) S2 sqrt(S1))^(1/2), i.e. the sum of singular values of
sqrt(S1) sqrt(S2); the symmetric square roots come from numpy's eigh in float64, with tiny negative
eigenvalues from round-off clipped to 0. No scipy needed.
"""

import os
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np


@dataclass(frozen=True, eq=False)  # arrays have no single truth value for ==
class FeatureStats:
    """Mean (D,), covariance (D, D) and the number of feature vectors they came from, in float64."""

    mean: np.ndarray
    cov: np.ndarray
    count: int

    def __post_init__(self) -> None:
        dim = self.mean.shape[0] if self.mean.ndim == 1 else None
        if dim is None or self.cov.shape != (dim, dim):
            raise ValueError(f"FeatureStats needs mean (D,) and cov (D, D), got {self.mean.shape} and {self.cov.shape}")

    def save(self, file: str | os.PathLike | BinaryIO) -> None:
        """Writes a plain .npz (arrays only, so loading needs no pickle)."""
        np.savez(file, mean=self.mean, cov=self.cov, count=np.int64(self.count))

    @classmethod
    def load(cls, file: str | os.PathLike | BinaryIO) -> "FeatureStats":
        """Reads what `save` wrote; refuses pickled objects."""
        with np.load(file, allow_pickle=False) as data:
            return cls(
                mean=data["mean"].astype(np.float64), cov=data["cov"].astype(np.float64), count=int(data["count"])
            )


def fit_gaussian(features: np.ndarray) -> FeatureStats:
    """(N, D) features -> their mean and unbiased (N - 1) covariance in float64, as StyleGAN-V's FVD uses."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"fit_gaussian needs (N >= 2, D) features, got shape {features.shape}")
    return FeatureStats(
        mean=features.mean(axis=0), cov=np.atleast_2d(np.cov(features, rowvar=False)), count=features.shape[0]
    )


def psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric PSD matrix; round-off asymmetry and negative eigenvalues are removed."""
    matrix = np.asarray(matrix, dtype=np.float64)
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) as the nuclear norm of sqrt(S1) sqrt(S2).

    (sqrt(S1) sqrt(S2))(sqrt(S1) sqrt(S2))^T = sqrt(S1) S2 sqrt(S1), so its singular values are the square
    roots of that PSD matrix's eigenvalues. Taking them directly avoids square-rooting round-off
    (eigenvalues of ~1e-16 would add ~1e-8 each for singular covariances) and is symmetric in S1, S2.
    """
    return float(np.linalg.svd(psd_sqrt(cov1) @ psd_sqrt(cov2), compute_uv=False).sum())


def frechet_distance(mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray) -> float:
    """The squared Frechet (2-Wasserstein) distance between N(mean1, cov1) and N(mean2, cov2), in float64.

    Round-off can push the exact 0 of identical Gaussians a hair below zero; the result is clipped at 0.
    """
    mean1, mean2 = np.asarray(mean1, dtype=np.float64), np.asarray(mean2, dtype=np.float64)
    cov1, cov2 = np.asarray(cov1, dtype=np.float64), np.asarray(cov2, dtype=np.float64)
    if mean1.ndim != 1 or mean1.shape != mean2.shape or not cov1.shape == cov2.shape == (mean1.size, mean1.size):
        raise ValueError(f"shapes disagree: means {mean1.shape}, {mean2.shape}; covariances {cov1.shape}, {cov2.shape}")
    gap = mean1 - mean2
    value = gap @ gap + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt_product(cov1, cov2)
    return max(float(value), 0.0)


def frechet_distance_of(stats1: FeatureStats, stats2: FeatureStats) -> float:
    """`frechet_distance` of two fitted Gaussians: FVD when they are of I3D features of real and generated clips."""
    return frechet_distance(stats1.mean, stats1.cov, stats2.mean, stats2.cov)


class FrechetToReference:
    """The Frechet distance of feature sets to one fixed Gaussian, fast enough to bootstrap (thousands of sets).

    Exact, not an approximation: sqrt(S_ref) is computed once, and Tr((S_ref S)^(1/2)) is the sum of
    square roots of the eigenvalues of (X A)(X A)^T / (n - 1), with X the centred rows and A = sqrt(S_ref):
    the same nonzero eigenvalues as A S A, in an n x n matrix when there are fewer rows than dimensions.
    """

    def __init__(self, reference: FeatureStats):
        self.mean = reference.mean
        self.trace = float(np.trace(reference.cov))
        self.root = psd_sqrt(reference.cov)

    def __call__(self, features: np.ndarray) -> float:
        """The squared Frechet distance between N(reference) and the Gaussian fitted to `features` (N >= 2, D)."""
        return self.distance(self.prepare(features))

    def prepare(self, features: np.ndarray) -> np.ndarray:
        """Rows [x, x A] (N, 2D): what `distance` needs, projected once so that resampled rows need no product."""
        rows = np.asarray(features, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.mean.size:
            raise ValueError(f"need (N, {self.mean.size}) features, got shape {rows.shape}")
        return np.concatenate([rows, rows @ self.root], axis=1)

    def distance(self, prepared: np.ndarray) -> float:
        """The distance for rows from `prepare` (any subset or resample of them, at least 2)."""
        if prepared.shape[0] < 2:
            raise ValueError(f"need at least 2 feature rows, got {prepared.shape[0]}")
        count, dim = prepared.shape[0], self.mean.size
        centred = prepared - prepared.mean(axis=0)
        projected = centred[:, dim:] / np.sqrt(count - 1)  # (x - mean) A, since centring commutes with A.
        small = projected @ projected.T if count <= dim else projected.T @ projected
        trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh(small), 0.0, None)).sum())
        covariance_trace = float(np.sum(centred[:, :dim] ** 2) / (count - 1))
        gap = prepared[:, :dim].mean(axis=0) - self.mean
        return max(float(gap @ gap) + self.trace + covariance_trace - 2.0 * trace_sqrt, 0.0)
