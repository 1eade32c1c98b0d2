"""Scoring a run's samples, shared by `pyoco-eval` and in-loop evaluation (`train.eval_every`).

`sample(num, seed)` returns (uint8 videos, labels or None); the metric decides how many clips it asks
for (an FVD protocol's count, or `num` for the others) and draws them in chunks of `batch`. A sampler
conditions clip j of every chunk on `sample.prompts[j % len(prompts)]` (as `sampling_inputs` cycles
them), which is how CLIPSIM pairs each clip with its prompt.

Metrics:
  fvd      Frechet Video Distance against the run's real clips under a named protocol. For a latent run
           the real clips are the cache's latents (posterior means) decoded by the run's own decoder, so
           the score measures the diffusion model, not the VAE's reconstruction. Real clips have the shape
           samples are drawn at (data.num_frames x data.resolution^2): for a run with data.buckets, a video
           folder's clips are cut to it and a bucketed cache gives its clips of that bucket.
  clipsim  mean over clips of the frames' mean CLIP image-text cosine similarity with their prompt
           (MSR-VTT protocol), with a CLIPModel folder (`train.eval_clip`).
  is       Inception Score over the synthetic shapes' classifier (`inception_score.py` says why not C3D).
  shape    the synthetic shapes' accuracy and colour drift.
"""

import hashlib
import json
import os
from collections.abc import Callable

import ml_collections
import numpy as np
from etils import epath
from tqdm import tqdm

from pyoco_jax.data.buckets import Bucket
from pyoco_jax.data.loader import make_source
from pyoco_jax.errors import UserError
from pyoco_jax.evaluate.fvd import I3DFeatures, fvd, video_stats
from pyoco_jax.evaluate.fvd_protocol import check_clips, get_protocol
from pyoco_jax.evaluate.inception_score import inception_score_interval
from pyoco_jax.evaluate.real_stats import cached_stats, stats_path
from pyoco_jax.evaluate.shape_report import check_shape_model, shape_classifier, shape_metrics
from pyoco_jax.video_range import to_uint8

METRICS = ("fvd", "clipsim", "is", "shape")
Sampler = Callable[[int, int], tuple[np.ndarray, np.ndarray | None]]


