"""The Wan 2.1 path at CPU size: configs/wan21_1_3b.py's run (flow matching, UniPC, LoRA-ready DiT) with a tiny
transformer, for a tiny Wan pipeline's VAE (4 latent channels, 8x spatial and 4x temporal) and UMT5 encoder
(32 wide). The end-to-end test (tests/test_wan_pipeline.py) builds such a pipeline and runs, with WAN its folder:

  pyoco-convert --diffusers WAN --config configs/wan21_tiny.py --out runs/wan_tiny_pipe
  pyoco-prepare --config configs/wan21_tiny.py --config.vae.path=runs/wan_tiny_pipe \
      --config.text.path=runs/wan_tiny_pipe --videos VIDEOS --out runs/wan_tiny_latents
  pyoco-train --config configs/wan21_tiny.py --workdir runs/wan_tiny --config.data.path=runs/wan_tiny_latents \
      --config.train.init_from=runs/wan_tiny_pipe --config.vae.path=runs/wan_tiny_pipe \
      --config.text.path=runs/wan_tiny_pipe --config.model.lora.rank=4

2 latent frames (5 video frames) of 4x4 latents (32x32 pixels): 2 x 2 x 2 = 8 tokens per clip.
"""

import ml_collections
from pyoco_jax.configs import wan21_1_3b


def get_config() -> ml_collections.ConfigDict:
    c = wan21_1_3b.get_config()
    c.data.num_frames = 2
    c.data.resolution = 4
    c.data.channels = 4
    c.data.global_batch_size = 2
    c.data.worker_count = 0
    c.model.in_channels = c.model.out_channels = 4
    c.model.cross_attention_dim = 32
    c.model.dtype = "float32"
    c.model.remat = "none"
    c.model.dit.update(num_attention_heads=2, attention_head_dim=12, ffn_dim=48, num_layers=2, freq_dim=16)
    c.optim.accum_steps = 1
    c.optim.warmup_steps = 1
    c.train.num_steps = 4
    c.train.log_every = 2
    c.train.checkpoint_every = 2
    c.train.sample_every = 0
    c.sample.num_steps = 3
    c.sample.num_samples = 1
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.data = -1
    return c
