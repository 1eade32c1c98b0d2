"""Videos (+ captions) -> cached VAE latents and text embeddings, for latent training (`pyoco-prepare`).

Each video gives `prepare.clips_per_stride` clips at each of `prepare.frame_strides` (none: the one rate
of data.frame_stride / data.target_fps), so keyframe sampling and fps conditioning see many sub-clips and
frame rates. Clip k of K starts at a random frame of the k-th K-th of the video's possible starts, drawn
from (seed, the video's path and segment, the stride) alone: the cache is deterministic and the clips of
a video start at distinct frames spread over it (a video with fewer starts than K gives one clip per
start). Centre crops, no flips. A video too short for a clip at some stride gives none at that stride
(counted in the report); each clip records its own frame rate (native fps / stride), the fps that
training conditions on.

The VAE and text encoder are those of `vae.path` and `text.path`, of whichever family their folders hold
(`convert.families`): Stable Diffusion's (per-frame AutoencoderKL latents, CLIP embeddings) or Wan 2.1's
(causal video VAE latents, 1 + 4(F - 1) frames per clip of F latent frames, normalised per channel; UMT5
embeddings of 512 tokens, zero past each prompt's own, as WanPipeline pads them).

With data.buckets (latent shapes, `pyoco_jax.data.buckets`) each video and rate goes to the bucket that
`assign_bucket` picks for the video shape encoding to it (h x w latents from h x w times the VAE's factor
pixels, f latent frames from `pixel_frames(f)` video frames); a video that fills no bucket at a rate gives no
clip there (counted as too short). A batch holds one bucket's clips: each bucket has its own pending batch,
encoded when full and at the end of each shard, so every batch has one of a few compiled shapes and the
cache stays a function of the config and the videos. The index lists the buckets and each shard's
`record_buckets`; a shard's list is also written beside it (`<shard>.buckets.json`, with the clip settings)
before the shard gets its final name, so a resumed prepare knows the buckets of the shards it skips.

Clips are encoded in batches sharded over every local device and written as ArrayRecord shards
(`pyoco_jax.data.latents`). Shard s holds the clips of videos [s * n / S, (s + 1) * n / S); a shard that
already exists is skipped, so re-running an interrupted prepare finishes it; a cache (or a finished shard)
made with other clip settings is refused rather than mixed.
"""

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pyoco_jax.data import latents
from pyoco_jax.data.buckets import Bucket, assign_bucket, parse_buckets
from pyoco_jax.data.clip_sampling import ClipDraws, ClipSpec, VideoTooShortError
from pyoco_jax.data.decode import decode_clip, probe_video
from pyoco_jax.data.video_source import VideoClipSource
from pyoco_jax.data.video_sources import make_video_source
from pyoco_jax.errors import ConfigError, UserError
from pyoco_jax.sample.latent_vae import LatentVAE, load_latent_vae
from pyoco_jax.sample.text import PromptEncoder, load_prompt_encoder

BUCKETS_SUFFIX = ".buckets.json"  # Beside a shard of a bucketed cache: its records' buckets and clip settings.


@dataclasses.dataclass
class PrepareReport:
    """What one call did (finished shards that it skipped are not counted)."""

    examples: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    bad_files: int = 0
    too_short: dict[str, int] = dataclasses.field(default_factory=dict)  # Rate -> videos too short for a clip.
    clips_per_bucket: dict[str, int] = dataclasses.field(default_factory=dict)  # Each of data.buckets -> clips.
    seconds: float = 0.0

    @property
    def seconds_per_clip(self) -> float:
        """Wall time per clip encoded in this call (0 when every shard already existed)."""
        return self.seconds / self.examples if self.examples else 0.0


