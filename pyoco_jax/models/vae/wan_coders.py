"""The Wan VAE's encoder and decoder, each run on one chunk of a clip at a time (see `wan.py`).

Layer lists and channel widths follow diffusers' `WanEncoder3d`/`WanDecoder3d` for Wan 2.1, so
parameter names map one to one: the encoder's `down_blocks` is a flat list of residual blocks
with a downsampler after each level but the last; each decoder up block upsamples to half its
channels, which is why every up block after the first starts from half the previous width.
"""

import jax
from flax import nnx

from pyoco_jax.models.keys import KeySource
from pyoco_jax.models.layers import Precision
from pyoco_jax.models.vae.wan_blocks import WanDownsample, WanMidBlock, WanResidualBlock, WanUpsample
from pyoco_jax.models.vae.wan_config import WanVAEConfig
from pyoco_jax.models.vae.wan_layers import CausalConv3d, FrameCache, RMSNorm


class WanEncoder(nnx.Module):
    """Video chunk (B, T, H, W, in_channels) -> posterior moments (B, T', H/8, W/8, 2 * z_dim), before quant_conv."""

    def __init__(self, config: WanVAEConfig, *, backend: str, precision: Precision, rngs: KeySource):
        dims = [config.base_dim * m for m in (1, *config.dim_mult)]
        self.conv_in = CausalConv3d(config.in_channels, dims[0], (3, 3, 3), precision=precision, rngs=rngs)
        layers = []
        for level, (channels, out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            for _ in range(config.num_res_blocks):
                layers.append(WanResidualBlock(channels, out, precision=precision, rngs=rngs))
                channels = out
            if level < len(config.temporal_downsample):
                temporal = config.temporal_downsample[level]
                layers.append(WanDownsample(out, temporal=temporal, precision=precision, rngs=rngs))
        self.down_blocks = nnx.List(layers)
        self.mid_block = WanMidBlock(dims[-1], backend=backend, precision=precision, rngs=rngs)
        self.norm_out = RMSNorm(dims[-1], precision=precision, rngs=rngs)
        self.conv_out = CausalConv3d(dims[-1], 2 * config.z_dim, (3, 3, 3), precision=precision, rngs=rngs)

    def __call__(self, x: jax.Array, cache: FrameCache) -> jax.Array:
        x = self.conv_in(x, cache)
        for layer in self.down_blocks:
            x = layer(x, cache)
        x = self.mid_block(x, cache)
        return self.conv_out(jax.nn.silu(self.norm_out(x)), cache)


class WanUpBlock(nnx.Module):
    """num_res_blocks + 1 residual blocks, then (all levels but the last) an upsampler."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        num_res_blocks: int,
        upsample: bool,
        temporal: bool,
        precision: Precision,
        rngs: KeySource,
    ):
        widths = [in_channels] + [out_channels] * num_res_blocks
        self.resnets = nnx.List(
            [WanResidualBlock(c, out_channels, precision=precision, rngs=rngs) for c in widths],
        )
        self.upsampler = (
            WanUpsample(out_channels, temporal=temporal, precision=precision, rngs=rngs) if upsample else None
        )

    def __call__(self, x: jax.Array, cache: FrameCache) -> jax.Array:
        for resnet in self.resnets:
            x = resnet(x, cache)
        return x if self.upsampler is None else self.upsampler(x, cache)


class WanDecoder(nnx.Module):
    """Latent chunk (B, t, h, w, z_dim), after post_quant_conv -> frames (B, T, 8h, 8w, out_channels)."""

    def __init__(self, config: WanVAEConfig, *, backend: str, precision: Precision, rngs: KeySource):
        dims = [config.decoder_dim * m for m in (config.dim_mult[-1], *reversed(config.dim_mult))]
        temporal_upsample = tuple(reversed(config.temporal_downsample))
        self.conv_in = CausalConv3d(config.z_dim, dims[0], (3, 3, 3), precision=precision, rngs=rngs)
        self.mid_block = WanMidBlock(dims[0], backend=backend, precision=precision, rngs=rngs)
        blocks = []
        for level, out in enumerate(dims[1:]):
            upsample = level < len(temporal_upsample)
            blocks.append(
                WanUpBlock(
                    dims[level] // 2 if level else dims[0],  # The previous upsampler halved the channels.
                    out,
                    num_res_blocks=config.num_res_blocks,
                    upsample=upsample,
                    temporal=upsample and temporal_upsample[level],
                    precision=precision,
                    rngs=rngs,
                )
            )
        self.up_blocks = nnx.List(blocks)
        self.norm_out = RMSNorm(dims[-1], precision=precision, rngs=rngs)
        self.conv_out = CausalConv3d(dims[-1], config.out_channels, (3, 3, 3), precision=precision, rngs=rngs)

    def __call__(self, z: jax.Array, cache: FrameCache) -> jax.Array:
        x = self.mid_block(self.conv_in(z, cache), cache)
        for block in self.up_blocks:
            x = block(x, cache)
        return self.conv_out(jax.nn.silu(self.norm_out(x)), cache)
