"""Diffusion formulations (EDM, DDPM, EDM on a pretrained DDPM network, flow matching), losses, samplers, guidance."""

from pyoco_jax.diffusion.ddpm import DDPM, PREDICTIONS
from pyoco_jax.diffusion.edm import EDM
from pyoco_jax.diffusion.factory import FORMULATIONS, PRETRAINED_PREDICTIONS, check_config, make_formulation
from pyoco_jax.diffusion.flow import FIRST_TIME, LOSS_WEIGHTINGS, TIME_SAMPLINGS, TIMESTEP_ROUNDINGS, FlowMatching
from pyoco_jax.diffusion.formulation import Formulation, ModelFn
from pyoco_jax.diffusion.guidance import classifier_free_guidance
from pyoco_jax.diffusion.samplers import ODE_TIMES, SAMPLERS, Denoiser, NoiseFn, run_sampler
from pyoco_jax.diffusion.schedules import (
    DDPM_SCHEDULES,
    FLOW_GRIDS,
    ddpm_alphas_cumprod,
    ddpm_betas,
    flow_times,
    karras_sigmas,
    rescale_zero_terminal_snr,
    shift_flow_time,
    trailing_timesteps,
)
from pyoco_jax.diffusion.vp_bridge import BridgedEDM, VPSchedule, vp_preconditioning

__all__ = [
    "BridgedEDM",
    "DDPM",
    "DDPM_SCHEDULES",
    "EDM",
    "FIRST_TIME",
    "FLOW_GRIDS",
    "FORMULATIONS",
    "LOSS_WEIGHTINGS",
    "ODE_TIMES",
    "PREDICTIONS",
    "PRETRAINED_PREDICTIONS",
    "SAMPLERS",
    "TIME_SAMPLINGS",
    "TIMESTEP_ROUNDINGS",
    "VPSchedule",
    "Denoiser",
    "FlowMatching",
    "Formulation",
    "ModelFn",
    "NoiseFn",
    "check_config",
    "classifier_free_guidance",
    "ddpm_alphas_cumprod",
    "ddpm_betas",
    "flow_times",
    "karras_sigmas",
    "make_formulation",
    "rescale_zero_terminal_snr",
    "run_sampler",
    "shift_flow_time",
    "trailing_timesteps",
    "vp_preconditioning",
]
