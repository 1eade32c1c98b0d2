"""Stable Diffusion's VAE (diffusers' `AutoencoderKL`) in Flax NNX, channels-last.

Images are (N, H, W, C) in [-1, 1]; latents are (N, H/f, W/f, latent_channels) with f = 2 **
(levels - 1). Parameter names are diffusers' state-dict names with `.downsamplers.0.` ->
`.downsampler.`, `.upsamplers.0.` -> `.upsampler.`, `.to_out.0.` -> `.to_out.` and
weight -> kernel/scale (the U-Net converter's renames), so loading is a rename plus a layout
transpose (`pyoco_jax.convert.vae`). Video goes through the image VAE with its frames folded
into the batch (`per_frame`, `encode_video`, `decode_video`).

The decoder optionally takes a temporal layer after every up-block ResNet and after the mid
block; that is the VideoVAE (`pyoco_jax.models.vae.video`), which shares all 2D code with this one.
"""

from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.models.keys import KeySource, ParamKeys
from pyoco_jax.models.layers import Conv2d, GroupNorm, Precision
from pyoco_jax.models.resnet import Upsample
from pyoco_jax.models.vae.blocks import EPS, VAEDownsample, VAEMidBlock, VAEResnetBlock
from pyoco_jax.models.vae.config import VAEConfig

# channels -> a module called as `layer(x, frames)` on (B*F, H, W, C), returning the same shape.
TemporalFactory = Callable[[int], nnx.Module]


@flax.struct.dataclass
class DiagonalGaussian:
    """The encoder's posterior N(mean, exp(logvar)) per latent element; logvar clipped to [-30, 20]."""

    mean: jax.Array
    logvar: jax.Array

    @property
    def std(self) -> jax.Array:
        return jnp.exp(0.5 * self.logvar)

    def sample(self, key: jax.Array) -> jax.Array:
        return self.mean + self.std * jax.random.normal(key, self.mean.shape, self.mean.dtype)

    def mode(self) -> jax.Array:
        return self.mean


def per_frame(fn: Callable, video: jax.Array):
    """Applies an image function to video (B, F, ...) with the frames folded into the batch.

    Every array of the result (a pytree, e.g. a DiagonalGaussian) gets its (B, F) axes back.
    """
    b, f = video.shape[:2]
    out = fn(video.reshape(b * f, *video.shape[2:]))
    return jax.tree.map(lambda a: a.reshape(b, f, *a.shape[1:]), out)


class DownEncoderBlock(nnx.Module):
    """ResNets, then a stride-2 downsampling (all levels but the last)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        num_layers: int,
        add_downsample: bool,
        groups: int,
        precision: Precision,
        rngs: KeySource,
    ):
        self.resnets = nnx.List(
            [
                VAEResnetBlock(c, out_channels, groups=groups, precision=precision, rngs=rngs)
                for c in [in_channels] + [out_channels] * (num_layers - 1)
            ]
        )
        self.downsampler = VAEDownsample(out_channels, precision=precision, rngs=rngs) if add_downsample else None

    def __call__(self, x: jax.Array) -> jax.Array:
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.downsampler is None else self.downsampler(x)


class UpDecoderBlock(nnx.Module):
    """ResNets (each followed by its temporal layer, if any), then 2x nearest upsampling + conv."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        num_layers: int,
        add_upsample: bool,
        groups: int,
        temporal: TemporalFactory | None,
        precision: Precision,
        rngs: KeySource,
    ):
        self.resnets = nnx.List(
            [
                VAEResnetBlock(c, out_channels, groups=groups, precision=precision, rngs=rngs)
                for c in [in_channels] + [out_channels] * (num_layers - 1)
            ]
        )
        self.temporal_layers = nnx.List([temporal(out_channels) for _ in range(num_layers)]) if temporal else None
        self.upsampler = (
            Upsample(out_channels, adaptor_frames=0, precision=precision, rngs=rngs) if add_upsample else None
        )

    def __call__(self, x: jax.Array, frames: int) -> jax.Array:
        for i, resnet in enumerate(self.resnets):
            x = resnet(x)
            if self.temporal_layers is not None:
                x = self.temporal_layers[i](x, frames)
        return x if self.upsampler is None else self.upsampler(x, 1)


class Encoder(nnx.Module):
    """Image -> 2 * latent_channels moments (before quant_conv)."""

    def __init__(self, config: VAEConfig, *, backend: str, precision: Precision, rngs: KeySource):
        channels, groups = config.block_out_channels, config.norm_num_groups
        self.conv_in = Conv2d(config.in_channels, channels[0], precision=precision, rngs=rngs)
        blocks, previous = [], channels[0]
        for level, out in enumerate(channels):
            blocks.append(
                DownEncoderBlock(
                    previous,
                    out,
                    num_layers=config.layers_per_block,
                    add_downsample=level < len(channels) - 1,
                    groups=groups,
                    precision=precision,
                    rngs=rngs,
                )
            )
            previous = out
        self.down_blocks = nnx.List(blocks)
        self.mid_block = VAEMidBlock(
            channels[-1],
            groups=groups,
            add_attention=config.mid_block_add_attention,
            backend=backend,
            precision=precision,
            rngs=rngs,
        )
        self.conv_norm_out = GroupNorm(groups, channels[-1], eps=EPS, precision=precision, rngs=rngs)
        self.conv_out = Conv2d(channels[-1], 2 * config.latent_channels, precision=precision, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv_in(x, 1)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)), 1)


