"""Flow matching: training terms, time sampling, the t = 1 start, diffusers' flow schedulers, exact Gaussian data.

Against diffusers (float32 PyTorch) both sides get the same start noise and the same model: a fixed random
function of (x_t, t * 1000), evaluated in each framework. Our sampler states are the model inputs it records
(`recording`), which for these schedulers are the states each step starts from; they and the final samples
must agree to TOL = 1e-5 (states are O(1); both sides compute in float32; measured <= 5e-6). Our first time
is FIRST_TIME = 1 - 1.0133e-6 where FlowMatchEuler/Heun start at t = 1 exactly: that moves the first step by
~1e-6 |v|. UniPC is compared with diffusers' in flow coordinates (alpha = 1 - t, sigma = t), so a match
shows that ours, over D(x, sigma) in VE coordinates, takes the same steps.

diffusers' UniPC feeds the model the integer part of t * 1000 (its timesteps are int64): ours does too with
timestep_rounding="floor", compared with diffusers' scheduler as it is; with the default "none" the fake model
is fed the float time of the level it is at, t_i * 1000 from scheduler.sigmas, on both sides.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler, UniPCMultistepScheduler

from pyoco_jax.config import ConfigError, load_config
from pyoco_jax.diffusion import (
    FIRST_TIME,
    SAMPLERS,
    FlowMatching,
    flow_times,
    make_formulation,
    run_sampler,
    shift_flow_time,
)
from pyoco_jax.noise import sample_noise
from tests.diffusion.recording import recording
from tests.diffusion.test_gaussian_sampling import (
    NUM_SAMPLES,
    C,
    F,
    GaussianDenoiser,
    _assert_matches,
    _data,
    gaussian_samples,
)
from tests.diffusion.test_gaussian_sampling import _frame_correlation as frame_correlation
from tests.test_config import TINY

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 __array__ notice inside diffusers
TOL = 1e-5
SHAPE = (2, 3, 2, 2, 4)
B = (-1, 1, 1, 1, 1)
_rng = np.random.default_rng(0)
MIX = (_rng.standard_normal((4, 4)) / 2).astype(np.float32)
BIAS = _rng.standard_normal(4).astype(np.float32)
NOISE = _rng.standard_normal(SHAPE).astype(np.float32)


def _velocity_jax(x, time):
    return jnp.tanh(x @ MIX + time.reshape(B) / 1000.0 * BIAS) + 0.3 * x


def _velocity_torch(x, time):
    return torch.tanh(x @ torch.from_numpy(MIX) + float(time) / 1000.0 * torch.from_numpy(BIAS)) + 0.3 * x


def _linear_jax(x, time):
    return 0.4 * (x @ MIX) - 0.2 * x + (time.reshape(B) / 1000.0) * BIAS


def _linear_torch(x, time):
    return 0.4 * (x @ torch.from_numpy(MIX)) - 0.2 * x + float(time) / 1000.0 * torch.from_numpy(BIAS)


def _run_ours(flow, sampler, model_fn, **options):
    """Our sampler from x_t = NOISE: (model inputs, model times, final sample), all float64 NumPy."""
    num_steps = options.pop("num_steps")
    sigmas = flow.sampling_sigmas(num_steps)
    wrapped, calls = recording(model_fn)
    start = jnp.asarray(NOISE) * flow.initial_noise_scale(float(sigmas[0]))
    out = run_sampler(
        sampler,
        flow.sampling_denoiser(wrapped, num_steps),
        start,
        sigmas,
        key=jax.random.key(0),
        noise_fn=lambda _: jnp.zeros(SHAPE),
        ode_time=flow.ode_time,
        **options,
    )
    out = np.asarray(out, np.float64)
    return np.stack([c[0] for c in calls]), np.stack([c[1][0] for c in calls]), out


def _run_theirs(scheduler, model_fn, time_of_call):
    """diffusers' loop from NOISE: (model inputs, model times, final sample)."""
    x = torch.from_numpy(NOISE)
    inputs, times = [], []
    for i, timestep in enumerate(scheduler.timesteps):
        time = time_of_call(i, timestep)
        inputs.append(x.numpy().astype(np.float64))
        times.append(time)
        x = scheduler.step(model_fn(x, time), timestep, x).prev_sample
    return np.stack(inputs), np.array(times), x.numpy().astype(np.float64)


