"""`pyoco-prepare --config CONFIG --videos DIR [--metadata FILE] --out DIR [--shards N] [--batch B]`.

Encodes a folder of videos (and their captions) with the config's VAE (`vae.path`) and text encoder
(`text.path`) into the latent cache a latent config trains from (`data.source=latents`,
`data.path=DIR`). Clips get `data.num_frames` frames at `data.resolution` x the VAE's downsampling
factor pixels. Re-running the same command skips finished shards.
"""

from absl import app, flags, logging

from pyoco_jax.cli.logs import quiet_library_logs

_CONFIG = flags.DEFINE_string("config", None, "Config file (a latent config, e.g. configs/sd15_latent.py).")
_OVERRIDES = flags.DEFINE_multi_string("set", [], "Config overrides key=value (e.g. --set vae.path=DIR).")
_VIDEOS = flags.DEFINE_string("videos", None, "Video folder with metadata.csv / metadata.jsonl.")
_METADATA = flags.DEFINE_string("metadata", "", "Metadata file (default: DIR/metadata.csv or .jsonl).")
_OUT = flags.DEFINE_string("out", None, "Output folder of the latent cache.")
_SHARDS = flags.DEFINE_integer("shards", 1, "Number of ArrayRecord shards.")
_BATCH = flags.DEFINE_integer("batch", 0, "Clips encoded at once (default: one per local device).")


def main(argv: list[str]) -> None:
    quiet_library_logs()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not (_CONFIG.value and _VIDEOS.value and _OUT.value):
        raise app.UsageError("--config, --videos and --out are required.")
    from pyoco_jax.config import load_config
    from pyoco_jax.prepare import prepare

    config = load_config(_CONFIG.value, _OVERRIDES.value)
    report = prepare(
        config, _VIDEOS.value, _OUT.value, metadata=_METADATA.value, num_shards=_SHARDS.value, batch_size=_BATCH.value
    )
    logging.info(
        "Prepared %s: %d clips encoded in %d new shards (%d already done), %d bad files skipped, %.2f s per clip",
        _OUT.value,
        report.examples,
        report.shards_written,
        report.shards_skipped,
        report.bad_files,
        report.seconds_per_clip,
    )


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
