"""Aspect-ratio and duration buckets: clips of several shapes, every global batch of one shape.

Real video never has one shape. `data.buckets` lists (height, width, frames) shapes in the units the model
sees (pixels for a video folder, latents for a latent cache, like data.resolution and data.num_frames);
each clip belongs to one bucket and is cut to its shape, and each global batch is one bucket's, so the
train step compiles once per bucket shape (jit caches by shape) and nothing is padded. Latent shapes make
the VAE's rules hold by construction: a bucket of f latent frames and h x w latents is cut from 8h x 8w
pixels and, for Wan's VAE, 1 + 4(f - 1) video frames (its 1 + 4k; f for SD's per-frame VAE), so the config
checks only what the model needs of the latents (DiT patches, U-Net downsampling) and what the mesh needs
(frames over `sequence`).

Assignment (`assign_bucket`): among the buckets whose frame count the video fills at data.frame_stride
(or data.target_fps) inside its start/end window, the one nearest its aspect ratio (in log ratio), ties
going to more frames, then to the bucket listed first. The clip is then resized to cover the bucket and
cropped, as a single-shape clip is. A video that fills no bucket is skipped.

Schedule (`BucketSchedule`): epoch e shuffles each bucket's clips (seed, e, bucket), cuts them into full
global batches (a bucket's remainder waits for another epoch's shuffle) and shuffles all buckets' batches
together (seed, e). A bucket is therefore drawn in proportion to its size: every clip is seen once per
epoch and training sees the data's own mix of shapes. Uniform weights would instead repeat a small
bucket's few clips many times per epoch (overfitting them) and skew the mix towards rare shapes. Global
batch n is a pure function of (seed, n): a resumed run, every host and every grain worker compute the same
one, and host p of P reads rows [p B/P, (p+1) B/P) of it. Buckets with fewer clips than a global batch
are dropped, with a warning that counts them.
"""

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np
from absl import logging

from pyoco_jax.data.clip_sampling import ClipDraws, ClipSpec, VideoInfo, VideoTooShortError, clip_times
from pyoco_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Bucket:
    height: int
    width: int
    frames: int

    def __str__(self) -> str:
        return f"{self.height}x{self.width}x{self.frames}"

    def spec(self, base: ClipSpec) -> ClipSpec:
        """`base` (sampling, crop, flip) cut to this bucket's shape."""
        return dataclasses.replace(base, num_frames=self.frames, height=self.height, width=self.width)


def parse_buckets(value: Sequence) -> tuple[Bucket, ...]:
    """`data.buckets` as Buckets; a ValueError says what is wrong with it."""
    buckets = []
    for item in value:
        if not (
            isinstance(item, tuple | list)
            and len(item) == 3
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in item)
        ):
            raise ValueError(f"each bucket is (height, width, frames) of positive integers, got {item!r}")
        buckets.append(Bucket(*item))
    repeated = sorted({str(b) for b in buckets if buckets.count(b) > 1})
    if repeated:
        raise ValueError(f"bucket {repeated[0]} is listed twice; list each shape once")
    return tuple(buckets)


def _fills(spec: ClipSpec, info: VideoInfo, *, start: float = 0.0, end: float | None = None) -> bool:
    """Whether the video holds one clip of `spec` (its frames at its stride) within [start, end) seconds."""
    try:
        clip_times(spec, ClipDraws(), info.fps, info.frame_count, start=start, end=end)
    except VideoTooShortError:
        return False
    return True


def assign_bucket(
    buckets: Sequence[Bucket], spec: ClipSpec, info: VideoInfo, *, start: float = 0.0, end: float | None = None
) -> int | None:
    """The bucket of a video (see the module docstring), or None when it fills none of them."""
    filled = [i for i, bucket in enumerate(buckets) if _fills(bucket.spec(spec), info, start=start, end=end)]
    if not filled:
        return None
    aspect = math.log(info.width / info.height)

    def distance(i: int) -> tuple[float, int, int]:
        return abs(aspect - math.log(buckets[i].width / buckets[i].height)), -buckets[i].frames, i

    return min(filled, key=distance)


