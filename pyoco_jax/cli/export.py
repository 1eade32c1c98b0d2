"""`pyoco-export --workdir DIR [--step N] [--ema] [--dtype bfloat16] --format safetensors|orbax --out PATH`.

Reads one checkpoint of a run on a single device (whatever mesh trained it) and writes the model's
weights for other tools: a diffusers-loadable safetensors folder, or a params-only Orbax checkpoint.
"""

import sys
import time

from absl import app, flags, logging

from pyoco_jax.cli.logs import quiet_library_logs

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_EMA = flags.DEFINE_bool("ema", False, "Export the EMA of the params instead of the params.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "float16"], "dtype of the exported tensors.")
_FORMAT = flags.DEFINE_enum("format", "safetensors", ["safetensors", "orbax"], "Export format.")
_OUT = flags.DEFINE_string("out", None, "Output folder.")


def main(argv: list[str]) -> None:
    quiet_library_logs()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _WORKDIR.value or not _OUT.value:
        raise app.UsageError("--workdir and --out are required.")
    from pyoco_jax.convert.export import export
    from pyoco_jax.train.weights import CheckpointNotFoundError, checkpoint_weights

    begin = time.perf_counter()
    try:
        config, step, weights = checkpoint_weights(_WORKDIR.value, _STEP.value, ema=_EMA.value)
    except CheckpointNotFoundError as err:
        sys.exit(f"pyoco-export: {err}")
    files = export(weights, config, _OUT.value, fmt=_FORMAT.value, dtype=_DTYPE.value)
    size = sum(f.stat().st_size for f in files)
    logging.info(
        "Exported step %d (%s, %s, %s) to %s: %d files, %.2f MB in %.1f s",
        step,
        "EMA" if _EMA.value else "params",
        _DTYPE.value,
        _FORMAT.value,
        _OUT.value,
        len(files),
        size / 1e6,
        time.perf_counter() - begin,
    )


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
