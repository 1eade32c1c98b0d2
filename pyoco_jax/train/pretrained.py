"""Starting a run from pretrained weights: an image U-Net's 2D weights with new temporal layers, or a Wan DiT.

`train.init_from` is a diffusers U-Net (or pipeline) folder, a diffusers Wan transformer (or pipeline)
folder for a DiT run, or another pyoco_jax run's workdir (its latest checkpoint's EMA weights). For the
U-Net it is PYoCo's recipe of pretraining an image model, then fine-tuning it on video with the temporal
layers added (they start as the identity, so the video model first acts as the image model on every
frame). The fresh state is built (and sharded) first; the pretrained tensors are then put in place with
each array's sharding, so a large model is never materialised twice. Where the pretrained pipeline has a
scheduler config, or the pretrained run its config, the run's diffusion settings must agree with how the
network was trained, or the run is refused before any loading.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from flax import nnx

from pyoco_jax.config_rules import get
from pyoco_jax.convert.diffusers import load_unet_params
from pyoco_jax.convert.merge import merge_params
from pyoco_jax.convert.pipeline import scheduler_config
from pyoco_jax.convert.wan_transformer import check_wan_architecture, read_wan_params
from pyoco_jax.errors import ConfigError
from pyoco_jax.models.lora import trainable_pattern
from pyoco_jax.train.build import RunParts
from pyoco_jax.train.checkpoint import CHECKPOINTS
from pyoco_jax.train.state import TrainState, trainable_filter

# diffusers scheduler_config.json values -> ours; _SAME: keys whose values carry over as they are.
_PREDICTION = {"epsilon": "epsilon", "v_prediction": "v", "sample": "x0"}
_SCHEDULE = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine"}
_SAME = {
    "num_train_timesteps": "num_train_timesteps",
    "beta_start": "beta_start",
    "beta_end": "beta_end",
    "rescale_betas_zero_snr": "zero_terminal_snr",
}


def _translate(value: str, names: dict[str, str], key: str) -> str:
    if value not in names:
        raise ConfigError(
            f"config key 'train.init_from': its scheduler config's {key}={value!r} is not supported ({list(names)})"
        )
    return names[value]


def _stated(scheduler: dict, formulation: str) -> dict[str, object]:
    """`diffusion` section keys (e.g. 'ddpm.beta_end') -> the values the diffusers scheduler config states."""
    if scheduler.get("trained_betas") is not None:
        raise ConfigError("config key 'train.init_from': models trained on custom trained_betas are not supported")
    prediction_key = "ddpm.prediction" if formulation == "ddpm" else "edm.pretrained_prediction"
    prediction = scheduler.get("prediction_type", "epsilon")  # diffusers' default
    stated = {prediction_key: _translate(prediction, _PREDICTION, "prediction_type")}
    if "beta_schedule" in scheduler:
        stated["ddpm.schedule"] = _translate(scheduler["beta_schedule"], _SCHEDULE, "beta_schedule")
    cosine = stated.get("ddpm.schedule") == "cosine"  # Its betas come from the formula, not beta_start/end.
    for theirs, ours in _SAME.items():
        if theirs in scheduler and not (cosine and theirs.startswith("beta_")):
            stated[f"ddpm.{ours}"] = scheduler[theirs]
    return stated


def check_pretrained_training(config: ml_collections.ConfigDict) -> None:
    """Refuses diffusion settings that contradict the scheduler config next to `train.init_from`.

    The VP -> EDM bridge and DDPM fine-tuning both rely on the config's diffusion.ddpm schedule and
    prediction being the model's own; a bare U-Net folder states neither and is not checked.
    """
    scheduler = scheduler_config(config.train.init_from)
    diffusion = config.diffusion
    if scheduler is None or (diffusion.formulation == "edm" and diffusion.edm.pretrained_prediction == "edm"):
        return
    for key, value in _stated(scheduler, diffusion.formulation).items():
        section, name = key.split(".")
        ours = diffusion[section][name]
        same = math.isclose(ours, value, rel_tol=1e-6) if isinstance(value, float) else ours == value
        if not same:
            raise ConfigError(
                f"config key 'diffusion.{key}': is {ours!r}, but the scheduler config of train.init_from="
                f"{config.train.init_from!r} says the model was trained with {value!r}; set it to {value!r}."
            )


def is_run_directory(path: str) -> bool:
    """Whether `path` is a pyoco_jax run's workdir (it holds training checkpoints), not a diffusers folder."""
    return (epath.Path(path) / CHECKPOINTS).is_dir()


