"""Videos (+ captions) -> cached VAE latents and text embeddings, for latent training (`pyoco-prepare`).

Each video gives `prepare.clips_per_stride` clips at each of `prepare.frame_strides` (none: the one rate
of data.frame_stride / data.target_fps), so keyframe sampling and fps conditioning see many sub-clips and
frame rates. Clip k of K starts at a random frame of the k-th K-th of the video's possible starts, drawn
from (seed, the video's path and segment, the stride) alone: the cache is deterministic and the clips of
a video start at distinct frames spread over it (a video with fewer starts than K gives one clip per
start). Centre crops, no flips. A video too short for a clip at some stride gives none at that stride
(counted in the report); each clip records its own frame rate (native fps / stride), the fps that
training conditions on.

Clips are encoded in batches sharded over every local device and written as ArrayRecord shards
(`pyoco_jax.data.latents`). Shard s holds the clips of videos [s * n / S, (s + 1) * n / S); a shard that
already exists is skipped, so re-running an interrupted prepare finishes it.
"""

import dataclasses
import hashlib
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pyoco_jax.data import latents
from pyoco_jax.data.clip_sampling import ClipDraws, ClipSpec, VideoTooShortError
from pyoco_jax.data.decode import decode_clip
from pyoco_jax.data.video_source import VideoClipSource
from pyoco_jax.data.video_sources import make_video_source
from pyoco_jax.errors import ConfigError


@dataclasses.dataclass
class PrepareReport:
    """What one call did (finished shards that it skipped are not counted)."""

    examples: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    bad_files: int = 0
    too_short: dict[str, int] = dataclasses.field(default_factory=dict)  # Rate -> videos too short for a clip.
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
    config: ml_collections.ConfigDict, videos: str, metadata: str, factor: int
) -> ml_collections.ConfigDict:
    """The video-folder data config whose clips encode to `config.data`'s latents (side x `factor`)."""
    data = config.data.copy_and_resolve_references()
    data.source, data.path, data.metadata, data.channels = "video_folder", videos, metadata, 3
    data.resolution = config.data.resolution * factor
    data.temporal_sampling, data.crop, data.flip = "random", "center", False
    return data


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
    source: VideoClipSource, index: int, videos: str, rates: Mapping[str, ClipSpec], clips: int, seed: int
) -> tuple[list[dict], list[str]]:
    """(the clips of video `index` at every rate it is long enough for, the rates it is too short for)."""
    record = source.record(index)
    identity = f"{os.path.relpath(record.name, videos)}|{record.start}|{record.end}"
    out, short = [], []
    for rate, spec in rates.items():
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
                }
            )
    return out, short


def _clips(
    source: VideoClipSource,
    indices: range,
    videos: str,
    rates: Mapping[str, ClipSpec],
    config: ml_collections.ConfigDict,
    report: PrepareReport,
) -> Iterator[dict]:
    """The clips of videos `indices`; bad files are logged and skipped, short videos counted per rate."""
    for index in indices:
        try:
            clips, short = _video_clips(source, index, videos, rates, config.prepare.clips_per_stride, config.seed)
        except Exception as err:  # noqa: BLE001 -- one bad file is that file's problem
            report.bad_files += 1
            logging.warning("Skipping a bad video: %s: %s: %s", source.name(index), type(err).__name__, err)
            continue
        for rate in short:
            report.too_short[rate] = report.too_short.get(rate, 0) + 1
        yield from clips


