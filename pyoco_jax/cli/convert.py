"""`pyoco-convert --diffusers DIR --config configs/sd15_latent.py --out CKPT [--config.key=value ...]`.

Converts a whole diffusers Stable Diffusion folder (unet/, vae/, text_encoder/, tokenizer/) into one
Orbax checkpoint of the inflated video model, VAE and text encoder, and prints what was loaded and
what is new. CKPT then serves as `train.init_from`, `vae.path` and `text.path`.
"""

import os

from absl import flags

from pyoco_jax.cli.common import absolute, config_overrides, run_cli
from pyoco_jax.errors import UserError

_DIFFUSERS = flags.DEFINE_string("diffusers", None, "diffusers Stable Diffusion pipeline folder.", required=True)
_CONFIG = flags.DEFINE_string(
    "config", None, "Experiment config whose video model the U-Net is inflated to.", required=True
)
_OUT = flags.DEFINE_string("out", None, "Output folder (replaced if it exists).", required=True)


def main() -> None:
    from pyoco_jax.config import load_config
    from pyoco_jax.convert.pipeline import convert_pipeline

    source, out = absolute(_DIFFUSERS.value), absolute(_OUT.value)
    if not os.path.isdir(source):
        raise UserError(f"--diffusers {source} is not a folder")
    summary = convert_pipeline(source, load_config(_CONFIG.value, config_overrides(), reads_data=False), out)
    for component, counts in summary.items():
        new = f", new {counts['new']:,} in {len(counts['new_tensors'])} tensors" if counts["new"] else ""
        loaded = f"loaded {counts['loaded']:,}"
        print(f"{component}: {counts['tensors']} tensors, {counts['params']:,} params: {loaded}{new}")
    print(f"wrote {out}")


def run() -> None:
    run_cli("pyoco-convert", main)


if __name__ == "__main__":
    run()
