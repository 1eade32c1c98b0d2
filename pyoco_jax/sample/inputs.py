"""What a sample is conditioned on, decided once for the trainer's periodic samples and `pyoco-sample`.

A text model always gets a context: the prompts' embeddings, or the empty prompt's (unconditional)
when there is no prompt, so both entry points sample a text model the same way with or without one.
"""

from collections.abc import Sequence

import jax.numpy as jnp
import ml_collections
import numpy as np

from pyoco_jax.conditioning import downsample, frame_mask, is_conditioned
from pyoco_jax.data.loader import make_source
from pyoco_jax.sample.text import encode_text
from pyoco_jax.video_range import video_to_model_range

GIVEN_CLIPS_SEED_OFFSET = 2  # Real clips given to a conditioned model come from data seeded config.seed + 2.


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


def condition_inputs(config: ml_collections.ConfigDict, clips: np.ndarray) -> dict:
    """`clips` (num, F, H, W, C; uint8 pixels or model-range floats) as what a conditioned model is given: frames
    under the configured mask (`random`: the interpolation one) and/or their low-resolution version."""
    condition = config.condition
    clips = video_to_model_range(jnp.asarray(clips))
    inputs = {"given": None, "mask": None, "low_res": None}
    if condition.frames:
        mode = "interpolation" if condition.frames == "random" else condition.frames
        mask = frame_mask(mode, clips.shape[1], factor=condition.interpolation_factor, given=condition.given_frames)
        inputs.update(given=np.asarray(clips), mask=np.broadcast_to(np.asarray(mask), clips.shape[:2]))
    if condition.low_res_factor > 1:
        inputs["low_res"] = np.asarray(downsample(clips, condition.low_res_factor))
    return inputs


def real_condition_inputs(config: ml_collections.ConfigDict, num: int) -> dict:
    """`condition_inputs` of `num` real clips of the run's data, with their labels (what periodic samples show)."""
    source = make_source(config.data, seed=config.seed + GIVEN_CLIPS_SEED_OFFSET)
    elements = [source[i % len(source)] for i in range(num)]
    inputs = condition_inputs(config, np.stack([element["video"] for element in elements]))
    if config.model.num_classes:
        inputs["labels"] = np.asarray([element["label"] for element in elements], np.int32)
    return inputs


def sampling_inputs(
    config: ml_collections.ConfigDict,
    num: int,
    *,
    labels: np.ndarray | None = None,
    prompts: Sequence[str] = (),
    null_context: np.ndarray | None = None,
    condition_clips: np.ndarray | None = None,
) -> dict:
    """`sample_videos` keyword arguments (labels, context, null_context, condition) for `num` videos.

    `labels`: class per video (default: cycle through the classes). `prompts`: cycled over the videos
    of a text model ("" or none: unconditional); ignored by models without text. `null_context`: the
    empty prompt's embedding when the caller has it (else the text encoder computes it). Conditioned
    models get `condition_clips` to start from (default: real clips of the data, and their labels unless
    `labels` are given).
    """
    inputs = {
        "labels": default_labels(config, num) if labels is None else labels,
        "context": None,
        "null_context": None,
    }
    if config.model.cross_attention_dim:
        inputs["context"], inputs["null_context"] = _text_context(config, num, list(prompts), null_context)
    if is_conditioned(config) and condition_clips is not None:
        inputs.update(condition_inputs(config, condition_clips))
    elif is_conditioned(config):
        given = real_condition_inputs(config, num)
        inputs.update(given if labels is None else {k: v for k, v in given.items() if k != "labels"})
    return inputs
