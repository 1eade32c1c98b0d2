"""`pyoco-convert --diffusers DIR --config configs/sd15_latent.py --out CKPT [--set key=value ...]`.

Converts a whole diffusers Stable Diffusion folder (unet/, vae/, text_encoder/, tokenizer/) into one
Orbax checkpoint of the inflated video model, VAE and text encoder, and prints what was loaded and
what is new. CKPT then serves as `train.init_from`, `vae.path` and `text.path`.
"""

from absl import app, flags

from pyoco_jax.cli.logs import quiet_library_logs

_DIFFUSERS = flags.DEFINE_string("diffusers", None, "diffusers Stable Diffusion pipeline folder.")
_CONFIG = flags.DEFINE_string("config", None, "Experiment config whose video model the U-Net is inflated to.")
_OVERRIDES = flags.DEFINE_multi_string("set", [], "Config overrides key=value.")
_OUT = flags.DEFINE_string("out", None, "Output folder (replaced if it exists).")


def main(argv: list[str]) -> None:
    quiet_library_logs()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not (_DIFFUSERS.value and _CONFIG.value and _OUT.value):
        raise app.UsageError("--diffusers, --config and --out are required.")
    from pyoco_jax.config import load_config
    from pyoco_jax.convert.pipeline import convert_pipeline

    summary = convert_pipeline(_DIFFUSERS.value, load_config(_CONFIG.value, _OVERRIDES.value), _OUT.value)
    for component, counts in summary.items():
        new = f", new {counts['new']:,} in {len(counts['new_tensors'])} tensors" if counts["new"] else ""
        loaded = f"loaded {counts['loaded']:,}"
        print(f"{component}: {counts['tensors']} tensors, {counts['params']:,} params: {loaded}{new}")
    print(f"wrote {_OUT.value}")


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
