"""Clips cached as VAE latents and text embeddings in ArrayRecord shards, and the source that trains from them.

`pyoco-prepare` encodes each clip once (the VAE's posterior mean and std per frame, the prompt's
CLIP embedding) so latent training never runs the VAE or text encoder. A folder holds

    index.json                      format version, shapes, scaling factor, shard list, what made them
    null_context.npy                the empty prompt's embedding (the condition dropped for guidance)
    latents-00000-of-00008.array_record ...
    latents-00000-of-00008.array_record.buckets.json   (bucketed caches) that shard's record buckets, so a
                                    resumed prepare knows them before index.json exists

A shard appears under its final name only once it is complete, so an interrupted prepare resumes by
skipping the shards that exist.

A cache of several clip shapes (data.buckets, see buckets.py) lists them in index.json as `buckets`
([height, width, frames] latent shapes, in data.buckets' order) and gives each shard entry
`record_buckets`: the bucket of each of its records, in order. Records keep their own shapes; the
source groups them by these lists without reading a record.
"""

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import serialization

from pyoco_jax.data.buckets import Bucket
from pyoco_jax.errors import UserError

INDEX_NAME = "index.json"
NULL_CONTEXT_NAME = "null_context.npy"
FORMAT_VERSION = 1


def shard_name(shard: int, num_shards: int) -> str:
    return f"latents-{shard:05d}-of-{num_shards:05d}.array_record"


def encode_record(example: Mapping[str, np.ndarray]) -> bytes:
    return serialization.msgpack_serialize({k: np.asarray(v) for k, v in example.items()})


def decode_record(data: bytes) -> dict[str, np.ndarray]:
    return serialization.msgpack_restore(data)


def write_shard(path: str | Path, records: Iterable[Mapping[str, np.ndarray]]) -> int:
    """Writes `records` to `path` atomically (a partial shard never has the final name); returns the count."""
    from array_record.python.array_record_module import ArrayRecordWriter

    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    writer = ArrayRecordWriter(str(partial), "group_size:1")
    count = 0
    try:
        for record in records:
            writer.write(encode_record(record))
            count += 1
    finally:
        writer.close()
    os.replace(partial, path)
    return count


def count_records(path: str | Path) -> int:
    """Records in the finished shard `path` (read from its footer, not by scanning)."""
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(str(path))
    try:
        return reader.num_records()
    finally:
        reader.close()


def write_index(folder: str | Path, index: Mapping[str, Any]) -> None:
    folder = Path(folder)
    partial = folder / (INDEX_NAME + ".partial")
    partial.write_text(json.dumps({"version": FORMAT_VERSION, **index}, indent=2, sort_keys=True))
    os.replace(partial, folder / INDEX_NAME)


def read_index(folder: str | Path) -> dict[str, Any]:
    file = Path(folder) / INDEX_NAME
    if not file.exists():
        raise FileNotFoundError(
            f"{folder} has no {INDEX_NAME}: it is not a latent cache. Make one with "
            "`pyoco-prepare --config CONFIG --out DIR` and point data.path at DIR."
        )
    index = json.loads(file.read_text())
    if index.get("version") != FORMAT_VERSION:
        raise ValueError(f"{file} is format version {index.get('version')}; this code reads version {FORMAT_VERSION}")
    return index


class LatentShardSource:
    """Random-access source of cached clips (grain `RandomAccessDataSource`).

    Elements: video float32 (F, h, w, c) latents already multiplied by the VAE's scaling factor,
    context float32 (T, D) when prompts were encoded, label int32, fps float32: the frame rate the clip
    was cut at (what fps conditioning sees), or `fps` (data.fps) for records that store none. With
    `sample_posterior` a latent is mean + std * eps, eps fixed per (seed, index, epoch); else the mean.
    A cache of several shapes must be read with `buckets` equal to its own (data.buckets, in any order);
    `bucket_members[b]` are then the records of `buckets[b]`.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        sample_posterior: bool = True,
        seed: int = 0,
        fps: float | None = None,
        buckets: tuple[Bucket, ...] = (),
    ):
        from grain.sources import ArrayRecordDataSource

        self.folder = Path(folder)
        self.index = read_index(self.folder)
        shards = [self.folder / shard["file"] for shard in self.index["shards"]]
        missing = [str(p) for p in shards if not p.exists()]
        if missing:
            raise FileNotFoundError(
                f"the latent cache {self.folder} is incomplete: {len(missing)} shards missing ({missing[:3]} ...); "
                "re-run pyoco-prepare with the same arguments to finish it"
            )
        self._records = ArrayRecordDataSource([str(p) for p in shards])
        self.scaling_factor = float(self.index["scaling_factor"])
        self.shift_factor = float(self.index.get("shift_factor") or 0.0)
        self.sample_posterior = sample_posterior
        self.seed = seed
        self.fps = fps
        if buckets or "buckets" in self.index:
            self.buckets = tuple(buckets)
            self.bucket_members = self._bucket_members()

    def _bucket_members(self) -> tuple[np.ndarray, ...]:
        """The records of each of `self.buckets`, from the index's per-record bucket lists."""
        cached = [Bucket(*shape) for shape in self.index.get("buckets", ())]
        if sorted(map(str, cached)) != sorted(map(str, self.buckets)):
            held = f"buckets {[str(b) for b in cached]}" if cached else "clips of one shape (no buckets)"
            wanted = f"data.buckets={tuple(map(tuple, self.index.get('buckets', ())))}"
            raise UserError(
                f"config key 'data.buckets': {[str(b) for b in self.buckets]}, but the latent cache {self.folder} "
                f"holds {held}; set {wanted} (or prepare a cache with these buckets)"
            )
        ours = [self.buckets.index(bucket) for bucket in cached]  # Cache bucket id -> position in data.buckets.
        records = []
        for shard in self.index["shards"]:
            if len(shard["record_buckets"]) != shard["num_records"]:
                raise ValueError(f"{self.folder}: shard {shard['file']} lists buckets for some of its records only")
            records += [ours[b] for b in shard["record_buckets"]]
        records = np.asarray(records, np.int64)
        return tuple(np.flatnonzero(records == b) for b in range(len(self.buckets)))

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self.read(index, epoch=0)

    def read(self, index: int, epoch: int) -> dict[str, np.ndarray]:
        record = decode_record(self._records[index])
        latent = record["mean"].astype(np.float32)
        if self.sample_posterior:
            eps = np.random.default_rng((self.seed, index, epoch)).standard_normal(latent.shape, np.float32)
            latent = latent + record["std"].astype(np.float32) * eps
        element = {
            "video": (latent - self.shift_factor) * self.scaling_factor,
            "label": np.asarray(record["label"], np.int32),
            "fps": np.asarray(self._fps(record), np.float32),
        }
        if "context" in record:
            element["context"] = record["context"].astype(np.float32)
        return element

    def _fps(self, record: Mapping[str, np.ndarray]) -> float:
        if "fps" in record:
            return float(record["fps"])
        if self.fps is None:
            raise ValueError(f"the latent cache {self.folder} stores no clip fps: pass data.fps as `fps`")
        return self.fps

    def null_context(self) -> np.ndarray | None:
        """The empty prompt's embedding, or None when the cache has no text."""
        file = self.folder / NULL_CONTEXT_NAME
        return np.load(file).astype(np.float32) if file.exists() else None
