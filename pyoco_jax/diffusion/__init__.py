"""Diffusion formulations (EDM, DDPM), their losses, samplers and classifier-free guidance."""

from pyoco_jax.diffusion.ddpm import DDPM, PREDICTIONS
from pyoco_jax.diffusion.edm import EDM
from pyoco_jax.diffusion.factory import FORMULATIONS, make_formulation
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

__all__ = [
    "DDPM",
    "DDPM_SCHEDULES",
    "EDM",
    "FORMULATIONS",
    "PREDICTIONS",
    "SAMPLERS",
    "Denoiser",
    "Formulation",
    "ModelFn",
    "NoiseFn",
    "classifier_free_guidance",
    "ddpm_alphas_cumprod",
    "ddpm_betas",
    "karras_sigmas",
    "make_formulation",
    "rescale_zero_terminal_snr",
    "run_sampler",
    "trailing_timesteps",
]
