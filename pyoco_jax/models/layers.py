"""Primitive layers with logical axis names and an explicit precision policy.

Written out (rather than taken from `nnx.Linear`/`nnx.Conv`) so that parameter names and
layouts match diffusers' tensors one to one and norms always run in float32.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.models import axes
from pyoco_jax.models.adaptor import FrameAdaptor
from pyoco_jax.models.keys import KeySource

COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
PARAM_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Precision:
    """Compute dtype of activations and storage dtype of parameters."""

    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32


def _param(rngs: KeySource, init, names: tuple, shape: tuple, dtype: jnp.dtype) -> nnx.Param:
    return nnx.Param(axes.partitioned(init, *names)(rngs.params(), shape, dtype))


class Dense(nnx.Module):
    """y = x @ kernel + bias; kernel (in, out) carries logical names `names`.

    `lora` is a low-rank adapter (models/lora.py) that `add_lora` attaches to chosen layers after building.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        names: tuple[str, str],
        precision: Precision,
        rngs: KeySource,
        use_bias: bool = True,
        zero_init: bool = False,
    ):
        kernel_init = nnx.initializers.zeros if zero_init else nnx.initializers.lecun_normal()
        self.dtype = precision.dtype
        self.kernel = _param(rngs, kernel_init, names, (in_features, out_features), precision.param_dtype)
        self.bias = (
            _param(rngs, nnx.initializers.zeros, (names[1],), (out_features,), precision.param_dtype)
            if use_bias
            else None
        )
        self.lora = nnx.data(None)  # A LoraAdapter once add_lora picks this layer.

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        if self.lora is not None:
            y = y + self.lora(x, self.dtype)
        return y


class Conv2d(nnx.Module):
    """2D convolution on frames folded into the batch, (B*F, H, W, C).

    With `adaptor_frames > 0` a MagicVideo frame-wise adaptor follows the conv, which is why
    the call takes the number of frames per clip.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        adaptor_frames: int = 0,
        precision: Precision,
        rngs: KeySource,
        zero_init: bool = False,
    ):
        self.dtype = precision.dtype
        self.stride = stride
        self.padding = kernel_size // 2
        self.kernel = _param(
            rngs,
            nnx.initializers.zeros if zero_init else nnx.initializers.lecun_normal(),
            (axes.CONV_WINDOW, axes.CONV_WINDOW, axes.CONV_IN, axes.CONV_OUT),
            (kernel_size, kernel_size, in_channels, out_channels),
            precision.param_dtype,
        )
        self.bias = _param(rngs, nnx.initializers.zeros, (axes.CONV_OUT,), (out_channels,), precision.param_dtype)
        self.adaptor = (
            FrameAdaptor(adaptor_frames, out_channels, param_dtype=precision.param_dtype, rngs=rngs)
            if adaptor_frames
            else None
        )

    def __call__(self, x: jax.Array, frames: int) -> jax.Array:
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            self.kernel[...].astype(self.dtype),
            window_strides=(self.stride, self.stride),
            padding=((self.padding, self.padding), (self.padding, self.padding)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        y = y + self.bias[...].astype(self.dtype)
        if self.adaptor is not None:
            y = self.adaptor(y.reshape(-1, frames, *y.shape[1:])).reshape(y.shape)
        return y


class GroupNorm(nnx.Module):
    """GroupNorm over all non-batch axes of channels-last input, computed in float32."""

    def __init__(self, num_groups: int, channels: int, *, eps: float, precision: Precision, rngs: KeySource):
        if channels % num_groups:
            raise ValueError(f"{num_groups} norm groups do not divide {channels} channels (model.norm_num_groups)")
        self.num_groups, self.eps, self.dtype = num_groups, eps, precision.dtype
        self.scale = _param(rngs, nnx.initializers.ones, (axes.NORM,), (channels,), precision.param_dtype)
        self.bias = _param(rngs, nnx.initializers.zeros, (axes.NORM,), (channels,), precision.param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        shape = x.shape
        grouped = x.astype(jnp.float32).reshape(*shape[:-1], self.num_groups, shape[-1] // self.num_groups)
        reduce = tuple(range(1, grouped.ndim - 2)) + (grouped.ndim - 1,)
        mean = grouped.mean(axis=reduce, keepdims=True)
        var = jnp.square(grouped - mean).mean(axis=reduce, keepdims=True)
        y = ((grouped - mean) * jax.lax.rsqrt(var + self.eps)).reshape(shape)
        y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return y.astype(self.dtype)


class LayerNorm(nnx.Module):
    """LayerNorm over the last axis, computed in float32."""

    def __init__(self, channels: int, *, eps: float = 1e-5, precision: Precision, rngs: KeySource):
        self.eps, self.dtype = eps, precision.dtype
        self.scale = _param(rngs, nnx.initializers.ones, (axes.NORM,), (channels,), precision.param_dtype)
        self.bias = _param(rngs, nnx.initializers.zeros, (axes.NORM,), (channels,), precision.param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        mean = x.mean(axis=-1, keepdims=True)
        var = jnp.square(x - mean).mean(axis=-1, keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + self.eps)
        y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return y.astype(self.dtype)
