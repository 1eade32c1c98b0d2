"""Wan 2.1's causal video VAE (diffusers' `AutoencoderKLWan`) in Flax NNX, channels-last.

Video (B, F, H, W, C) in [-1, 1] with F = 1 + 4k frames <-> latents (B, 1 + k, H/8, W/8, z_dim):
the first frame gets a latent frame of its own, every later 4 frames one more. Parameter names
are diffusers' with `.upsamplers.0.` -> `.upsampler.`, `.resample.1.` -> `.resample.`, weight ->
kernel and gamma -> scale (see `pyoco_jax.convert.wan_vae`).

Like diffusers, both networks run on a clip chunk by chunk: the encoder on the first frame alone,
then on 4 frames at a time; the decoder on one latent frame at a time. A `FrameCache` carries each
temporal conv's last input frames into the next chunk, so the result is diffusers' exactly while
activations are those of one chunk (decoding 81 frames at 480p whole would need tens of GB).

The chunk loop is `run_chunked`: the first chunk in Python, the rest under `jax.lax.scan` with the
cache as carry. The first chunk cannot join the scan: it is shorter, and the temporal resamplers
pass it through instead of convolving it. A scan (rather than a Python loop over chunks) traces and
compiles the network once whatever the clip length, and XLA keeps one chunk's activations alive.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.models.keys import ParamKeys
from pyoco_jax.models.layers import Precision
from pyoco_jax.models.vae.autoencoder import DiagonalGaussian, check_video
from pyoco_jax.models.vae.wan_coders import WanDecoder, WanEncoder
from pyoco_jax.models.vae.wan_config import WanVAEConfig
from pyoco_jax.models.vae.wan_layers import CausalConv3d, FrameCache

ENCODE_CHUNK = 4  # Frames per encoder chunk after the first frame (diffusers' and Wan's).


def run_chunked(network: Callable[[jax.Array, FrameCache], jax.Array], x: jax.Array, chunk: int) -> jax.Array:
    """`network` over the frames of `x` (B, F, ...): frame 0 alone, then `chunk` frames at a time, the
    outputs joined along the frames. (F - 1) must be a multiple of `chunk`."""
    cache = FrameCache()
    first = network(x[:, :1], cache)
    steps = (x.shape[1] - 1) // chunk
    if steps == 0:
        return first

    def step(past: list[jax.Array], frames: jax.Array) -> tuple[list[jax.Array], jax.Array]:
        cache = FrameCache(past)
        out = network(frames, cache)
        return cache.saved, out

    chunks = jnp.moveaxis(x[:, 1:].reshape(x.shape[0], steps, chunk, *x.shape[2:]), 1, 0)
    _, outs = jax.lax.scan(step, cache.saved, chunks)
    outs = jnp.moveaxis(outs, 0, 1)
    return jnp.concatenate([first, outs.reshape(x.shape[0], -1, *outs.shape[3:])], axis=1)


def _check(x: jax.Array, channels: int, factor: int, what: str) -> None:
    check_video(x, what)
    if x.shape[-1] != channels or x.shape[2] % factor or x.shape[3] % factor:
        raise ValueError(f"{what} must be (B, F, H, W, {channels}) with H and W divisible by {factor}, got {x.shape}")


class WanVAE(nnx.Module):
    """Encoder, decoder and the 1x1x1 quant/post-quant convs of Wan 2.1's VAE.

    `encode(video) -> DiagonalGaussian` over raw latents; `decode(z) -> video` (float32, clipped to
    [-1, 1] as diffusers does). Wan's transformer sees `config.normalize_latents(z)`; decode its
    outputs after `config.denormalize_latents`.
    """

    def __init__(
        self,
        config: WanVAEConfig,
        *,
        precision: Precision | None = None,
        backend: str = "xla",
        rngs: nnx.Rngs,
    ):
        keys = ParamKeys(rngs)
        precision = precision or Precision()
        self.config, self.dtype = config, precision.dtype
        moments = 2 * config.z_dim
        self.encoder = WanEncoder(config, backend=backend, precision=precision, rngs=keys)
        self.quant_conv = CausalConv3d(moments, moments, (1, 1, 1), precision=precision, rngs=keys)
        self.post_quant_conv = CausalConv3d(config.z_dim, config.z_dim, (1, 1, 1), precision=precision, rngs=keys)
        self.decoder = WanDecoder(config, backend=backend, precision=precision, rngs=keys)

    def encode(self, video: jax.Array) -> DiagonalGaussian:
        """Video (B, F, H, W, in_channels) in [-1, 1], F = 1 + 4k -> the posterior over (B, 1 + k, H/8, W/8, z_dim)."""
        _check(video, self.config.in_channels, self.config.spatial_factor, "video")
        if (video.shape[1] - 1) % ENCODE_CHUNK:
            raise ValueError(
                f"the Wan VAE encodes 1 + {ENCODE_CHUNK}k frames, got {video.shape[1]}: drop "
                f"{(video.shape[1] - 1) % ENCODE_CHUNK} frames (diffusers ignores them) or pad the clip"
            )
        moments = self.quant_conv(run_chunked(self.encoder, video.astype(self.dtype), ENCODE_CHUNK))
        mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
        return DiagonalGaussian(mean, jnp.clip(logvar, -30.0, 20.0))

    def decode(self, z: jax.Array) -> jax.Array:
        """Raw latents (B, T, h, w, z_dim) -> video (B, 1 + 4(T - 1), 8h, 8w, out_channels), float32 in [-1, 1]."""
        _check(z, self.config.z_dim, 1, "video latents")
        x = run_chunked(self.decoder, self.post_quant_conv(z), 1)
        return jnp.clip(x.astype(jnp.float32), -1.0, 1.0)
