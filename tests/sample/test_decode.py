"""Decoding sampled latents: through the image VAE per frame, or a saved VideoVAE (equal to it at init)."""

import numpy as np
from flax import nnx

from pyoco_jax.config import load_config
from pyoco_jax.convert.vae import load_vae
from pyoco_jax.models.vae.video import TemporalDecoderSpec, video_vae_from_image
from pyoco_jax.sample.decode import is_latent, make_latent_decoder
from pyoco_jax.train.video_vae_checkpoint import save_video_vae
from tests.models.vae_testing import save_tiny_vae
from tests.train.helpers import REPO

CONFIG = str(REPO / "configs" / "tiny_latent.py")


def test_video_decoder_at_init_decodes_like_the_image_vae(tmp_path):
    save_tiny_vae(tmp_path / "vae")
    image = load_vae(tmp_path / "vae")
    spec = TemporalDecoderSpec(conv=True, attention=True, num_heads=4, position_encoding="sinusoidal")
    save_video_vae(tmp_path / "video_vae", video_vae_from_image(image, spec, num_frames=4, rngs=nnx.Rngs(0)))
    latents = np.random.default_rng(0).standard_normal((2, 4, 8, 8, 4)).astype(np.float32)

    overrides = [f"data.path={tmp_path}", f"vae.path={tmp_path / 'vae'}"]
    per_frame_config = load_config(CONFIG, overrides, reads_data=False)
    video_config = load_config(CONFIG, [*overrides, f"vae.video_decoder={tmp_path / 'video_vae'}"], reads_data=False)
    assert is_latent(per_frame_config) and is_latent(video_config)
    per_frame = np.asarray(make_latent_decoder(per_frame_config)(latents))
    video = np.asarray(make_latent_decoder(video_config)(latents))
    assert per_frame.shape == (2, 4, 16, 16, 3)
    expected = np.asarray(image.decode_video(image.config.unscale_latents(latents)))
    np.testing.assert_allclose(per_frame, expected, atol=1e-5)
    np.testing.assert_allclose(video, per_frame, atol=1e-5)
