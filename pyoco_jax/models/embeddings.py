"""Conditioning embeddings added to the time embedding: timestep, class label, frame rate."""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.models import axes
from pyoco_jax.models.keys import KeySource
from pyoco_jax.models.layers import Dense, Precision


def sinusoidal_embedding(
    t: jax.Array, dim: int, *, flip_sin_to_cos: bool = True, freq_shift: float = 0.0, max_period: float = 10000.0
) -> jax.Array:
    """(B,) -> (B, dim) float32 sinusoids, laid out exactly as diffusers' `get_timestep_embedding`."""
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
    args = t.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if flip_sin_to_cos:
        emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimestepEmbedding(nnx.Module):
    """linear_2(SiLU(linear_1(x))); `zero_out` makes the output exactly 0 at init."""

    def __init__(self, in_dim: int, out_dim: int, *, precision: Precision, rngs: KeySource, zero_out: bool = False):
        self.linear_1 = Dense(in_dim, out_dim, names=(axes.EMBED, axes.TEMB), precision=precision, rngs=rngs)
        self.linear_2 = Dense(
            out_dim, out_dim, names=(axes.TEMB, axes.EMBED), precision=precision, rngs=rngs, zero_init=zero_out
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(jax.nn.silu(self.linear_1(x)))


class LabelEmbedding(nnx.Module):
    """Class-label table with `num_classes + 1` rows; the last row is the null label for guidance."""

    def __init__(self, num_classes: int, dim: int, *, precision: Precision, rngs: KeySource):
        self.num_classes = num_classes
        self.dtype = precision.dtype
        init = axes.partitioned(nnx.initializers.normal(1.0), axes.CLASSES, axes.TEMB)
        self.embedding = nnx.Param(init(rngs.params(), (num_classes + 1, dim), precision.param_dtype))

    def __call__(self, labels: jax.Array | None, batch: int) -> jax.Array:
        if labels is None:
            labels = jnp.full((batch,), self.num_classes, dtype=jnp.int32)
        return jnp.take(self.embedding[...], labels, axis=0).astype(self.dtype)
