"""`pyoco-prepare --config CONFIG --videos DIR --out DIR [--metadata F] [--shards N] [--batch B] [--config.k=v ...]`.

Encodes a folder of videos (and their captions) with the config's VAE (`vae.path`) and text encoder
(`text.path`), Stable Diffusion's or Wan 2.1's as their folders say, into the latent cache a latent config
trains from (`data.source=latents`, `data.path=DIR`). Clips get as many frames as encode to `data.num_frames`
latent frames (Wan: 1 + 4 (F - 1)) at `data.resolution` x the VAE's downsampling factor pixels; with
`data.buckets` (latent shapes) each video's clips take the shape of its bucket, and the cache trains with the
same data.buckets. Re-running the same command skips finished shards.
"""

import os

from absl import flags, logging

from pyoco_jax.cli.common import absolute, config_overrides, run_cli
from pyoco_jax.errors import UserError

_CONFIG = flags.DEFINE_string(
    "config", None, "Config file (a latent config, e.g. configs/sd15_latent.py or wan21_1_3b.py).", required=True
)
_VIDEOS = flags.DEFINE_string("videos", None, "Video folder with metadata.csv / metadata.jsonl.", required=True)
_METADATA = flags.DEFINE_string("metadata", "", "Metadata file (default: DIR/metadata.csv or .jsonl).")
_OUT = flags.DEFINE_string("out", None, "Output folder of the latent cache.", required=True)
_SHARDS = flags.DEFINE_integer("shards", 1, "Number of ArrayRecord shards.", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch", 0, "Clips encoded at once (default: one per local device).", lower_bound=0)


def main() -> None:
    from pyoco_jax.config import load_config
    from pyoco_jax.prepare import prepare

    config = load_config(_CONFIG.value, config_overrides(), reads_data=False)
    videos, out = absolute(_VIDEOS.value), absolute(_OUT.value)
    if not os.path.isdir(videos):
        raise UserError(f"--videos {videos} is not a folder")
    metadata = absolute(_METADATA.value) if _METADATA.value else ""
    report = prepare(config, videos, out, metadata=metadata, num_shards=_SHARDS.value, batch_size=_BATCH.value)
    logging.info(
        "Prepared %s: %d clips encoded in %d new shards (%d already done), %d bad files skipped, %.2f s per clip",
        out,
        report.examples,
        report.shards_written,
        report.shards_skipped,
        report.bad_files,
        report.seconds_per_clip,
    )
    if report.clips_per_bucket:
        logging.info("Clips per bucket: %s", ", ".join(f"{k}: {n}" for k, n in report.clips_per_bucket.items()))


def run() -> None:
    run_cli("pyoco-prepare", main)


if __name__ == "__main__":
    run()