def check_config(config: ml_collections.ConfigDict) -> None:
    """The `prepare` keys make sense (a clip count and distinct positive integer strides)."""
    clips, strides = config.prepare.clips_per_stride, tuple(config.prepare.frame_strides)
    if not (isinstance(clips, int) and not isinstance(clips, bool) and clips >= 1):
        raise ConfigError(f"config key 'prepare.clips_per_stride': must be an integer >= 1, got {clips!r}")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in strides):
        raise ConfigError(
            f"config key 'prepare.frame_strides': must be integers >= 1 (native frames between clip frames), "
            f"got {strides!r}; () takes data.frame_stride / data.target_fps"
        )
    if len(set(strides)) != len(strides):
        raise ConfigError(f"config key 'prepare.frame_strides': {strides!r} repeats a stride; list each once")


def pixel_data_config(
    config: ml_collections.ConfigDict, videos: str, metadata: str, vae: LatentVAE
) -> ml_collections.ConfigDict:
    """The video-folder data config whose clips encode to `config.data`'s latents through `vae`."""
    data = config.data.copy_and_resolve_references()
    data.source, data.path, data.metadata, data.channels = "video_folder", videos, metadata, 3
    data.resolution = config.data.resolution * vae.spatial_factor
    data.num_frames = vae.pixel_frames(config.data.num_frames)
    data.temporal_sampling, data.crop, data.flip = "random", "center", False
    return data


def pixel_buckets(buckets: Sequence[Bucket], vae: LatentVAE) -> tuple[Bucket, ...]:
    """Each latent bucket as the video shape that `vae` encodes to it."""
    side = vae.spatial_factor
    return tuple(Bucket(b.height * side, b.width * side, vae.pixel_frames(b.frames)) for b in buckets)


def clip_rates(spec: ClipSpec, frame_strides: Sequence[int]) -> dict[str, ClipSpec]:
    """Name -> clip spec of each rate the cache stores: one per stride, or `spec`'s own rate for ()."""
    if not frame_strides:
        name = f"target_fps={spec.target_fps:g}" if spec.target_fps > 0 else f"frame_stride={spec.frame_stride}"
        return {name: spec}
    return {f"frame_stride={s}": dataclasses.replace(spec, frame_stride=int(s), target_fps=0.0) for s in frame_strides}


def clip_draws(seed: int, video: str, rate: str, clips: int) -> list[ClipDraws]:
    """Start draws of the `clips` clips of `video` at `rate`: clip k starts in the k-th part of the window."""
    digest = hashlib.sha256(f"{video}\n{rate}".encode()).digest()
    starts = np.random.default_rng([seed % 2**64, int.from_bytes(digest[:16], "little")]).random(clips)
    return [ClipDraws(start=float(u), part=k, parts=clips) for k, u in enumerate(starts)]


def _video_clips(
    source: VideoClipSource,
    index: int,
    videos: str,
    rates: Mapping[str, ClipSpec],
    buckets: Sequence[Bucket],
    clips: int,
    seed: int,
) -> tuple[list[dict], list[str]]:
    """(the clips of video `index` at every rate it is long enough for, the rates it is too short for).

    With pixel `buckets` each rate's clips take the shape of the bucket the video gets at that rate."""
    record = source.record(index)
    identity = f"{os.path.relpath(record.name, videos)}|{record.start}|{record.end}"
    info = probe_video(record.media) if buckets else None
    out, short = [], []
    for rate, spec in rates.items():
        bucket = 0  # Unbucketed: every clip in one shape.
        if buckets:
            bucket = assign_bucket(buckets, spec, info, start=record.start, end=record.end)
            if bucket is None:
                short.append(rate)
                continue
            spec = buckets[bucket].spec(spec)
        taken = set()
        for draws in clip_draws(seed, identity, rate, clips):
            try:
                clip = decode_clip(record.media, spec, draws, start=record.start, end=record.end)
            except VideoTooShortError:
                short.append(rate)  # The length check does not depend on the draw: no clip fits at this rate.
                break
            if clip.first_frame in taken:  # Fewer start frames than clips: each start once.
                continue
            taken.add(clip.first_frame)
            out.append(
                {
                    "video": clip.frames,
                    "label": record.label,
                    "caption": record.caption,
                    "fps": clip.fps,
                    "first_frame": clip.first_frame,
                    "bucket": bucket,
                }
            )
    return out, short


