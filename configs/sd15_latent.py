"""MagicVideo-style text-to-video: Stable Diffusion 1.5's U-Net inflated to video, trained in latent space.

Needs a diffusers SD-1.5 pipeline folder (unet/, vae/, text_encoder/, tokenizer/) at SD and clips with
captions in a video folder (metadata.csv: path, caption). Encode the clips once, then train:

  pyoco-prepare --config configs/sd15_latent.py --config.vae.path=SD --config.text.path=SD \
      --videos VIDEOS --out runs/sd15_latents
  pyoco-train --config configs/sd15_latent.py --workdir runs/sd15 --config.data.path=runs/sd15_latents \
      --config.train.init_from=SD --config.vae.path=SD --config.text.path=SD

16 frames at 256x256 (32x32x4 latents); frame-wise adaptors, directed temporal attention and fps
conditioning; only the temporal layers, adaptors and the fps embedding train, the 2D weights stay SD's.
`--config.noise.prior=iid|mixed|progressive` selects the PYoCo prior.
"""

import ml_collections
from pyoco_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.data.source = "latents"
    c.data.num_frames = 16
    c.data.resolution = 32  # Latent side: 256 pixels / the VAE's factor 8.
    c.data.channels = 4
    c.data.fps = 8.0  # The fps condition of samples; training sees each cached clip's own.
    c.data.global_batch_size = 64
    c.data.worker_count = 4
    # pyoco-prepare caches clips at the native rate, 1/2 and 1/4 of it (each with its own fps, MagicVideo's
    # frame-rate spread); more clips per stride give small datasets more start positions.
    c.prepare.frame_strides = (1, 2, 4)
    c.prepare.clips_per_stride = 1

    # SD-1.5 U-Net architecture (train.init_from overrides it from the checkpoint's config.json).
    c.model.in_channels = c.model.out_channels = 4
    c.model.block_out_channels = (320, 640, 1280, 1280)
    c.model.layers_per_block = 2
    c.model.attention_levels = (True, True, True, False)
    c.model.num_attention_heads = 8
    c.model.cross_attention_dim = 768
    c.model.norm_num_groups = 32
    c.model.fps_conditioning = True
    c.model.dtype = "bfloat16"
    c.model.remat = "dots"
    c.model.temporal.levels = (0, 1, 2, 3)
    c.model.temporal.mid = True
    c.model.temporal.attention = True
    c.model.temporal.directed = True
    c.model.temporal.num_heads = 8
    c.model.temporal.adaptor = True

    c.diffusion.formulation = "ddpm"  # SD's own: scaled-linear betas, epsilon prediction.
    c.noise.prior = "progressive"
    c.noise.alpha = 1.0

    c.optim.trainable = "temporal|adaptor|fps_embedding"
    c.optim.learning_rate = 1e-4
    c.optim.warmup_steps = 500
    c.optim.label_drop_rate = 0.1  # Captions replaced by the empty prompt, for classifier-free guidance.
    c.train.num_steps = 100_000
    c.train.checkpoint_every = 1000
    c.train.sample_every = 5000
    c.sample.sampler = "ddim"
    c.sample.num_steps = 50
    c.sample.guidance_scale = 7.5
    c.mesh.fsdp = -1
    c.mesh.data = 1
    return c
