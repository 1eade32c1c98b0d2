"""The VP -> EDM bridge: a DDPM-trained network as EDM's denoiser D(x; sigma), and the config checks around it.

Reference for the network test: diffusers' own UNet2DConditionModel (tiny, random weights) fed
x / sqrt(1 + sigma^2) at the fractional timestep diffusers' Euler scheduler assigns to sigma
(`_sigma_to_t`, k-diffusion's log-sigma interpolation), read as epsilon (D = x - sigma eps) or as v
(D = x / (1 + sigma^2) - sigma / sqrt(1 + sigma^2) v). Both sides run in float32; the bridged D must
match within DENOISER_TOL * (1 + sigma), since the network's ~1e-5 float error is multiplied by c_out ~ sigma.
"""

import math

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from pyoco_jax.configs import default

from pyoco_jax.convert.diffusers import load_unet
from pyoco_jax.diffusion import DDPM, EDM, BridgedEDM, VPSchedule, check_config, make_formulation
from tests.models.diffusers_testing import saved_random_unet

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 __array__ notice inside diffusers
DENOISER_TOL = 2e-5
SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)


def _config(**edm):
    """The default config with `diffusion.edm` options (SD's scaled_linear schedule is the default ddpm one)."""
    config = default.get_config()
    config.diffusion.edm.update(edm)
    return config


def _bridge(prediction: str) -> BridgedEDM:
    return make_formulation(_config(pretrained_prediction=prediction, sigma_min=0.03, sigma_max=14.6).diffusion)


def _closed_form_sigmas() -> np.ndarray:
    """SD's schedule written out: betas linear in sqrt between beta_start and beta_end, abar their running product."""
    betas = np.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000) ** 2
    abar = np.cumprod(1.0 - betas)
    return np.sqrt((1.0 - abar) / abar)


def test_timestep_and_sigma_round_trip_against_alphas_cumprod():
    schedule = VPSchedule.from_config(default.get_config().diffusion.ddpm)
    sigmas = _closed_form_sigmas()
    steps = np.arange(1000, dtype=np.float32)
    np.testing.assert_allclose(schedule.sigmas, sigmas, rtol=1e-12)
    np.testing.assert_allclose(schedule.sigma(steps), sigmas, rtol=2e-6)
    np.testing.assert_allclose(schedule.timestep(sigmas), steps, atol=2e-3)

    rng = np.random.default_rng(0)
    fractional = rng.uniform(0, 999, 200).astype(np.float32)
    np.testing.assert_allclose(schedule.timestep(schedule.sigma(fractional)), fractional, atol=2e-3)
    between = np.exp(rng.uniform(np.log(sigmas[0]), np.log(sigmas[-1]), 200))
    np.testing.assert_allclose(schedule.sigma(schedule.timestep(between)), between, rtol=2e-6)
    # The same fractional timestep as diffusers' Euler scheduler (k-diffusion's DiscreteSchedule.sigma_to_t).
    euler = diffusers.EulerDiscreteScheduler(**SD)
    reference = euler._sigma_to_t(between, np.log(sigmas))
    np.testing.assert_allclose(schedule.timestep(between), reference, atol=2e-3)
    # Outside the schedule the timestep saturates at its ends.
    np.testing.assert_array_equal(schedule.timestep(np.array([1e-4, 100.0])), [0.0, 999.0])


def test_bridge_noising_is_ddpm_noising():
    """c_in (x0 + sigma_t eps) is DDPM's x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps at integer t."""
    ddpm, bridge = DDPM(), _bridge("epsilon")
    rng = np.random.default_rng(1)
    x0, eps = rng.standard_normal((2, 4, 2, 3, 3, 3), np.float32)
    t = np.array([0, 137, 600, 999])
    sigma = bridge.schedule.sigmas[t]
    c_in = np.asarray(bridge.preconditioning(sigma)[2]).reshape(-1, 1, 1, 1, 1)
    np.testing.assert_allclose(c_in * bridge.add_noise(x0, eps, sigma), ddpm.add_noise(x0, eps, t), atol=2e-6)
    np.testing.assert_allclose(bridge.preconditioning(sigma)[3], t, atol=2e-3)