class Decoder(nnx.Module):
    """Latent -> image. With `temporal`, a temporal layer follows the mid block and every up-block
    ResNet, and the call takes the number of frames per clip of its folded (B*F, h, w, c) input."""

    def __init__(
        self,
        config: VAEConfig,
        *,
        backend: str,
        precision: Precision,
        rngs: KeySource,
        temporal: TemporalFactory | None = None,
    ):
        channels, groups = config.block_out_channels, config.norm_num_groups
        self.conv_in = Conv2d(config.latent_channels, channels[-1], precision=precision, rngs=rngs)
        self.mid_block = VAEMidBlock(
            channels[-1],
            groups=groups,
            add_attention=config.mid_block_add_attention,
            backend=backend,
            precision=precision,
            rngs=rngs,
        )
        self.temporal_mid = temporal(channels[-1]) if temporal else None
        blocks, previous = [], channels[-1]
        for level in reversed(range(len(channels))):
            blocks.append(
                UpDecoderBlock(
                    previous,
                    channels[level],
                    num_layers=config.layers_per_block + 1,
                    add_upsample=level > 0,
                    groups=groups,
                    temporal=temporal,
                    precision=precision,
                    rngs=rngs,
                )
            )
            previous = channels[level]
        self.up_blocks = nnx.List(blocks)
        self.conv_norm_out = GroupNorm(groups, channels[0], eps=EPS, precision=precision, rngs=rngs)
        self.conv_out = Conv2d(channels[0], config.out_channels, precision=precision, rngs=rngs)

    def __call__(self, z: jax.Array, frames: int = 1) -> jax.Array:
        x = self.mid_block(self.conv_in(z, 1))
        if self.temporal_mid is not None:
            x = self.temporal_mid(x, frames)
        for block in self.up_blocks:
            x = block(x, frames)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)), 1)


def check_frames(x: jax.Array, channels: int, factor: int, what: str) -> None:
    """Raises a ValueError naming the problem if `x` is not (N, H, W, channels) with H, W divisible by `factor`."""
    if x.ndim != 4 or x.shape[-1] != channels:
        raise ValueError(f"{what} must be (N, H, W, {channels}) channels-last, got shape {x.shape}")
    if x.shape[1] % factor or x.shape[2] % factor:
        raise ValueError(f"{what} size {x.shape[1]}x{x.shape[2]} is not divisible by the VAE's factor {factor}")


def check_video(x: jax.Array, what: str) -> None:
    """Raises a ValueError naming the problem if `x` is not 5-d (B, F, H, W, C)."""
    if x.ndim != 5:
        raise ValueError(f"{what} must be (B, F, H, W, C) channels-last, got shape {x.shape}")


class AutoencoderKL(nnx.Module):
    """Encoder, decoder and the 1x1 quant/post-quant convs of SD's VAE.

    `encode(images) -> DiagonalGaussian` over unscaled latents; `decode(z) -> images` (float32).
    Diffusion models see `config.scale_latents(z)`; decode their outputs after `unscale_latents`.
    """

    def __init__(
        self,
        config: VAEConfig,
        *,
        precision: Precision | None = None,
        backend: str = "xla",
        rngs: nnx.Rngs,
    ):
        keys = ParamKeys(rngs)
        precision = precision or Precision()
        self.config, self.precision, self.backend, self.dtype = config, precision, backend, precision.dtype
        latent = config.latent_channels
        self.encoder = Encoder(config, backend=backend, precision=precision, rngs=keys)
        self.decoder = Decoder(config, backend=backend, precision=precision, rngs=keys)
        self.quant_conv = (
            Conv2d(2 * latent, 2 * latent, kernel_size=1, precision=precision, rngs=keys)
            if config.use_quant_conv
            else None
        )
        self.post_quant_conv = (
            Conv2d(latent, latent, kernel_size=1, precision=precision, rngs=keys)
            if config.use_post_quant_conv
            else None
        )

    def encode(self, x: jax.Array) -> DiagonalGaussian:
        """Images (N, H, W, in_channels) in [-1, 1] -> the posterior over (N, H/f, W/f, latent_channels)."""
        check_frames(x, self.config.in_channels, self.config.downsampling_factor, "images")
        moments = self.encoder(x.astype(self.dtype))
        if self.quant_conv is not None:
            moments = self.quant_conv(moments, 1)
        mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
        return DiagonalGaussian(mean, jnp.clip(logvar, -30.0, 20.0))

    def decode(self, z: jax.Array) -> jax.Array:
        """Unscaled latents (N, h, w, latent_channels) -> images (N, h*f, w*f, out_channels), float32."""
        check_frames(z, self.config.latent_channels, 1, "latents")
        z = z.astype(self.dtype)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z, 1)
        return self.decoder(z).astype(jnp.float32)

    def encode_video(self, video: jax.Array) -> DiagonalGaussian:
        """(B, F, H, W, C) -> posterior over (B, F, h, w, c), each frame encoded on its own."""
        check_video(video, "video")
        return per_frame(self.encode, video)

    def decode_video(self, z: jax.Array) -> jax.Array:
        """(B, F, h, w, c) -> (B, F, H, W, C), each frame decoded on its own (flickers; see VideoVAE)."""
        check_video(z, "video latents")
        return per_frame(self.decode, z)

    def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """Reconstruction of images: decode(posterior sample), or of its mean when `key` is None."""
        posterior = self.encode(x)
        return self.decode(posterior.mode() if key is None else posterior.sample(key))
