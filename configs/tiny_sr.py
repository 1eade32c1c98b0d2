"""Cascade stage 3 on the embedded shapes: x4 super-resolution, 16x16 -> 64x64 clips of 4 frames.

Trained on 64x64 clips given their 16x16 versions (area mean, noise-augmented, the level embedded);
`pyoco-sample ... --cascade runs/tiny_sr` sharpens the previous stage's clips 4 frames at a time, and
its output downsampled by 4 is its input (`pyoco_jax/conditioning.py`, `enforce`).
"""

import ml_collections
from pyoco_jax.configs import tiny


def get_config() -> ml_collections.ConfigDict:
    c = tiny.get_config()
    c.data.resolution = 64
    c.data.num_frames = 4
    c.data.global_batch_size = 4
    c.condition.low_res_factor = 4
    c.condition.augment_sigma_max = 0.2
    c.condition.sample_augment_sigma = 0.05
    c.model.condition_channels = 3
    c.model.condition_augmentation = True
    # Sharpening is local: two levels without self-attention (temporal attention at 32x32 keeps frames steady)
    # cost a CPU a quarter of the base U-Net's three at 64x64.
    c.model.block_out_channels = (16, 32)
    c.model.attention_levels = (False, False)
    c.model.mid_block_attention = False
    c.model.temporal.levels = (1,)
    c.model.temporal.mid = False
    c.sample.guidance_scale = 1.0  # The low-res clip already fixes the shape; guidance only sharpens noise here.
    c.sample.num_steps = 16
    c.train.num_steps = 400
    c.train.checkpoint_every = 400
    return c
