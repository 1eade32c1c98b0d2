"""Our training step against the PyTorch peer, diffusers' UNetMotionModel (AnimateDiff), at the same sizes.

    python -m benchmarks.peer --config configs/tiny.py [--config.key=value ...] [--steps 5] [--warmup 2]

Both U-Nets are built from the config: channels per level, ResNets per level, spatial-attention
levels and heads, temporal attention at every level and in the mid block with
`model.temporal.num_heads` heads, F frames of HxW, and cross-attention to a random context of
--context_tokens tokens of width --context_dim (the peer's blocks always cross-attend, so ours
does too). Random init, nothing downloaded. One step is forward + backward + AdamW on one fixed
batch, on the same device in one process: float32 on CPU; on a GPU ours runs model.dtype=bfloat16
and the peer bf16 autocast with PyTorch SDPA attention. Our step also draws the PYoCo noise,
applies EDM preconditioning, clips gradients and updates the EMA; the peer's is a plain MSE step.
Both train every weight. MFU divides each side's own model FLOPs (ours: the step's matmuls without
remat; the peer's: PyTorch's FlopCounterMode over one step) by the device's bf16 peak. The peer runs
first and frees its memory, so each side has the whole device.
"""

import argparse
import math
import os
import statistics
import sys
import time

from benchmarks.train_step import (
    StepTiming,
    mfu,
    parse_with_overrides,
    random_batches,
    set_cpu_devices,
    step_parser,
    time_train_step,
)

ARCHITECTURE_NOTES = """How the two differ at the same sizes:
  - Temporal layers: ours is LayerNorm + one multi-head self-attention across frames with a zero-init output
    projection, added residually after each spatial unit (the frame-wise adaptor and temporal conv are off here).
    The peer's AnimateDiff motion module is GroupNorm + proj_in + a transformer block with two temporal
    self-attentions and a GEGLU feed-forward + proj_out: about 5x the temporal parameters per unit.
  - Cross-attention: ours attends once per clip (all frames' queries share the context); the peer repeats the
    context per frame (B*F rows) and attends per frame: the same FLOPs, more activation memory.
  - Our step adds the PYoCo correlated-noise draw, EDM preconditioning, gradient clipping and an EMA update."""


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = step_parser(__doc__, default_steps=5)
    parser.add_argument("--context_dim", type=int, default=32)
    return parse_with_overrides(parser, argv)


def comparable_config(config, context_dim: int, on_gpu: bool):
    """Our config reshaped to what the peer can express (temporal attention everywhere, cross-attention, no labels)."""
    config = config.copy_and_resolve_references()
    model, temporal = config.model, config.model.temporal
    model.cross_attention_dim = context_dim
    config.optim.trainable = ""  # The peer trains every weight.
    model.num_classes = config.data.num_classes = 0
    model.fps_conditioning = False
    model.mid_block_attention = True
    temporal.levels = tuple(range(len(model.block_out_channels)))
    temporal.mid, temporal.attention, temporal.directed = True, True, False
    temporal.adaptor, temporal.conv = False, False
    temporal.position_encoding, temporal.arrangement = "sinusoidal", "sequential"
    if on_gpu:
        model.dtype = "bfloat16"
    return config


def build_peer(config):
    """diffusers' UNetMotionModel with our config's sizes."""
    from diffusers import UNetMotionModel

    m = config.model
    heads = m.num_attention_heads
    down = tuple("CrossAttnDownBlockMotion" if a else "DownBlockMotion" for a in m.attention_levels)
    up = tuple("CrossAttnUpBlockMotion" if a else "UpBlockMotion" for a in reversed(m.attention_levels))
    return UNetMotionModel(
        sample_size=config.data.resolution,
        in_channels=m.in_channels,
        out_channels=m.out_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(m.block_out_channels),
        layers_per_block=m.layers_per_block,
        norm_num_groups=m.norm_num_groups,
        norm_eps=m.norm_eps,
        cross_attention_dim=m.cross_attention_dim,
        transformer_layers_per_block=m.transformer_layers_per_block,
        num_attention_heads=tuple(heads) if isinstance(heads, (tuple, list)) else heads,
        motion_num_attention_heads=m.temporal.num_heads,
        motion_max_seq_length=max(32, config.data.num_frames),
        use_motion_mid_block=True,
    )


