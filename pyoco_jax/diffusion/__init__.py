"""Diffusion formulations (EDM, DDPM, EDM on a pretrained DDPM network), their losses, samplers and guidance."""

from pyoco_jax.diffusion.ddpm import DDPM, PREDICTIONS
from pyoco_jax.diffusion.edm import EDM
from pyoco_jax.diffusion.factory import FORMULATIONS, PRETRAINED_PREDICTIONS, check_config, make_formulation
from pyoco_jax.diffusion.formulation import Formulation, ModelFn
from pyoco_jax.diffusion.guidance import classifier_free_guidance
from pyoco_jax.diffusion.samplers import SAMPLERS, Denoiser, NoiseFn, run_sampler
from pyoco_jax.diffusion.schedules import (
    DDPM_SCHEDULES,
    ddpm_alphas_cumprod,
    ddpm_betas,
    karras_sigmas,
    rescale_zero_terminal_snr,
    trailing_timesteps,
)
from pyoco_jax.diffusion.vp_bridge import BridgedEDM, VPSchedule, vp_preconditioning

__all__ = [
    "BridgedEDM",
    "DDPM",
    "DDPM_SCHEDULES",
    "EDM",
    "FORMULATIONS",
    "PREDICTIONS",
    "PRETRAINED_PREDICTIONS",
    "SAMPLERS",
    "VPSchedule",
    "Denoiser",
    "Formulation",
    "ModelFn",
    "NoiseFn",
    "check_config",
    "classifier_free_guidance",
    "ddpm_alphas_cumprod",
    "ddpm_betas",
    "karras_sigmas",
    "make_formulation",
    "rescale_zero_terminal_snr",
    "run_sampler",
    "trailing_timesteps",
    "vp_preconditioning",
]