def _chunks(items: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _encoders(config: ml_collections.ConfigDict):
    from pyoco_jax.convert.vae import load_vae

    if not config.vae.path:
        raise ConfigError(
            "config key 'vae.path' is empty: set it to a diffusers VAE folder or a converted pipeline "
            "(--config.vae.path=DIR)"
        )
    vae = load_vae(config.vae.path, dtype=config.vae.dtype, allow_pickle=config.vae.allow_pickle)
    if not config.text.path:
        return vae, None, None
    from pyoco_jax.convert.clip import load_text_encoder, load_tokenizer

    return vae, load_text_encoder(config.text.path), load_tokenizer(config.text.path)


def _padded(rows: np.ndarray, size: int) -> np.ndarray:
    """Rows padded (by repeating the last) to `size`, so every batch has the one compiled shape."""
    return np.concatenate([rows, np.repeat(rows[-1:], size - len(rows), axis=0)]) if len(rows) < size else rows


def _check_same_clips(out: Path, settings: Mapping[str, object]) -> None:
    """A cache re-run with other clip settings would mix clips of both: refuse it."""
    if not (out / latents.INDEX_NAME).exists():
        return
    index = latents.read_index(out)
    old = {key: index.get(key) for key in settings}
    if old != dict(settings):
        raise ValueError(
            f"the latent cache {out} was prepared with {old}, this config asks for {dict(settings)}: "
            "use a new --out folder (or delete this one) to prepare with other settings"
        )


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
    vae, text_encoder, tokenizer = _encoders(config)
    source = make_video_source(
        pixel_data_config(config, videos, metadata, vae.config.downsampling_factor), with_captions=True
    )
    rates = clip_rates(source.spec, config.prepare.frame_strides)
    latent_shape = [config.data.num_frames, config.data.resolution, config.data.resolution, vae.config.latent_channels]
    settings = {
        "clip_rates": list(rates),
        "clips_per_stride": config.prepare.clips_per_stride,
        "seed": config.seed,
        "latent_shape": latent_shape,
    }
    _check_same_clips(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    devices = jax.local_devices()
    mesh = Mesh(np.asarray(devices), ("batch",))
    rows = NamedSharding(mesh, PartitionSpec("batch"))
    batch_size = batch_size or len(devices)
    batch_size = -(-batch_size // len(devices)) * len(devices)  # A multiple of the device count.
    vae_graph, vae_state = nnx.split(vae)

    @jax.jit
    def encode_video(state, video):
        posterior = nnx.merge(vae_graph, state).encode_video(video.astype(jnp.float32) / 127.5 - 1.0)
        return posterior.mean, posterior.std

    encode_text = None
    null_context = None
    if text_encoder is not None:
        from pyoco_jax.convert.clip import encode_prompts

        def encode_text(prompts: list[str]) -> np.ndarray:
            skip = int(config.text.skip_last_layers)
            return np.asarray(encode_prompts(text_encoder, tokenizer, prompts, skip_last_layers=skip))

        null_context = encode_text([""])[0]
        np.save(out / latents.NULL_CONTEXT_NAME, null_context.astype(np.float16))

    report = PrepareReport()
    total = len(source)
    shards = []
    for shard in range(num_shards):
        indices = range(shard * total // num_shards, (shard + 1) * total // num_shards)
        name = latents.shard_name(shard, num_shards)
        if (out / name).exists():
            report.shards_skipped += 1
            shards.append({"file": name, "num_records": latents.count_records(out / name)})
            continue

        def records(indices=indices):
            for batch in _chunks(_clips(source, indices, videos, rates, config, report), batch_size):
                video = jax.device_put(_padded(np.stack([e["video"] for e in batch]), batch_size), rows)
                mean, std = (np.asarray(a)[: len(batch)] for a in encode_video(vae_state, video))
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
                    yield record

        count = latents.write_shard(out / name, records())
        shards.append({"file": name, "num_records": count})
        report.examples += count
        report.shards_written += 1
        logging.info("wrote shard %d/%d (%s, %d clips)", shard + 1, num_shards, name, count)
    for rate, count in report.too_short.items():
        logging.warning(
            "%d videos are too short for a %d-frame clip at %s: no clips from them there",
            count,
            config.data.num_frames,
            rate,
        )
    latents.write_index(
        out,
        {
            **settings,
            "shards": shards,
            "num_examples": sum(shard["num_records"] for shard in shards),
            "context_shape": None if null_context is None else list(null_context.shape),
            "scaling_factor": vae.config.scaling_factor,
            "shift_factor": vae.config.shift_factor,
            "vae": str(config.vae.path),
            "text_encoder": str(config.text.path),
            "videos": str(videos),
        },
    )
    report.seconds = time.perf_counter() - begin
    return report