def time_peer(model, batch: dict, *, device: str, warmup: int, steps: int) -> tuple[list[float], float, float]:
    """(seconds per forward + backward + AdamW step, model FLOPs of one step, peak bytes) of the peer on `batch`
    (our layout, converted once)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    video = torch.from_numpy(batch["video"]).to(device).float() / 127.5 - 1.0
    sample = video.permute(0, 4, 1, 2, 3).contiguous()  # (B, F, H, W, C) -> (B, C, F, H, W)
    frames = sample.shape[2]
    context = torch.from_numpy(batch["context"]).to(device).repeat_interleave(frames, dim=0)
    generator = torch.Generator(device=device).manual_seed(0)
    noise = torch.randn(sample.shape, generator=generator, device=device)
    timesteps = torch.randint(0, 1000, (sample.shape[0],), generator=generator, device=device)
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            prediction = model(sample + noise, timesteps, encoder_hidden_states=context).sample
        loss = torch.nn.functional.mse_loss(prediction.float(), noise)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    with FlopCounterMode(display=False) as counter:  # Counted on an untimed step.
        step()
    times = []
    for index in range(warmup + steps):
        start = time.perf_counter()
        step()
        if index >= warmup:
            times.append(time.perf_counter() - start)
    peak = float(torch.cuda.max_memory_allocated()) if device == "cuda" else 0.0
    return times, float(counter.get_total_flops()), peak


def main(argv: list[str] | None = None) -> None:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    from pyoco_jax.config import load_config, validate

    base = load_config(args.config, overrides, reads_data=False)  # Batches are made up.
    per_step = base.data.global_batch_size // base.optim.accum_steps
    set_cpu_devices(args.cpu_devices or math.gcd(os.cpu_count() or 1, per_step))
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # Leaves the peer its share of a GPU.
    import jax
    import torch

    on_gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    config = validate(comparable_config(base, args.context_dim, on_gpu))
    batches = random_batches(config, args.context_tokens)
    d, m = config.data, config.model
    print(
        f"shape: batch {d.global_batch_size} x {d.num_frames} frames x {d.resolution}^2 x {d.channels}, channels "
        f"{tuple(m.block_out_channels)}, {m.layers_per_block} ResNet(s)/level, attention {tuple(m.attention_levels)} "
        f"x {m.num_attention_heads} heads, temporal heads {m.temporal.num_heads}, context {args.context_tokens} x "
        f"{args.context_dim}; {'GPU bf16' if on_gpu else 'CPU float32'}, attention {m.attention_backend}",
        flush=True,
    )
    frames = d.global_batch_size * d.num_frames
    peer_model = build_peer(config)
    peer_params = sum(p.numel() for p in peer_model.parameters())
    peer_temporal = sum(p.numel() for name, p in peer_model.named_parameters() if "motion_modules" in name)
    device = "cuda" if on_gpu else "cpu"
    peer_times, peer_flops, peer_peak = time_peer(
        peer_model, batches[0], device=device, warmup=args.warmup, steps=args.steps
    )
    peer_s = statistics.median(peer_times)
    peer_timing = StepTiming(
        compile_seconds=0.0,
        step_seconds=peer_times,
        flops_per_step=peer_flops,
        compiler_flops_per_step=0.0,
        peak_memory_bytes=peer_peak,
        memory_source="torch",
        num_devices=1,
        device_kind=jax.devices()[0].device_kind,
        mesh={},
    )
    percent = lambda value: "n/a" if value is None else f"{value:.1%}"
    print(  # Before ours compiles, so a run cut short still reports the peer.
        f"peer (PyTorch {torch.__version__}, diffusers UNetMotionModel, {torch.get_num_threads()} threads): "
        f"{peer_s * 1e3:.1f} ms/step, {frames / peer_s:.1f} frames/s, MFU {percent(mfu(peer_timing))} of "
        f"{peer_flops / 1e12:.2f} TFLOP/step, peak {peer_peak / 2**30:.1f} GiB, {peer_params:,} params "
        f"({peer_temporal:,} in motion modules)",
        flush=True,
    )
    del peer_model
    if on_gpu:
        torch.cuda.empty_cache()  # Hands the peer's memory back before ours allocates.
    ours: StepTiming = time_train_step(config, batches, warmup=args.warmup, steps=args.steps)
    ours_s = ours.median

    from flax import nnx

    from pyoco_jax.train.build import build_model

    abstract_model = nnx.eval_shape(lambda: build_model(config, 0))
    ours_flat = jax.tree_util.tree_flatten_with_path(nnx.state(abstract_model, nnx.Param))[0]
    our_params = sum(x.size for _, x in ours_flat)
    our_temporal = sum(x.size for path, x in ours_flat if "temporal" in jax.tree_util.keystr(path))
    print(
        f"ours (JAX {jax.__version__}, {ours.num_devices} x {ours.device_kind}): {ours_s * 1e3:.1f} ms/step, "
        f"{frames / ours_s:.1f} frames/s, MFU {percent(mfu(ours))} of {ours.flops_per_step / 1e12:.2f} TFLOP/step, "
        f"peak {ours.peak_memory_bytes / 2**30:.1f} GiB, {our_params:,} params ({our_temporal:,} temporal), "
        f"compile {ours.compile_seconds:.1f} s"
    )
    print(f"ratio ours/peer step time: {ours_s / peer_s:.2f} (below 1: ours is faster)")
    print(ARCHITECTURE_NOTES)


if __name__ == "__main__":
    main()
