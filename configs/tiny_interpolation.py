"""Cascade stage 2 on the embedded shapes: temporal interpolation, 2 keyframes -> 3 frames (k = 2).

Trained on 3-frame clips whose first and last frames are given (noise-augmented, the level embedded);
`pyoco-sample --workdir runs/tiny --cascade runs/tiny_interpolation` fills every pair of the base's 8
frames, giving 15 (`pyoco_jax/sample/cascade.py`). Same U-Net and prior as configs/tiny.py.
"""

import ml_collections
from pyoco_jax.configs import tiny


def get_config() -> ml_collections.ConfigDict:
    c = tiny.get_config()
    c.data.num_frames = 3
    c.data.global_batch_size = 16  # As many frames per step as the base's 8 clips of 8 frames, give or take.
    c.condition.frames = "interpolation"
    c.condition.interpolation_factor = 2
    c.condition.augment_sigma_max = 0.2  # Keyframes from the base model are not real frames: train on noisy ones.
    c.condition.sample_augment_sigma = 0.05
    c.model.condition_channels = 4  # 3 given-frame channels + the mask.
    c.model.condition_augmentation = True
    c.train.num_steps = 800
    c.train.checkpoint_every = 400
    return c
