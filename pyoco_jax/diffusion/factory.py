"""Builds the configured formulation from the `diffusion` config section."""

import ml_collections

from pyoco_jax.diffusion.ddpm import DDPM
from pyoco_jax.diffusion.edm import EDM
from pyoco_jax.diffusion.formulation import Formulation

FORMULATIONS = ("edm", "ddpm")


def make_formulation(config: ml_collections.ConfigDict) -> Formulation:
    """EDM or DDPM from `config.diffusion` (the section itself, not the whole config)."""
    if config.formulation == "edm":
        edm = config.edm
        return EDM(
            sigma_data=edm.sigma_data,
            p_mean=edm.p_mean,
            p_std=edm.p_std,
            sigma_min=edm.sigma_min,
            sigma_max=edm.sigma_max,
            rho=edm.rho,
        )
    if config.formulation == "ddpm":
        ddpm = config.ddpm
        return DDPM(
            schedule=ddpm.schedule,
            num_train_timesteps=ddpm.num_train_timesteps,
            beta_start=ddpm.beta_start,
            beta_end=ddpm.beta_end,
            prediction=ddpm.prediction,
            zero_terminal_snr=ddpm.zero_terminal_snr,
            min_snr_gamma=ddpm.min_snr_gamma,
        )
    raise ValueError(f"formulation {config.formulation!r} is not one of {FORMULATIONS}; set diffusion.formulation.")
