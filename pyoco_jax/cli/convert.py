"""`pyoco-convert --diffusers DIR --config configs/sd15_latent.py --out CKPT [--config.key=value ...]`.

Converts a whole diffusers pipeline folder into one Orbax checkpoint and prints what was loaded and what is
new: a Stable Diffusion folder (unet/, vae/, text_encoder/, tokenizer/) with its U-Net inflated to the config's
video model, or a Wan 2.1 text-to-video folder (transformer/, vae/, text_encoder/, tokenizer/) whose transformer
must be the config's DiT (e.g. configs/wan21_1_3b.py). Its model_index.json (or, without one, its components)
says which. CKPT then serves as `train.init_from`, `vae.path` and `text.path`.
"""

import os

from absl import flags

from pyoco_jax.cli.common import absolute, config_overrides, run_cli
from pyoco_jax.errors import UserError

_DIFFUSERS = flags.DEFINE_string(
    "diffusers", None, "diffusers pipeline folder: Stable Diffusion or Wan 2.1 text-to-video.", required=True
)
_CONFIG = flags.DEFINE_string(
    "config", None, "Experiment config: the video model an SD U-Net is inflated to, or Wan's DiT.", required=True
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
