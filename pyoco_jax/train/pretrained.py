"""Starting a video run from a pretrained image U-Net: 2D weights loaded, temporal layers new.

The fresh state is built (and sharded) first; the converted tensors are then put
in place with each array's sharding, so a large model is never materialised twice.
"""

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging
from flax import nnx

from pyoco_jax.convert.diffusers import load_unet_params
from pyoco_jax.convert.merge import merge_params
from pyoco_jax.train.build import RunParts
from pyoco_jax.train.state import TrainState, trainable_filter


def init_from_pretrained(state: TrainState, parts: RunParts, config: ml_collections.ConfigDict) -> TrainState:
    """`state` with the diffusers U-Net in `config.train.init_from` merged in; EMA and optimizer restarted."""
    _, tensors = load_unet_params(config.train.init_from, cache_dir=config.train.convert_cache_dir or None)
    model = nnx.merge(parts.graphdef, state.params, state.frozen)
    merged, report = merge_params(nnx.state(model, nnx.Param), tensors)
    nnx.update(model, merged)
    _, params, frozen = nnx.split(model, trainable_filter(config.optim.trainable), ...)
    logging.info("Initialised from %s: %s", config.train.init_from, report.summary())
    opt_shardings = jax.tree.map(lambda x: x.sharding, state.opt_state)
    return state.replace(
        params=params,
        frozen=frozen,
        # A real copy: the step donates the state, and an alias of params would be donated twice.
        ema=jax.tree.map(lambda x: jax.device_put(x.astype(jnp.float32), x.sharding, may_alias=False), params),
        opt_state=jax.jit(parts.optimizer.init, out_shardings=opt_shardings)(params),
    )
