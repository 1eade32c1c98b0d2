"""Wan2.1-T2V-14B's transformer as a pyoco_jax run, at 720p: configs/wan21_1_3b.py with the 14B sizes.

For `pyoco-train --config configs/wan21_14b.py --plan v5p:4x4x4` (memory, FLOPs, step time), and fine-tuning
Wan2.1-T2V-14B-Diffusers with the commands of configs/wan21_1_3b.py (this config in place of that one); how
square latents stand in for Wan's is there too. 720p (720x1280, 90x160 latents) is 120x120 latents here: the
same 3600 patches per frame. For 480p:
  --config.data.resolution=80 --config.diffusion.flow.shift=3.0 --config.diffusion.flow.sample_shift=3.0
With splash (model.attention_backend=auto, the default) the plan fits v5p:4x4x4 in 33.9 GiB per device at
480p and 66.6 GiB at 720p (the xla attention's logits of 75600 tokens, 5 heads per device, alone exceed HBM),
and in 18.3 GiB at 720p with context parallelism, each clip's tokens split over 8 devices:
  --config.mesh.tensor=1 --config.mesh.sequence=8
docs/wan_plans.md has the figures.
"""

import ml_collections
from pyoco_jax.configs import wan21_1_3b

# Wan2.1-T2V-14B's transformer/config.json (pyoco_jax.models.dit.WAN21_14B).
SIZES_14B = dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40)


def get_config() -> ml_collections.ConfigDict:
    c = wan21_1_3b.get_config()
    c.model.dit.update(SIZES_14B)
    c.model.remat = "full"  # 40 blocks of width 5120: keep only block inputs.
    c.data.resolution = 120  # 720p-class latents.
    c.data.global_batch_size = 64
    # 8 micro-batches of 8 clips: one clip per data-parallel device on v5p:4x4x4 (fsdp 8 x tensor 8).
    c.optim.accum_steps = 8
    c.mesh.tensor = 8  # 40 heads: 5 per device (the most 40 and a power-of-two slice share).
    c.diffusion.flow.shift = 5.0  # Wan 2.1 at 720p.
    c.diffusion.flow.sample_shift = 5.0
    return c
