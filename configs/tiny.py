"""The embedded default job: class-conditional moving shapes, pixel space, PYoCo progressive prior.

Trains on a 2-core laptop CPU in minutes, with no download:
  pyoco-train --config configs/tiny.py --workdir runs/tiny
"""

import ml_collections
from pyoco_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.data.source = "synthetic"
    c.data.num_frames = 8
    c.data.resolution = 32
    c.data.num_classes = 4
    c.data.global_batch_size = 8
    c.model.num_classes = 4
    c.model.block_out_channels = (32, 64)
    c.model.attention_levels = (False, True)
    c.noise.prior = "progressive"
    c.noise.alpha = 2.0
    c.train.num_steps = 1000
    c.sample.num_steps = 24
    c.sample.guidance_scale = 2.0
    return c
