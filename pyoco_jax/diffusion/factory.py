"""Builds the configured formulation from the `diffusion` config section, and checks that section."""

import ml_collections

from pyoco_jax.diffusion.ddpm import DDPM
from pyoco_jax.diffusion.edm import EDM
from pyoco_jax.diffusion.flow import FlowMatching
from pyoco_jax.diffusion.formulation import Formulation
from pyoco_jax.diffusion.vp_bridge import BRIDGED_PREDICTIONS, BridgedEDM, VPSchedule

FORMULATIONS = ("edm", "ddpm", "flow")
PRETRAINED_PREDICTIONS = ("", "edm", *BRIDGED_PREDICTIONS)
"""diffusion.edm.pretrained_prediction: "" (no pretrained network), "edm" (one trained with EDM's
preconditioning) or the prediction of a DDPM-trained one, bridged by `vp_bridge`."""


def make_formulation(config: ml_collections.ConfigDict) -> Formulation:
    """EDM (bridged to a pretrained DDPM network if so configured), DDPM or flow matching from `config.diffusion`."""
    if config.formulation == "edm":
        options = config.edm.to_dict()  # Config keys are the constructors' arguments.
        prediction = options.pop("pretrained_prediction", "")
        if prediction in ("", "edm"):
            return EDM(**options)
        return BridgedEDM(**options, prediction=prediction, schedule=VPSchedule.from_config(config.ddpm))
    if config.formulation == "ddpm":
        return DDPM(**config.ddpm.to_dict())
    if config.formulation == "flow":
        return FlowMatching(**config.flow.to_dict())
    raise ValueError(f"formulation {config.formulation!r} is not one of {FORMULATIONS}; set diffusion.formulation.")


def check_config(config: ml_collections.ConfigDict) -> None:
    """Refuses diffusion settings that would train or sample the wrong model, naming the key to change.

    `config` is the whole config: an EDM run that starts from `train.init_from` must say how that network
    was trained, since feeding a DDPM network EDM's inputs silently trains something else.
    """
    diffusion = config.diffusion
    prediction = diffusion.edm.pretrained_prediction
    if prediction not in PRETRAINED_PREDICTIONS:
        raise ValueError(
            f"config key 'diffusion.edm.pretrained_prediction': {prediction!r} is not one of {PRETRAINED_PREDICTIONS}"
        )
    if diffusion.formulation == "flow":
        make_formulation(diffusion)  # Refuses bad diffusion.flow options, naming the key.
    if diffusion.formulation != "edm":
        return
    if config.train.init_from and not prediction:
        raise ValueError(
            "config key 'diffusion.edm.pretrained_prediction': train.init_from="
            f"{config.train.init_from!r} is a pretrained network, so EDM needs to know how it was trained: set "
            "'epsilon' or 'v' for a DDPM model (its scheduler/scheduler_config.json prediction_type: 'epsilon' for "
            "SD 1.x and 2.x-base, 'v_prediction' -> 'v' for SD 2.x-768) with diffusion.ddpm set to its schedule, "
            "or 'edm' for a network trained with EDM's own preconditioning."
        )
    make_formulation(diffusion)  # The bridge refuses sigma_min/sigma_max outside the pretrained schedule.
