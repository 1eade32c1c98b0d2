"""Training-step benchmark: compile the real step of any config on the local devices, warm up, time N steps.

    python -m benchmarks.train_step --config configs/tiny.py [--config.key=value ...] \
        [--steps 10] [--warmup 2] [--cpu_devices N] [--peak_tflops T] [--random_batches]

The mesh comes from `config.mesh` (override e.g. --config.mesh.fsdp=2). Prints the step
time, frames/s, model FLOPs per step (the step's matmuls without remat, as the training log
counts them: pyoco_jax/train/flops.py) and the compiler's FLOPs (XLA cost analysis, remat
recomputation included; it counts a scanned loop's body once), MFU from the model FLOPs
against the device's bf16 peak (pyoco_jax/train/hardware.py; on CPU only with
--peak_tflops, per device) and peak memory per device (the allocator's peak where the
platform reports one, else the compiled memory analysis). Batches are made before timing,
so data loading is not measured; --random_batches makes them up (shaped as the data source's, text
contexts of --context_tokens tokens), for a latent config without a prepared cache.
"""

import argparse
import dataclasses
import math
import os
import statistics
import sys
import time


def step_parser(description: str, default_steps: int) -> argparse.ArgumentParser:
    """The flags every training-step benchmark takes; callers add their own."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config file, e.g. configs/tiny.py")
    parser.add_argument("--steps", type=int, default=default_steps, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    parser.add_argument("--cpu_devices", type=int, default=0, help="host devices (default: one per core dividing B)")
    parser.add_argument("--context_tokens", type=int, default=8, help="text tokens of made-up batches")
    return parser


def parse_with_overrides(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Known flags, and the --config.key=value overrides; anything else is an error."""
    args, rest = parser.parse_known_args(argv)
    unknown = [item for item in rest if not item.startswith("--config.")]
    if unknown:
        parser.error(f"unknown arguments {unknown}; config overrides look like --config.key=value")
    return args, rest


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = step_parser(__doc__, default_steps=10)
    parser.add_argument("--peak_tflops", type=float, default=0.0, help="per-device peak for MFU where none is known")
    parser.add_argument("--random_batches", action="store_true", help="made-up batches instead of the data source")
    return parse_with_overrides(parser, argv)


def set_cpu_devices(count: int) -> None:
    """Host device count for XLA; only effective before JAX initialises its backends."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


@dataclasses.dataclass
class StepTiming:
    compile_seconds: float
    step_seconds: list[float]
    flops_per_step: float  # all devices, model FLOPs (no remat)
    compiler_flops_per_step: float  # all devices, XLA cost analysis
    peak_memory_bytes: float  # per device
    memory_source: str
    num_devices: int
    device_kind: str
    mesh: dict

    @property
    def median(self) -> float:
        return statistics.median(self.step_seconds)


def time_train_step(config, host_batches: list[dict], *, warmup: int, steps: int) -> StepTiming:
    """Compiles the sharded train step of `config`, runs `warmup` + `steps` steps cycling `host_batches`."""
    import jax

    from pyoco_jax import parallel
    from pyoco_jax.train.build import build_run, sharded_step
    from pyoco_jax.train.flops import step_model_flops

    mesh = parallel.make_mesh(config.mesh)
    parts = build_run(config)
    example = {name: value[0] for name, value in host_batches[0].items()}
    step = sharded_step(parts, config, mesh, example, null_context=example.get("context"))
    state = parts.create_state(config, step.state_sharding)
    fields = step.batch_sharding  # The numeric fields; strings stay on the host.
    batches = [jax.device_put({k: batch[k] for k in fields}, fields) for batch in host_batches]
    start = time.perf_counter()
    compiled = step.fn.lower(state, batches[0]).compile()
    compile_seconds = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    times = []
    for index in range(warmup + steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batches[index % len(batches)])
        jax.block_until_ready(metrics)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    devices = mesh.devices.flatten()
    stats = devices[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        peak, source = float(stats["peak_bytes_in_use"]), "allocator peak"
    else:
        memory = compiled.memory_analysis()
        peak = memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
        peak, source = float(peak + memory.temp_size_in_bytes), "compiled memory analysis"
    return StepTiming(
        compile_seconds=compile_seconds,
        step_seconds=times,
        flops_per_step=step_model_flops(config, mesh, example),
        compiler_flops_per_step=float(cost.get("flops", 0.0)) * len(devices),
        peak_memory_bytes=peak,
        memory_source=source,
        num_devices=len(devices),
        device_kind=devices[0].device_kind,
        mesh=dict(mesh.shape),
    )


def mfu(timing: StepTiming, peak_tflops: float = 0.0) -> float | None:
    """Model FLOPs utilisation against the table's bf16 peak (or `peak_tflops` per device); None if unknown."""
    from pyoco_jax.train.hardware import chip_for_device_kind

    chip = chip_for_device_kind(timing.device_kind)
    peak = peak_tflops * 1e12 if peak_tflops else (chip.peak_bf16_flops if chip else 0.0)
    if not peak:
        return None
    return timing.flops_per_step / timing.median / (peak * timing.num_devices)


