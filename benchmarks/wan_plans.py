"""AOT plans of the Wan2.1 DiT configs on TPU v5p slices, as one markdown table (docs/wan_plans.md).

    python -m benchmarks.wan_plans [--only NAME ...]

Each row is `pyoco-train --config configs/wan21_*.py --plan TOPOLOGY [--config.key=value ...]` (printed
under the table), compiled by libtpu on this machine (`pip install -e ".[tpu]"`), one process per row so
the compiles do not share memory. A row whose step cannot fit in HBM shows the compiler's figure for the
temporaries alone. Figures are per device; the step time and MFU are the roofline's (pyoco_jax/train/plan.py),
upper bounds, not measurements.
"""

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import time

# 480p-class latents and Wan's 480p flow shift, for the 14B config (720p by default).
AT_480P = ("data.resolution=80", "diffusion.flow.shift=3.0", "diffusion.flow.sample_shift=3.0")

# name -> (config, topology, overrides): the configs' defaults where they fit, the fewest changes elsewhere.
PLANS = {
    "1.3B 480p": ("configs/wan21_1_3b.py", "v5p:2x2x1", ()),
    "14B 480p": (
        "configs/wan21_14b.py",
        "v5p:2x2x1",
        (*AT_480P, "mesh.tensor=4", "data.global_batch_size=1", "optim.accum_steps=1"),
    ),
    # LoRA: the base weights frozen (no moments, no EMA), so the 14B's state fits 4 chips.
    "14B 480p, LoRA": (
        "configs/wan21_14b.py",
        "v5p:2x2x1",
        (*AT_480P, "model.lora.rank=32", "mesh.tensor=4", "data.global_batch_size=4", "optim.accum_steps=4"),
    ),
    "1.3B 480p, 64 chips": ("configs/wan21_1_3b.py", "v5p:4x4x4", ("mesh.tensor=4", "optim.accum_steps=1")),
    "14B 480p, 64 chips": ("configs/wan21_14b.py", "v5p:4x4x4", AT_480P),
    "14B 720p, 64 chips": ("configs/wan21_14b.py", "v5p:4x4x4", ()),
    # Context parallelism: each clip's 75,600 tokens split over 8 devices (models/context_parallel.py).
    "14B 720p, 64 chips, context parallel": (
        "configs/wan21_14b.py",
        "v5p:4x4x4",
        ("mesh.tensor=1", "mesh.sequence=8"),
    ),
}
GIB = 2**30


def _calls_per_kernel(choices: tuple[tuple[str, str, int], ...]) -> collections.Counter:
    """Attention calls per kernel (the plan lists them per kernel and reason)."""
    calls = collections.Counter()
    for kernel, _, count in choices:
        calls[kernel] += count
    return calls


def command(name: str) -> str:
    config, topology, overrides = PLANS[name]
    return " ".join([f"pyoco-train --config {config} --plan {topology}", *(f"--config.{o}" for o in overrides)])


def measure(name: str) -> dict:
    """Compiles one plan in this process and returns its figures (or the compiler's refusal)."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from pyoco_jax import parallel
    from pyoco_jax.config import load_config
    from pyoco_jax.train.plan import PlanDoesNotFit, make_plan, target

    config_file, topology, overrides = PLANS[name]
    config = load_config(config_file, overrides, reads_data=False)
    devices = len(target(topology).devices)
    sizes = parallel.mesh_shapes(config.mesh, devices)[0]
    row = {
        "devices": devices,
        "mesh": " x ".join(f"{axis} {size}" for axis, size in zip(parallel.MESH_AXES, sizes, strict=True) if size > 1),
        "batch": f"{config.data.global_batch_size} = {config.optim.accum_steps} x "
        f"{config.data.global_batch_size // config.optim.accum_steps}",
        "remat": config.model.remat,
        "attention": config.model.attention_backend,
    }
    start = time.perf_counter()
    try:
        plan = make_plan(config, topology)
    except PlanDoesNotFit as err:
        # XLA writes sizes in binary units with one letter (95.74G: the v5p's 95.74 GiB).
        needed = re.search(r"HLO temporaries \(([\d.]+) ?([KMGT]?)\)", str(err))
        return row | {"error": str(err), "temps_needed": f"{needed[1]} {needed[2]}iB" if needed else "?"}
    compute, memory, step = plan.roofline
    clips = config.data.global_batch_size
    return row | {
        "arguments": plan.argument_bytes / GIB,
        "temps": plan.temp_bytes / GIB,
        "total": plan.total_bytes / GIB,
        "fits": plan.total_bytes <= plan.hbm_bytes,
        "hbm_share": plan.total_bytes / plan.hbm_bytes,
        "program_flops": plan.program_flops,
        "model_flops": plan.model_flops,
        "compiled_flops": plan.flops,
        "step": step,
        "bound": "compute" if compute >= memory else "HBM",
        "clips_per_second": clips / step,
        "mfu": plan.mfu,
        "collective_seconds": plan.collective_seconds,
        "mfu_without_overlap": plan.mfu_without_overlap,
        "kernels": ", ".join(f"{kernel} x{n}" for kernel, n in _calls_per_kernel(plan.attention_kernels).items()),
        "compile_seconds": plan.compile_seconds,
        "wall_seconds": time.perf_counter() - start,
    }


def table(rows: dict[str, dict]) -> str:
    lines = [
        "| plan | topology | mesh | batch (accum x micro) | attention calls | args / temps / total per device | "
        "fits 95 GiB | FLOPs per device (model) | roofline step | clips/s | MFU (roofline) | collectives | "
        "MFU (no overlap) | compile |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        where = f"| {name} | {PLANS[name][1]} ({r['devices']}) | {r['mesh']} | {r['batch']} | "
        if "error" in r:
            lines.append(f"{where}{r['attention']} | temporaries alone: {r['temps_needed']} | **no** | | | | | | | "
                         "refused in seconds |")  # fmt: skip
            continue
        lines.append(
            f"{where}{r['kernels']} | "
            f"{r['arguments']:.1f} / {r['temps']:.1f} / {r['total']:.1f} GiB | "
            f"{'yes' if r['fits'] else '**no**'} ({r['hbm_share']:.0%}) | "
            f"{r['program_flops']:.3g} ({r['model_flops']:.3g}) | {r['step']:.2f} s, {r['bound']}-bound | "
            f"{r['clips_per_second']:.2f} | {r['mfu']:.1%} | {r['collective_seconds'] * 1e3:.0f} ms | "
            f"{r['mfu_without_overlap']:.1%} | {r['compile_seconds']:.0f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=list(PLANS), help="plans to run (default: all)")
    parser.add_argument("--row", choices=list(PLANS), help=argparse.SUPPRESS)  # One plan, as JSON (a child).
    args = parser.parse_args()
    if args.row:
        print("ROW " + json.dumps(measure(args.row)), flush=True)
        return
    rows = {}
    for name in args.only or PLANS:
        print(f"{name}: {command(name)}", file=sys.stderr, flush=True)
        child = [sys.executable, "-m", "benchmarks.wan_plans", "--row", name]
        result = subprocess.run(child, capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
        found = [line for line in result.stdout.splitlines() if line.startswith("ROW ")]
        if result.returncode or not found:
            sys.exit(f"plan {name!r} failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
        rows[name] = json.loads(found[-1][4:])
    print(table(rows))
    print("\nCommands:")
    for name in rows:
        print(f"- {name}: `{command(name)}`")
    refused = {name: r["error"] for name, r in rows.items() if "error" in r}
    for name, error in refused.items():
        print(f"- {name} refused: {error}")


if __name__ == "__main__":
    main()
