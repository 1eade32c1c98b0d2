"""Builds the configured formulation from the `diffusion` config section."""

import ml_collections

from pyoco_jax.diffusion.ddpm import DDPM
from pyoco_jax.diffusion.edm import EDM
from pyoco_jax.diffusion.formulation import Formulation

FORMULATIONS = ("edm", "ddpm")


def make_formulation(config: ml_collections.ConfigDict) -> Formulation:
    """EDM or DDPM from `config.diffusion` (the section itself, not the whole config)."""
    if config.formulation == "edm":
        return EDM(**config.edm.to_dict())  # Config keys are the constructor's arguments.
    if config.formulation == "ddpm":
        return DDPM(**config.ddpm.to_dict())
    raise ValueError(f"formulation {config.formulation!r} is not one of {FORMULATIONS}; set diffusion.formulation.")
