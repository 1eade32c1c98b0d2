"""MagicVideo's VideoVAE: fine-tune SD's VAE decoder with temporal layers on video, encoder frozen.

Run (after `pip install -e .`, with a diffusers Stable Diffusion VAE folder, or a pyoco-convert output):
    pyoco-train-vae --config configs/video_vae.py --workdir runs/video_vae --config.vae.path=/path/to/sd/vae

Only the temporal layers train (vae.trainable=decoder trains the whole decoder); the loss is L1
reconstruction plus the L1 error of frame-to-frame differences (the flicker metric).
Rerun the same command on the same workdir to resume from its newest checkpoint.
"""

import ml_collections
from pyoco_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.data.source = "synthetic"
    c.data.num_frames = 8
    c.data.resolution = 256  # Pixels; SD's VAE downsamples by 8, so latents are 32x32.
    c.data.global_batch_size = 8
    c.vae.path = ""  # Set on the command line: vae.path=<stable-diffusion>/vae
    c.vae.temporal_conv = True
    c.vae.temporal_attention = True
    c.vae.temporal_num_heads = 4
    c.vae.trainable = "temporal"
    c.vae.loss = "l1"
    c.vae.temporal_weight = 1.0
    c.vae.sample_posterior = True
    c.vae.learning_rate = 1e-4
    c.vae.warmup_steps = 200
    c.vae.num_steps = 10000
    c.vae.log_every = 50
    c.train.checkpoint_every = 500  # The fine-tune checkpoints by the train.* keys too (keep_checkpoints, ...).
    return c