def sample_in_chunks(sample: Sampler, num: int, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """`num` clips drawn `batch` at a time (one compiled size; chunk k uses seed + k), and their labels."""
    videos, labels = [], []
    for chunk in tqdm(range(-(-num // batch)), desc="sampling", unit="batch", disable=num <= batch):
        clips, chunk_labels = sample(batch, seed + chunk)
        videos.append(clips)
        labels.append(chunk_labels)
    return np.concatenate(videos)[:num], None if labels[0] is None else np.concatenate(labels)[:num]


def chunk_prompts(prompts: tuple[str, ...], num: int, batch: int) -> list[str]:
    """The prompt of each of `num` clips drawn `batch` at a time, each chunk cycling `prompts` from its start."""
    return [prompts[(index % batch) % len(prompts)] for index in range(num)]


def real_stats_dir(data: ml_collections.ConfigDict, override: str = "") -> str:
    """Next to the data where it has a folder; the user's cache for the embedded synthetic data."""
    return override or data.path or os.path.expanduser("~/.cache/pyoco_jax")


def dataset_name(config: ml_collections.ConfigDict) -> str:
    """The data's source and a hash of every data option (and, for latents, the decoder), so statistics of
    other clips are never reused."""
    identity = config.data.to_json(sort_keys=True)
    if config.data.source == "latents":
        identity += json.dumps([config.vae.path, config.vae.video_decoder])
    return f"{config.data.source}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


class Evaluator:
    """One metric of one run's config; keeps its networks compiled between calls (in-loop evaluation calls it
    often) and builds each on first use, so a metric never loads another's weights."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        metric: str,
        *,
        protocol: str = "fvd256_8f",
        num: int = 64,
        batch: int = 32,
        seed: int = 0,
        stats_dir: str = "",
        clip_path: str = "",
        mesh=None,
    ):
        if metric not in METRICS:
            raise UserError(f"unknown metric {metric!r}; choose one of {METRICS}")
        self.config, self.metric, self.num, self.batch, self.seed = config, metric, num, batch, seed
        self._built = None  # The metric's network(s), built on first use.
        self._source = None
        self._real_indices = None  # The source's indices of clips of the sampled shape.
        if metric in ("shape", "is"):
            check_shape_model(config)
        elif metric == "clipsim":
            if not clip_path:
                raise UserError("CLIPSIM needs a transformers CLIPModel folder: pass --clip or train.eval_clip")
            self.prompts = tuple(config.sample.prompts)
            if not any(self.prompts):
                raise UserError(
                    "CLIPSIM needs prompts: set sample.prompts (e.g. --config.sample.prompts=\"('a cat',)\")"
                )
            self._clip_path = clip_path
        else:
            self.protocol = get_protocol(protocol)
            self._mesh = mesh
            self._stats_dir = real_stats_dir(config.data, stats_dir)

    def _network(self):
        if self._built is None:
            if self.metric == "fvd":
                self._built = I3DFeatures(self.protocol, mesh=self._mesh)
            elif self.metric == "clipsim":
                from pyoco_jax.evaluate.clipsim import ClipScorer  # Only CLIPSIM loads a CLIP model.

                self._built = ClipScorer(self._clip_path)
            else:
                self._built = shape_classifier(self.config)
        return self._built

    def _real_clips(self, start: int) -> np.ndarray:
        """The protocol's count of real clips from index `start` as uint8 pixels (latents decoded and quantised
        exactly as samples are)."""
        if self._source is None:
            self._source, self._real_indices = self._real_source()
        count = self.protocol.num_clips
        if len(self._real_indices) < start + count:
            raise UserError(
                f"FVD protocol {self.protocol.name} needs {count} real clips from index {start}, but the data has "
                f"{len(self._real_indices)}; pick a protocol with fewer clips (fvd<clips>_{self.protocol.num_frames}f)"
            )
        clips = np.stack([self._source[int(i)]["video"] for i in self._real_indices[start : start + count]])
        if self.config.data.source == "latents":
            from pyoco_jax.sample.decode import make_latent_decoder

            decode = make_latent_decoder(self.config)
            clips = np.concatenate([to_uint8(decode(clips[i : i + self.batch])) for i in range(0, count, self.batch)])
        check_clips(self.protocol, clips)
        return clips

    def _real_source(self):
        """(the data source, the indices of its clips of the sampled shape), which stack into one array."""
        data = self.config.data.copy_and_resolve_references()
        data.sample_posterior = False  # Latent clips: the posterior means, as the encoder saw the videos.
        if data.source != "latents":
            data.buckets = ()  # Videos cut to the sampled shape.
        source = make_source(data, seed=self.seed)
        if not data.buckets:
            return source, np.arange(len(source))
        sampled = Bucket(data.resolution, data.resolution, data.num_frames)  # A cache's records keep their shapes.
        if sampled not in source.buckets:
            raise UserError(
                f"FVD compares samples of data.resolution^2 x data.num_frames = {sampled} latents with real clips "
                f"of that shape, but the latent cache {data.path} has buckets {[str(b) for b in source.buckets]} "
                "only; set data.resolution and data.num_frames to one of them (or prepare a cache with that bucket)"
            )
        return source, source.bucket_members[source.buckets.index(sampled)]

    def real_stats(self):
        """The FVD protocol's statistics of real clips, fitted once and cached."""
        path = stats_path(
            self._stats_dir, dataset_name(self.config), self.config.data.split, self.protocol.name, self.seed
        )
        return cached_stats(path, lambda: video_stats(self._network(), self._real_clips(0)))

    def features(self, videos: np.ndarray) -> np.ndarray:
        """The FVD protocol's I3D features (N, 400) of `videos` (for statistics pooled across runs)."""
        return self._network()(videos)

    def real_baseline(self) -> dict[str, float]:
        """FVD of the protocol's count of other real clips against the cached statistics: the metric's floor."""
        if self.metric != "fvd":
            raise UserError("a real baseline is measured for --metric fvd only")
        real = self.real_stats()
        return {
            "eval/fvd_real_baseline": fvd(real, video_stats(self._network(), self._real_clips(self.protocol.num_clips)))
        }

    def __call__(self, sample: Sampler) -> dict[str, float]:
        """The metric's `eval/*` figures for the clips `sample` draws."""
        if self.metric == "fvd":
            real = self.real_stats()
            videos, _ = sample_in_chunks(sample, self.protocol.num_clips, self.batch, self.seed)
            check_clips(self.protocol, videos)
            return {"eval/fvd": fvd(real, video_stats(self._network(), videos))}
        videos, labels = sample_in_chunks(sample, self.num, self.batch, self.seed)
        if self.metric == "clipsim":
            scores = self._network()(videos, chunk_prompts(self.prompts, self.num, self.batch))
            from pyoco_jax.evaluate.clipsim import summary

            score, half_width = summary(scores)
            return {"eval/clipsim": score, "eval/clipsim_ci95": half_width}
        if self.metric == "is":
            score, low, high = inception_score_interval(self._network().clip_probabilities(videos), seed=self.seed)
            return {"eval/is": score, "eval/is_low95": low, "eval/is_high95": high}
        metrics = shape_metrics(self.config, videos, labels, self._network())
        return {f"eval/{name}": value for name, value in metrics.items()}


def write_results(workdir: str, step: int, results: dict) -> epath.Path:
    """Merges `results` into <workdir>/eval/step_<N>.json (what sweep summaries read); returns the file."""
    out = epath.Path(workdir) / "eval" / f"step_{step:07d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps(previous | {"step": step, **results}, indent=2))
    return out
