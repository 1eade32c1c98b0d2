"""The Wan VAE's primitives on channels-last video (B, T, H, W, C): causal 3D convs fed by a frame cache,
and the RMS norm over channels.

Wan runs its networks on a clip a chunk of frames at a time. Every temporal conv then needs the
frames just before the chunk; `FrameCache` hands them from one chunk to the next in call order,
so a chunked pass computes what one causal pass over the whole clip would, with activations the
size of one chunk.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.models import axes
from pyoco_jax.models.keys import KeySource
from pyoco_jax.models.layers import Precision

NORM_EPS = 1e-12  # The floor of the RMS norm's L2 norm (torch's F.normalize).


def _param(rngs: KeySource, init, names: tuple, shape: tuple, precision: Precision) -> nnx.Param:
    return nnx.Param(axes.partitioned(init, *names)(rngs.params(), shape, precision.param_dtype))


class FrameCache:
    """The trailing input frames of every temporal conv of one network, read and written in call order.

    `past` is the previous chunk's `saved` list; None marks the first chunk, where every conv sees
    zero frames instead (the causal padding). Every chunk, the first included, saves the same entries
    in the same order and shapes, so that `saved` can be a `lax.scan` carry.
    """

    def __init__(self, past: list[jax.Array] | None = None):
        self.first = past is None
        self._past = iter(past or ())
        self.saved: list[jax.Array] = []

    def save(self, frames: jax.Array) -> None:
        """Keeps `frames` for the next chunk's read at this position."""
        self.saved.append(frames)

    def extend(self, x: jax.Array, frames: int) -> jax.Array:
        """`x` with the `frames` frames before it in front; saves the last `frames` of the result."""
        past = jnp.zeros((x.shape[0], frames, *x.shape[2:]), x.dtype) if self.first else next(self._past)
        full = jnp.concatenate([past, x], axis=1)
        self.save(full[:, full.shape[1] - frames :])
        return full


class CausalConv3d(nnx.Module):
    """3D conv padded with zeros on the sides of H and W but only on the past side of time, where a
    chunk gets the previous chunk's last frames from the cache (a kernel of 1 frame needs none)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int, int],
        *,
        time_stride: int = 1,
        precision: Precision,
        rngs: KeySource,
    ):
        self.dtype = precision.dtype
        self.kernel_size, self.time_stride = kernel_size, time_stride
        self.kernel = _param(
            rngs,
            nnx.initializers.lecun_normal(),
            (axes.CONV_WINDOW, axes.CONV_WINDOW, axes.CONV_WINDOW, axes.CONV_IN, axes.CONV_OUT),
            (*kernel_size, in_channels, out_channels),
            precision,
        )
        self.bias = _param(rngs, nnx.initializers.zeros, (axes.CONV_OUT,), (out_channels,), precision)

    def __call__(self, x: jax.Array, cache: FrameCache | None = None) -> jax.Array:
        """Without a cache, `x` already starts with its past frames (or the kernel spans one frame)."""
        x = x.astype(self.dtype)
        kt, kh, kw = self.kernel_size
        if cache is not None and kt > 1:
            x = cache.extend(x, kt - 1)
        y = jax.lax.conv_general_dilated(
            x,
            self.kernel[...].astype(self.dtype),
            window_strides=(self.time_stride, 1, 1),
            padding=((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)),
            dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
        )
        return y + self.bias[...].astype(self.dtype)


class RMSNorm(nnx.Module):
    """x / ||x|| * sqrt(C) * scale over the channels of each position, in float32 (Wan's `RMS_norm`)."""

    def __init__(self, channels: int, *, precision: Precision, rngs: KeySource):
        self.dtype = precision.dtype
        self.scale = _param(rngs, nnx.initializers.ones, (axes.NORM,), (channels,), precision)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
        y = x / jnp.maximum(norm, NORM_EPS) * (x.shape[-1] ** 0.5) * self.scale[...].astype(jnp.float32)
        return y.astype(self.dtype)
