"""Videos (+ captions) -> cached VAE latents and text embeddings, for latent training (`pyoco-prepare`).

The clips are read by the real-video sources (centred clips, centre crops, no flips: the cache is
deterministic), encoded in batches sharded over every local device, and written as ArrayRecord
shards (`pyoco_jax.data.latents`). Shard s holds examples [s * n / S, (s + 1) * n / S); a shard that
already exists is skipped, so re-running an interrupted prepare finishes it.
"""

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pyoco_jax.data import latents
from pyoco_jax.data.video_sources import make_video_source


@dataclasses.dataclass
class PrepareReport:
    examples: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    bad_files: int = 0
    seconds: float = 0.0

    @property
    def seconds_per_clip(self) -> float:
        """Wall time per clip encoded in this call (0 when every shard already existed)."""
        return self.seconds / self.examples if self.examples else 0.0


def pixel_data_config(config: ml_collections.ConfigDict, videos: str, metadata: str, factor: int):
    """The video-folder data config whose clips encode to `config.data`'s latents (side x `factor`)."""
    data = config.data.copy_and_resolve_references()
    data.source, data.path, data.metadata, data.channels = "video_folder", videos, metadata, 3
    data.resolution = config.data.resolution * factor
    data.temporal_sampling, data.crop, data.flip = "center", "center", False
    return data


def _encoders(config: ml_collections.ConfigDict):
    from pyoco_jax.convert.vae import load_vae

    if not config.vae.path:
        raise ValueError("vae.path is empty: set it to a diffusers VAE folder (or a Stable Diffusion pipeline folder)")
    vae = load_vae(config.vae.path, dtype=config.vae.dtype, allow_pickle=config.vae.allow_pickle)
    if not config.text.path:
        return vae, None, None
    from pyoco_jax.convert.clip import load_text_encoder, load_tokenizer

    return vae, load_text_encoder(config.text.path), load_tokenizer(config.text.path)


def _batches(source, indices: range, batch_size: int) -> Iterator[list[dict]]:
    for begin in range(indices.start, indices.stop, batch_size):
        yield [source[i] for i in range(begin, min(begin + batch_size, indices.stop))]


def _padded(rows: np.ndarray, size: int) -> np.ndarray:
    """Rows padded (by repeating the last) to `size`, so every batch has the one compiled shape."""
    return np.concatenate([rows, np.repeat(rows[-1:], size - len(rows), axis=0)]) if len(rows) < size else rows


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
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vae, text_encoder, tokenizer = _encoders(config)
    source = make_video_source(
        pixel_data_config(config, videos, metadata, vae.config.downsampling_factor), with_captions=True
    )
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
        shards.append({"file": name, "num_records": len(indices)})
        if (out / name).exists():
            report.shards_skipped += 1
            continue

        def records(indices=indices):
            for batch in _batches(source, indices, batch_size):
                video = jax.device_put(_padded(np.stack([e["video"] for e in batch]), batch_size), rows)
                mean, std = (np.asarray(a)[: len(batch)] for a in encode_video(vae_state, video))
                contexts = encode_text([e.get("caption") or "" for e in batch]) if encode_text else None
                for i, element in enumerate(batch):
                    report.bad_files += int(element["bad_files"])
                    record = {
                        "mean": mean[i].astype(np.float16),
                        "std": std[i].astype(np.float16),
                        "label": np.int32(element["label"]),
                        "fps": np.float32(element["fps"]),
                    }
                    if contexts is not None:
                        record["context"] = contexts[i].astype(np.float16)
                    yield record

        report.examples += latents.write_shard(out / name, records())
        report.shards_written += 1
        logging.info("wrote shard %d/%d (%s)", shard + 1, num_shards, name)
    latent_shape = [config.data.num_frames, config.data.resolution, config.data.resolution, vae.config.latent_channels]
    latents.write_index(
        out,
        {
            "shards": shards,
            "num_examples": total,
            "latent_shape": latent_shape,
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
