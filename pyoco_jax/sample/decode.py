"""Between a latent model's space and pixels: sampled latents decode through the config's VAE (`sample.latent_vae`:
Wan's video VAE, or SD's image VAE frame by frame) or SD's fine-tuned VideoVAE (`vae.video_decoder`); given
pixels (image-to-video, a cascade stage after a pixel one) encode to the posterior mean, as `pyoco-prepare`
caches them."""

from collections.abc import Callable

import jax
import ml_collections
from flax import nnx

from pyoco_jax.sample.latent_vae import load_latent_vae
from pyoco_jax.train.video_vae_checkpoint import load_video_vae


def is_latent(config: ml_collections.ConfigDict) -> bool:
    """Whether the model works on VAE latents (so its samples need decoding)."""
    return config.data.source == "latents" or bool(config.vae.video_decoder)


def latent_decoder(config: ml_collections.ConfigDict) -> Callable[[jax.Array], jax.Array] | None:
    """`make_latent_decoder` for a latent model, None for a pixel one (what `sample_videos` takes as `decode`)."""
    return make_latent_decoder(config) if is_latent(config) else None


def make_latent_decoder(config: ml_collections.ConfigDict) -> Callable[[jax.Array], jax.Array]:
    """Model latents (B, F, h, w, c) -> pixels in [-1, 1], jitted: VideoVAE if configured, else the config's VAE."""
    vae = load_latent_vae(config, "decoding latents (its latent scale and, without vae.video_decoder, its decoder)")
    if not config.vae.video_decoder:
        return vae.decode_fn()
    vae_config = vae.module.config
    graphdef, state = nnx.split(load_video_vae(config.vae.video_decoder, dtype=config.vae.dtype))

    @jax.jit
    def decode(latents: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, state)(vae_config.unscale_latents(latents))

    return decode


def make_latent_encoder(config: ml_collections.ConfigDict) -> tuple[Callable[[jax.Array], jax.Array], int]:
    """(pixels (B, F, H, W, C) in [-1, 1] -> model latents, jitted: the posterior mean; the VAE's spatial
    downsampling factor, pixels per latent along a side)."""
    vae = load_latent_vae(config, "encoding given frames")
    return vae.encode_fn(), vae.spatial_factor
