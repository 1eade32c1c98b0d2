"""The DiT as a pyoco_jax backbone: its WanConfig and WanTransformer from a run's `model` config section.

`model.dit` holds the keys only the DiT has; those it shares with the U-Net keep their `model.*` key
(configs/default.py says which), so one text width, class count or dtype serves either backbone.
"""

import jax.numpy as jnp
import ml_collections
from flax import nnx

from pyoco_jax.models.dit.config import WanConfig
from pyoco_jax.models.dit.transformer import WanTransformer
from pyoco_jax.models.layers import Precision

# Text width of a model trained without text (model.cross_attention_dim = 0): it reads one zero token.
NO_TEXT_WIDTH = 1


def wan_config(model_config: ml_collections.ConfigDict) -> WanConfig:
    """The architecture of `model_config` (a run's `model` section) as diffusers' WanTransformer3DModel keys."""
    dit = model_config.dit
    return WanConfig(
        patch_size=tuple(int(p) for p in dit.patch_size),
        num_attention_heads=int(dit.num_attention_heads),
        attention_head_dim=int(dit.attention_head_dim),
        in_channels=int(model_config.in_channels),
        out_channels=int(model_config.out_channels),
        text_dim=int(model_config.cross_attention_dim) or NO_TEXT_WIDTH,
        freq_dim=int(dit.freq_dim),
        ffn_dim=int(dit.ffn_dim),
        num_layers=int(dit.num_layers),
        cross_attn_norm=bool(dit.cross_attn_norm),
        eps=float(dit.eps),
        rope_max_seq_len=int(dit.rope_max_seq_len),
    )


def dit_from_config(model_config: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> WanTransformer:
    """A freshly initialised WanTransformer of `model_config`, with pyoco's class embedding if num_classes > 0."""
    return WanTransformer(
        wan_config(model_config),
        num_classes=int(model_config.num_classes),
        with_text=bool(model_config.cross_attention_dim),
        precision=Precision(jnp.dtype(model_config.dtype), jnp.dtype(model_config.param_dtype)),
        scan_layers=bool(model_config.dit.scan_layers),
        remat=model_config.remat,
        attention_backend=model_config.attention_backend,
        rngs=rngs,
    )
