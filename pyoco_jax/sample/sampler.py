"""Sample videos from model params: one jitted sampler run with classifier-free guidance, to uint8 frames.

What to condition on (labels, prompts, decoding) is decided in `sample.inputs`, shared by the trainer's
periodic samples and `pyoco-sample`.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from pyoco_jax.conditioning import augmentation_level, build_condition, enforce, is_conditioned
from pyoco_jax.diffusion import classifier_free_guidance
from pyoco_jax.sample.decode import is_latent
from pyoco_jax.video_range import to_uint8


def sampling_prior(noise: ml_collections.ConfigDict) -> tuple[str, float]:
    """(prior, alpha) of sampling's initial and injected noise: iid unless `noise.in_sampling`."""
    if not noise.in_sampling:
        return "iid", 0.0
    return noise.prior, float(noise.alpha if noise.sample_alpha < 0 else noise.sample_alpha)


def make_sampler(graphdef: nnx.GraphDef, formulation, config: ml_collections.ConfigDict, num_steps: int):
    """`sample(params, frozen, key, labels, fps, context, null_context) -> float videos`, jitted as one program.

    The unconditional half of classifier-free guidance gets the null label and `null_context` (the
    empty prompt's embedding) in place of the condition.
    """
    sample_config = config.sample
    prior, alpha = sampling_prior(config.noise)
    data = config.data
    null_label = config.model.num_classes

    @functools.partial(jax.jit, static_argnames=("num", "guidance_scale"))
    def sample(
        params,
        frozen,
        key,
        labels,
        fps,
        context=None,
        null_context=None,
        condition=None,
        augmentation=None,
        *,
        num: int,
        guidance_scale: float,
    ):
        model = nnx.merge(graphdef, params, frozen)
        shape = (num, data.num_frames, data.resolution, data.resolution, data.channels)
        given = {"fps": fps, "condition": condition, "augmentation": augmentation}  # Both halves of guidance.

        def conditional(x, t):
            return model(x, t, context=context, labels=labels, **given)

        def unconditional(x, t):
            null = None if labels is None else jnp.full_like(labels, null_label)
            return model(x, t, context=null_context, labels=null, **given)

        model_fn = classifier_free_guidance(conditional, unconditional, guidance_scale)
        return formulation.sample(
            model_fn,
            key,
            shape,
            sampler=sample_config.sampler,
            num_steps=num_steps,
            prior=prior,
            alpha=alpha,
            eta=sample_config.eta,
            unipc_order=sample_config.unipc_order,
            s_churn=sample_config.s_churn,
            s_tmin=sample_config.s_tmin,
            s_tmax=sample_config.s_tmax,
            s_noise=sample_config.s_noise,
        )

    return sample


def sample_videos(
    sampler,
    params: nnx.State,
    frozen: nnx.State,
    config: ml_collections.ConfigDict,
    *,
    decode: Callable[[jax.Array], jax.Array] | None = None,
    **inputs,
) -> np.ndarray:
    """uint8 (num, F, H, W, C) videos from fixed seeds; `sample.inputs.sampling_inputs` gives the keyword arguments.

    `decode` maps sampled latents to pixels in [-1, 1] for latent models; the rest go to `sample_model_space`.
    """
    videos = sample_model_space(sampler, params, frozen, config, **inputs)
    return to_uint8(videos if decode is None else decode(videos))


def sample_model_space(
    sampler,
    params: nnx.State,
    frozen: nnx.State,
    config: ml_collections.ConfigDict,
    *,
    seed: int,
    num: int,
    labels: np.ndarray | None = None,
    guidance_scale: float | None = None,
    context: np.ndarray | None = None,
    null_context: np.ndarray | None = None,
    given: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    low_res: np.ndarray | None = None,
) -> jax.Array:
    """Float videos in the model's space (latents, or pixels in [-1, 1]) from fixed seeds.

    `labels`: class per video (None: the null label); `context`/`null_context`: text embeddings (num, T, D)
    and the empty prompt's (T, D). A conditioned model (`pyoco_jax.conditioning`) takes `given` frames
    (num, F, H, W, C) in the model's space with their `mask` (num, F) and/or a `low_res` clip; the samples
    keep them (`conditioning.enforce`), so a cascade can hand latents from stage to stage.
    """
    fps = jnp.full((num,), config.data.fps, jnp.float32) if config.model.fps_conditioning else None
    guidance = config.sample.guidance_scale if guidance_scale is None else guidance_scale
    conditioned = labels is not None or context is not None
    if not conditioned or (context is not None and null_context is None):
        guidance = 1.0
    labels = None if labels is None else jnp.asarray(labels, jnp.int32)
    if context is not None:
        context = jnp.asarray(context, jnp.float32)
        if null_context is not None:
            null_context = jnp.broadcast_to(jnp.asarray(null_context, jnp.float32), context.shape)
    key = jax.random.PRNGKey(seed)
    condition = augmentation = None
    if is_conditioned(config):
        given, mask, low_res = (None if a is None else jnp.asarray(a, jnp.float32) for a in (given, mask, low_res))
        sigma = jnp.full((num,), config.condition.sample_augment_sigma, jnp.float32)
        condition = build_condition(config.condition, given, mask, low_res, sigma, jax.random.fold_in(key, 1))
        augmentation = augmentation_level(sigma) if config.model.condition_augmentation else None
    videos = sampler(
        params,
        frozen,
        key,
        labels,
        fps,
        context,
        null_context,
        condition,
        augmentation,
        num=num,
        guidance_scale=float(guidance),
    )
    if condition is not None:
        videos = enforce(config.condition, videos, given, mask, low_res, bounded=not is_latent(config))
    return videos
