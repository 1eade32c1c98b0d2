"""Scoring a run's samples, shared by `pyoco-eval` and in-loop evaluation (`train.eval_every`).

`sample(num, seed)` returns (uint8 videos, labels or None); the metric decides how many clips it asks
for (an FVD protocol's count, or `num` for shape metrics) and draws them in chunks of `batch`.
"""

import hashlib
import json
import os
from collections.abc import Callable

import ml_collections
import numpy as np
from etils import epath
from tqdm import tqdm

from pyoco_jax.data.loader import make_source
from pyoco_jax.evaluate.fvd import I3DFeatures, fvd, video_stats
from pyoco_jax.evaluate.fvd_protocol import check_clips, get_protocol
from pyoco_jax.evaluate.real_stats import cached_stats, stats_path
from pyoco_jax.evaluate.shape_report import check_shape_model, shape_metrics

METRICS = ("fvd", "shape")
Sampler = Callable[[int, int], tuple[np.ndarray, np.ndarray | None]]


def sample_in_chunks(sample: Sampler, num: int, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """`num` clips drawn `batch` at a time (one compiled size; chunk k uses seed + k), and their labels."""
    videos, labels = [], []
    for chunk in tqdm(range(-(-num // batch)), desc="sampling", unit="batch", disable=num <= batch):
        clips, chunk_labels = sample(batch, seed + chunk)
        videos.append(clips)
        labels.append(chunk_labels)
    return np.concatenate(videos)[:num], None if labels[0] is None else np.concatenate(labels)[:num]


def real_stats_dir(data: ml_collections.ConfigDict, override: str = "") -> str:
    """Next to the data where it has a folder; the user's cache for the embedded synthetic data."""
    return override or data.path or os.path.expanduser("~/.cache/pyoco_jax")


def dataset_name(data: ml_collections.ConfigDict) -> str:
    """The data's source and a hash of every data option, so statistics of other clips are never reused."""
    digest = hashlib.sha256(data.to_json(sort_keys=True).encode()).hexdigest()[:12]
    return f"{data.source}-{digest}"


class Evaluator:
    """One metric of one run's config; keeps I3D compiled between calls (in-loop evaluation calls it often)."""

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
        mesh=None,
    ):
        self.config, self.metric, self.num, self.batch, self.seed = config, metric, num, batch, seed
        if metric == "shape":
            check_shape_model(config)
        elif metric == "fvd":
            self.protocol = get_protocol(protocol)
            self._features = self._source = None  # Built on first use: shape-only runs never load I3D.
            self._mesh = mesh
            self._stats_dir = real_stats_dir(config.data, stats_dir)
        else:
            raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")

    def _real_clips(self, start: int) -> np.ndarray:
        if self._source is None:
            self._source = make_source(self.config.data, seed=self.seed)
        stop = min(len(self._source), start + self.protocol.num_clips)
        clips = np.stack([self._source[i]["video"] for i in range(start, stop)])
        check_clips(self.protocol, clips)
        return clips

    def _fvd_setup(self):
        if self._features is None:
            self._features = I3DFeatures(self.protocol, mesh=self._mesh)
        data = self.config.data
        path = stats_path(self._stats_dir, dataset_name(data), data.split, self.protocol.name, self.seed)
        return self._features, cached_stats(path, lambda: video_stats(self._features, self._real_clips(0)))

    def real_baseline(self) -> dict[str, float]:
        """FVD of the protocol's count of other real clips against the cached statistics: the metric's floor."""
        features, real = self._fvd_setup()
        return {"eval/fvd_real_baseline": fvd(real, video_stats(features, self._real_clips(self.protocol.num_clips)))}

    def __call__(self, sample: Sampler) -> dict[str, float]:
        """The metric's `eval/*` figures for the clips `sample` draws."""
        if self.metric == "shape":
            videos, labels = sample_in_chunks(sample, self.num, min(self.batch, self.num), self.seed)
            return {f"eval/{name}": value for name, value in shape_metrics(self.config, videos, labels).items()}
        features, real = self._fvd_setup()
        videos, _ = sample_in_chunks(sample, self.protocol.num_clips, self.batch, self.seed)
        check_clips(self.protocol, videos)
        return {"eval/fvd": fvd(real, video_stats(features, videos))}


def write_results(workdir: str, step: int, results: dict) -> epath.Path:
    """Merges `results` into <workdir>/eval/step_<N>.json (what sweep summaries read); returns the file."""
    out = epath.Path(workdir) / "eval" / f"step_{step:07d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps(previous | {"step": step, **results}, indent=2))
    return out