def _errors(ours, theirs):
    """(max |ours - theirs| of the states per step, of the final sample)."""
    inputs, _, out = ours
    ref_inputs, _, ref_out = theirs
    assert inputs.shape == ref_inputs.shape
    errors = np.abs(inputs - ref_inputs).max(axis=tuple(range(1, inputs.ndim)))
    final = float(np.abs(out - ref_out).max())
    print(f"max |state error| per step {np.array2string(errors, precision=1)}, final {final:.1e}")
    return errors, final


def _compare(ours, theirs, times_atol=2e-3):
    """Both runs' states and final samples agree to TOL, after checking the model times agree."""
    np.testing.assert_allclose(ours[1], theirs[1], atol=times_atol)  # 1000 (1 - FIRST_TIME) ~ 1e-3 at the start
    errors, final = _errors(ours, theirs)
    assert errors.max() < TOL and final < TOL, (errors, final)


@pytest.mark.parametrize("num_steps", [1, 8, 50])
@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
def test_euler_grid_matches_flow_match_euler(shift, num_steps):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(num_steps)
    reference = scheduler.sigmas.numpy().astype(np.float64)
    np.testing.assert_allclose(flow_times(num_steps, shift, 1000, "euler"), reference, rtol=1e-6, atol=1e-7)
    sigmas = FlowMatching(shift=shift).sampling_sigmas(num_steps)
    times = sigmas / (1 + sigmas)
    assert times[0] == pytest.approx(FIRST_TIME, abs=1e-12) and np.all(np.isfinite(sigmas))
    np.testing.assert_allclose(times[1:], reference[1:], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shift", [3.0, 5.0])
def test_unipc_grid_matches_unipc_flow_sigmas(shift):
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    scheduler.set_timesteps(20)
    sigmas = FlowMatching(sample_shift=shift, grid="unipc").sampling_sigmas(20)
    np.testing.assert_allclose(sigmas / (1 + sigmas), scheduler.sigmas.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
def test_euler_steps_match_flow_match_euler(shift):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(12)
    theirs = _run_theirs(scheduler, _velocity_torch, lambda i, timestep: float(timestep))
    ours = _run_ours(FlowMatching(shift=shift), "euler", _velocity_jax, num_steps=12)
    _compare(ours, theirs)


def test_heun_steps_match_flow_match_heun():
    """Heun in flow time: its 2N - 1 model calls (Euler predictions included) and the sample."""
    scheduler = FlowMatchHeunDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(8)
    theirs = _run_theirs(scheduler, _velocity_torch, lambda i, timestep: float(timestep))
    ours = _run_ours(FlowMatching(shift=3.0), "heun", _velocity_jax, num_steps=8)
    _compare(ours, theirs)


@pytest.mark.parametrize(
    "order,shift,grid",
    [(1, 3.0, "unipc"), (2, 3.0, "unipc"), (2, 5.0, "unipc"), (3, 5.0, "unipc"), (2, 3.0, "euler"), (3, 1.0, "euler")],
)
def test_unipc_steps_match_diffusers_flow_prediction(order, shift, grid):
    """UniPC over D(x, sigma) in VE coordinates against diffusers' UniPC in flow coordinates, step by step.

    For grid="euler" diffusers is handed the unshifted FlowMatchEuler times, which it shifts itself.
    """
    num_steps = 10
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift, solver_order=order
    )
    if grid == "unipc":
        scheduler.set_timesteps(num_steps)
    else:
        scheduler.set_timesteps(sigmas=np.linspace(1.0, shift_flow_time(1e-3, shift), num_steps))
    level_times = scheduler.sigmas.numpy().astype(np.float64) * 1000
    theirs = _run_theirs(scheduler, _linear_torch, lambda i, timestep: level_times[i])
    flow = FlowMatching(shift=shift, grid=grid)
    ours = _run_ours(flow, "unipc", _linear_jax, num_steps=num_steps, unipc_order=order)
    _compare(ours, theirs)


def _unipc_flow_scheduler(shift, num_steps):
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    scheduler.set_timesteps(num_steps)
    return scheduler


# Shift 1 at 9 and 37 steps: float32 arithmetic from sigma floors levels one off diffusers' float64 (445 for 444).
@pytest.mark.parametrize("shift,num_steps", [(1.0, 9), (1.0, 37), (3.0, 3), (3.0, 50), (5.0, 1), (5.0, 20)])
def test_floored_model_times_are_unipc_timesteps(shift, num_steps):
    """With timestep_rounding="floor" the model is fed UniPCMultistepScheduler.timesteps (flow sigmas, shift),
    while the levels stay its exact sigmas."""
    scheduler = _unipc_flow_scheduler(shift, num_steps)
    flow = FlowMatching(sample_shift=shift, grid="unipc", timestep_rounding="floor")
    np.testing.assert_array_equal(flow.integer_timesteps(num_steps), scheduler.timesteps.numpy())
    sigmas = flow.sampling_sigmas(num_steps)
    np.testing.assert_allclose(sigmas / (1 + sigmas), scheduler.sigmas.numpy(), rtol=1e-6, atol=1e-7)
    wrapped, calls = recording(lambda x, t: 0.5 * x)
    flow.sample(wrapped, jax.random.key(0), (2, 2, 1, 1, 1), sampler="unipc", num_steps=num_steps)
    fed = np.stack([c[1] for c in calls])
    np.testing.assert_array_equal(fed, np.broadcast_to(scheduler.timesteps.numpy()[:, None], fed.shape))


def test_floored_model_times_off_the_grid_are_whole():
    """Euler with churn evaluates between the levels: those times are floored too, the levels' as diffusers'."""
    flow = FlowMatching(sample_shift=3.0, timestep_rounding="floor")
    wrapped, calls = recording(lambda x, t: 0.5 * x)
    flow.sample(wrapped, jax.random.key(0), (1, 2, 1, 1, 1), sampler="euler", num_steps=6, s_churn=2.0, s_tmax=10.0)
    times = np.array([c[1][0] for c in calls])
    sigmas = flow.sampling_sigmas(6)[:-1]
    levels = sigmas / (1 + sigmas) * 1000
    churned = sigmas <= 10.0
    assert np.all(times == np.floor(times)) and np.all(times[churned] > np.floor(levels[churned]))
    np.testing.assert_array_equal(times[~churned], flow.integer_timesteps(6)[~churned])


@pytest.mark.parametrize("shift,num_steps", [(3.0, 10), (1.0, 9)])
def test_unipc_with_floored_times_matches_diffusers_unipc_as_is(shift, num_steps):
    """Ours with timestep_rounding="floor" against diffusers' UniPC handing the model its own int64 timesteps:
    the same times exactly, the same states; with the float times ("none") the states differ by far more."""
    scheduler = _unipc_flow_scheduler(shift, num_steps)
    theirs = _run_theirs(scheduler, _linear_torch, lambda i, timestep: float(timestep))
    floored = FlowMatching(sample_shift=shift, grid="unipc", timestep_rounding="floor")
    _compare(_run_ours(floored, "unipc", _linear_jax, num_steps=num_steps), theirs, times_atol=0)
    unrounded = FlowMatching(sample_shift=shift, grid="unipc")
    errors, final = _errors(_run_ours(unrounded, "unipc", _linear_jax, num_steps=num_steps), theirs)
    assert max(errors.max(), final) > 10 * TOL


def _flow_model_fn(flow, denoiser):
    """The exact velocity (x_t - E[x0 | x_t]) / t, through the VE denoiser at x = x_t / (1 - t)."""

    def model_fn(x_t, time):
        t = time / flow.timestep_scale
        x0 = denoiser(x_t / (1 - t).reshape(B), t / (1 - t))
        return (x_t - x0) / t.reshape(B)

    return model_fn


FLOW_CASES = [
    ("euler", 256, "iid", 0.0, 1.0, "euler", {}),
    ("euler", 256, "progressive", 2.0, 3.0, "euler", {}),
    ("heun", 32, "iid", 0.0, 3.0, "euler", {}),
    ("heun", 32, "progressive", 2.0, 1.0, "euler", {}),
    ("unipc", 100, "iid", 0.0, 3.0, "unipc", {}),
    ("unipc", 100, "progressive", 2.0, 5.0, "unipc", {}),
    ("unipc", 32, "mixed", 1.0, 1.0, "euler", {"unipc_order": 3}),
    ("dpmpp_2m", 128, "mixed", 1.0, 3.0, "euler", {}),
    ("ddim", 256, "progressive", 2.0, 3.0, "unipc", {"eta": 1.0}),
]


@pytest.mark.parametrize("sampler,steps,prior,alpha,shift,grid,options", FLOW_CASES)
def test_flow_samplers_reproduce_gaussian_data(sampler, steps, prior, alpha, shift, grid, options):
    """The exact velocity of x0 ~ N(mu, S) under PYoCo noise: samples have mean mu and covariance S.

    Same data and tolerances as test_gaussian_sampling (5 standard errors on the mean, 0.08 on the whitened
    covariance of 8192 samples); the step counts give a measured covariance error <= 0.06. A shift > 1 leaves
    few steps at small t, where the smallest data direction (std 0.2) is resolved: there the multistep
    solvers need more steps (dpmpp_2m, shift 3: 0.09 at 64 steps, 0.03 at 128), and the unipc grid, whose
    last time before 0 is large (0.09 at 32 steps, shift 3), needs ~100.
    """
    flow = FlowMatching(sample_shift=shift, grid=grid)
    mean, cov = _data(1.0)
    model_fn = _flow_model_fn(flow, GaussianDenoiser(mean, cov, frame_correlation(prior, alpha)))
    _assert_matches(gaussian_samples(flow, model_fn, 2, sampler, steps, prior, alpha, options), mean, cov)


def test_heun_needs_flow_time():
    """Heun's trapezoid in sigma, from sigma ~ 1e6 (t ~ 1), misses the data by far (std x3.5): flow time is needed."""
    flow = FlowMatching()
    mean, cov = _data(1.0)
    model_fn = _flow_model_fn(flow, GaussianDenoiser(mean, cov, np.eye(F)))
    sigmas = flow.sampling_sigmas(32)
    start = jax.random.normal(jax.random.key(7), (NUM_SAMPLES, F, 1, 1, C)) * flow.initial_noise_scale(sigmas[0])
    for ode_time, matches in (("flow", True), ("sigma", False)):
        denoise = lambda x, sigma: flow.denoise(model_fn, x, sigma)
        samples = run_sampler("heun", denoise, start, sigmas, key=jax.random.key(8), noise_fn=None, ode_time=ode_time)
        if matches:
            _assert_matches(samples, mean, cov)
        else:
            with pytest.raises(AssertionError):
                _assert_matches(samples, mean, cov)


@pytest.mark.parametrize("grid", ["euler", "unipc"])
def test_sampling_starts_from_pure_noise_at_t_one(grid):
    """The first model call sees x_t = the prior's noise at time FIRST_TIME * 1000, and nothing is inf or nan."""
    flow = FlowMatching(sample_shift=3.0, grid=grid)
    key, shape = jax.random.key(3), (2, 4, 2, 2, 1)
    wrapped, calls = recording(lambda x, t: 0.5 * x)
    out = flow.sample(wrapped, key, shape, sampler="unipc", num_steps=6, prior="progressive", alpha=2.0)
    noise = sample_noise(jax.random.split(key)[0], shape, "progressive", 2.0, 1)
    first_input, first_time = calls[0]
    np.testing.assert_allclose(first_input, np.asarray(noise), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(first_time, 1000 * FIRST_TIME, rtol=1e-7)
    assert np.all(np.isfinite(np.asarray(out)))


@pytest.mark.parametrize("num_steps", [1, 2, 7])
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_is_finite_from_t_one(sampler, num_steps):
    flow = FlowMatching(sample_shift=5.0)
    options = {"s_churn": 5.0} if sampler in ("euler", "heun") else {"eta": 1.0} if sampler == "ddim" else {}
    out = flow.sample(
        lambda x, t: jnp.sin(x) + t.reshape(B) / 1000,
        jax.random.key(4),
        (2, 3, 2, 2, 1),
        sampler=sampler,
        num_steps=num_steps,
        **options,
    )
    assert np.all(np.isfinite(np.asarray(out)))


@pytest.mark.parametrize("weighting", ["none", "cosmap"])
def test_training_input_target_and_weight_are_closed_form(weighting):
    flow = FlowMatching(loss_weighting=weighting, timestep_scale=1000.0)
    keys = jax.random.split(jax.random.key(5), 2)
    x0, noise = (jax.random.normal(k, (4, 3, 2, 2, 2)) for k in keys)
    t = jnp.array([0.0, 0.3, 0.7, 1.0])
    wrapped, calls = recording(lambda x, time: noise - x0 + 0.25)
    per_example_loss, time = flow.loss_terms(wrapped, x0, noise, t)
    t64 = np.asarray(t, np.float64).reshape(B)
    expected_input = (1 - t64) * np.asarray(x0) + t64 * np.asarray(noise)
    np.testing.assert_allclose(calls[0][0], expected_input, atol=1e-6)
    np.testing.assert_allclose(np.asarray(time), [0.0, 300.0, 700.0, 1000.0], rtol=1e-6)
    t64 = t64.ravel()
    weight = 2 / (np.pi * (1 - 2 * t64 + 2 * t64**2)) if weighting == "cosmap" else np.ones(4)
    np.testing.assert_allclose(np.asarray(per_example_loss), weight * 0.25**2, rtol=1e-5)
    exact, _ = flow.loss_terms(lambda x, time: noise - x0, x0, noise, t)
    assert float(jnp.max(exact)) < 1e-12


def _unshift(t, shift):
    """The inverse of shift_flow_time."""
    return t / (shift - (shift - 1) * t)


@pytest.mark.parametrize(
    "sampling,mean,std,shift",
    [
        ("uniform", 0.0, 1.0, 1.0),
        ("uniform", 0.0, 1.0, 3.0),
        ("logit_normal", 0.0, 1.0, 1.0),
        ("logit_normal", 0.5, 0.8, 3.0),
    ],
)
def test_training_times_follow_their_distribution(sampling, mean, std, shift):
    """Kolmogorov-Smirnov against the exact CDF of the shifted draw: D < 1.95 / sqrt(n) (a 0.1% level)."""
    flow = FlowMatching(time_sampling=sampling, logit_mean=mean, logit_std=std, shift=shift)
    n = 20_000
    t = np.asarray(jax.vmap(flow.draw_level)(jax.random.split(jax.random.key(6), n)), np.float64)
    assert t.min() >= 0 and t.max() <= 1

    def cdf(x):
        u = np.clip(_unshift(x, shift), 1e-12, 1 - 1e-12)
        return u if sampling == "uniform" else scipy.stats.norm.cdf((np.log(u / (1 - u)) - mean) / std)

    statistic = scipy.stats.kstest(t, cdf).statistic
    assert statistic < 1.95 / np.sqrt(n), statistic


def test_shift_moves_times_toward_noise():
    t = np.linspace(0, 1, 11)
    shifted = shift_flow_time(t, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and np.all(shifted[1:-1] > t[1:-1])
    np.testing.assert_allclose(_unshift(shifted, 3.0), t, atol=1e-12)


def test_flow_config_builds_the_formulation():
    config = load_config(TINY, ["diffusion.formulation=flow", "diffusion.flow.shift=3.0", "sample.sampler=unipc"])
    flow = make_formulation(config.diffusion)
    assert isinstance(flow, FlowMatching) and flow.shift == 3.0 and flow.sampling_shift == 3.0


@pytest.mark.parametrize(
    "override,key",
    [
        ("diffusion.flow.time_sampling=mode", "diffusion.flow.time_sampling"),
        ("diffusion.flow.loss_weighting=sigma_sqrt", "diffusion.flow.loss_weighting"),
        ("diffusion.flow.grid=karras", "diffusion.flow.grid"),
        ("diffusion.flow.shift=0.0", "diffusion.flow.shift"),
        ("diffusion.flow.logit_std=-1.0", "diffusion.flow.logit_std"),
        ("diffusion.flow.timestep_scale=0.0", "diffusion.flow.timestep_scale"),
        ("diffusion.flow.sample_shift=-2.0", "diffusion.flow.sample_shift"),
        ("diffusion.flow.timestep_rounding=round", "diffusion.flow.timestep_rounding"),
    ],
)
def test_bad_flow_options_fail_in_one_line_naming_the_key(override, key):
    with pytest.raises(ConfigError) as error:
        load_config(TINY, ["diffusion.formulation=flow", override])
    assert f"'{key}'" in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_bad_flow_arguments_name_their_config_key():
    with pytest.raises(ValueError, match=r"^config key 'diffusion.flow.time_sampling'"):
        FlowMatching(time_sampling="mode")
    with pytest.raises(ValueError, match=r"^config key 'diffusion.flow.sample_shift'"):
        FlowMatching(sample_shift=0.0)
