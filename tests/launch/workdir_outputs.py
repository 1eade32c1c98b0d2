"""What a short run writes into its workdir: metrics, TensorBoard events with an image, a sample mp4/gif.

Run as a script (`python workdir_outputs.py OUT_DIR`) it writes them to gs://bucket/run held in fsspec's
in-memory filesystem, registered under the `gcs` protocol, and copies what landed there into OUT_DIR.
Only the storage is replaced: etils.epath, the workdir mirror and the video writers run unchanged.
"""

import pathlib
import sys

import numpy as np

FPS = 8.0
BUCKET_RUN = "gs://bucket/run"


def videos() -> np.ndarray:
    """Two 4-frame 16x16 clips (uint8 (N, F, H, W, C)): gentle gradients, a different green level per clip."""
    n, f, h, w = np.meshgrid(np.arange(2), np.arange(4), np.arange(16), np.arange(16), indexing="ij")
    clip = np.stack([4 * h + 20 * f, 4 * w + 100 * n, 200 - 3 * (h + w)], axis=-1)
    return np.clip(clip, 0, 255).astype(np.uint8)


def write_outputs(workdir: str, start_step: int = 0) -> None:
    from pyoco_jax.sample.output import write_videos
    from pyoco_jax.train.metrics import MetricLogger

    logger = MetricLogger(workdir, start_step=start_step, num_steps=start_step + 2, enabled=True, sync_seconds=0)
    logger.scalars(start_step + 1, {"loss": 0.5})
    logger.video_grid(start_step + 2, "samples", videos())
    logger.scalars(start_step + 2, {"loss": 0.25})
    logger.close()
    write_videos(videos(), f"{workdir}/samples/step_{start_step + 2:07d}.mp4", FPS)


def main(out_dir: str) -> None:
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    fsspec.register_implementation("gcs", MemoryFileSystem, clobber=True)
    write_outputs(BUCKET_RUN)
    store = fsspec.filesystem("gcs")
    for key in store.find(BUCKET_RUN):
        target = pathlib.Path(out_dir) / key.removeprefix(BUCKET_RUN + "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.cat_file(key))


if __name__ == "__main__":
    main(sys.argv[1])
