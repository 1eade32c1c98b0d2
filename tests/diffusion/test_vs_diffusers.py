"""DDPM schedules, add_noise and the DDIM / DPM-Solver++(2M) / Euler steps against diffusers' PyTorch schedulers.

Shared discretisation: N = 10 steps on T = 1000 training steps with
timestep_spacing="trailing" (timesteps 999, 899, ..., 99; N divides T so DDIM's
prev_timestep = t - T // N is the next timestep), steps_offset=0, the last step
going to alphabar = 1 / sigma = 0 (DDIM set_alpha_to_one=True; DPM-Solver and
Euler final_sigmas_type="zero"), no clipping/thresholding, DPM-Solver++ midpoint
2nd order with lower_order_final, Euler with linear sigma interpolation and no
Karras sigmas. Both sides get the same model outputs: a fixed smooth function of
(model input, timestep) evaluated in each framework.

DDIM/DPM-Solver states live in VP coordinates, ours and Euler's in VE
coordinates: x_vp = x_ve / sqrt(1 + sigma^2). Errors are compared in VP units:
after 1 and 3 steps (DPM-Solver's multistep history in use) to 1e-5, and after
the whole 10-step run to 5e-5, since there both float32 implementations drift
about 1e-5 from a float64 evaluation of the same recursion (epsilon prediction
divides by sqrt(alphabar) ~ 0.07 at the first step).

Where sigma_max is huge (cosine: 2e4; zero terminal SNR: 4096, diffusers' 2**-24
clamp, which we share) diffusers' Euler holds x_ve ~ sigma_max * noise in float32
and computes x + (sigma' - sigma) d, cancelling two ~sigma_max terms: its own
error there is 7e-4 (cosine) and 5e-5 (zero SNR) in VP units against a float64
evaluation of the same recursion, while ours, which writes the step as
D + (sigma'/sigma)(x - D), stays within 1e-6 of it. Those two cases use the
looser tolerance `loose` stated per case.
"""

import math

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from pyoco_jax.diffusion import DDPM, run_sampler
from tests.diffusion.recording import recording

TOL = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy 2 __array__ notice inside diffusers
FULL_RUN_TOL = 5e-5
NUM_STEPS = 10
SHAPE = (2, 3, 4, 4, 2)
SCHEDULE_NAMES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}
PREDICTION_NAMES = {"epsilon": "epsilon", "v": "v_prediction", "x0": "sample"}


def _model_jax(x, t):
    return 0.8 * jnp.sin(1.3 * x + jnp.reshape(t, (-1, 1, 1, 1, 1)) / 500.0) + 0.1 * x


def _model_torch(x, t):
    return 0.8 * torch.sin(1.3 * x + float(t) / 500.0) + 0.1 * x


def _scheduler_kwargs(schedule, prediction, zero_snr=False):
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085 if schedule == "scaled_linear" else 0.0001,
        beta_end=0.012 if schedule == "scaled_linear" else 0.02,
        beta_schedule=SCHEDULE_NAMES[schedule],
        prediction_type=PREDICTION_NAMES[prediction],
        timestep_spacing="trailing",
        rescale_betas_zero_snr=zero_snr,
    )


def _ours(schedule, prediction, zero_snr=False):
    kwargs = _scheduler_kwargs(schedule, prediction, zero_snr)
    return DDPM(
        schedule=schedule,
        beta_start=kwargs["beta_start"],
        beta_end=kwargs["beta_end"],
        prediction=prediction,
        zero_terminal_snr=zero_snr,
    )


@pytest.mark.parametrize("zero_snr", [False, True])
@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "cosine"])
def test_alphas_cumprod_match_ddpm_scheduler(schedule, zero_snr):
    reference = diffusers.DDPMScheduler(**_scheduler_kwargs(schedule, "epsilon", zero_snr)).alphas_cumprod.numpy()
    ours = _ours(schedule, "epsilon", zero_snr).alphas_cumprod
    np.testing.assert_allclose(ours, reference, rtol=0, atol=TOL)
    if zero_snr:
        assert ours[-1] == 0.0 and reference[-1] == 0.0


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "cosine"])
def test_add_noise_matches_ddpm_scheduler(schedule):
    scheduler = diffusers.DDPMScheduler(**_scheduler_kwargs(schedule, "epsilon"))
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal(SHAPE).astype(np.float32)
    noise = rng.standard_normal(SHAPE).astype(np.float32)
    t = np.array([3, 977])
    reference = scheduler.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t)).numpy()
    ours = _ours(schedule, "epsilon").add_noise(jnp.asarray(x0), jnp.asarray(noise), jnp.asarray(t))
    np.testing.assert_allclose(np.asarray(ours), reference, rtol=0, atol=TOL)


def _run_reference(scheduler, x_start, model_input_scale, step_kwargs):
    """Steps a diffusers scheduler from x_start; returns the state after every step."""
    scheduler.set_timesteps(NUM_STEPS)
    x = torch.from_numpy(x_start)
    states = []
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t) if model_input_scale else x
        x = scheduler.step(_model_torch(model_input, t), t, x, **step_kwargs).prev_sample
        states.append(x.numpy())
    return states


