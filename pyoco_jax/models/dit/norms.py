"""The two normalisations of Wan beyond `models.layers.LayerNorm`, both computed in float32."""

import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.models import axes
from pyoco_jax.models.keys import KeySource
from pyoco_jax.models.layers import Precision


def plain_layer_norm(x: jax.Array, eps: float) -> jax.Array:
    """LayerNorm without scale or bias (Wan modulates instead); returns float32 for the modulation."""
    x = x.astype(jnp.float32)
    mean = x.mean(axis=-1, keepdims=True)
    var = jnp.square(x - mean).mean(axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


class RMSNorm(nnx.Module):
    """x / rms(x) * scale over the last axis; for q/k this is the whole width, across heads."""

    def __init__(self, channels: int, *, eps: float, precision: Precision, rngs: KeySource):
        self.eps, self.dtype = eps, precision.dtype
        init = axes.partitioned(nnx.initializers.ones, axes.NORM)
        self.scale = nnx.Param(init(rngs.params(), (channels,), precision.param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        y = x * jax.lax.rsqrt(jnp.square(x).mean(axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...].astype(jnp.float32)).astype(self.dtype)
