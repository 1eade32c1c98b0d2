"""LoRA against full fine-tuning: what the train state holds, and the compiled step's memory per device.

    python -m benchmarks.lora_memory --config configs/wan21_1_3b.py --ranks 0,16,64 --plan cpu:8 \
        [--config.key=value ...]

For each rank (0: full fine-tuning) it builds the run's abstract state (nothing is allocated) and splits its
bytes into trained parameters, frozen parameters, optimizer state and EMA; with --plan it also compiles the
real training step for that topology (pyoco_jax/train/plan.py; cpu:N here, or a TPU slice with libtpu) and
reports the compiler's per-device argument, temporary and total memory.
"""

import argparse
import os

import jax  # Backends start on first use, after --plan has set the host device count.

from benchmarks.train_step import parse_with_overrides


def _bytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="config file, e.g. configs/wan21_1_3b.py")
    parser.add_argument("--ranks", default="0,16,64", help="comma-separated LoRA ranks (0: full fine-tuning)")
    parser.add_argument("--plan", default="", help="also compile the step for this topology, e.g. cpu:8")
    args, overrides = parse_with_overrides(parser, argv)
    if args.plan:
        from pyoco_jax.cli.train import set_cpu_device_count
        from pyoco_jax.train.plan import cpu_device_count

        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        if cpu_device_count(args.plan):
            set_cpu_device_count(cpu_device_count(args.plan))
    from pyoco_jax.config import load_config
    from pyoco_jax.train.build import build_run
    from pyoco_jax.train.plan import make_plan

    header = "| rank | trained params | trained GiB | frozen GiB | optimizer GiB | EMA GiB |"
    if args.plan:
        header += f" {args.plan}: arguments GiB/device | temps GiB/device | total GiB/device |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for rank in (int(r) for r in args.ranks.split(",")):
        config = load_config(args.config, [*overrides, f"--config.model.lora.rank={rank}"], reads_data=False)
        state = build_run(config).abstract_state
        row = [
            str(rank) if rank else "full",
            f"{sum(x.size for x in jax.tree.leaves(state.params)):,}",
            _gib(_bytes(state.params)),
            _gib(_bytes(state.frozen)),
            _gib(_bytes(state.opt_state)),
            _gib(_bytes(state.ema)),
        ]
        if args.plan:
            plan = make_plan(config, args.plan)
            row += [_gib(plan.argument_bytes), _gib(plan.temp_bytes), _gib(plan.total_bytes)]
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
