"""The two value ranges video lives in: uint8 pixels on disk and on screen, [-1, 1] floats in the models."""

import jax
import jax.numpy as jnp
import numpy as np


def video_to_model_range(video: jax.Array) -> jax.Array:
    """uint8 pixels to [-1, 1] float32; float inputs (latents) pass through as float32."""
    if video.dtype == jnp.uint8:
        return video.astype(jnp.float32) / 127.5 - 1.0
    return video.astype(jnp.float32)


def to_uint8(videos: jax.Array) -> np.ndarray:
    """[-1, 1] floats to uint8 pixels, rounded and clipped."""
    return np.asarray(jnp.clip(jnp.round((videos + 1.0) * 127.5), 0, 255).astype(jnp.uint8))
