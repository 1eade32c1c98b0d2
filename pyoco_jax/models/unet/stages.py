"""U-Net stages (down, mid, up): ResNet + spatial transformer units with their temporal layers.

Each unit is `resnet -> [temporal conv] -> spatial transformer & temporal attention`. The last
pair runs in sequence (`z = T(S(z))`, temporal after spatial) or, for the `parallel`
arrangement, MagicVideo's `z = S-Attn(z) + T-Attn(z)`. Levels without spatial attention put
temporal attention right after the ResNet (nothing to run in parallel with).
Names of 2D submodules follow diffusers (`resnets`, `attentions`, ...); temporal ones start
with `temporal_` so the converter can tell new parameters from loaded ones.
"""

import dataclasses

import jax
from flax import nnx

from pyoco_jax.models.keys import KeySource
from pyoco_jax.models.layers import Precision
from pyoco_jax.models.remat import run_block
from pyoco_jax.models.resnet import Downsample, ResnetBlock, Upsample
from pyoco_jax.models.temporal import TemporalAttention, TemporalConv, TemporalSpec
from pyoco_jax.models.transformer import SpatialTransformer


@dataclasses.dataclass(frozen=True)
class StageOptions:
    """What every stage shares: widths, norms, attention, temporal layers, precision, remat."""

    temb_channels: int
    groups: int
    eps: float
    context_dim: int
    backend: str
    remat: str
    num_frames: int
    temporal: TemporalSpec
    precision: Precision


class Stage(nnx.Module):
    """A list of units at one resolution; subclasses add the resampling."""

    def __init__(
        self,
        in_channels: list[int],
        out_channels: int,
        *,
        attention: bool,
        heads: int,
        transformer_layers: int,
        level: int | None,
        options: StageOptions,
        rngs: KeySource,
    ):
        o, spec = options, options.temporal
        temporal = spec.active(level)
        self.adaptor_frames = o.num_frames if temporal and spec.adaptor else 0
        self.remat, self.parallel = o.remat, spec.arrangement == "parallel"
        self.resnets = nnx.List(
            [
                ResnetBlock(
                    c,
                    out_channels,
                    o.temb_channels,
                    groups=o.groups,
                    eps=o.eps,
                    adaptor_frames=self.adaptor_frames,
                    precision=o.precision,
                    rngs=rngs,
                )
                for c in in_channels
            ]
        )
        units = len(in_channels)
        self.attentions = (
            nnx.List(
                [
                    SpatialTransformer(
                        out_channels,
                        heads,
                        num_layers=transformer_layers,
                        context_dim=o.context_dim,
                        groups=o.groups,
                        backend=o.backend,
                        precision=o.precision,
                        rngs=rngs,
                    )
                    for _ in range(units)
                ]
            )
            if attention
            else None
        )
        self.temporal_attentions = (
            nnx.List(
                [
                    TemporalAttention(
                        out_channels,
                        num_heads=spec.num_heads,
                        num_frames=o.num_frames,
                        directed=spec.directed,
                        position_encoding=spec.position_encoding,
                        backend=o.backend,
                        precision=o.precision,
                        rngs=rngs,
                    )
                    for _ in range(units)
                ]
            )
            if temporal and spec.attention
            else None
        )
        self.temporal_convs = (
            nnx.List(
                [
                    TemporalConv(
                        out_channels,
                        groups=o.groups,
                        eps=o.eps,
                        causal=spec.directed,
                        precision=o.precision,
                        rngs=rngs,
                    )
                    for _ in range(units)
                ]
            )
            if temporal and spec.conv
            else None
        )

    def unit(self, j: int, x: jax.Array, temb: jax.Array, context: jax.Array | None, frames: int) -> jax.Array:
        """Unit j on folded frames x: (B*F, H, W, C)."""
        x = run_block(self.remat, self.resnets[j], frames, x, temb)
        if self.temporal_convs is not None:
            x = x + run_block(self.remat, self.temporal_convs[j], frames, x)
        if self.attentions is not None:
            spatial = run_block(self.remat, self.attentions[j], frames, x, context)
            if self.temporal_attentions is not None and self.parallel:
                return spatial + run_block(self.remat, self.temporal_attentions[j], frames, x)
            x = spatial
        if self.temporal_attentions is not None:
            x = x + run_block(self.remat, self.temporal_attentions[j], frames, x)
        return x


