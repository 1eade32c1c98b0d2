"""Decode-pipeline throughput: clips per second by grain worker count, and the share of a step spent waiting.

Reads a video folder (data.source='video_folder') through the real Loader. With
no --folder, it first writes test videos (moving shapes over a textured, noisy
background, H.264 with a keyframe every --gop frames) into --cache_dir.

    python benchmarks/data.py --workers 0,1,2 --num_frames 16 --resolution 256
    python benchmarks/data.py --video_size 640x360 --step_time 0.5   # waiting share for a 0.5 s step

--step_time S models a training step running on the accelerator: the host
sleeps S seconds per batch while the loader prefetches, and the waiting share
is wait / (wait + S) per step, after the first (warm-up) batch.
"""

import argparse
import os
import tempfile
import time
from fractions import Fraction

import av
import jax
import numpy as np
from absl import flags
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from pyoco_jax.configs import default

from pyoco_jax.data.loader import make_loader, make_source
from pyoco_jax.data.synthetic import SyntheticVideoSource


def write_test_videos(folder: str, count: int, width: int, height: int, seconds: float, fps: int, gop: int) -> None:
    """`count` mp4s plus metadata.csv in `folder` (kept if already there)."""
    os.makedirs(folder, exist_ok=True)
    num_frames = int(seconds * fps)
    shapes = SyntheticVideoSource(count, num_frames, (height, width), num_classes=4, max_objects=3, seed=1)
    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for i in range(count):
        path = os.path.join(folder, f"video_{i:03d}.mp4")
        rows.append(f"video_{i:03d}.mp4,{i % 4}")
        if os.path.exists(path):
            continue
        frames = shapes[i]["video"].astype(np.int16)
        texture = rng.normal(0, 12, (height, width, 3))
        with av.open(path + ".part", mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps), options={"crf": "23", "g": str(gop)})
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for frame in frames:
                noisy = frame + texture + rng.normal(0, 3, frame.shape)
                image = np.clip(noisy, 0, 255).astype(np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())
        os.replace(path + ".part", path)
    with open(os.path.join(folder, "metadata.csv"), "w") as file:
        file.write("\n".join(rows) + "\n")


def measure(args: argparse.Namespace, folder: str, workers: int) -> dict[str, float]:
    config = default.get_config().data
    config.update(
        source="video_folder",
        path=folder,
        num_frames=args.num_frames,
        resolution=args.resolution,
        frame_stride=args.frame_stride,
        crop="random",
        flip=True,
        num_classes=4,
        global_batch_size=args.batch_size,
        worker_count=workers,
        prefetch=args.prefetch,
    )
    source = make_source(config, seed=0)
    source.decode_threads = args.decode_threads
    return time_loader(config, source, batches=args.batches, step_time=args.step_time)


def time_loader(data_config, source, *, batches: int, step_time: float) -> dict[str, float]:
    """Clips/s through the real Loader after a warm-up batch, and the waiting share of a modelled `step_time`."""
    sharding = NamedSharding(Mesh(np.array(jax.devices()[:1]), ("data",)), PartitionSpec("data"))
    begin = time.perf_counter()
    with make_loader(data_config, source, sharding, seed=0) as loader:
        next(loader)  # Warm-up: worker start-up and the first batch.
        startup = time.perf_counter() - begin
        begin, waits = time.perf_counter(), []
        for _ in range(batches):
            batch = next(loader)
            waits.append(loader.last_wait_seconds)
            if step_time:
                time.sleep(step_time)
        jax.block_until_ready(batch)
        elapsed = time.perf_counter() - begin
    wait = float(np.sum(waits))
    return {
        "workers": data_config.worker_count,
        "clips_per_s": batches * data_config.global_batch_size / elapsed,
        "startup_s": startup,
        "wait_share": wait / (wait + batches * step_time) if step_time else 1.0,
        "wait_per_step_s": wait / batches,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", default="", help="Video folder with metadata.csv/jsonl (default: make one).")
    parser.add_argument("--cache_dir", default=os.path.join(tempfile.gettempdir(), "pyoco_data_benchmark"))
    parser.add_argument("--video_size", default="320x240", help="WxH of the generated videos.")
    parser.add_argument("--num_videos", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--video_fps", type=int, default=30)
    parser.add_argument("--gop", type=int, default=30, help="Keyframe interval of the generated videos (frames).")
    parser.add_argument("--workers", default="0,1,2", help="Comma-separated grain worker counts.")
    parser.add_argument("--num_frames", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--frame_stride", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=8, help="Timed batches after the warm-up one.")
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--decode_threads", type=int, default=0, help="FFmpeg threads per decode (0: auto).")
    parser.add_argument("--step_time", type=float, default=0.0, help="Seconds per modelled training step.")
    args = parser.parse_args()
    flags.FLAGS.mark_as_parsed()  # grain workers read absl flags.

    folder = args.folder
    if not folder:
        width, height = (int(side) for side in args.video_size.split("x"))
        folder = os.path.join(args.cache_dir, f"{width}x{height}_{args.num_videos}x{args.seconds:g}s_g{args.gop}")
        write_test_videos(folder, args.num_videos, width, height, args.seconds, args.video_fps, args.gop)
    print(
        f"{folder}: {args.batch_size} x {args.num_frames}x{args.resolution}x{args.resolution} clips, stride "
        f"{args.frame_stride}, {args.batches} timed batches, step_time {args.step_time} s, {os.cpu_count()} CPUs"
    )
    print("| workers | clips/s | start-up + first batch (s) | wait per step (s) | waiting share of a step |")
    print("|---|---|---|---|---|")
    for workers in (int(w) for w in args.workers.split(",")):
        row = measure(args, folder, workers)
        share = f"{row['wait_share']:.0%}" if args.step_time else "-"
        cells = [
            workers,
            f"{row['clips_per_s']:.1f}",
            f"{row['startup_s']:.1f}",
            f"{row['wait_per_step_s']:.3f}",
            share,
        ]
        print("| " + " | ".join(map(str, cells)) + " |", flush=True)


if __name__ == "__main__":
    main()
