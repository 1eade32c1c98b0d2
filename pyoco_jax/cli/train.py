"""`pyoco-train --config configs/X.py --workdir DIR [--config.key=value ...]`.

Multi-host: every host runs the same command; the cluster comes from the environment
(Cloud TPU, SLURM) or from --coordinator/--num_processes/--process_id.
AOT plan: `pyoco-train --config X --plan v5p:2x2x1` compiles the step for that topology,
prints memory, FLOPs and a roofline step time, and exits without training.
"""

import math
import os
import re

from absl import flags, logging

from pyoco_jax.cli.common import absolute, config_overrides, run_cli
from pyoco_jax.errors import UserError

_CONFIG = flags.DEFINE_string("config", None, "Experiment config file (configs/*.py).", required=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and samples go; reruns resume from it.")
_PLAN = flags.DEFINE_string(
    "plan", None, "Compile for this topology, report memory/FLOPs and exit (no training): cpu:N, v5p:2x2x1, v5e:4x4."
)
_COORDINATOR = flags.DEFINE_string("coordinator", None, "Multi-host: host:port of process 0 (with the two below).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's index, 0..num_processes-1.")

_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def use_every_cpu_core(batch_per_step: int) -> None:
    """One XLA CPU device per core (dividing the batch), so data parallelism keeps every core busy.

    XLA runs each CPU device's program on its own thread; a single CPU device
    leaves cores idle. Must run before JAX initialises its backends; an explicit
    XLA_FLAGS device count wins. Accelerator runs are unaffected.
    """
    current = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in current:
        count = math.gcd(os.cpu_count() or 1, batch_per_step)
        os.environ["XLA_FLAGS"] = f"{current} {_DEVICE_COUNT_FLAG}={count}".strip()


def set_cpu_device_count(count: int) -> None:
    """Exactly `count` host devices (replacing any count in XLA_FLAGS); before JAX initialises its backends."""
    current = re.sub(rf"{_DEVICE_COUNT_FLAG}=\S+", "", os.environ.get("XLA_FLAGS", ""))
    os.environ["XLA_FLAGS"] = f"{current} {_DEVICE_COUNT_FLAG}={count}".strip()


def plan(config, topology: str) -> None:
    from pyoco_jax.train.plan import cpu_device_count, format_plan, make_plan

    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # Compile only: leave any local accelerator to running jobs.
    count = cpu_device_count(topology)
    if count is not None:
        set_cpu_device_count(count)
    print(format_plan(make_plan(config, topology), config), flush=True)


def main() -> None:
    from pyoco_jax.config import load_config

    if _WORKDIR.value is None and _PLAN.value is None:
        raise UserError("--workdir is required (or --plan TOPOLOGY to compile without training)")
    config = load_config(_CONFIG.value, config_overrides(), reads_data=_PLAN.value is None)
    if _PLAN.value is not None:
        plan(config, _PLAN.value)
        return
    workdir = absolute(_WORKDIR.value)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"--workdir {workdir} is a file; give a directory (it is created if missing)")
    use_every_cpu_core(config.data.global_batch_size // config.optim.accum_steps)
    from pyoco_jax import distributed

    logging.info("JAX: %s", distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value))
    from pyoco_jax.train.trainer import train

    metrics = train(config, workdir)
    logging.info("Done: %s", " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))


def run() -> None:
    run_cli("pyoco-train", main)


if __name__ == "__main__":
    run()