@pytest.mark.parametrize("prediction", ["epsilon", "v", "x0"])
def test_an_exact_vp_network_makes_the_edm_loss_vanish(prediction):
    """A network returning the true VP target (from the VP definitions, at the sigma its timestep stands for).

    v = sqrt(abar) eps - sqrt(1 - abar) x0 with x_t = sqrt(abar) x0 + sqrt(1 - abar) eps: the bridge's
    c_in, t(sigma), c_skip and c_out must invert this exactly, so D = x0 and EDM's weighted loss is 0.
    """
    bridge = _bridge(prediction)
    rng = np.random.default_rng(2)
    x0, noise = jnp.asarray(rng.standard_normal((2, 5, 2, 4, 4, 3), np.float32))
    sigma = jnp.asarray([0.03, 0.2, 1.0, 3.7, 9.0, 14.6], jnp.float32)[:5]

    def exact_network(x_t, t):
        abar = 1.0 / (1.0 + bridge.schedule.sigma(t) ** 2)
        root, root_rest = (jnp.sqrt(a).reshape(-1, 1, 1, 1, 1) for a in (abar, 1.0 - abar))
        np.testing.assert_allclose(x_t, root * x0 + root_rest * noise, atol=1e-5)
        return {"epsilon": noise, "v": root * noise - root_rest * x0, "x0": x0}[prediction]

    denoised = bridge.denoise(exact_network, bridge.add_noise(x0, noise, sigma), sigma)
    np.testing.assert_allclose(denoised, x0, atol=5e-5)
    per_example_loss, time = bridge.loss_terms(exact_network, x0, noise, sigma)
    assert np.all(np.asarray(per_example_loss) < 1e-8)
    np.testing.assert_allclose(time, bridge.schedule.timestep(sigma))


@pytest.fixture(scope="module")
def image_unet(tmp_path_factory):
    """A tiny random diffusers U-Net with cross-attention, saved, and the same weights in our VideoUNet."""
    folder = tmp_path_factory.mktemp("unet")
    unet = saved_random_unet(
        folder,
        sample_size=16,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
    )
    return unet, load_unet(folder)


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_bridged_denoiser_equals_diffusers_unet(image_unet, prediction):
    unet, model = image_unet
    bridge = _bridge(prediction)
    sigmas = _closed_form_sigmas()
    # Discrete sigmas (first, middle, last timestep) and sigmas between two timesteps.
    sigma = np.array(
        [sigmas[0], sigmas[500], sigmas[999], math.sqrt(sigmas[41] * sigmas[42]), 0.7 * sigmas[3] + 0.3 * sigmas[4]]
        + list(np.exp(np.random.default_rng(3).uniform(np.log(0.03), np.log(14.6), 3))),
        np.float32,
    )
    rng = np.random.default_rng(4)
    x = rng.standard_normal((len(sigma), 1, 16, 16, 4), np.float32) * np.sqrt(0.25 + sigma**2).reshape(-1, 1, 1, 1, 1)
    context = rng.standard_normal((len(sigma), 7, 32), np.float32)

    ours = nnx.jit(lambda m, x, s, c: bridge.denoise(lambda x_in, t: m(x_in, t, context=c), x, s))(
        model, x, sigma, context
    )

    s = sigma.astype(np.float64).reshape(-1, 1, 1, 1)
    t = diffusers.EulerDiscreteScheduler(**SD)._sigma_to_t(sigma.astype(np.float64), np.log(sigmas))
    x_nchw = torch.from_numpy(x[:, 0].transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        out = unet(
            x_nchw / torch.from_numpy(np.sqrt(1 + s**2)).float(), torch.from_numpy(t).float(), torch.from_numpy(context)
        )
    out = out.sample.double().numpy()
    x64 = x_nchw.double().numpy()
    reference = x64 - s * out if prediction == "epsilon" else x64 / (1 + s**2) - s / np.sqrt(1 + s**2) * out
    absolute = np.abs(np.asarray(ours)[:, 0].transpose(0, 3, 1, 2) - reference)
    error = absolute / (1 + s)
    print(f"{prediction}: max |D - D_ref| = {absolute.max():.2e}, max |D - D_ref| / (1 + sigma) = {error.max():.2e}")
    assert error.max() < DENOISER_TOL


def test_training_sigmas_stay_in_the_schedule():
    """ln sigma ~ N(p_mean, p_std^2) truncated to [ln sigma_min, ln sigma_max]."""
    bridge = _bridge("epsilon")
    draws = np.asarray(jax.vmap(bridge.draw_level)(jax.random.split(jax.random.key(0), 20_000)))
    assert draws.min() >= 0.03 and draws.max() <= 14.6
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))
    lower, upper = ((math.log(s) - bridge.p_mean) / bridge.p_std for s in (0.03, 14.6))
    below_median = (phi(0.0) - phi(lower)) / (phi(upper) - phi(lower))
    assert abs(np.mean(draws < math.exp(bridge.p_mean)) - below_median) < 0.015


