"""The autoencoders of the latent path: SD's image AutoencoderKL (autoencoder.py, config.py, blocks.py) and
MagicVideo's VideoVAE (video.py), whose decoder adds temporal layers to the image decoder to remove flicker."""

from pyoco_jax.models.vae.autoencoder import AutoencoderKL, Decoder, Encoder, check_frames, check_video
from pyoco_jax.models.vae.config import VAEConfig
from pyoco_jax.models.vae.video import TRAINABLE_PARTS, TemporalDecoderSpec, VideoVAE, video_vae_from_image

__all__ = [
    "TRAINABLE_PARTS",
    "AutoencoderKL",
    "Decoder",
    "Encoder",
    "TemporalDecoderSpec",
    "VAEConfig",
    "VideoVAE",
    "check_frames",
    "check_video",
    "video_vae_from_image",
]
