"""Base config of the noise-prior study (configs/sweeps/noise_prior_study.py): the tiny job on harder clips.

Textured backgrounds panned by a moving camera: most of every frame is content shared with, and moved
from, the previous frame, the case a correlated noise prior is meant for (on the default dark background
frames share little beyond one shape). Sampling uses each run's own training prior (sample_alpha -1) and
16 Heun steps, so the study's evaluation of thousands of clips fits its CPU budget.
"""

import ml_collections
from pyoco_jax.configs import tiny


def get_config() -> ml_collections.ConfigDict:
    c = tiny.get_config()
    c.data.background = "texture"
    c.data.camera_speed = 0.5  # Pixels per frame at 16x16: a 3.5-pixel pan over 8 frames.
    c.noise.sample_alpha = -1.0  # Each arm samples with the alpha it trained with.
    c.train.num_steps = 300
    c.sample.num_steps = 16
    return c
