"""What a sample is conditioned on, decided once for the trainer's periodic samples and `pyoco-sample`.

A text model always gets a context: the prompts' embeddings, or the empty prompt's (unconditional)
when there is no prompt, so both entry points sample a text model the same way with or without one.
"""

from collections.abc import Sequence

import ml_collections
import numpy as np

from pyoco_jax.sample.decode import is_latent, make_latent_decoder
from pyoco_jax.sample.text import encode_text


def default_labels(config: ml_collections.ConfigDict, num: int) -> np.ndarray | None:
    """Cycles through the classes so a grid shows each one; None for unconditional models."""
    if config.model.num_classes == 0:
        return None
    return np.arange(num, dtype=np.int32) % config.model.num_classes


def _text_context(
    config: ml_collections.ConfigDict, num: int, prompts: Sequence[str], null_context: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(context (num, T, D) of the prompts cycled over `num`, the empty prompt's (T, D)).

    A given `null_context` (the latent cache's, which training dropped the condition to) wins over the
    encoder's; without prompts it is the whole context, so the text encoder is only loaded when needed.
    """
    cycled = [prompts[i % len(prompts)] for i in range(num)] if prompts else [""] * num
    if any(cycled):
        context, encoded_null = encode_text(config, cycled)
        return context, encoded_null if null_context is None else null_context
    if null_context is None:
        null_context = encode_text(config, [])[1]
    return np.broadcast_to(null_context, (num, *null_context.shape)), null_context


def sampling_inputs(
    config: ml_collections.ConfigDict,
    num: int,
    *,
    labels: np.ndarray | None = None,
    prompts: Sequence[str] = (),
    null_context: np.ndarray | None = None,
) -> dict:
    """`sample_videos` keyword arguments (labels, context, null_context, decode) for `num` videos.

    `labels`: class per video (default: cycle through the classes). `prompts`: cycled over the videos
    of a text model ("" or none: unconditional); ignored by models without text. `null_context`: the
    empty prompt's embedding when the caller has it (else the text encoder computes it). Latent models
    get the VAE decoder.
    """
    inputs = {
        "labels": default_labels(config, num) if labels is None else labels,
        "context": None,
        "null_context": None,
        "decode": make_latent_decoder(config) if is_latent(config) else None,
    }
    if config.model.cross_attention_dim:
        inputs["context"], inputs["null_context"] = _text_context(config, num, list(prompts), null_context)
    return inputs
