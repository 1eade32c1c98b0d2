"""The latent text-to-video path at CPU size: a tiny pipeline's U-Net, VAE and text encoder (tests use it).

Same code paths as configs/sd15_latent.py (latent cache, captions as cross-attention context, DDPM,
only temporal layers trained, VideoVAE decoding), at 4 frames of 8x8x4 latents:

  pyoco-prepare --config configs/tiny_latent.py --config.vae.path=PIPE --config.text.path=PIPE \
      --videos VIDEOS --out runs/tiny_latents
  pyoco-train --config configs/tiny_latent.py --workdir runs/tiny_latent \
      --config.data.path=runs/tiny_latents --config.train.init_from=PIPE
"""

import ml_collections
from pyoco_jax.configs import sd15_latent


def get_config() -> ml_collections.ConfigDict:
    c = sd15_latent.get_config()
    c.data.num_frames = 4
    c.data.resolution = 8
    c.data.global_batch_size = 2
    c.data.worker_count = 0
    c.prepare.frame_strides = ()  # One clip per video at the native rate: a small cache for CPU tests.
    c.model.block_out_channels = (32, 64)
    c.model.layers_per_block = 1
    c.model.attention_levels = (True, False)
    c.model.num_attention_heads = 4
    c.model.cross_attention_dim = 32
    c.model.norm_num_groups = 8
    c.model.dtype = "float32"
    c.model.remat = "none"
    c.model.temporal.levels = (0, 1)
    c.model.temporal.num_heads = 4
    c.train.num_steps = 20
    c.train.checkpoint_every = 10
    c.train.log_every = 5
    c.train.sample_every = 0
    c.sample.num_steps = 4
    c.sample.num_samples = 2
    c.sample.guidance_scale = 3.0
    c.optim.warmup_steps = 2
    c.mesh.fsdp = 1
    c.mesh.data = -1
    return c
