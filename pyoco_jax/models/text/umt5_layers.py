"""The parts of a UMT5 encoder block: bucketed relative position bias, unscaled self-attention, gated feed-forward.

Module and attribute names follow transformers' state-dict names (`layer.0.SelfAttention.q`,
`layer.1.DenseReluDense.wi_0`, ...) so the converter only renames leaves, as for CLIP.
"""

import functools
import math
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pyoco_jax.models import axes
from pyoco_jax.models.attention import attention
from pyoco_jax.models.dit.norms import RMSNorm
from pyoco_jax.models.keys import KeySource
from pyoco_jax.models.layers import Dense, Precision
from pyoco_jax.models.text.encoder import ACTIVATIONS


class BlockConfig(Protocol):
    """What the block reads from `UMT5Config`."""

    d_model: int
    d_kv: int
    d_ff: int
    num_heads: int
    relative_attention_num_buckets: int
    relative_attention_max_distance: int
    layer_norm_epsilon: float
    activation: str


@functools.lru_cache(maxsize=16)
def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """(length, length) bucket of key position minus query position, for bidirectional attention.

    Half the buckets hold keys after the query, half those before; in each half the first
    num_buckets // 4 are exact distances, the rest log-spaced up to `max_distance`, beyond which
    all share the half's last bucket. Computed in float32 with truncation, as the reference does,
    so distances on a bucket edge land where they do there. Host numpy: a trace-time constant.
    """
    relative = np.arange(length)[None, :] - np.arange(length)[:, None]
    half = num_buckets // 2
    exact = half // 2
    distance = np.abs(relative)
    ratio = np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(exact))
    ratio = ratio / np.float32(math.log(max_distance / exact)) * np.float32(half - exact)
    far = np.minimum(exact + ratio.astype(np.int64), half - 1)
    return (np.where(relative > 0, half, 0) + np.where(distance < exact, distance, far)).astype(np.int32)


class RelativePositionBias(nnx.Module):
    """A learned (num_buckets, heads) table; every UMT5 layer has its own (T5 shares layer 0's)."""

    def __init__(self, config: BlockConfig, *, precision: Precision, rngs: KeySource):
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance
        init = axes.partitioned(nnx.initializers.normal(config.d_model**-0.5), axes.RELPOS, axes.HEADS)
        shape = (self.num_buckets, config.num_heads)
        self.embedding = nnx.Param(init(rngs.params(), shape, precision.param_dtype))

    def __call__(self, length: int) -> jax.Array:
        """(1, heads, length, length) float32 logit bias."""
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance)
        bias = jnp.take(self.embedding[...].astype(jnp.float32), buckets, axis=0)
        return bias.transpose(2, 0, 1)[None]


class Attention(nnx.Module):
    """Bias-free q/k/v/o projections; logits are q.k unscaled (T5 folds the 1/sqrt(d) into q's init)."""

    def __init__(self, config: BlockConfig, *, backend: str, precision: Precision, rngs: KeySource):
        self.heads, self.head_dim, self.backend = config.num_heads, config.d_kv, backend
        inner = config.num_heads * config.d_kv
        project = lambda i, o, names: Dense(i, o, names=names, use_bias=False, precision=precision, rngs=rngs)
        self.q = project(config.d_model, inner, (axes.EMBED, axes.HEADS))
        self.k = project(config.d_model, inner, (axes.EMBED, axes.HEADS))
        self.v = project(config.d_model, inner, (axes.EMBED, axes.HEADS))
        self.o = project(inner, config.d_model, (axes.HEADS, axes.EMBED))
        self.relative_attention_bias = RelativePositionBias(config, precision=precision, rngs=rngs)

    def __call__(self, x: jax.Array, mask_bias: jax.Array) -> jax.Array:
        split = lambda a: a.reshape(*a.shape[:-1], self.heads, self.head_dim)
        # `attention` divides the logits by sqrt(head_dim); undo it on q (exact when head_dim is a power of 4).
        q = split(self.q(x)) * math.sqrt(self.head_dim)
        bias = self.relative_attention_bias(x.shape[1]) + mask_bias
        out = attention(q, split(self.k(x)), split(self.v(x)), bias=bias, backend=self.backend)
        return self.o(out.reshape(*out.shape[:-2], -1))


class GatedFeedForward(nnx.Module):
    """wo(act(wi_0 x) * wi_1 x); wo runs in float32, where T5's large activations cannot overflow."""

    def __init__(self, config: BlockConfig, *, precision: Precision, rngs: KeySource):
        self.act = ACTIVATIONS[config.activation]
        project_in = lambda: Dense(
            config.d_model, config.d_ff, names=(axes.EMBED, axes.MLP), use_bias=False, precision=precision, rngs=rngs
        )
        self.wi_0, self.wi_1 = project_in(), project_in()
        wide = Precision(dtype=jnp.float32, param_dtype=precision.param_dtype)
        self.wo = Dense(
            config.d_ff, config.d_model, names=(axes.MLP, axes.EMBED), use_bias=False, precision=wide, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.wo(self.act(self.wi_0(x)) * self.wi_1(x))


class SelfAttentionLayer(nnx.Module):
    """x + attention(rms_norm(x))."""

    def __init__(self, config: BlockConfig, *, backend: str, precision: Precision, rngs: KeySource):
        self.layer_norm = RMSNorm(config.d_model, eps=config.layer_norm_epsilon, precision=precision, rngs=rngs)
        self.SelfAttention = Attention(config, backend=backend, precision=precision, rngs=rngs)

    def __call__(self, x: jax.Array, mask_bias: jax.Array) -> jax.Array:
        return x + self.SelfAttention(self.layer_norm(x), mask_bias)


class FeedForwardLayer(nnx.Module):
    """x + feed_forward(rms_norm(x))."""

    def __init__(self, config: BlockConfig, *, precision: Precision, rngs: KeySource):
        self.layer_norm = RMSNorm(config.d_model, eps=config.layer_norm_epsilon, precision=precision, rngs=rngs)
        self.DenseReluDense = GatedFeedForward(config, precision=precision, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.DenseReluDense(self.layer_norm(x))


class Block(nnx.Module):
    """One encoder layer; `layer` is a list so paths read `block.N.layer.0/1` as transformers' do."""

    def __init__(self, config: BlockConfig, *, backend: str, precision: Precision, rngs: KeySource):
        self.layer = nnx.List(
            [
                SelfAttentionLayer(config, backend=backend, precision=precision, rngs=rngs),
                FeedForwardLayer(config, precision=precision, rngs=rngs),
            ]
        )

    def __call__(self, x: jax.Array, mask_bias: jax.Array) -> jax.Array:
        """x: the float32 residual stream (B, T, d_model); sublayer outputs are added in float32."""
        return self.layer[1](self.layer[0](x, mask_bias))
