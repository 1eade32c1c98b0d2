"""End to end: every sampler, fed the exact denoiser of Gaussian data, must reproduce that data's distribution.

Data: videos of shape (F=4, H=1, W=1, C=2), flattened to d = 8 (index f*C + c),
x0 ~ N(mu, S) with S = kron(S_F, S_C) + 0.02 I (frames strongly correlated).

Noise with a PYoCo prior is N(0, R) across frames (R the prior's frame
correlation, written out below from its definition), independent across pixels
and channels: K = kron(R, I_C). So x = x0 + sigma L z with K = L L^T and
x | x0 ~ N(x0, sigma^2 K), x ~ N(mu, S + sigma^2 K), and the optimal denoiser is

    E[x0 | x] = mu + S (S + sigma^2 K)^{-1} (x - mu).

Computed stably by whitening the noise: with S' = L^{-1} S L^{-T} = U diag(lam) U^T,
E[x0 | x] = mu + L U diag(lam / (lam + sigma^2)) U^T L^{-1} (x - mu).
The probability-flow ODE dx/dsigma = (x - D)/sigma = -sigma K grad log p_sigma then
carries N(mu, S + sigma_max^2 K) to N(mu, S); stochastic steps stay on the marginals
only if the injected noise is N(0, K) too. Plugging a denoiser that assumed iid
noise into a correlated-prior sampler visibly breaks the covariance (checked in
`test_denoiser_must_know_the_prior`).

Tolerances: with N = 8192 samples the sample mean has standard error
sqrt(S_ii / N) and the whitened covariance S^{-1/2} S_hat S^{-1/2} - I has entries
of standard deviation <= sqrt(2 / N) ~ 0.016; we allow 5 standard errors for the
mean and 0.08 for the whitened covariance (Monte-Carlo error plus discretisation;
step counts are chosen so the measured error is <= ~0.06: 64 for the second-order
samplers (32 for UniPC), ~512 for the first-order ones). The iid-denoiser control misses by ~0.9.
A DDPM grid's last non-zero level is sigma(t_last) (0.12 for 64 trailing steps of
scaled_linear), and the final jump to 0 returns E[x0 | x], which shrinks the
smallest data direction (variance 0.044) by sigma^2 / (lam + sigma^2) ~ 25%: the
scaled_linear cases therefore use >= 250 steps.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pyoco_jax.diffusion import DDPM, EDM

F, C = 4, 2
DIM = F * C
NUM_SAMPLES = 8192
COV_TOL = 0.08


def _frame_correlation(prior, alpha):
    """R from the prior's definition: mixed corr a^2/(1+a^2), progressive (a/sqrt(1+a^2))^|i-j|."""
    lag = np.abs(np.arange(F)[:, None] - np.arange(F)[None, :])
    if prior == "iid":
        return np.eye(F)
    if prior == "mixed":
        return np.where(lag == 0, 1.0, alpha**2 / (1 + alpha**2))
    return (alpha / math.sqrt(1 + alpha**2)) ** lag


def _data(scale):
    lag = np.abs(np.arange(F)[:, None] - np.arange(F)[None, :])
    frames = 0.9**lag
    channels = np.array([[1.0, 0.4], [0.4, 0.7]])
    cov = scale**2 * (np.kron(frames, channels) + 0.02 * np.eye(DIM))
    mean = scale * np.array([0.5, -0.3, 0.4, -0.2, 0.3, -0.1, 0.2, 0.0])
    return mean, cov


class GaussianDenoiser:
    """E[x0 | x0 + sigma * noise] for x0 ~ N(mean, cov) and noise ~ N(0, kron(R, I_C))."""

    def __init__(self, mean, cov, noise_frame_corr):
        chol = np.linalg.cholesky(np.kron(noise_frame_corr, np.eye(C)))
        chol_inv = np.linalg.inv(chol)
        lam, u = np.linalg.eigh(chol_inv @ cov @ chol_inv.T)
        self.mean = jnp.asarray(mean, jnp.float32)
        self.lam = jnp.asarray(lam, jnp.float32)
        self.to_white = jnp.asarray((u.T @ chol_inv).T, jnp.float32)  # rows: x -> U^T L^{-1} x
        self.from_white = jnp.asarray((chol @ u).T, jnp.float32)

    def __call__(self, x, sigma):
        flat = x.reshape(x.shape[0], DIM) - self.mean
        shrink = self.lam / (self.lam + sigma[:, None] ** 2)
        out = self.mean + ((flat @ self.to_white) * shrink) @ self.from_white
        return out.reshape(x.shape)


def _edm_model_fn(edm, denoiser):
    """The raw output F with D = c_skip x + c_out F, inverting Karras et al. Table 1 (c_noise = ln(sigma)/4)."""
    sd = edm.sigma_data

    def model_fn(x_in, c_noise):
        sigma = jnp.exp(4.0 * c_noise)
        b = (-1, 1, 1, 1, 1)
        total = sigma**2 + sd**2
        x = x_in * jnp.sqrt(total).reshape(b)
        c_skip, c_out = sd**2 / total, sigma * sd / jnp.sqrt(total)
        return (denoiser(x, sigma) - c_skip.reshape(b) * x) / c_out.reshape(b)

    return model_fn


