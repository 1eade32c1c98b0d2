"""Classifier-free guidance (Ho & Salimans 2022) on raw network outputs.

Every formulation turns the raw output into x0 by a map affine in it, so mixing
raw outputs mixes the denoised estimates the same way; no prediction-type case.
"""

import jax
import jax.numpy as jnp

from pyoco_jax.diffusion.formulation import ModelFn


def classifier_free_guidance(model_fn_cond: ModelFn, model_fn_uncond: ModelFn, scale: float) -> ModelFn:
    """model_fn giving uncond + scale * (cond - uncond) in float32; scale 1 returns the conditional model."""
    if scale == 1.0:
        return model_fn_cond

    def guided(x: jax.Array, t: jax.Array) -> jax.Array:
        cond = model_fn_cond(x, t).astype(jnp.float32)
        uncond = model_fn_uncond(x, t).astype(jnp.float32)
        return uncond + scale * (cond - uncond)

    return guided
