"""Wan2.1-T2V-1.3B's transformer as a pyoco_jax run: latent text-to-video with flow matching, at Wan's shapes.

Fine-tuning Wan2.1-T2V-1.3B-Diffusers (a diffusers folder at WAN), as the README's "Wan 2.1 path" shows:
  pyoco-convert --diffusers WAN --config configs/wan21_1_3b.py --out runs/wan_converted
  pyoco-prepare --config configs/wan21_1_3b.py --config.vae.path=runs/wan_converted \
      --config.text.path=runs/wan_converted --videos VIDEOS --out runs/wan_latents
  pyoco-train --config configs/wan21_1_3b.py --workdir runs/wan --config.data.path=runs/wan_latents \
      --config.train.init_from=runs/wan_converted --config.vae.path=runs/wan_converted \
      --config.text.path=runs/wan_converted [--config.model.lora.rank=32]
then pyoco-sample --prompt and pyoco-export (a WanPipeline folder). The DiT is diffusers'
WanTransformer3DModel (same parameters); the latents are Wan's VAE's (16 channels, 8x spatial and 4x temporal
compression, normalised per channel), the text context UMT5-XXL's (512 tokens, 4096 wide).
Sizing and compiling a run before hardware is booked:
  pyoco-train --config configs/wan21_1_3b.py --plan v5p:2x2x1
prints the step's memory per device, FLOPs and a roofline step time (no data, no weights read); on
v5p:4x4x4 add --config.mesh.tensor=4 --config.optim.accum_steps=1 (docs/wan_plans.md has both).

Shapes: 81 frames are 1 + 80 / 4 = 21 latent frames; 480p (480x832) is 60x104 latents. Frames are square
here (data.resolution), so 80x80 latents stand in for 480p: 40 x 40 = 1600 patches per frame against
Wan's 30 x 52 = 1560 (+2.6%), so a step costs and holds what Wan's does. Wan 2.1 samples 480p with flow
shift 3 and 720p with shift 5; for 720p (90x160 latents: exactly 120 x 120's 3600 patches per frame):
  --config.data.resolution=120 --config.diffusion.flow.shift=5.0 --config.diffusion.flow.sample_shift=5.0
"""

import ml_collections
from pyoco_jax.configs import default

# Wan2.1-T2V-1.3B's transformer/config.json (pyoco_jax.models.dit.WAN21_1_3B).
SIZES_1_3B = dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30)

# The DiT's sharding: every attention and FFN weight split along its heads/mlp dim over tensor x fsdp; the
# residual width (embed) and the projected text width (context) stay whole. With the default rules (embed on
# fsdp) the compiler contracts q/k/v over the fsdp-split width, the activations lose their batch split and
# every fsdp device computes the attention of the whole batch: on v5p:2x2x1 (fsdp 2 x tensor 2, 2 clips) 87 GiB
# of temporaries holding [2, 6, 33600, 33600] logits per device, against 41 GiB with these rules
# (docs/wan_plans.md). With context parallelism (mesh.sequence > 1: tokens split, models/context_parallel.py)
# the weights are split over sequence too, ZeRO-style; else each sequence device would hold a whole copy
# (the 14B at 720p over fsdp 8 x sequence 8: 26.7 GiB of state per device against 3.7).
DIT_RULES = (
    ("heads", ("tensor", "fsdp", "sequence")),
    ("heads", ("tensor", "fsdp")),
    ("heads", "tensor"),
    ("mlp", ("tensor", "fsdp", "sequence")),
    ("mlp", ("tensor", "fsdp")),
    ("mlp", "tensor"),
    ("temb", "fsdp"),
    ("conv_in", "fsdp"),
    ("conv_out", "tensor"),
    ("embed", None),
    ("context", None),
    ("norm", None),
    ("conv_window", None),
)


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.data.source = "latents"
    c.data.num_frames = 21  # 81 video frames through Wan's VAE (4x in time, first frame kept).
    c.data.resolution = 80  # 480p-class latents (see the docstring); 120 for 720p.
    c.data.channels = 16
    c.data.fps = 16.0  # Wan 2.1's frame rate.
    c.data.global_batch_size = 32
    c.data.worker_count = 4

    c.model.backbone = "dit"
    c.model.in_channels = c.model.out_channels = 16
    c.model.cross_attention_dim = 4096  # UMT5-XXL's width, Wan's text_dim.
    c.model.dtype = "bfloat16"
    # Keep only block inputs. "dots" saves every matmul result, attention logits included: 30 layers x
    # [32, 12, 33600, 33600] bf16 = 26 TB (the plan fails with that figure).
    c.model.remat = "full"
    c.model.dit.update(SIZES_1_3B)
    c.model.dit.patch_size = (1, 2, 2)
    c.model.dit.freq_dim = 256
    c.model.dit.cross_attn_norm = True
    c.model.dit.eps = 1e-6
    c.model.dit.scan_layers = True

    c.diffusion.formulation = "flow"
    c.diffusion.flow.time_sampling = "logit_normal"
    c.diffusion.flow.shift = 3.0  # Wan 2.1 at 480p (5.0 at 720p), for training and sampling times alike.
    c.diffusion.flow.sample_shift = 3.0
    c.diffusion.flow.grid = "unipc"  # diffusers' UniPCMultistepScheduler with flow sigmas, as Wan samples.
    c.diffusion.flow.timestep_rounding = "floor"  # Its integer timesteps too: samples equal WanPipeline's.
    c.noise.prior = "iid"  # Wan's; --config.noise.prior=progressive trains with PYoCo's prior instead.

    # 16 micro-batches of 2 clips: one clip per data-parallel device on v5p:2x2x1 (fsdp 2 x tensor 2). The xla
    # attention holds a clip's logits, (heads / tensor) x 33600^2 in float32 (4.2 GiB per head), so a device
    # fits one clip at 6 heads.
    c.optim.accum_steps = 16
    c.optim.learning_rate = 1e-4
    c.optim.warmup_steps = 1000
    c.optim.label_drop_rate = 0.1  # Captions dropped to the empty prompt, for classifier-free guidance.
    c.train.num_steps = 100_000
    c.train.log_every = 50
    c.train.checkpoint_every = 1000
    c.train.sample_every = 5000
    c.sample.sampler = "unipc"
    c.sample.unipc_order = 2
    c.sample.num_steps = 50
    c.sample.guidance_scale = 5.0  # Wan 2.1's default.
    c.sample.fps = 16
    c.mesh.data = 1
    c.mesh.fsdp = -1  # Params, optimizer state and EMA sharded over every device (ZeRO-3), with tensor.
    c.mesh.tensor = 2  # Attention heads and FFN width split in two: half the logits per device.
    c.mesh.rules = DIT_RULES
    return c
