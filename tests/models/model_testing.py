"""Tiny model configs and helpers shared by the model tests (a uniquely named module, importable from tests)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from pyoco_jax.configs import default

from pyoco_jax.convert.merge import NEW_PARAM_PATTERN, flat_params

TEMPORAL_OFF = dict(levels=(), mid=False, attention=False, conv=False, adaptor=False)


def make_rngs(seed: int = 0) -> nnx.Rngs:
    """RBG keys compile far faster than threefry on CPU, which dominates the tests' init time."""
    return nnx.Rngs(jax.random.key(seed, impl="unsafe_rbg"))


def tiny_model_config(**temporal) -> ml_collections.ConfigDict:
    """Two levels, cross-attention, class labels; temporal layers off unless given."""
    m = default.get_config().model
    m.in_channels = m.out_channels = 3
    m.block_out_channels = (16, 32)
    m.attention_levels = (False, True)
    m.num_attention_heads = 2
    m.cross_attention_dim = 12
    m.norm_num_groups = 4
    m.num_classes = 3
    m.temporal.update({**TEMPORAL_OFF, "num_heads": 2, **temporal})
    return m


def perturb(model: nnx.Module, pattern=NEW_PARAM_PATTERN, scale: float = 0.3, seed: int = 0) -> None:
    """Adds noise to every parameter whose name matches `pattern` (e.g. the zero-init temporal ones)."""
    rng = np.random.default_rng(seed)
    for name, variable in flat_params(model).items():
        if pattern.search(name):
            value = np.asarray(variable.get_value())  # numpy arithmetic: no per-shape XLA compiles
            variable.set_value(jnp.asarray(value + scale * rng.standard_normal(value.shape).astype(value.dtype)))