@dataclasses.dataclass(frozen=True)
class ScheduledBatch:
    bucket: int
    indices: np.ndarray  # (global batch,) source indices, in row order.
    epoch: int


class BucketSchedule:
    """Which clips make global batch n, as a pure function of (seed, n) (see the module docstring).

    `members[b]` are the source indices of bucket b's clips; `names[b]` names it in logs.
    """

    def __init__(
        self,
        members: Sequence[Sequence[int]],
        global_batch_size: int,
        *,
        seed: int,
        shuffle: bool = True,
        names: Sequence[str] | None = None,
    ):
        if global_batch_size < 1:
            raise ValueError(f"data.global_batch_size must be >= 1, got {global_batch_size}")
        self.members = tuple(np.asarray(m, np.int64) for m in members)
        self.global_batch_size = global_batch_size
        self.seed, self.shuffle = seed, shuffle
        self.names = tuple(names) if names is not None else tuple(str(b) for b in range(len(self.members)))
        self.batches = tuple(len(m) // global_batch_size for m in self.members)  # Full batches per epoch.
        self.batches_per_epoch = sum(self.batches)
        sizes = ", ".join(f"{name}: {len(m)}" for name, m in zip(self.names, self.members, strict=True))
        if not self.batches_per_epoch:
            raise UserError(
                f"no bucket holds a full global batch of {global_batch_size} clips (clips per bucket: {sizes}); "
                "lower data.global_batch_size, or use fewer, broader data.buckets"
            )
        dropped = [(name, len(m)) for name, m, n in zip(self.names, self.members, self.batches, strict=True) if not n]
        if dropped:
            logging.warning(
                "Dropped %d bucket(s) with fewer clips than a global batch of %d (%d clips in all): %s",
                len(dropped),
                global_batch_size,
                sum(count for _, count in dropped),
                ", ".join(f"{name}: {count}" for name, count in dropped),
            )

    def shares(self) -> np.ndarray:
        """The fraction of global batches each bucket gives (its clips' share, less its remainder)."""
        return np.asarray(self.batches, np.float64) / self.batches_per_epoch

    def batch(self, n: int) -> ScheduledBatch:
        """Global batch `n` (0-based, counting from the start of the run)."""
        if n < 0:
            raise ValueError(f"global batch index must be >= 0, got {n}")
        epoch, position = divmod(int(n), self.batches_per_epoch)
        sizes = tuple(len(m) for m in self.members)
        plan = _epoch_plan(sizes, self.global_batch_size, self.seed, epoch, self.shuffle)
        bucket, slot = int(plan.buckets[position]), int(plan.slots[position])
        rows = plan.clip_orders[bucket][slot * self.global_batch_size : (slot + 1) * self.global_batch_size]
        return ScheduledBatch(bucket, self.members[bucket][rows], epoch)


@dataclasses.dataclass(frozen=True)
class _EpochPlan:
    buckets: np.ndarray  # Bucket of each global batch of the epoch, in order.
    slots: np.ndarray  # Which of its bucket's batches it is.
    clip_orders: tuple[np.ndarray, ...]  # Per bucket, the order of its clips (batch k: positions [kB, (k+1)B)).


@functools.lru_cache(maxsize=2)  # The epoch being read and, at its end, the next: two orders of every clip.
def _epoch_plan(sizes: tuple[int, ...], batch_size: int, seed: int, epoch: int, shuffle: bool) -> _EpochPlan:
    """Epoch `epoch`'s batches: shuffled, or (unshuffled) each bucket's spread evenly over the epoch."""
    batches = np.asarray([size // batch_size for size in sizes])
    bucket = np.repeat(np.arange(len(sizes)), batches)
    slot = np.concatenate([np.arange(count) for count in batches])
    if shuffle:
        order = np.random.default_rng([seed % 2**64, epoch, 0]).permutation(len(bucket))
        clips = tuple(np.random.default_rng([seed % 2**64, epoch, 1, b]).permutation(n) for b, n in enumerate(sizes))
    else:
        order = np.argsort((slot + 0.5) / batches[bucket], kind="stable")
        clips = tuple(np.arange(n) for n in sizes)
    return _EpochPlan(bucket[order], slot[order], clips)