def check_same_diffusion(config: ml_collections.ConfigDict, pretrained: ml_collections.ConfigDict) -> None:
    """Refuses fine-tuning a pyoco_jax run under diffusion settings other than those it was trained with."""
    ours = config.diffusion
    if ours.formulation == "edm" and ours.edm.pretrained_prediction != "edm":
        raise ConfigError(
            f"config key 'diffusion.edm.pretrained_prediction': train.init_from={config.train.init_from!r} is a "
            "pyoco_jax run, trained with EDM's preconditioning: set it to 'edm'"
        )
    schedule = ("schedule", "num_train_timesteps", "beta_start", "beta_end", "prediction", "zero_terminal_snr")
    details = ["edm.sigma_data"] if ours.formulation == "edm" else [f"ddpm.{key}" for key in schedule]
    for key in ["formulation", *details]:
        mine, trained = get(config, f"diffusion.{key}"), get(pretrained, f"diffusion.{key}")
        if mine != trained:
            raise ConfigError(
                f"config key 'diffusion.{key}': is {mine!r}, but train.init_from={config.train.init_from!r} was "
                f"trained with {trained!r}; set it to {trained!r}"
            )


def wan_tensors(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """The diffusers Wan transformer (or pyoco-convert output) `train.init_from` names, by our names; refused
    unless the run's DiT has its architecture and trains with flow matching, as every Wan model was."""
    check_wan_architecture(config, config.train.init_from, "train.init_from")
    return read_wan_params(config.train.init_from)[1]


def pretrained_tensors(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """The weights `train.init_from` names: a pyoco_jax run's latest EMA weights, else a diffusers U-Net (or,
    for a DiT run, a diffusers Wan transformer) folder."""
    path = config.train.init_from
    if is_run_directory(path):
        from pyoco_jax.train.weights import checkpoint_weights

        pretrained, _, tensors = checkpoint_weights(path, ema=True)
        check_same_diffusion(config, pretrained)
        return tensors
    if config.model.backbone == "dit":
        return wan_tensors(config)
    check_pretrained_training(config)
    return load_unet_params(path, cache_dir=config.train.convert_cache_dir or None)[1]


def init_from_pretrained(state: TrainState, parts: RunParts, config: ml_collections.ConfigDict) -> TrainState:
    """`state` with the network of `config.train.init_from` merged in (a LoRA run's adapters stay new);
    EMA and optimizer restarted."""
    tensors = pretrained_tensors(config)
    model = nnx.merge(parts.graphdef, state.params, state.frozen)
    merged, report = merge_params(nnx.state(model, nnx.Param), tensors)
    nnx.update(model, merged)
    _, params, frozen = nnx.split(model, trainable_filter(trainable_pattern(config)), ...)
    logging.info("Initialised from %s: %s", config.train.init_from, report.summary())
    opt_shardings = jax.tree.map(lambda x: x.sharding, state.opt_state)
    return state.replace(
        params=params,
        frozen=frozen,
        # A real copy: the step donates the state, and an alias of params would be donated twice.
        ema=jax.tree.map(lambda x: jax.device_put(x.astype(jnp.float32), x.sharding, may_alias=False), params),
        opt_state=jax.jit(parts.optimizer.init, out_shardings=opt_shardings)(params),
    )
