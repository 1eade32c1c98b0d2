"""Prompts -> the model's cross-attention context, with the config's text encoder (`text.path`): CLIP for Stable
Diffusion, UMT5 for Wan (the family its folder holds, `convert.families`), loaded and checked against the config
before anything compiles."""

from collections.abc import Callable, Sequence

import ml_collections
import numpy as np

from pyoco_jax.convert.families import WAN, text_family
from pyoco_jax.errors import ConfigError

PromptEncoder = Callable[[Sequence[str]], np.ndarray]


def load_prompt_encoder(config: ml_collections.ConfigDict) -> PromptEncoder:
    """prompts -> context (N, T, D) float32, by `text.path`'s encoder (set). Wan's UMT5 gives 512 tokens, zero
    past each prompt's own (as WanPipeline pads them); CLIP gives its 77, `text.skip_last_layers` from the end."""
    path, skip = config.text.path, int(config.text.skip_last_layers)
    if text_family(path) == WAN:
        from pyoco_jax.convert import umt5

        if skip:
            raise ConfigError("config key 'text.skip_last_layers': Wan's UMT5 context is its last layer; set it to 0")
        encoder, tokenizer = umt5.load_umt5_encoder(path), umt5.load_umt5_tokenizer(path)
        width, encode = encoder.config.d_model, lambda prompts: umt5.encode_prompts(encoder, tokenizer, prompts)
    else:
        from pyoco_jax.convert import clip

        encoder, tokenizer = clip.load_text_encoder(path), clip.load_tokenizer(path)
        width = encoder.config.hidden_size
        encode = lambda prompts: clip.encode_prompts(encoder, tokenizer, prompts, skip_last_layers=skip)
    if width != config.model.cross_attention_dim:
        raise ConfigError(
            f"config key 'text.path': the text encoder at {path} gives {width}-wide embeddings, the model "
            f"cross-attends to model.cross_attention_dim={config.model.cross_attention_dim}"
        )
    return lambda prompts: np.asarray(encode(list(prompts)), np.float32)


def encode_text(config: ml_collections.ConfigDict, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(context (N, T, D) of `prompts`, the empty prompt's (T, D)) from `text.path`'s encoder."""
    if not config.text.path:
        raise ConfigError(
            "config key 'text.path' is empty: a text model's samples need its text encoder (a folder, or a "
            "pipeline folder) to encode the prompts, or the empty prompt when there is none"
        )
    context = load_prompt_encoder(config)([*prompts, ""])
    return context[:-1], context[-1]