@pytest.mark.parametrize("sampler", ["heun", "euler"])
def test_samplers_draw_gaussian_data_through_the_bridge(sampler):
    """An exact epsilon network for x0 ~ N(0, 0.5^2): the EDM samplers, unchanged, return data of std 0.5.

    Step counts keep the discretisation error near 1% (first-order Euler needs more); 3% allowed.
    """
    bridge, std, steps = _bridge("epsilon"), 0.5, 64 if sampler == "heun" else 256

    def exact_network(x_t, t):
        sigma = bridge.schedule.sigma(t).reshape(-1, 1, 1, 1, 1)
        x = x_t * jnp.sqrt(1.0 + sigma**2)
        return (x - std**2 / (std**2 + sigma**2) * x) / sigma

    samples = bridge.sample(exact_network, jax.random.key(0), (8192, 2, 1, 1, 1), sampler=sampler, num_steps=steps)
    print(f"{sampler}: sample std {float(jnp.std(samples)):.4f} (data {std})")
    assert abs(float(jnp.std(samples)) / std - 1.0) < 0.03


def test_check_config_accepts_consistent_settings():
    check_config(_config())  # Native EDM from scratch: today's behaviour.
    check_config(_config(pretrained_prediction="epsilon", sigma_min=0.03, sigma_max=14.6))
    native = _config(pretrained_prediction="edm")
    native.train.init_from = "some/edm/model"
    check_config(native)
    ddpm = _config()
    ddpm.diffusion.formulation, ddpm.train.init_from = "ddpm", "some/sd/unet"
    check_config(ddpm)
    assert type(make_formulation(native.diffusion)) is EDM
    # The range as the message prints it (6 significant digits) is accepted.
    schedule = VPSchedule.from_config(default.get_config().diffusion.ddpm)
    ends = dict(sigma_min=float(f"{schedule.sigma_min:.6g}"), sigma_max=float(f"{schedule.sigma_max:.6g}"))
    check_config(_config(pretrained_prediction="v", **ends))


@pytest.mark.parametrize(
    "edm, init_from, match",
    [
        (
            dict(),
            "sd/unet",
            r"^config key 'diffusion\.edm\.pretrained_prediction': train\.init_from='sd/unet'.*'epsilon'",
        ),
        (dict(pretrained_prediction="eps"), "", r"^config key 'diffusion\.edm\.pretrained_prediction': 'eps' is not"),
        (
            dict(pretrained_prediction="epsilon", sigma_max=14.6),
            "",
            r"^config key 'diffusion\.edm\.sigma_min': 0\.002 is below 0\.0291672",
        ),
        (
            dict(pretrained_prediction="v", sigma_min=0.03),
            "",
            r"^config key 'diffusion\.edm\.sigma_max': 80\.0 is above 14\.6146",
        ),
        (dict(pretrained_prediction="epsilon", sigma_min=0.03, sigma_max=20.0), "sd", r"sigma_max': 20\.0 is above"),
    ],
)
def test_check_config_refuses_wrong_combinations(edm, init_from, match):
    config = _config(**edm)
    config.train.init_from = init_from
    with pytest.raises(ValueError, match=match):
        check_config(config)


def test_bridge_refuses_a_schedule_that_does_not_cover_the_sigmas():
    config = _config(pretrained_prediction="epsilon", sigma_min=0.03, sigma_max=14.6)
    config.diffusion.ddpm.num_train_timesteps = 100  # Fewer steps: the noisiest sigma is far lower.
    with pytest.raises(ValueError, match=r"'diffusion\.edm\.sigma_max': 14\.6 is above .*diffusion\.ddpm"):
        check_config(config)
