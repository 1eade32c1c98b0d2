"""Samplers over a denoiser D(x, sigma) in variance-exploding coordinates.

Every formulation is expressed as x = x0 + sigma * noise with a denoiser
D(x, sigma) ~ E[x0 | x]; the samplers below only see D and a decreasing sigma
grid ending at 0, so each works for EDM and DDPM alike. Step coefficients depend
only on the (static) grid and options, so they are computed in float64 NumPy and
the loop itself is a single `lax.scan`: one sampling run is one jit.

Noise that a stochastic sampler injects comes from `noise_fn(key)`, so the
caller decides its distribution (e.g. the PYoCo prior correlated across frames).
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

SAMPLERS = ("heun", "euler", "ddim", "dpmpp_2m")

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]
NoiseFn = Callable[[jax.Array], jax.Array]


def _at(denoise: Denoiser, x: jax.Array, sigma: jax.Array) -> jax.Array:
    """Calls D with one sigma per example, as the models expect."""
    return denoise(x, jnp.full((x.shape[0],), sigma, jnp.float32)).astype(jnp.float32)


def _consts(*arrays: np.ndarray) -> tuple[jax.Array, ...]:
    return tuple(jnp.asarray(a, jnp.float32) for a in arrays)


def _churned_sigmas(sigmas: np.ndarray, s_churn: float, s_tmin: float, s_tmax: float) -> np.ndarray:
    """sigma_hat_i = sigma_i (1 + gamma_i) of Karras et al. Algorithm 2."""
    num_steps = len(sigmas) - 1
    current = sigmas[:-1]
    gamma = np.where((current >= s_tmin) & (current <= s_tmax), min(s_churn / num_steps, math.sqrt(2.0) - 1.0), 0.0)
    return current * (1.0 + gamma)


def _karras(
    denoise: Denoiser,
    x: jax.Array,
    sigmas: np.ndarray,
    key: jax.Array,
    noise_fn: NoiseFn,
    second_order: bool,
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
) -> jax.Array:
    """Euler or Heun (Karras et al. Algorithm 2) with optional churn; the step into sigma=0 is always Euler."""
    sigma_hat = _churned_sigmas(sigmas, s_churn, s_tmin, s_tmax)
    churn_std = np.sqrt(sigma_hat**2 - sigmas[:-1] ** 2) * s_noise
    stochastic = bool(np.any(churn_std > 0))
    heun = second_order & (sigmas[1:] > 0)
    xs = _consts(sigma_hat, sigmas[1:], churn_std, heun.astype(np.float64)) + (jax.random.split(key, len(sigmas) - 1),)

    def step(x, inputs):
        s_hat, s_next, std, use_heun, step_key = inputs
        if stochastic:
            x = x + std * noise_fn(step_key)
        denoised = _at(denoise, x, s_hat)
        d = (x - denoised) / s_hat
        # x + (s_next - s_hat) d, written without cancelling two ~sigma_max terms.
        x_next = denoised + (s_next / s_hat) * (x - denoised)
        if heun.any():

            def corrected(x_next):
                d_next = (x_next - _at(denoise, x_next, s_next)) / s_next
                return x + (s_next - s_hat) * 0.5 * (d + d_next)

            x_next = jax.lax.cond(use_heun > 0, corrected, lambda x_next: x_next, x_next)
        return x_next, None

    return jax.lax.scan(step, x, xs)[0]


def _ddim(
    denoise: Denoiser, x: jax.Array, sigmas: np.ndarray, key: jax.Array, noise_fn: NoiseFn, eta: float
) -> jax.Array:
    """DDIM (Song et al. 2021) in VE form: x' = D + sigma_down (x - D) / sigma + sigma_up z.

    sigma_up^2 = eta^2 sigma'^2 (sigma^2 - sigma'^2) / sigma^2 is DDIM's variance
    std_t^2 divided by alphabar_prev, so eta=0 is deterministic DDIM (= Euler here)
    and eta=1 is ancestral DDPM sampling.
    """
    current, nxt = sigmas[:-1], sigmas[1:]
    sigma_up = np.minimum(nxt, eta * np.sqrt(nxt**2 * (current**2 - nxt**2) / current**2))
    sigma_down = np.sqrt(nxt**2 - sigma_up**2)
    stochastic = bool(np.any(sigma_up > 0))
    xs = _consts(current, sigma_down / current, sigma_up) + (jax.random.split(key, len(current)),)

    def step(x, inputs):
        sigma, down_ratio, up, step_key = inputs
        denoised = _at(denoise, x, sigma)
        x_next = denoised + down_ratio * (x - denoised)
        if stochastic:
            x_next = x_next + up * noise_fn(step_key)
        return x_next, None

    return jax.lax.scan(step, x, xs)[0]


def _dpmpp_2m(denoise: Denoiser, x: jax.Array, sigmas: np.ndarray) -> jax.Array:
    """DPM-Solver++(2M) (Lu et al. 2022), data prediction, midpoint form, in log-sigma time.

    With lambda = -ln sigma and h_i = lambda_{i+1} - lambda_i:
    x' = (sigma'/sigma) x + (1 - sigma'/sigma) ((1 + 1/(2r)) D_i - 1/(2r) D_{i-1}), r = h_{i-1}/h_i.
    The first step (no history) and a step into sigma=0 are first order.
    """
    current, nxt = sigmas[:-1], sigmas[1:]
    ratio = nxt / current
    weight = np.zeros_like(current)
    inner = np.arange(1, len(current))
    inner = inner[nxt[inner] > 0]
    weight[inner] = np.log(current[inner] / nxt[inner]) / (2.0 * np.log(current[inner - 1] / current[inner]))
    xs = _consts(current, ratio, weight)

    def step(carry, inputs):
        x, previous = carry
        sigma, r, w = inputs
        denoised = _at(denoise, x, sigma)
        blended = (1.0 + w) * denoised - w * previous
        return (r * x + (1.0 - r) * blended, denoised), None

    return jax.lax.scan(step, (x, jnp.zeros_like(x)), xs)[0][0]


def run_sampler(
    sampler: str,
    denoise: Denoiser,
    x: jax.Array,
    sigmas: np.ndarray,
    *,
    key: jax.Array,
    noise_fn: NoiseFn,
    eta: float = 0.0,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
) -> jax.Array:
    """Integrates from x at sigmas[0] down the grid `sigmas` and returns x at sigmas[-1].

    `sigmas` is a concrete decreasing NumPy grid (normally ending at 0, where x is
    the sample); the options are Python floats, fixed at trace time.
    """
    sigmas = np.asarray(sigmas, np.float64)
    if sigmas.ndim != 1 or len(sigmas) < 2 or np.any(np.diff(sigmas) >= 0) or sigmas[-1] < 0:
        raise ValueError(f"sigmas must be a decreasing grid of >= 2 values ending at >= 0, got {sigmas}")
    x = x.astype(jnp.float32)
    if sampler in ("heun", "euler"):
        return _karras(denoise, x, sigmas, key, noise_fn, sampler == "heun", s_churn, s_tmin, s_tmax, s_noise)
    if sampler == "ddim":
        return _ddim(denoise, x, sigmas, key, noise_fn, eta)
    if sampler == "dpmpp_2m":
        return _dpmpp_2m(denoise, x, sigmas)
    raise ValueError(f"sampler {sampler!r} is not one of {SAMPLERS}; set sample.sampler accordingly.")
