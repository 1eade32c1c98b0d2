"""`pyoco-train-vae --config configs/video_vae.py --workdir DIR [--config.key=value ...]`.

Fine-tunes the VideoVAE (SD's decoder with temporal layers, encoder frozen) on the config's video data
and writes it to DIR/video_vae, the folder `vae.video_decoder` takes; losses go to DIR/metrics.jsonl and
TensorBoard like a U-Net run's.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from pyoco_jax.cli.logs import quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file("config", None, "VideoVAE config file, e.g. configs/video_vae.py.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")


def main(argv: list[str]) -> None:
    quiet_library_logs()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None or not _WORKDIR.value:
        raise app.UsageError("--config and --workdir are required.")
    from pyoco_jax.config import validate
    from pyoco_jax.train.video_vae import finetune_video_vae

    results = finetune_video_vae(validate(_CONFIG.value), _WORKDIR.value)
    logging.info("VideoVAE fine-tune done: %s", ", ".join(f"{k}={v:.4g}" for k, v in results.items()))


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
