"""Sampling draws its noise from the configured prior: noise.in_sampling and noise.sample_alpha reach the sampler."""

import jax
import numpy as np
import pytest

from pyoco_jax.diffusion import make_formulation
from pyoco_jax.sample.sampler import make_sampler, sampling_prior
from pyoco_jax.train.build import build_model
from pyoco_jax.train.state import split_model
from tests.train.helpers import fast_config


def test_sampling_prior_follows_the_noise_config():
    config = fast_config("noise.prior=progressive", "noise.alpha=1.0", "noise.sample_alpha=-1.0")
    assert sampling_prior(config.noise) == ("progressive", 1.0)  # -1: the training prior's alpha.
    assert sampling_prior(fast_config("noise.alpha=1.0", "noise.sample_alpha=3.0").noise) == ("progressive", 3.0)
    assert sampling_prior(fast_config("noise.sample_alpha=0.0").noise) == ("progressive", 0.0)
    assert sampling_prior(fast_config("noise.in_sampling=False", "noise.sample_alpha=3.0").noise) == ("iid", 0.0)


@pytest.mark.parametrize(
    ("overrides", "correlation"),
    [
        (("noise.alpha=1.0", "noise.sample_alpha=-1.0"), 1 / np.sqrt(2)),
        (("noise.alpha=1.0", "noise.sample_alpha=3.0"), 3 / np.sqrt(10)),
        (("noise.alpha=1.0", "noise.in_sampling=False"), 0.0),
    ],
)
def test_sampled_frames_carry_the_sampling_priors_correlation(overrides, correlation):
    """With every param zero the U-Net outputs 0, EDM's denoiser is c_skip * x and a churn-free sampler
    scales its initial noise by one number: neighbouring frames then correlate as the prior's noise does,
    alpha / sqrt(1 + alpha^2) for the progressive prior (8 x 3 x 16 x 16 x 3 pairs: +-0.03 is 4 standard errors)."""
    config = fast_config("noise.prior=progressive", "sample.s_churn=0.0", "sample.guidance_scale=1.0", *overrides)
    model = build_model(config, 0)
    graphdef, params, frozen = split_model(model, config.optim.trainable)
    params = jax.tree.map(np.zeros_like, params)
    sampler = make_sampler(graphdef, make_formulation(config.diffusion), config, 4)
    videos = np.asarray(
        sampler(params, frozen, jax.random.PRNGKey(0), None, None, num=8, guidance_scale=1.0), np.float64
    )
    assert np.abs(videos).max() > 0.1  # Not a trivially constant output.
    first, second = videos[:, :-1].ravel(), videos[:, 1:].ravel()
    assert np.corrcoef(first, second)[0, 1] == pytest.approx(correlation, abs=0.03)