def _clips(
    source: VideoClipSource,
    indices: range,
    videos: str,
    rates: Mapping[str, ClipSpec],
    buckets: Sequence[Bucket],
    config: ml_collections.ConfigDict,
    report: PrepareReport,
) -> Iterator[dict]:
    """The clips of videos `indices`; bad files are logged and skipped, short videos counted per rate."""
    clips_per_stride = config.prepare.clips_per_stride
    for index in indices:
        try:
            clips, short = _video_clips(source, index, videos, rates, buckets, clips_per_stride, config.seed)
        except Exception as err:  # noqa: BLE001 -- one bad file is that file's problem
            report.bad_files += 1
            logging.warning("Skipping a bad video: %s: %s: %s", source.name(index), type(err).__name__, err)
            continue
        for rate in short:
            report.too_short[rate] = report.too_short.get(rate, 0) + 1
        yield from clips


def _bucket_batches(items: Iterable[dict], size: int) -> Iterator[list[dict]]:
    """Batches of `size` items of one `bucket` each, as they fill; then each bucket's remainder, in bucket order."""
    pending: dict[int, list[dict]] = {}
    for item in items:
        batch = pending.setdefault(item["bucket"], [])
        batch.append(item)
        if len(batch) == size:
            yield pending.pop(item["bucket"])
    for bucket in sorted(pending):
        yield pending[bucket]


def _encoders(config: ml_collections.ConfigDict) -> tuple[LatentVAE, PromptEncoder | None]:
    """The VAE and (with `text.path`) the prompt encoder, of whichever family their folders hold."""
    vae = load_latent_vae(config, "pyoco-prepare (--config.vae.path=DIR: a VAE folder or a converted pipeline)")
    return vae, load_prompt_encoder(config) if config.text.path else None


def _padded(rows: np.ndarray, size: int) -> np.ndarray:
    """Rows padded (by repeating the last) to `size`, so every batch has the one compiled shape."""
    return np.concatenate([rows, np.repeat(rows[-1:], size - len(rows), axis=0)]) if len(rows) < size else rows


def _refuse_other_clips(out: Path, old: Mapping[str, object], new: Mapping[str, object]) -> None:
    """Clips of other settings in one cache would mix: refuse them."""
    if dict(old) != dict(new):
        raise UserError(
            f"the latent cache {out} was prepared with {dict(old)}, this config asks for {dict(new)}: "
            "use a new --out folder (or delete this one) to prepare with other settings"
        )


def _check_same_clips(out: Path, settings: Mapping[str, object]) -> None:
    """A cache re-run with other clip settings (buckets or none among them) would mix clips of both: refuse it."""
    if not (out / latents.INDEX_NAME).exists():
        return
    index = latents.read_index(out)
    keys = [*settings, *(() if "buckets" in settings else ("buckets",))]  # Unbucketed: the cache must have none.
    _refuse_other_clips(out, {key: index.get(key) for key in keys}, {key: settings.get(key) for key in keys})


def _finished_shard(out: Path, name: str, settings: Mapping[str, object]) -> dict:
    """The index entry of shard `name`, which an earlier run finished; refused if it had other clip settings."""
    entry = {"file": name, "num_records": latents.count_records(out / name)}
    beside = out / (name + BUCKETS_SUFFIX)
    if beside.exists():
        made = json.loads(beside.read_text())
        _refuse_other_clips(out, made["settings"], settings)
        entry["record_buckets"] = made["record_buckets"]
    elif "buckets" in settings:  # Written without buckets.
        _refuse_other_clips(out, {**settings, "buckets": None}, settings)
    return entry