def _ddpm_model_fn(ddpm, denoiser, alphas_cumprod, prediction):
    """The raw epsilon / v / x0 output at timestep t; sigma(t) interpolated in log sigma between integer steps."""
    abar = np.where(alphas_cumprod > 0, alphas_cumprod, 2.0**-24)
    log_sigmas = jnp.asarray(0.5 * np.log((1 - abar) / abar), jnp.float32)

    def model_fn(x_vp, t):
        sigma = jnp.exp(jnp.interp(t, jnp.arange(len(abar), dtype=jnp.float32), log_sigmas))
        b = (-1, 1, 1, 1, 1)
        root_abar = (1.0 / jnp.sqrt(1.0 + sigma**2)).reshape(b)
        root_one_minus = sigma.reshape(b) * root_abar
        x = x_vp / root_abar
        x0 = denoiser(x, sigma)
        eps = (x - x0) / sigma.reshape(b)
        if prediction == "epsilon":
            return eps
        if prediction == "v":
            return root_abar * eps - root_one_minus * x0
        return x0

    return model_fn


def _assert_matches(samples, mean, cov):
    flat = np.asarray(samples, np.float64).reshape(-1, DIM)
    assert np.all(np.isfinite(flat))
    mean_hat = flat.mean(0)
    cov_hat = np.cov(flat, rowvar=False)
    mean_se = np.sqrt(np.diag(cov) / len(flat))
    assert np.all(np.abs(mean_hat - mean) < 5 * mean_se + 1e-3), (mean_hat - mean) / mean_se
    w, v = np.linalg.eigh(cov)
    inv_root = v @ np.diag(w**-0.5) @ v.T
    whitened_error = inv_root @ cov_hat @ inv_root - np.eye(DIM)
    assert np.max(np.abs(whitened_error)) < COV_TOL, np.max(np.abs(whitened_error))


def gaussian_samples(formulation, model_fn, seed, sampler, steps, prior, alpha, options=None):
    """NUM_SAMPLES videos of F frames of C values, sampled in one jit."""
    shape = (NUM_SAMPLES, F, 1, 1, C)
    options = options or {}
    run = jax.jit(
        lambda key: formulation.sample(
            model_fn, key, shape, sampler=sampler, num_steps=steps, prior=prior, alpha=alpha, **options
        )
    )
    return run(jax.random.key(seed))


def _edm_samples(sampler, steps, prior, alpha, options=None, denoiser_prior=None):
    edm = EDM()
    mean, cov = _data(0.5)
    denoiser = GaussianDenoiser(mean, cov, _frame_correlation(*(denoiser_prior or (prior, alpha))))
    samples = gaussian_samples(edm, _edm_model_fn(edm, denoiser), 0, sampler, steps, prior, alpha, options)
    return samples, mean, cov


EDM_CASES = [
    ("heun", 64, "iid", 0.0, {}),
    ("heun", 64, "mixed", 1.0, {}),
    ("heun", 64, "progressive", 2.0, {}),
    ("heun", 64, "progressive", 2.0, {"s_churn": 20.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.0}),
    ("euler", 512, "mixed", 1.0, {"s_churn": 10.0}),
    ("ddim", 512, "progressive", 2.0, {}),
    ("ddim", 512, "mixed", 1.0, {"eta": 1.0}),
    ("dpmpp_2m", 64, "progressive", 2.0, {}),
    ("dpmpp_2m", 64, "mixed", 1.0, {}),
    ("unipc", 32, "progressive", 2.0, {}),
    ("unipc", 32, "mixed", 1.0, {"unipc_order": 3}),
]


@pytest.mark.parametrize("sampler,steps,prior,alpha,options", EDM_CASES)
def test_edm_samplers_reproduce_gaussian_data(sampler, steps, prior, alpha, options):
    samples, mean, cov = _edm_samples(sampler, steps, prior, alpha, options)
    _assert_matches(samples, mean, cov)


DDPM_CASES = [
    ("heun", 64, "linear", "epsilon", False, "progressive", 2.0, {}),
    ("euler", 512, "scaled_linear", "v", True, "mixed", 1.0, {}),
    ("ddim", 512, "cosine", "x0", False, "progressive", 2.0, {}),
    ("ddim", 500, "scaled_linear", "v", True, "progressive", 2.0, {"eta": 1.0}),
    ("dpmpp_2m", 64, "linear", "v", False, "mixed", 1.0, {}),
    ("dpmpp_2m", 250, "scaled_linear", "epsilon", True, "iid", 0.0, {}),
    ("unipc", 64, "linear", "v", False, "progressive", 2.0, {}),
    ("unipc", 250, "scaled_linear", "epsilon", True, "mixed", 1.0, {"unipc_order": 1}),
]


@pytest.mark.parametrize("sampler,steps,schedule,prediction,zero_snr,prior,alpha,options", DDPM_CASES)
def test_ddpm_samplers_reproduce_gaussian_data(sampler, steps, schedule, prediction, zero_snr, prior, alpha, options):
    betas = (0.00085, 0.012) if schedule == "scaled_linear" else (0.0001, 0.02)
    ddpm = DDPM(schedule, 1000, *betas, prediction=prediction, zero_terminal_snr=zero_snr)
    mean, cov = _data(1.0)
    denoiser = GaussianDenoiser(mean, cov, _frame_correlation(prior, alpha))
    model_fn = _ddpm_model_fn(ddpm, denoiser, ddpm.alphas_cumprod, prediction)
    _assert_matches(gaussian_samples(ddpm, model_fn, 1, sampler, steps, prior, alpha, options), mean, cov)


@pytest.mark.parametrize("sampler,options", [("heun", {}), ("ddim", {"eta": 1.0})])
def test_denoiser_must_know_the_prior(sampler, options):
    """The check above has teeth: a denoiser assuming iid noise under a progressive prior misses the data."""
    samples, mean, cov = _edm_samples(sampler, 64, "progressive", 2.0, options, denoiser_prior=("iid", 0.0))
    with pytest.raises(AssertionError):
        _assert_matches(samples, mean, cov)
