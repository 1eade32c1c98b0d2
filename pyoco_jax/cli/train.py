"""`pyoco-train --config configs/X.py --workdir DIR [--config.key=value ...]`."""

import math
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from pyoco_jax.cli.logs import quiet_library_logs
from pyoco_jax.config import ConfigError, validate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and samples go; reruns resume from it.")


def use_every_cpu_core(batch_per_step: int) -> None:
    """One XLA CPU device per core (dividing the batch), so data parallelism keeps every core busy.

    XLA runs each CPU device's program on its own thread; a single CPU device
    leaves cores idle. Must run before JAX initialises its backends; an explicit
    XLA_FLAGS device count wins. Accelerator runs are unaffected.
    """
    current = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in current:
        count = math.gcd(os.cpu_count() or 1, batch_per_step)
        os.environ["XLA_FLAGS"] = f"{current} --xla_force_host_platform_device_count={count}".strip()


def main(argv: list[str]) -> None:
    quiet_library_logs()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or _WORKDIR.value is None:
        raise app.UsageError("both --config and --workdir are required.")
    try:
        config = validate(_CONFIG.value)
    except ConfigError as err:
        sys.exit(f"pyoco-train: bad config: {err}")
    use_every_cpu_core(config.data.global_batch_size // config.optim.accum_steps)
    from pyoco_jax.train.trainer import train

    metrics = train(config, _WORKDIR.value)
    logging.info("Done: %s", " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
