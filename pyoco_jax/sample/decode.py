"""Sampled latents -> pixels: the fine-tuned VideoVAE (`vae.video_decoder`) or the image VAE frame by frame."""

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


def make_latent_decoder(config: ml_collections.ConfigDict) -> Callable[[jax.Array], jax.Array]:
    """Scaled latents (B, F, h, w, c) -> pixels in [-1, 1], jitted: VideoVAE if configured, else per-frame VAE."""
    if not config.vae.path:
        raise ConfigError(
            "config key 'vae.path' is empty: decoding latents needs the VAE (its scaling factor and, "
            "without vae.video_decoder, its decoder)"
        )
    vae = load_vae(config.vae.path, dtype=config.vae.dtype, allow_pickle=config.vae.allow_pickle)
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