class DownStage(Stage):
    """Units, then an optional stride-2 downsampler; returns every intermediate for the skips."""

    def __init__(self, in_channels: int, out_channels: int, *, num_layers: int, add_downsample: bool, **kwargs):
        super().__init__([in_channels] + [out_channels] * (num_layers - 1), out_channels, **kwargs)
        options: StageOptions = kwargs["options"]
        self.downsampler = (
            Downsample(
                out_channels, adaptor_frames=self.adaptor_frames, precision=options.precision, rngs=kwargs["rngs"]
            )
            if add_downsample
            else None
        )

    def __call__(
        self, x: jax.Array, temb: jax.Array, context: jax.Array | None, frames: int
    ) -> tuple[jax.Array, list[jax.Array]]:
        skips = []
        for j in range(len(self.resnets)):
            x = self.unit(j, x, temb, context, frames)
            skips.append(x)
        if self.downsampler is not None:
            x = self.downsampler(x, frames)
            skips.append(x)
        return x, skips


class MidStage(Stage):
    """diffusers' mid block: ResNet, then (spatial transformer, ResNet) if it has attention."""

    def __init__(self, channels: int, *, attention: bool, **kwargs):
        super().__init__([channels], channels, attention=attention, **kwargs)
        if attention:
            o: StageOptions = kwargs["options"]
            rngs: KeySource = kwargs["rngs"]
            self.resnets.append(
                ResnetBlock(
                    channels,
                    channels,
                    o.temb_channels,
                    groups=o.groups,
                    eps=o.eps,
                    adaptor_frames=self.adaptor_frames,
                    precision=o.precision,
                    rngs=rngs,
                )
            )
            if self.temporal_convs is not None:
                self.temporal_convs.append(
                    TemporalConv(
                        channels,
                        groups=o.groups,
                        eps=o.eps,
                        causal=o.temporal.directed,
                        precision=o.precision,
                        rngs=rngs,
                    )
                )

    def __call__(self, x: jax.Array, temb: jax.Array, context: jax.Array | None, frames: int) -> jax.Array:
        x = self.unit(0, x, temb, context, frames)
        if len(self.resnets) > 1:
            x = run_block(self.remat, self.resnets[1], frames, x, temb)
            if self.temporal_convs is not None:
                x = x + run_block(self.remat, self.temporal_convs[1], frames, x)
        return x


class UpStage(Stage):
    """Units on [x, skip] concatenated along channels, then an optional 2x upsampler."""

    def __init__(
        self, prev_channels: int, out_channels: int, *, skip_channels: list[int], add_upsample: bool, **kwargs
    ):
        ins = [(prev_channels if j == 0 else out_channels) + s for j, s in enumerate(skip_channels)]
        super().__init__(ins, out_channels, **kwargs)
        options: StageOptions = kwargs["options"]
        self.upsampler = (
            Upsample(out_channels, adaptor_frames=self.adaptor_frames, precision=options.precision, rngs=kwargs["rngs"])
            if add_upsample
            else None
        )

    def __call__(
        self, x: jax.Array, skips: list[jax.Array], temb: jax.Array, context: jax.Array | None, frames: int
    ) -> jax.Array:
        for j in range(len(self.resnets)):
            skip = skips.pop()
            x = jax.numpy.concatenate([x, skip.astype(x.dtype)], axis=-1)
            x = self.unit(j, x, temb, context, frames)
        if self.upsampler is not None:
            x = self.upsampler(x, frames)
        return x