def _check_against_reference(formulation, sampler, scheduler, reference_in_ve, eta=0.0, loose=None):
    """Asserts max |ours - diffusers| (VP units) after 1, 3 and all steps, from the same start and outputs."""
    rng = np.random.default_rng(1)
    sigmas = formulation.sampling_sigmas(NUM_STEPS)
    start_vp = rng.standard_normal(SHAPE).astype(np.float32)
    injected = rng.standard_normal(SHAPE).astype(np.float32)
    start_ve = start_vp * np.float32(math.sqrt(1 + sigmas[0] ** 2))
    step_kwargs = {"eta": eta, "variance_noise": torch.from_numpy(injected)} if sampler == "ddim" else {}
    reference = _run_reference(scheduler, start_ve if reference_in_ve else start_vp, reference_in_ve, step_kwargs)
    assert len(reference) == NUM_STEPS
    errors = {}
    for steps in (1, 3, NUM_STEPS):
        ours = run_sampler(
            sampler,
            lambda x, sigma: formulation.denoise(_model_jax, x, sigma),
            jnp.asarray(start_ve),
            sigmas[: steps + 1],
            key=jax.random.key(0),
            noise_fn=lambda _: jnp.asarray(injected),
            eta=eta,
        )
        vp_scale = math.sqrt(1 + sigmas[steps] ** 2)
        ref = reference[steps - 1] / (vp_scale if reference_in_ve else 1.0)
        errors[steps] = float(np.max(np.abs(np.asarray(ours) / vp_scale - ref)))
    if loose is None:
        assert errors[1] < TOL and errors[3] < TOL and errors[NUM_STEPS] < FULL_RUN_TOL, errors
    else:
        assert max(errors.values()) < loose, errors


@pytest.mark.parametrize(
    "schedule,prediction,eta",
    [("scaled_linear", "epsilon", 0.0), ("linear", "v", 0.7), ("cosine", "x0", 0.0), ("scaled_linear", "v", 1.0)],
)
def test_ddim_matches_diffusers(schedule, prediction, eta):
    scheduler = diffusers.DDIMScheduler(
        **_scheduler_kwargs(schedule, prediction), set_alpha_to_one=True, steps_offset=0, clip_sample=False
    )
    _check_against_reference(_ours(schedule, prediction), "ddim", scheduler, reference_in_ve=False, eta=eta)


@pytest.mark.parametrize(
    "schedule,prediction,zero_snr",
    [
        ("scaled_linear", "epsilon", False),
        ("cosine", "v", False),
        ("linear", "x0", False),
        ("scaled_linear", "v", True),
    ],
)
def test_dpmpp_2m_matches_diffusers(schedule, prediction, zero_snr):
    scheduler = diffusers.DPMSolverMultistepScheduler(
        **_scheduler_kwargs(schedule, prediction, zero_snr),
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        lower_order_final=True,
        final_sigmas_type="zero",
        use_karras_sigmas=False,
    )
    formulation = _ours(schedule, prediction, zero_snr)
    _check_against_reference(formulation, "dpmpp_2m", scheduler, reference_in_ve=False)


@pytest.mark.parametrize(
    "schedule,prediction,zero_snr,loose",
    [
        ("scaled_linear", "epsilon", False, None),
        ("linear", "v", False, None),
        ("cosine", "x0", False, 2e-3),
        ("scaled_linear", "v", True, 1e-4),
    ],
)
def test_euler_matches_diffusers(schedule, prediction, zero_snr, loose):
    scheduler = diffusers.EulerDiscreteScheduler(
        **_scheduler_kwargs(schedule, prediction, zero_snr),
        final_sigmas_type="zero",
        interpolation_type="linear",
        use_karras_sigmas=False,
    )
    formulation = _ours(schedule, prediction, zero_snr)
    _check_against_reference(formulation, "euler", scheduler, reference_in_ve=True, loose=loose)


@pytest.mark.parametrize(
    "schedule,prediction,zero_snr,order",
    [
        ("scaled_linear", "epsilon", False, 2),
        ("linear", "v", False, 3),
        ("cosine", "x0", False, 1),
        ("scaled_linear", "v", True, 2),
    ],
)
def test_unipc_matches_diffusers(schedule, prediction, zero_snr, order):
    """UniPC (bh2, UniC after every step but the last) against UniPCMultistepScheduler, step by step.

    A run cannot be cut short here (the last step's order drops), so every state is compared where the
    model sees it: our recorded model inputs are VP states, as diffusers' samples are.
    """
    scheduler = diffusers.UniPCMultistepScheduler(
        **_scheduler_kwargs(schedule, prediction, zero_snr), solver_order=order, final_sigmas_type="zero"
    )
    start_vp = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    reference = [start_vp] + _run_reference(scheduler, start_vp, False, {})
    formulation = _ours(schedule, prediction, zero_snr)
    sigmas = formulation.sampling_sigmas(NUM_STEPS)
    model_fn, calls = recording(_model_jax)
    out = run_sampler(
        "unipc",
        lambda x, sigma: formulation.denoise(model_fn, x, sigma),
        jnp.asarray(start_vp) * np.float32(math.sqrt(1 + sigmas[0] ** 2)),
        sigmas,
        key=jax.random.key(0),
        noise_fn=None,
        unipc_order=order,
    )
    ours = [x for x, _ in calls] + [np.asarray(out)]
    errors = [float(np.max(np.abs(a - b))) for a, b in zip(ours, reference, strict=True)]
    assert max(errors[:4]) < TOL and max(errors) < FULL_RUN_TOL, errors
