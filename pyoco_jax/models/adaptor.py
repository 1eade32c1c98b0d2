"""MagicVideo's frame-wise adaptor: each frame gets its own per-channel scale and bias after a 2D conv."""

import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.models import axes
from pyoco_jax.models.keys import KeySource


class FrameAdaptor(nnx.Module):
    """`z_i = S_i * z_i + B_i` on (B, F, H, W, C); S = 1, B = 0 at init so the conv is unchanged.

    The tables hold `num_frames` rows; a clip with fewer frames uses the first rows.
    """

    def __init__(self, num_frames: int, channels: int, *, param_dtype: jnp.dtype, rngs: KeySource):
        self.num_frames = num_frames
        self.scale = nnx.Param(
            axes.partitioned(nnx.initializers.ones, axes.FRAMES, axes.CONV_OUT)(
                rngs.params(), (num_frames, channels), param_dtype
            )
        )
        self.bias = nnx.Param(
            axes.partitioned(nnx.initializers.zeros, axes.FRAMES, axes.CONV_OUT)(
                rngs.params(), (num_frames, channels), param_dtype
            )
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        frames = x.shape[1]
        if frames > self.num_frames:
            raise ValueError(
                f"the frame-wise adaptor was built for {self.num_frames} frames (data.num_frames), got {frames}"
            )
        scale = self.scale[:frames].astype(x.dtype)[None, :, None, None, :]
        bias = self.bias[:frames].astype(x.dtype)[None, :, None, None, :]
        return x * scale + bias
