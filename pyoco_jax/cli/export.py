"""`pyoco-export --workdir DIR [--step N] [--ema] [--dtype bfloat16] --format safetensors|orbax --out PATH`.

Reads one checkpoint of a run on a single device (whatever mesh trained it) and writes the model's
weights for other tools: a diffusers-loadable safetensors folder (a whole WanPipeline folder for a Wan DiT
run with its VAE and UMT5 encoder), or a params-only Orbax checkpoint. Overrides (`--config.vae.path=DIR`,
e.g. for moved files) apply to the checkpoint's config.
"""

import time

from absl import flags, logging

from pyoco_jax.cli.common import absolute, config_overrides, run_cli
from pyoco_jax.convert.export import FORMATS
from pyoco_jax.models.layers import COMPUTE_DTYPES

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/.", required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_EMA = flags.DEFINE_bool("ema", False, "Export the EMA of the params instead of the params.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", COMPUTE_DTYPES, "dtype of the exported tensors.")
_FORMAT = flags.DEFINE_enum("format", "safetensors", FORMATS, "Export format.")
_OUT = flags.DEFINE_string("out", None, "Output folder.", required=True)


def main() -> None:
    from pyoco_jax.config import apply_overrides
    from pyoco_jax.convert.export import export
    from pyoco_jax.train.weights import checkpoint_weights

    begin = time.perf_counter()
    config, step, weights = checkpoint_weights(absolute(_WORKDIR.value), _STEP.value, ema=_EMA.value)
    if config_overrides():
        config = apply_overrides(config, config_overrides())
    out = absolute(_OUT.value)
    files = export(weights, config, out, fmt=_FORMAT.value, dtype=_DTYPE.value)
    size = sum(f.stat().st_size for f in files)
    logging.info(
        "Exported step %d (%s, %s, %s) to %s: %d files, %.2f MB in %.1f s",
        step,
        "EMA" if _EMA.value else "params",
        _DTYPE.value,
        _FORMAT.value,
        out,
        len(files),
        size / 1e6,
        time.perf_counter() - begin,
    )


def run() -> None:
    run_cli("pyoco-export", main)


if __name__ == "__main__":
    run()