def report(timing: StepTiming, frames_per_step: int, peak_tflops: float = 0.0) -> str:
    utilisation = mfu(timing, peak_tflops)
    mfu_text = f"{utilisation:.2%}" if utilisation is not None else "n/a (no known peak for this device; --peak_tflops)"
    return "\n".join(
        [
            f"devices: {timing.num_devices} x {timing.device_kind}, mesh {timing.mesh}",
            f"compile: {timing.compile_seconds:.1f} s",
            f"step time: median {timing.median * 1e3:.1f} ms (min {min(timing.step_seconds) * 1e3:.1f}, "
            f"max {max(timing.step_seconds) * 1e3:.1f}, {len(timing.step_seconds)} steps)",
            f"frames/s: {frames_per_step / timing.median:.1f}",
            f"model FLOPs/step: {timing.flops_per_step:.4g} (matmuls without remat, all devices; "
            f"{timing.flops_per_step / timing.median / timing.num_devices / 1e12:.2f} TFLOP/s per device)",
            f"compiler FLOPs/step: {timing.compiler_flops_per_step:.4g} (XLA cost analysis, remat included)",
            f"MFU: {mfu_text}",
            f"peak memory per device: {timing.peak_memory_bytes / 2**20:.1f} MiB ({timing.memory_source})",
        ]
    )


def source_batches(config, count: int) -> list[dict]:
    """The run's first `count` global batches from its data source, as host numpy arrays."""
    from pyoco_jax.data.loader import host_dataset, make_source

    source = make_source(config.data, seed=config.seed)
    stream = host_dataset(
        source, global_batch_size=config.data.global_batch_size, process_index=0, process_count=1, seed=config.seed
    )
    return [stream[n] for n in range(count)]


def random_batches(config, context_tokens: int, seed: int = 0) -> list[dict]:
    """One global batch of made-up inputs as the data source lays them out: uint8 pixels or float32 latents,
    and a text context where the model cross-attends."""
    import numpy as np

    rng = np.random.default_rng(seed)
    d = config.data
    b, shape = d.global_batch_size, (d.global_batch_size, d.num_frames, d.resolution, d.resolution, d.channels)
    latent = d.source == "latents"
    batch = {
        "video": rng.standard_normal(shape, np.float32) if latent else rng.integers(0, 256, shape, dtype=np.uint8),
        "label": np.zeros((b,), np.int32),
        "fps": np.full((b,), d.fps, np.float32),
    }
    if config.model.cross_attention_dim:
        width = config.model.cross_attention_dim
        batch["context"] = rng.standard_normal((b, context_tokens, width)).astype(np.float32)
    return [batch]


def main(argv: list[str] | None = None) -> None:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    from pyoco_jax.config import load_config

    config = load_config(args.config, overrides, reads_data=not args.random_batches)
    per_step = config.data.global_batch_size // config.optim.accum_steps
    set_cpu_devices(args.cpu_devices or math.gcd(os.cpu_count() or 1, per_step))
    batches = random_batches(config, args.context_tokens) if args.random_batches else source_batches(config, 2)
    timing = time_train_step(config, batches, warmup=args.warmup, steps=args.steps)
    frames = config.data.global_batch_size * config.data.num_frames
    print(report(timing, frames, args.peak_tflops))


if __name__ == "__main__":
    main()
