"""`pyoco-train --config configs/X.py --workdir DIR [--config.key=value ...]`."""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from pyoco_jax.config import ConfigError, validate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and samples go; reruns resume from it.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or _WORKDIR.value is None:
        raise app.UsageError("both --config and --workdir are required.")
    try:
        config = validate(_CONFIG.value)
    except ConfigError as err:
        sys.exit(f"pyoco-train: bad config: {err}")
    from pyoco_jax.train.trainer import train

    metrics = train(config, _WORKDIR.value)
    logging.info("Done: %s", " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
