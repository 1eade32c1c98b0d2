"""The autoencoders of the latent path: SD's image AutoencoderKL (autoencoder.py, config.py, blocks.py),
MagicVideo's VideoVAE (video.py), whose decoder adds temporal layers to the image decoder to remove flicker,
and Wan 2.1's causal video VAE (wan*.py)."""

from pyoco_jax.models.vae.autoencoder import AutoencoderKL, Decoder, Encoder, check_frames, check_video
from pyoco_jax.models.vae.config import VAEConfig
from pyoco_jax.models.vae.video import TRAINABLE_PARTS, TemporalDecoderSpec, VideoVAE, video_vae_from_image
from pyoco_jax.models.vae.wan import WanVAE
from pyoco_jax.models.vae.wan_config import WanVAEConfig

__all__ = [
    "TRAINABLE_PARTS",
    "AutoencoderKL",
    "Decoder",
    "Encoder",
    "TemporalDecoderSpec",
    "VAEConfig",
    "VideoVAE",
    "WanVAE",
    "WanVAEConfig",
    "check_frames",
    "check_video",
    "video_vae_from_image",
]
