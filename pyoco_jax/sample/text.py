"""Prompts -> the U-Net's cross-attention context, with the config's CLIP text encoder."""

from collections.abc import Sequence

import ml_collections
import numpy as np

from pyoco_jax.convert.clip import encode_prompts, load_text_encoder, load_tokenizer
from pyoco_jax.errors import ConfigError


def encode_text(config: ml_collections.ConfigDict, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(context (N, T, D) of `prompts`, the empty prompt's (T, D)) from `text.path`'s encoder."""
    if not config.text.path:
        raise ConfigError(
            "config key 'text.path' is empty: a text model's samples need the CLIP text encoder (a folder, or an "
            "SD pipeline folder) to encode the prompts, or the empty prompt when there is none"
        )
    encoder, tokenizer = load_text_encoder(config.text.path), load_tokenizer(config.text.path)
    skip = int(config.text.skip_last_layers)
    context = np.asarray(encode_prompts(encoder, tokenizer, [*prompts, ""], skip_last_layers=skip))
    width = config.model.cross_attention_dim
    if context.shape[-1] != width:
        raise ConfigError(
            f"config key 'text.path': the text encoder at {config.text.path} gives {context.shape[-1]}-wide "
            f"embeddings, the model cross-attends to model.cross_attention_dim={width}"
        )
    return context[:-1], context[-1]
