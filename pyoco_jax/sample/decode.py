"""Between a latent model's space and pixels: sampled latents decode through the fine-tuned VideoVAE
(`vae.video_decoder`) or the image VAE frame by frame; given pixels (image-to-video, a cascade stage after a
pixel one) encode to the posterior mean, as `pyoco-prepare` caches them."""

from collections.abc import Callable

import jax
import ml_collections
from flax import nnx

from pyoco_jax.convert.vae import load_vae
from pyoco_jax.errors import ConfigError
from pyoco_jax.train.video_vae_checkpoint import load_video_vae


def is_latent(config: ml_collections.ConfigDict) -> bool:
    """Whether the model works on VAE latents (so its samples need decoding)."""
    return config.data.source == "latents" or bool(config.vae.video_decoder)


def latent_decoder(config: ml_collections.ConfigDict) -> Callable[[jax.Array], jax.Array] | None:
    """`make_latent_decoder` for a latent model, None for a pixel one (what `sample_videos` takes as `decode`)."""
    return make_latent_decoder(config) if is_latent(config) else None


def _image_vae(config: ml_collections.ConfigDict, purpose: str):
    if not config.vae.path:
        raise ConfigError(f"config key 'vae.path' is empty: {purpose} needs the VAE; set it to the run's VAE folder")
    return load_vae(config.vae.path, dtype=config.vae.dtype, allow_pickle=config.vae.allow_pickle)


def make_latent_decoder(config: ml_collections.ConfigDict) -> Callable[[jax.Array], jax.Array]:
    """Scaled latents (B, F, h, w, c) -> pixels in [-1, 1], jitted: VideoVAE if configured, else per-frame VAE."""
    vae = _image_vae(config, "decoding latents (its scaling factor and, without vae.video_decoder, its decoder)")
    vae_config = vae.config
    video_decoder = bool(config.vae.video_decoder)
    decoder = load_video_vae(config.vae.video_decoder, dtype=config.vae.dtype) if video_decoder else vae
    graphdef, state = nnx.split(decoder)

    @jax.jit
    def decode(latents: jax.Array) -> jax.Array:
        model = nnx.merge(graphdef, state)
        z = vae_config.unscale_latents(latents)
        return model(z) if video_decoder else model.decode_video(z)

    return decode


def make_latent_encoder(config: ml_collections.ConfigDict) -> tuple[Callable[[jax.Array], jax.Array], int]:
    """(pixels (B, F, H, W, C) in [-1, 1] -> scaled latents, jitted: each frame's posterior mean; the VAE's
    downsampling factor, pixels per latent along a side)."""
    vae = _image_vae(config, "encoding given frames")
    vae_config = vae.config
    graphdef, state = nnx.split(vae)

    @jax.jit
    def encode(video: jax.Array) -> jax.Array:
        return vae_config.scale_latents(nnx.merge(graphdef, state).encode_video(video).mean)

    return encode, vae_config.downsampling_factor
