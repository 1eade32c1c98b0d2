"""ResNet block with time embedding, and the down/upsampling convs (diffusers' layouts)."""

import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.models import axes
from pyoco_jax.models.keys import KeySource
from pyoco_jax.models.layers import Conv2d, Dense, GroupNorm, Precision


class ResnetBlock(nnx.Module):
    """GroupNorm-SiLU-conv, + projected time embedding, GroupNorm-SiLU-conv, + (1x1-projected) input."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        *,
        groups: int,
        eps: float,
        adaptor_frames: int,
        precision: Precision,
        rngs: KeySource,
    ):
        self.norm1 = GroupNorm(groups, in_channels, eps=eps, precision=precision, rngs=rngs)
        self.conv1 = Conv2d(in_channels, out_channels, adaptor_frames=adaptor_frames, precision=precision, rngs=rngs)
        self.time_emb_proj = Dense(
            temb_channels, out_channels, names=(axes.TEMB, axes.CONV_OUT), precision=precision, rngs=rngs
        )
        self.norm2 = GroupNorm(groups, out_channels, eps=eps, precision=precision, rngs=rngs)
        self.conv2 = Conv2d(out_channels, out_channels, adaptor_frames=adaptor_frames, precision=precision, rngs=rngs)
        self.conv_shortcut = (
            Conv2d(in_channels, out_channels, kernel_size=1, precision=precision, rngs=rngs)
            if in_channels != out_channels
            else None
        )

    def __call__(self, x: jax.Array, temb: jax.Array, frames: int) -> jax.Array:
        """x: (B*F, H, W, C); temb: (B*F, D)."""
        h = self.conv1(jax.nn.silu(self.norm1(x)), frames)
        h = h + self.time_emb_proj(jax.nn.silu(temb))[:, None, None, :]
        h = self.conv2(jax.nn.silu(self.norm2(h)), frames)
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x, frames)
        return x.astype(h.dtype) + h


class Downsample(nnx.Module):
    """Stride-2 3x3 conv with padding 1."""

    def __init__(self, channels: int, *, adaptor_frames: int, precision: Precision, rngs: KeySource):
        self.conv = Conv2d(channels, channels, stride=2, adaptor_frames=adaptor_frames, precision=precision, rngs=rngs)

    def __call__(self, x: jax.Array, frames: int) -> jax.Array:
        return self.conv(x, frames)


class Upsample(nnx.Module):
    """Nearest-neighbour 2x upsampling, then a 3x3 conv."""

    def __init__(self, channels: int, *, adaptor_frames: int, precision: Precision, rngs: KeySource):
        self.conv = Conv2d(channels, channels, adaptor_frames=adaptor_frames, precision=precision, rngs=rngs)

    def __call__(self, x: jax.Array, frames: int) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(x, frames)
