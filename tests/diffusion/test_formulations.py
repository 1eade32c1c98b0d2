"""EDM preconditioning against Karras et al. Table 1, the losses, min-SNR weights, guidance and the factory."""

import math

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pyoco_jax.configs import default

from pyoco_jax.diffusion import DDPM, EDM, FlowMatching, classifier_free_guidance, make_formulation
from pyoco_jax.noise import frame_correlation

SIGMAS = np.array([0.002, 0.05, 0.5, 1.0, 7.0, 80.0], np.float32)
VIDEO = (6, 4, 4, 4, 2)
B = (-1, 1, 1, 1, 1)


def _table1(sigma, sd):
    """Karras et al. (2022) Table 1, 'EDM' column, and the loss weight lambda of Sec. 5."""
    c_skip = sd**2 / (sigma**2 + sd**2)
    c_out = sigma * sd / np.sqrt(sd**2 + sigma**2)
    c_in = 1 / np.sqrt(sigma**2 + sd**2)
    c_noise = np.log(sigma) / 4
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    return c_skip, c_out, c_in, c_noise, weight


@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
def test_edm_preconditioning_matches_table_1(sigma_data):
    edm = EDM(sigma_data=sigma_data)
    expected = _table1(SIGMAS.astype(np.float64), sigma_data)
    ours = (*edm.preconditioning(SIGMAS), edm.loss_weight(SIGMAS))
    for got, want in zip(ours, expected, strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def test_edm_denoiser_composes_the_preconditioning():
    edm = EDM(sigma_data=0.7)
    x = jax.random.normal(jax.random.key(0), (len(SIGMAS), 2, 3, 3, 2))
    model_fn = lambda x_in, t: jnp.tanh(x_in) + t.reshape(B)
    c_skip, c_out, c_in, c_noise, _ = (np.asarray(c, np.float32).reshape(B) for c in _table1(SIGMAS, 0.7))
    expected = c_skip * x + c_out * (np.tanh(c_in * x) + c_noise)
    np.testing.assert_allclose(np.asarray(edm.denoise(model_fn, x, jnp.asarray(SIGMAS))), expected, atol=1e-5)


def test_karras_sigmas_follow_eq_5():
    edm = EDM(sigma_min=0.002, sigma_max=80.0, rho=7.0)
    n = 18
    i = np.arange(n)
    expected = (80.0 ** (1 / 7) + i / (n - 1) * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    np.testing.assert_allclose(edm.sampling_sigmas(n), np.append(expected, 0.0), rtol=1e-12)
    np.testing.assert_allclose(edm.sampling_sigmas(1), [80.0, 0.0])


def test_edm_training_sigmas_are_log_normal():
    edm = EDM(p_mean=-1.2, p_std=1.2)
    log_sigma = np.log(np.asarray(jax.vmap(edm.draw_level)(jax.random.split(jax.random.key(0), 50_000))))
    assert abs(log_sigma.mean() + 1.2) < 0.03 and abs(log_sigma.std() - 1.2) < 0.03


def _edm_oracle(edm, x0, offset=0.0):
    """Raw output whose denoised estimate is exactly x0 (plus `offset` in raw units)."""
    sd = edm.sigma_data

    def model_fn(x_in, c_noise):
        sigma = jnp.exp(4.0 * c_noise).reshape(B)
        x = x_in * jnp.sqrt(sigma**2 + sd**2)
        c_skip, c_out = sd**2 / (sigma**2 + sd**2), sigma * sd / jnp.sqrt(sigma**2 + sd**2)
        return (x0 - c_skip * x) / c_out + offset

    return model_fn


def test_edm_loss_zero_for_ideal_output_and_unit_effective_weight():
    edm = EDM()
    x0 = jax.random.normal(jax.random.key(1), VIDEO)
    key = jax.random.split(jax.random.key(2), x0.shape[0])
    loss, aux = edm.loss(_edm_oracle(edm, x0), x0, key, prior="progressive", alpha=2.0)
    assert float(loss) < 1e-8
    assert aux["per_example_loss"].shape == (VIDEO[0],) and aux["t"].shape == (VIDEO[0],)
    # lambda(sigma) c_out(sigma)^2 = 1: a raw-output error of 0.1 costs exactly 0.01 at every sigma.
    loss, aux = edm.loss(_edm_oracle(edm, x0, 0.1), x0, key, prior="progressive", alpha=2.0)
    np.testing.assert_allclose(np.asarray(aux["per_example_loss"]), 0.01, rtol=1e-3)
    assert loss.dtype == jnp.float32


def _ddpm_oracle(abar_table, x0, prediction, offset=0.0):
    """Raw epsilon / v / x0 output that is exact for the noise inside x_t (plus `offset`)."""

    def model_fn(x_t, t):
        abar = jnp.asarray(abar_table, jnp.float32)[t.astype(jnp.int32)].reshape(B)
        eps = (x_t - jnp.sqrt(abar) * x0) / jnp.sqrt(1 - abar)
        raw = {"epsilon": eps, "v": jnp.sqrt(abar) * eps - jnp.sqrt(1 - abar) * x0, "x0": x0}[prediction]
        return (raw + offset).astype(jnp.bfloat16 if prediction == "v" else jnp.float32)

    return model_fn


@pytest.mark.parametrize("prediction", ["epsilon", "v", "x0"])
def test_ddpm_loss_zero_for_ideal_output_and_min_snr_weights(prediction):
    gamma = 5.0
    ddpm = DDPM("scaled_linear", 1000, 0.00085, 0.012, prediction=prediction, min_snr_gamma=gamma)
    abar = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod
    abar = abar.double().numpy()
    x0 = jax.random.normal(jax.random.key(3), (64, 2, 2, 2, 1))
    key = jax.random.split(jax.random.key(4), x0.shape[0])
    if prediction != "v":  # bfloat16 outputs (the v case) are not exact enough for ~0
        loss, _ = ddpm.loss(_ddpm_oracle(abar, x0, prediction), x0, key, prior="mixed", alpha=1.0)
        assert float(loss) < 1e-8
    offset = 0.25  # exactly representable in bfloat16, so the error is exactly 0.25 in every case
    loss, aux = ddpm.loss(_ddpm_oracle(abar, x0, prediction, offset), x0, key, prior="mixed", alpha=1.0)
    assert loss.dtype == jnp.float32
    t = np.asarray(aux["t"]).astype(int)
    snr = abar[t] / (1 - abar[t])
    # Hang et al.: weight min(SNR, gamma) on ||x0 - x0_hat||^2, which is ||raw error||^2 / SNR (epsilon),
    # / (SNR + 1) (v), or itself (x0).
    expected = np.minimum(snr, gamma) / {"epsilon": snr, "v": snr + 1, "x0": np.ones_like(snr)}[prediction]
    tol = 2e-2 if prediction == "v" else 1e-4
    np.testing.assert_allclose(np.asarray(aux["per_example_loss"]), expected * offset**2, rtol=tol)


def test_min_snr_weight_finite_at_zero_terminal_snr():
    ddpm = DDPM(prediction="epsilon", zero_terminal_snr=True, min_snr_gamma=5.0)
    weights = np.asarray(ddpm.loss_weight(jnp.array([0, 500, 999])))
    assert np.all(np.isfinite(weights)) and weights[-1] == 1.0


def _formulation(name):
    return {"edm": EDM, "ddpm": lambda: DDPM(prediction="v"), "flow": FlowMatching}[name]()


@pytest.mark.parametrize("prior,alpha", [("iid", 0.0), ("mixed", 1.0), ("progressive", 2.0)])
@pytest.mark.parametrize("formulation", ["edm", "ddpm", "flow"])
def test_loss_noise_follows_the_prior(formulation, prior, alpha):
    """With x0 = 0 the model input is a per-example multiple of the noise: its frame correlation is the prior's."""
    seen = []

    def recorder(x_in, t):
        seen.append((x_in, t))
        return jnp.zeros_like(x_in)

    num_frames = 5
    x0 = jnp.zeros((512, num_frames, 3, 3, 1))
    form = _formulation(formulation)
    form.loss(recorder, x0, jax.random.split(jax.random.key(5), x0.shape[0]), prior=prior, alpha=alpha)
    x_in, t = (np.asarray(a, np.float64) for a in seen[0])
    if formulation == "edm":  # x_in = c_in sigma noise, sigma = exp(4 c_noise)
        sigma = np.exp(4 * t)
        scale = sigma / np.sqrt(sigma**2 + form.sigma_data**2)
    elif formulation == "ddpm":  # x_t = sqrt(1 - abar_t) noise
        scale = np.sqrt(1 - form.alphas_cumprod[t.astype(int)])
    else:  # x_t = t noise, the network's time 1000 t
        scale = t / form.timestep_scale
    noise = x_in / scale.reshape(B)
    assert abs(noise.std() - 1) < 0.05
    frames = np.moveaxis(noise, 1, 0).reshape(num_frames, -1)
    np.testing.assert_allclose(np.corrcoef(frames), frame_correlation(prior, alpha, num_frames), atol=0.05)


@pytest.mark.parametrize("formulation", ["edm", "ddpm", "flow"])
def test_guidance_mixes_denoised_estimates(formulation):
    form = _formulation(formulation)
    cond = lambda x, t: jnp.sin(x) + 0.1 * t.reshape(B)
    uncond = lambda x, t: 0.5 * x
    x = jax.random.normal(jax.random.key(6), (3, 2, 2, 2, 2)) * 3
    sigma = jnp.array([0.3, 2.0, 10.0])
    d_cond, d_uncond = form.denoise(cond, x, sigma), form.denoise(uncond, x, sigma)
    guided = form.denoise(classifier_free_guidance(cond, uncond, 4.0), x, sigma)
    np.testing.assert_allclose(np.asarray(guided), np.asarray(d_uncond + 4.0 * (d_cond - d_uncond)), atol=1e-4)


def test_guidance_scale_one_skips_the_unconditional_pass():
    def uncond(x, t):
        raise AssertionError("the unconditional model must not run at scale 1")

    cond = lambda x, t: x
    assert classifier_free_guidance(cond, uncond, 1.0) is cond


def test_make_formulation_from_config():
    config = default.get_config().diffusion
    edm = make_formulation(config)
    assert isinstance(edm, EDM) and edm.sigma_data == config.edm.sigma_data and edm.rho == config.edm.rho
    config.formulation = "ddpm"
    config.ddpm.prediction = "v"
    config.ddpm.schedule = "cosine"
    ddpm = make_formulation(config)
    assert isinstance(ddpm, DDPM) and ddpm.prediction == "v"
    config.formulation = "flow"
    config.flow.sample_shift = 5.0
    flow = make_formulation(config)
    assert isinstance(flow, FlowMatching) and flow.sampling_shift == 5.0 and flow.shift == config.flow.shift
    config.formulation = "consistency"
    with pytest.raises(ValueError, match="diffusion.formulation"):
        make_formulation(config)


def test_bad_choices_name_their_config_key():
    with pytest.raises(ValueError, match="sample.sampler"):
        EDM().sample(lambda x, t: x, jax.random.key(0), (1, 2, 1, 1, 1), sampler="plms", num_steps=4)
    with pytest.raises(ValueError, match="diffusion.ddpm.prediction"):
        DDPM(prediction="sample")
    with pytest.raises(ValueError, match="diffusion.ddpm.schedule"):
        DDPM(schedule="sigmoid")
    with pytest.raises(ValueError, match="sample.num_steps"):
        DDPM(num_train_timesteps=10).sampling_sigmas(11)


def test_sampling_is_one_jit_and_deterministic_per_key():
    edm = EDM()
    run = jax.jit(
        lambda key: edm.sample(lambda x, t: jnp.zeros_like(x), key, (2, 3, 2, 2, 1), sampler="heun", num_steps=5)
    )
    a, b = run(jax.random.key(0)), run(jax.random.key(0))
    assert a.shape == (2, 3, 2, 2, 1) and a.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert math.isfinite(float(jnp.abs(a).max()))


def test_loss_is_the_same_however_the_batch_is_split():
    """Per-example keys: a batch's loss equals the mean of its halves' losses (micro-batching, sharding)."""
    edm = EDM()
    x0 = jax.random.normal(jax.random.key(6), VIDEO)
    keys = jax.random.split(jax.random.key(7), x0.shape[0])

    def model_fn(x, t):
        return 0.3 * x + t.reshape((-1,) + (1,) * (x.ndim - 1))

    whole, _ = edm.loss(model_fn, x0, keys, prior="progressive", alpha=2.0)
    half = x0.shape[0] // 2
    first, _ = edm.loss(model_fn, x0[:half], keys[:half], prior="progressive", alpha=2.0)
    second, _ = edm.loss(model_fn, x0[half:], keys[half:], prior="progressive", alpha=2.0)
    np.testing.assert_allclose(whole, (first + second) / 2, rtol=1e-6)
