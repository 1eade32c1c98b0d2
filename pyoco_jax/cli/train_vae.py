"""`pyoco-train-vae --config configs/video_vae.py --workdir DIR [--config.key=value ...]`.

Fine-tunes the VideoVAE (SD's decoder with temporal layers, encoder frozen) on the config's video data
and writes it to DIR/video_vae, the folder `vae.video_decoder` takes; losses go to DIR/metrics.jsonl and
TensorBoard like a U-Net run's.
"""

from absl import flags, logging

from pyoco_jax.cli.common import absolute, config_overrides, run_cli

_CONFIG = flags.DEFINE_string("config", None, "VideoVAE config file, e.g. configs/video_vae.py.", required=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory; reruns resume from it.", required=True)


def main() -> None:
    from pyoco_jax.config import load_config
    from pyoco_jax.train.video_vae import finetune_video_vae

    results = finetune_video_vae(load_config(_CONFIG.value, config_overrides()), absolute(_WORKDIR.value))
    logging.info("VideoVAE fine-tune done: %s", ", ".join(f"{k}={v:.4g}" for k, v in results.items()))


def run() -> None:
    run_cli("pyoco-train-vae", main)


if __name__ == "__main__":
    run()
