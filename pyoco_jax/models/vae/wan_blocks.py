"""The Wan VAE's blocks on channels-last video chunks (B, T, H, W, C): residual block, per-frame attention,
mid block, and the resamplers that halve or double H, W and (in the "3d" levels) T.

Every block takes the network's `FrameCache`; blocks without temporal convs ignore it.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.models import axes
from pyoco_jax.models.attention import attention
from pyoco_jax.models.keys import KeySource
from pyoco_jax.models.layers import Conv2d, Dense, Precision
from pyoco_jax.models.vae.wan_layers import CausalConv3d, FrameCache, RMSNorm


def _per_frame(fn, x: jax.Array) -> jax.Array:
    """Applies an (N, H, W, C) function to every frame of (B, T, H, W, C)."""
    b, t = x.shape[:2]
    y = fn(x.reshape(b * t, *x.shape[2:]))
    return y.reshape(b, t, *y.shape[1:])


class WanResidualBlock(nnx.Module):
    """RMSNorm-SiLU-causal 3x3x3 conv twice, plus the (1x1x1-projected) input."""

    def __init__(self, in_channels: int, out_channels: int, *, precision: Precision, rngs: KeySource):
        conv = lambda i, o, k: CausalConv3d(i, o, (k, k, k), precision=precision, rngs=rngs)
        self.norm1 = RMSNorm(in_channels, precision=precision, rngs=rngs)
        self.conv1 = conv(in_channels, out_channels, 3)
        self.norm2 = RMSNorm(out_channels, precision=precision, rngs=rngs)
        self.conv2 = conv(out_channels, out_channels, 3)
        self.conv_shortcut = conv(in_channels, out_channels, 1) if in_channels != out_channels else None

    def __call__(self, x: jax.Array, cache: FrameCache) -> jax.Array:
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        h = self.conv1(jax.nn.silu(self.norm1(x)), cache)
        h = self.conv2(jax.nn.silu(self.norm2(h)), cache)
        return shortcut.astype(h.dtype) + h


class WanAttentionBlock(nnx.Module):
    """Single-head self-attention over the H*W positions of each frame (no temporal mixing), residual."""

    def __init__(self, channels: int, *, backend: str, precision: Precision, rngs: KeySource):
        self.backend = backend
        self.norm = RMSNorm(channels, precision=precision, rngs=rngs)
        self.to_qkv = Dense(channels, 3 * channels, names=(axes.EMBED, axes.HEADS), precision=precision, rngs=rngs)
        self.proj = Dense(channels, channels, names=(axes.HEADS, axes.EMBED), precision=precision, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        tokens = self.norm(x).reshape(b * t, h * w, c)
        q, k, v = (a[:, :, None, :] for a in jnp.split(self.to_qkv(tokens), 3, axis=-1))  # One head, c wide.
        out = attention(q, k, v, backend=self.backend).reshape(b * t, h * w, c)
        return x.astype(out.dtype) + self.proj(out).reshape(x.shape)


class WanMidBlock(nnx.Module):
    """Residual block, attention, residual block at the lowest resolution."""

    def __init__(self, channels: int, *, backend: str, precision: Precision, rngs: KeySource):
        block = lambda: WanResidualBlock(channels, channels, precision=precision, rngs=rngs)
        self.resnets = nnx.List([block(), block()])
        self.attentions = nnx.List([WanAttentionBlock(channels, backend=backend, precision=precision, rngs=rngs)])

    def __call__(self, x: jax.Array, cache: FrameCache) -> jax.Array:
        x = self.resnets[0](x, cache)
        return self.resnets[1](self.attentions[0](x), cache)


class WanDownsample(nnx.Module):
    """Stride-2 3x3 conv per frame after one zero row/column at the bottom/right; with `temporal`, then a
    stride-2 conv over 3 frames. The clip's first frame passes that one unchanged, so T frames become
    1 + (T - 1) / 2: each later output frame sees the last frame of the pair before it as its past."""

    def __init__(self, channels: int, *, temporal: bool, precision: Precision, rngs: KeySource):
        self.resample = Conv2d(channels, channels, stride=2, precision=precision, rngs=rngs)
        self.resample.padding = 0  # The padding is the asymmetric one in __call__.
        self.time_conv = (
            CausalConv3d(channels, channels, (3, 1, 1), time_stride=2, precision=precision, rngs=rngs)
            if temporal
            else None
        )

    def __call__(self, x: jax.Array, cache: FrameCache) -> jax.Array:
        x = _per_frame(lambda f: self.resample(jnp.pad(f, ((0, 0), (0, 1), (0, 1), (0, 0))), 1), x)
        if self.time_conv is None:
            return x
        if cache.first:
            cache.save(x[:, -1:])
            return x
        return self.time_conv(cache.extend(x, 1))


class WanUpsample(nnx.Module):
    """With `temporal`, a causal conv over 3 frames makes two frames of each (interleaved), except for the
    clip's first frame, which stays one; then 2x nearest upsampling and a 3x3 conv to half the channels.

    The temporal conv's causal past starts at the clip's second frame: the first never enters it.
    """

    def __init__(self, channels: int, *, temporal: bool, precision: Precision, rngs: KeySource):
        self.resample = Conv2d(channels, channels // 2, precision=precision, rngs=rngs)
        self.time_conv = (
            CausalConv3d(channels, 2 * channels, (3, 1, 1), precision=precision, rngs=rngs) if temporal else None
        )

    def __call__(self, x: jax.Array, cache: FrameCache) -> jax.Array:
        b, t, h, w, c = x.shape
        if self.time_conv is not None and cache.first:
            cache.save(jnp.zeros((b, 2, h, w, c), self.time_conv.dtype))
        elif self.time_conv is not None:
            pairs = self.time_conv(x, cache).reshape(b, t, h, w, 2, c)
            x = jnp.moveaxis(pairs, 4, 2).reshape(b, 2 * t, h, w, c)
        nearest = lambda f: jnp.repeat(jnp.repeat(f, 2, axis=1), 2, axis=2)
        return _per_frame(lambda f: self.resample(nearest(f), 1), x)
