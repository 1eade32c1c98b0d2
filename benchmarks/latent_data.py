"""Latent-cache throughput against the step rate a TPU host must feed.

    python -m benchmarks.latent_data [--config configs/sd15_latent.py] [--workers 0,1,2] [--step_time 0.3445]

Writes a latent cache of random clips shaped as the config's (pyoco-prepare's record layout: float16
posterior mean and std per frame, a float16 text context, label, fps) once into --cache_dir, then reads
it through the real Loader (posterior sampling, batching, the host-to-device copy) for each worker
count. The needed rate is one host's share of the global batch per planned step: the default 0.3445 s is
the roofline step of configs/sd15_latent.py on v5p:2x2x1 (benchmarks/README.md), whose one host feeds
all 64 clips of the global batch.
"""

import argparse
import os
import tempfile

import numpy as np
from absl import flags

from benchmarks.data import time_loader
from pyoco_jax.config import load_config
from pyoco_jax.data import latents
from pyoco_jax.data.loader import make_source

CONTEXT_SHAPE = (77, 768)  # CLIP ViT-L/14 tokens x width, SD-1.5's text context.


def write_random_cache(folder: str, clip_shape: tuple[int, ...], clips: int, shards: int) -> None:
    """A latent cache of `clips` random records in `shards` shards (kept if already there)."""
    if os.path.exists(os.path.join(folder, latents.INDEX_NAME)):
        return
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    entries = []
    for shard in range(shards):
        count = len(range(shard, clips, shards))
        records = (
            {
                "mean": rng.standard_normal(clip_shape).astype(np.float16),
                "std": np.full(clip_shape, 0.1, np.float16),
                "context": rng.standard_normal(CONTEXT_SHAPE).astype(np.float16),
                "label": np.int32(0),
                "fps": np.float32(8.0),
            }
            for _ in range(count)
        )
        name = latents.shard_name(shard, shards)
        entries.append({"file": name, "num_records": latents.write_shard(os.path.join(folder, name), records)})
    np.save(os.path.join(folder, latents.NULL_CONTEXT_NAME), np.zeros(CONTEXT_SHAPE, np.float16))
    latents.write_index(
        folder,
        {"shards": entries, "num_examples": clips, "context_shape": list(CONTEXT_SHAPE), "scaling_factor": 0.18215},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/sd15_latent.py")
    parser.add_argument("--cache_dir", default=os.path.join(tempfile.gettempdir(), "pyoco_latent_benchmark"))
    parser.add_argument("--clips", type=int, default=1024)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--workers", default="0,1,2", help="Comma-separated grain worker counts.")
    parser.add_argument("--batches", type=int, default=8, help="Timed global batches after the warm-up one.")
    parser.add_argument("--step_time", type=float, default=0.3445, help="Planned seconds per training step.")
    args = parser.parse_args()
    flags.FLAGS.mark_as_parsed()  # grain workers read absl flags.

    config = load_config(args.config, reads_data=False).data
    clip_shape = (config.num_frames, config.resolution, config.resolution, config.channels)
    folder = os.path.join(args.cache_dir, "x".join(map(str, clip_shape)) + f"_{args.clips}")
    write_random_cache(folder, clip_shape, args.clips, args.shards)
    needed = config.global_batch_size / args.step_time
    print(
        f"{folder}: batches of {config.global_batch_size} clips of {clip_shape} latents + {CONTEXT_SHAPE} context, "
        f"{args.batches} timed; needed {needed:.1f} clips/s (a {args.step_time} s step); {os.cpu_count()} CPUs"
    )
    print("| workers | clips/s | x needed | start-up + first batch (s) | wait per step (s) |")
    print("|---|---|---|---|---|")
    for workers in (int(w) for w in args.workers.split(",")):
        config.worker_count = workers
        config.path = folder
        row = time_loader(config, make_source(config, seed=0), batches=args.batches, step_time=0.0)
        cells = [
            workers,
            f"{row['clips_per_s']:.1f}",
            f"{row['clips_per_s'] / needed:.1f}",
            f"{row['startup_s']:.1f}",
            f"{row['wait_per_step_s']:.3f}",
        ]
        print("| " + " | ".join(map(str, cells)) + " |", flush=True)


if __name__ == "__main__":
    main()
