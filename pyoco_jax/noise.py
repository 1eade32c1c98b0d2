"""PYoCo video noise priors: noise correlated across frames, N(0, I) per frame.

An image diffusion model fine-tuned on video keeps its preconditioning only if
every frame's noise stays standard normal; PYoCo correlates frames while keeping
that marginal (Ge et al. 2023, "Preserve Your Own Correlation").

  mixed:        eps^i = eps_shared + eps_ind^i,
                eps_shared ~ N(0, a^2/(1+a^2)), eps_ind^i ~ N(0, 1/(1+a^2))
  progressive:  eps^0 ~ N(0, 1),  eps^i = c eps^{i-1} + eps_ind^i,
                c = a / sqrt(1+a^2), eps_ind^i ~ N(0, 1/(1+a^2))
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

PRIORS = ("iid", "mixed", "progressive")


def _check(prior: str, alpha: float) -> None:
    if prior not in PRIORS:
        raise ValueError(f"noise prior {prior!r} is not one of {PRIORS}; set noise.prior accordingly.")
    if not alpha >= 0:
        raise ValueError(f"noise alpha must be >= 0 (0 is iid), got {alpha}; set noise.alpha accordingly.")


def progressive_coefficient(alpha: float) -> float:
    """The lag-1 correlation c = a / sqrt(1 + a^2) of the progressive prior."""
    return alpha / math.sqrt(1.0 + alpha * alpha)


def progressive_matrix(alpha: float, num_frames: int) -> np.ndarray:
    """M with eps = M @ z (z iid N(0,1) over frames): the progressive recursion unrolled.

    Row i is eps^i = sum_{j<=i} c^(i-j) w_j, with w_0 = z_0 and w_j = sqrt(1-c^2) z_j
    for j >= 1, which is exactly eps^i = c eps^{i-1} + eps_ind^i. As one matrix the
    prior is a single contraction over frames, so the graph does not grow with F.
    """
    c = progressive_coefficient(alpha)
    lag = np.arange(num_frames)[:, None] - np.arange(num_frames)[None, :]
    powers = np.where(lag >= 0, c ** np.maximum(lag, 0), 0.0)
    scale = np.full(num_frames, math.sqrt(1.0 - c * c))
    scale[0] = 1.0
    return powers * scale[None, :]


def sample_noise(
    key: jax.Array,
    shape: tuple[int, ...],
    prior: str = "iid",
    alpha: float = 1.0,
    frame_axis: int = 1,
    dtype=jnp.float32,
) -> jax.Array:
    """Draws noise of `shape` whose frames (along `frame_axis`) follow the prior."""
    _check(prior, alpha)
    shape = tuple(shape)
    frame_axis = frame_axis % len(shape)
    if prior == "iid" or alpha == 0:
        return jax.random.normal(key, shape, jnp.float32).astype(dtype)
    if prior == "mixed":
        shared_key, ind_key = jax.random.split(key)
        shared_shape = shape[:frame_axis] + (1,) + shape[frame_axis + 1 :]
        shared = jax.random.normal(shared_key, shared_shape, jnp.float32)
        ind = jax.random.normal(ind_key, shape, jnp.float32)
        var_shared = alpha * alpha / (1.0 + alpha * alpha)
        return (math.sqrt(var_shared) * shared + math.sqrt(1.0 - var_shared) * ind).astype(dtype)
    z = jax.random.normal(key, shape, jnp.float32)
    mix = jnp.asarray(progressive_matrix(alpha, shape[frame_axis]), jnp.float32)
    eps = jnp.tensordot(mix, jnp.moveaxis(z, frame_axis, 0), axes=1, precision="highest")
    return jnp.moveaxis(eps, 0, frame_axis).astype(dtype)


def frame_correlation(prior: str, alpha: float, num_frames: int) -> np.ndarray:
    """The theoretical F x F correlation of the prior's per-frame noise."""
    _check(prior, alpha)
    eye = np.eye(num_frames)
    if prior == "iid":
        return eye
    if prior == "mixed":
        rho = alpha * alpha / (1.0 + alpha * alpha)
        return eye + rho * (1.0 - eye)
    lag = np.abs(np.arange(num_frames)[:, None] - np.arange(num_frames)[None, :])
    return progressive_coefficient(alpha) ** lag
