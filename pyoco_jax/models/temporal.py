"""Temporal layers that turn the image U-Net into a video U-Net, each the identity at init.

- TemporalAttention: self-attention across the frames of every spatial position; directed
  (causal: frame p sees frames q <= p) or bidirectional; optional sinusoidal frame positions
  or a learned per-head relative-distance bias (zero init). Zero-init output projection.
- TemporalConv: kernel-3 convolution over frames, residual, zero-init. When attention is
  directed the conv is causal too (it sees frames p-2..p), so a directed video U-Net is causal
  in frames end to end (the frame-wise adaptor and all 2D layers act per frame).
The frame-wise adaptor lives in `adaptor.py` (it belongs to each 2D conv).
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from pyoco_jax.models import axes
from pyoco_jax.models.embeddings import sinusoidal_embedding
from pyoco_jax.models.keys import KeySource
from pyoco_jax.models.layers import GroupNorm, LayerNorm, Precision
from pyoco_jax.models.transformer import Attention

POSITION_ENCODINGS = ("none", "sinusoidal", "relative")
ARRANGEMENTS = ("sequential", "parallel")


@dataclasses.dataclass(frozen=True)
class TemporalSpec:
    """The `model.temporal` config section, checked; `levels=()` and `mid=False` mean an image model."""

    levels: tuple[int, ...] = ()
    mid: bool = False
    attention: bool = False
    directed: bool = True
    position_encoding: str = "sinusoidal"
    num_heads: int = 4
    conv: bool = False
    adaptor: bool = False
    arrangement: str = "sequential"

    def __post_init__(self):
        if self.position_encoding not in POSITION_ENCODINGS:
            raise ValueError(
                f"model.temporal.position_encoding={self.position_encoding!r} is not one of {POSITION_ENCODINGS}"
            )
        if self.arrangement not in ARRANGEMENTS:
            raise ValueError(f"model.temporal.arrangement={self.arrangement!r} is not one of {ARRANGEMENTS}")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict | None) -> "TemporalSpec":
        if config is None:
            return cls()
        defaults = cls()
        values = {f.name: config.get(f.name, getattr(defaults, f.name)) for f in dataclasses.fields(cls)}
        values["levels"] = tuple(values["levels"])
        return cls(**values)

    def active(self, level: int | None) -> bool:
        """Whether a level (None: the mid block) gets temporal layers."""
        return self.mid if level is None else level in self.levels


def _to_frame_tokens(x: jax.Array, frames: int) -> jax.Array:
    n, h, w, c = x.shape
    return x.reshape(n // frames, frames, h, w, c).transpose(0, 2, 3, 1, 4).reshape(-1, frames, c)


def _from_frame_tokens(tokens: jax.Array, shape: tuple[int, ...], frames: int) -> jax.Array:
    n, h, w, c = shape
    return tokens.reshape(n // frames, h, w, frames, c).transpose(0, 3, 1, 2, 4).reshape(n, h, w, c)


class TemporalAttention(nnx.Module):
    """Returns the attention branch (no residual): the caller adds it, in sequence or in parallel."""

    def __init__(
        self,
        channels: int,
        *,
        num_heads: int,
        num_frames: int,
        directed: bool,
        position_encoding: str,
        backend: str,
        precision: Precision,
        rngs: KeySource,
    ):
        if channels % num_heads:
            raise ValueError(f"model.temporal.num_heads={num_heads} does not divide {channels} channels")
        self.num_frames, self.directed, self.position_encoding = num_frames, directed, position_encoding
        self.norm = LayerNorm(channels, precision=precision, rngs=rngs)
        self.attn = Attention(
            channels, num_heads, channels // num_heads, backend=backend, precision=precision, rngs=rngs, zero_out=True
        )
        if position_encoding == "relative":
            init = axes.partitioned(nnx.initializers.zeros, axes.HEADS, axes.RELPOS)
            self.relative_bias = nnx.Param(init(rngs.params(), (num_heads, 2 * num_frames - 1), precision.param_dtype))
        else:
            self.relative_bias = None

    def __call__(self, x: jax.Array, frames: int) -> jax.Array:
        """x: (B*F, H, W, C) -> the branch's output, same shape."""
        tokens = self.norm(_to_frame_tokens(x, frames))
        bias = None
        if self.position_encoding == "sinusoidal":
            tokens = tokens + sinusoidal_embedding(jnp.arange(frames), tokens.shape[-1]).astype(tokens.dtype)
        elif self.position_encoding == "relative":
            if frames > self.num_frames:
                raise ValueError(f"relative frame positions were built for {self.num_frames} frames, got {frames}")
            distance = jnp.arange(frames)[:, None] - jnp.arange(frames)[None, :] + self.num_frames - 1
            bias = self.relative_bias[...][:, distance][None]
        out = self.attn(tokens, bias=bias, causal=self.directed)
        return _from_frame_tokens(out, x.shape, frames)


class TemporalConv(nnx.Module):
    """Branch GroupNorm-SiLU-Conv1d(kernel 3 over frames), zero-initialised; causal if `causal`."""

    def __init__(self, channels: int, *, groups: int, eps: float, causal: bool, precision: Precision, rngs: KeySource):
        self.causal, self.dtype = causal, precision.dtype
        self.norm = GroupNorm(groups, channels, eps=eps, precision=precision, rngs=rngs)
        kernel_init = axes.partitioned(nnx.initializers.zeros, axes.CONV_WINDOW, axes.CONV_IN, axes.CONV_OUT)
        bias_init = axes.partitioned(nnx.initializers.zeros, axes.CONV_OUT)
        self.kernel = nnx.Param(kernel_init(rngs.params(), (3, channels, channels), precision.param_dtype))
        self.bias = nnx.Param(bias_init(rngs.params(), (channels,), precision.param_dtype))

    def __call__(self, x: jax.Array, frames: int) -> jax.Array:
        """x: (B*F, H, W, C) -> the branch's output, same shape."""
        y = jax.nn.silu(self.norm(x))
        y = y.reshape(-1, frames, *y.shape[1:])
        pad = (2, 0) if self.causal else (1, 1)
        y = jnp.pad(y, ((0, 0), pad, (0, 0), (0, 0), (0, 0)))
        kernel = self.kernel[...].astype(self.dtype)
        # Three shifted matmuls over channels: no transpose of the video to frames-last.
        out = sum(jnp.einsum("bfhwc,cd->bfhwd", y[:, k : k + frames], kernel[k]) for k in range(3))
        out = out + self.bias[...].astype(self.dtype)
        return out.reshape(x.shape)