def prepare(
    config: ml_collections.ConfigDict,
    videos: str,
    out: str | Path,
    *,
    metadata: str = "",
    num_shards: int = 1,
    batch_size: int = 0,
) -> PrepareReport:
    """Encodes the clips of the video folder `videos` into the latent cache `out` (see module doc)."""
    begin = time.perf_counter()
    check_config(config)
    out = Path(out)
    vae, encode_text = _encoders(config)
    source = make_video_source(pixel_data_config(config, videos, metadata, vae), with_captions=True)
    rates = clip_rates(source.spec, config.prepare.frame_strides)
    buckets = parse_buckets(config.data.buckets)
    video_buckets = pixel_buckets(buckets, vae)
    latent_shape = [config.data.num_frames, config.data.resolution, config.data.resolution, vae.channels]
    settings = {
        "clip_rates": list(rates),
        "clips_per_stride": config.prepare.clips_per_stride,
        "seed": config.seed,
        "latent_shape": latent_shape,
    }
    if buckets:
        settings["buckets"] = [[b.height, b.width, b.frames] for b in buckets]
    _check_same_clips(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    devices = jax.local_devices()
    mesh = Mesh(np.asarray(devices), ("batch",))
    rows = NamedSharding(mesh, PartitionSpec("batch"))
    batch_size = batch_size or len(devices)
    batch_size = -(-batch_size // len(devices)) * len(devices)  # A multiple of the device count.
    posterior = vae.posterior_fn()
    null_context = None
    if encode_text is not None:
        null_context = encode_text([""])[0]
        np.save(out / latents.NULL_CONTEXT_NAME, null_context.astype(np.float16))

    report = PrepareReport(clips_per_bucket=dict.fromkeys(map(str, buckets), 0))
    total = len(source)
    shards = []
    for shard in range(num_shards):
        indices = range(shard * total // num_shards, (shard + 1) * total // num_shards)
        name = latents.shard_name(shard, num_shards)
        if (out / name).exists():
            report.shards_skipped += 1
            shards.append(_finished_shard(out, name, settings))
            continue
        record_buckets = []

        def records(indices=indices, record_buckets=record_buckets, name=name):
            clips = _clips(source, indices, videos, rates, video_buckets, config, report)
            for batch in _bucket_batches(clips, batch_size):
                video = jax.device_put(_padded(np.stack([e["video"] for e in batch]), batch_size), rows)
                pixels = video.astype(jnp.float32) / 127.5 - 1.0
                mean, std = (np.asarray(a)[: len(batch)] for a in posterior(pixels))
                contexts = encode_text([e["caption"] or "" for e in batch]) if encode_text else None
                for i, element in enumerate(batch):
                    record = {
                        "mean": mean[i].astype(np.float16),
                        "std": std[i].astype(np.float16),
                        "label": np.int32(element["label"]),
                        "fps": np.float32(element["fps"]),
                        "first_frame": np.int32(element["first_frame"]),
                    }
                    if contexts is not None:
                        record["context"] = contexts[i].astype(np.float16)
                    record_buckets.append(element["bucket"])
                    yield record
            # Runs when write_shard asks past the last record, before the shard gets its final name: a
            # finished shard always has its list beside it.
            if buckets:
                made = {"settings": settings, "record_buckets": record_buckets}
                (out / (name + BUCKETS_SUFFIX)).write_text(json.dumps(made))

        count = latents.write_shard(out / name, records())
        entry = {"file": name, "num_records": count}
        if buckets:
            entry["record_buckets"] = record_buckets
            for bucket in record_buckets:
                report.clips_per_bucket[str(buckets[bucket])] += 1
        shards.append(entry)
        report.examples += count
        report.shards_written += 1
        logging.info("wrote shard %d/%d (%s, %d clips)", shard + 1, num_shards, name, count)
    wanted = "any of data.buckets" if buckets else f"a {config.data.num_frames}-frame clip"
    for rate, count in report.too_short.items():
        logging.warning("%d videos are too short for %s at %s: no clips from them there", count, wanted, rate)
    latents.write_index(
        out,
        {
            **settings,
            "shards": shards,
            "num_examples": sum(shard["num_records"] for shard in shards),
            "context_shape": None if null_context is None else list(null_context.shape),
            "scaling_factor": vae.scaling_factor,
            "shift_factor": vae.shift_factor,
            "vae": str(config.vae.path),
            "text_encoder": str(config.text.path),
            "videos": str(videos),
        },
    )
    report.seconds = time.perf_counter() - begin
    return report
