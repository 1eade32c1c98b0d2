"""MagicVideo's VideoVAE: SD's VAE decoder with temporal layers, so decoded frames do not flicker.

Decoding every frame on its own leaves frame-to-frame dithering; a temporal layer after the mid
block and after every up-block ResNet lets the decoder look across frames. Each is residual:
`x + TemporalConv(x)` (kernel 3 over frames) and/or `x + TemporalAttention(x)` (self-attention
over the frames at every pixel), both with zero-initialised outputs, so at init the VideoVAE
equals the image decoder applied per frame. The decoder sees all frames of a clip, so both are
bidirectional. `video_vae_from_image` builds one with the 2D weights of a loaded AutoencoderKL.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.models.keys import KeySource, ParamKeys
from pyoco_jax.models.layers import Conv2d, Precision
from pyoco_jax.models.temporal import POSITION_ENCODINGS, TemporalAttention, TemporalConv
from pyoco_jax.models.vae.autoencoder import AutoencoderKL, Decoder, check_frames, check_video
from pyoco_jax.models.vae.blocks import EPS
from pyoco_jax.models.vae.config import VAEConfig

# What a VideoVAE fine-tune may update (`vae.trainable`) -> regex over parameter paths; the encoder never trains.
TRAINABLE_PARTS = {"temporal": "temporal_", "decoder": ""}


@dataclasses.dataclass(frozen=True)
class TemporalDecoderSpec:
    """Which temporal layers the VideoVAE decoder gets (the `vae.temporal_*` config keys)."""

    conv: bool = True
    attention: bool = True
    num_heads: int = 4
    position_encoding: str = "sinusoidal"

    def __post_init__(self):
        if not (self.conv or self.attention):
            raise ValueError("a VideoVAE needs vae.temporal_conv or vae.temporal_attention (or both)")
        if self.position_encoding not in POSITION_ENCODINGS:
            raise ValueError(
                f"vae.temporal_position_encoding={self.position_encoding!r} is not one of {POSITION_ENCODINGS}"
            )


class VAETemporalLayer(nnx.Module):
    """`x + conv(x)` then `x + attention(x)` over the frames of (B*F, H, W, C); the identity at init."""

    def __init__(
        self,
        channels: int,
        *,
        spec: TemporalDecoderSpec,
        num_frames: int,
        groups: int,
        backend: str,
        precision: Precision,
        rngs: KeySource,
    ):
        self.conv = (
            TemporalConv(channels, groups=groups, eps=EPS, causal=False, precision=precision, rngs=rngs)
            if spec.conv
            else None
        )
        self.attention = (
            TemporalAttention(
                channels,
                num_heads=spec.num_heads,
                num_frames=num_frames,
                directed=False,
                position_encoding=spec.position_encoding,
                backend=backend,
                precision=precision,
                rngs=rngs,
            )
            if spec.attention
            else None
        )

    def __call__(self, x: jax.Array, frames: int) -> jax.Array:
        if self.conv is not None:
            x = x + self.conv(x, frames)
        if self.attention is not None:
            x = x + self.attention(x, frames)
        return x


class VideoVAE(nnx.Module):
    """Video latents (B, F, h, w, latent_channels), unscaled like `AutoencoderKL.decode`'s input ->
    video (B, F, H, W, out_channels), float32.

    `num_frames` is the longest clip (it sizes relative-position tables); parameter names are the
    image VAE's (`post_quant_conv`, `decoder.*`) plus `temporal_mid` and `temporal_layers`.
    """

    def __init__(
        self,
        config: VAEConfig,
        spec: TemporalDecoderSpec,
        *,
        num_frames: int,
        precision: Precision | None = None,
        backend: str = "xla",
        rngs: nnx.Rngs,
    ):
        precision = precision or Precision()
        if spec.attention:
            for channels in config.block_out_channels:
                if channels % spec.num_heads:
                    raise ValueError(
                        f"vae.temporal_num_heads={spec.num_heads} does not divide the decoder's {channels} channels"
                    )
        keys = ParamKeys(rngs)
        self.config, self.spec, self.num_frames, self.dtype = config, spec, num_frames, precision.dtype
        latent = config.latent_channels
        self.post_quant_conv = (
            Conv2d(latent, latent, kernel_size=1, precision=precision, rngs=keys)
            if config.use_post_quant_conv
            else None
        )
        layer = lambda channels: VAETemporalLayer(
            channels,
            spec=spec,
            num_frames=num_frames,
            groups=config.norm_num_groups,
            backend=backend,
            precision=precision,
            rngs=keys,
        )
        self.decoder = Decoder(config, backend=backend, precision=precision, rngs=keys, temporal=layer)

    def __call__(self, z: jax.Array) -> jax.Array:
        check_video(z, "video latents")
        b, f = z.shape[:2]
        frames = z.reshape(b * f, *z.shape[2:])
        check_frames(frames, self.config.latent_channels, 1, "video latents")
        frames = frames.astype(self.dtype)
        if self.post_quant_conv is not None:
            frames = self.post_quant_conv(frames, 1)
        out = self.decoder(frames, f).astype(jnp.float32)
        return out.reshape(b, f, *out.shape[1:])


def _is_temporal(path: tuple, value: object) -> bool:
    return isinstance(value, nnx.Param) and any(str(part).startswith("temporal_") for part in path)


def video_vae_from_image(
    image_vae: AutoencoderKL, spec: TemporalDecoderSpec, *, num_frames: int, rngs: nnx.Rngs
) -> VideoVAE:
    """A VideoVAE with `image_vae`'s decoder and post-quant conv weights and new temporal layers (from `rngs`).

    Same precision and attention backend as `image_vae`; the 2D arrays are shared, not copied.
    Only the temporal layers are initialised (one jitted init; the 2D initialisers are dropped).
    """
    build = lambda r: VideoVAE(
        image_vae.config, spec, num_frames=num_frames, precision=image_vae.precision, backend=image_vae.backend, rngs=r
    )
    video = nnx.eval_shape(build, rngs)
    nnx.update(video, nnx.jit(lambda r: nnx.state(build(r), _is_temporal))(rngs))
    nnx.update(video.decoder, nnx.state(image_vae.decoder, nnx.Param))
    if image_vae.post_quant_conv is not None:
        nnx.update(video.post_quant_conv, nnx.state(image_vae.post_quant_conv, nnx.Param))
    unset = [p for p, v in nnx.to_flat_state(nnx.state(video)) if not isinstance(v.get_value(), jax.Array)]
    if unset:
        raise ValueError(f"the image VAE did not provide {len(unset)} VideoVAE parameters, e.g. {unset[:3]}")
    return video
