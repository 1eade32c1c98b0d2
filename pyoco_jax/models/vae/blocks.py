"""Building blocks of the SD VAE in diffusers' layout: ResNet without time embedding, mid-block
attention, and the encoder's asymmetrically padded downsampling.

Inputs are frames folded into the batch, (N, H, W, C). The 2D convs take a frame count only for
the U-Net's frame-wise adaptor, which the VAE never has, hence the constant `1` in their calls.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.models import axes
from pyoco_jax.models.attention import attention
from pyoco_jax.models.keys import KeySource
from pyoco_jax.models.layers import Conv2d, Dense, GroupNorm, Precision

EPS = 1e-6  # Every norm of the SD VAE.


class VAEResnetBlock(nnx.Module):
    """GroupNorm-SiLU-conv twice, plus the (1x1-projected) input."""

    def __init__(self, in_channels: int, out_channels: int, *, groups: int, precision: Precision, rngs: KeySource):
        self.norm1 = GroupNorm(groups, in_channels, eps=EPS, precision=precision, rngs=rngs)
        self.conv1 = Conv2d(in_channels, out_channels, precision=precision, rngs=rngs)
        self.norm2 = GroupNorm(groups, out_channels, eps=EPS, precision=precision, rngs=rngs)
        self.conv2 = Conv2d(out_channels, out_channels, precision=precision, rngs=rngs)
        self.conv_shortcut = (
            Conv2d(in_channels, out_channels, kernel_size=1, precision=precision, rngs=rngs)
            if in_channels != out_channels
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv1(jax.nn.silu(self.norm1(x)), 1)
        h = self.conv2(jax.nn.silu(self.norm2(h)), 1)
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x, 1)
        return x.astype(h.dtype) + h


class VAEAttention(nnx.Module):
    """Single-head self-attention over the H*W positions of a frame, GroupNorm first, residual."""

    def __init__(self, channels: int, *, groups: int, backend: str, precision: Precision, rngs: KeySource):
        self.backend = backend
        self.group_norm = GroupNorm(groups, channels, eps=EPS, precision=precision, rngs=rngs)
        dense = lambda names: Dense(channels, channels, names=names, precision=precision, rngs=rngs)
        self.to_q = dense((axes.EMBED, axes.HEADS))
        self.to_k = dense((axes.EMBED, axes.HEADS))
        self.to_v = dense((axes.EMBED, axes.HEADS))
        self.to_out = dense((axes.HEADS, axes.EMBED))

    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        tokens = self.group_norm(x).reshape(n, h * w, c)
        one_head = lambda a: a[:, :, None, :]  # A single head as wide as the channels.
        q, k, v = (one_head(proj(tokens)) for proj in (self.to_q, self.to_k, self.to_v))
        out = attention(q, k, v, backend=self.backend)
        return x.astype(out.dtype) + self.to_out(out.reshape(n, h * w, c)).reshape(n, h, w, c)


class VAEMidBlock(nnx.Module):
    """ResNet, attention (optional), ResNet at the lowest resolution."""

    def __init__(
        self, channels: int, *, groups: int, add_attention: bool, backend: str, precision: Precision, rngs: KeySource
    ):
        block = lambda: VAEResnetBlock(channels, channels, groups=groups, precision=precision, rngs=rngs)
        self.resnets = nnx.List([block(), block()])
        self.attentions = (
            nnx.List([VAEAttention(channels, groups=groups, backend=backend, precision=precision, rngs=rngs)])
            if add_attention
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.resnets[0](x)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x)


class VAEDownsample(nnx.Module):
    """Stride-2 3x3 conv after padding one zero row/column at the bottom/right (not all around)."""

    def __init__(self, channels: int, *, precision: Precision, rngs: KeySource):
        self.conv = Conv2d(channels, channels, stride=2, precision=precision, rngs=rngs)
        self.conv.padding = 0  # The padding is the asymmetric one below.

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0))), 1)
