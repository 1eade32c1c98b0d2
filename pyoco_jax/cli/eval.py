"""`pyoco-eval --workdir DIR [--step N] --metric fvd|shape [--protocol fvd256_8f] [--num 64] [--config.key=value ...]`.

Samples from a checkpoint of a run and scores the samples; prints the figures and writes them to
DIR/eval/step_<N>.json. `fvd` follows a named protocol (`pyoco_jax.evaluate.fvd_protocol`): it samples the
protocol's clip count and compares their I3D features with real clips of the run's data, whose statistics
are fitted once and cached (next to the data, or in ~/.cache/pyoco_jax for the embedded synthetic data).
`shape` is the synthetic shapes' accuracy and colour drift.
"""

import hashlib
import json
import os

import numpy as np
from absl import flags
from etils import epath

from pyoco_jax.cli.common import absolute, config_overrides, run_cli

METRICS = ("fvd", "shape")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding checkpoints/.", required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_METRIC = flags.DEFINE_enum("metric", "fvd", METRICS, "What to measure.")
_PROTOCOL = flags.DEFINE_string("protocol", "fvd256_8f", "FVD protocol (see pyoco_jax/evaluate/fvd_protocol.py).")
_NUM = flags.DEFINE_integer("num", 64, "Clips sampled for --metric shape.", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch", 32, "Clips sampled at once.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (and the real clips' draw for FVD).")
_STATS_DIR = flags.DEFINE_string("stats_dir", "", "Where real FVD statistics are cached (default: see above).")
_REAL_BASELINE = flags.DEFINE_bool(
    "real_baseline",
    False,
    "FVD of other real clips (the protocol's count, after those in the statistics) instead of "
    "samples: the floor the metric reaches on this data.",
)


def sample_in_chunks(run, num: int, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """`num` clips sampled `batch` at a time (one compiled size; chunk k uses seed + k), and their labels."""
    from tqdm import tqdm

    videos, labels = [], []
    for chunk in tqdm(range(-(-num // batch)), desc="sampling", unit="batch"):
        clips, inputs = run.sample(batch, seed=seed + chunk)
        videos.append(clips)
        labels.append(inputs["labels"])
    kept = np.concatenate(videos)[:num]
    return kept, None if labels[0] is None else np.concatenate(labels)[:num]


def real_stats_dir(data) -> str:
    """Next to the data where it has a folder; the user's cache for the embedded synthetic data."""
    if _STATS_DIR.value:
        return absolute(_STATS_DIR.value)
    if data.path:
        return data.path
    return os.path.expanduser("~/.cache/pyoco_jax")


def dataset_name(data) -> str:
    """The data's source and a hash of every data option, so statistics of other clips are never reused."""
    digest = hashlib.sha256(data.to_json(sort_keys=True).encode()).hexdigest()[:12]
    return f"{data.source}-{digest}"


def fvd_metrics(run) -> dict:
    from pyoco_jax.data.loader import make_source
    from pyoco_jax.evaluate.fvd import I3DFeatures, fvd, video_stats
    from pyoco_jax.evaluate.fvd_protocol import check_clips, get_protocol
    from pyoco_jax.evaluate.real_stats import cached_stats, stats_path

    protocol = get_protocol(_PROTOCOL.value)
    data = run.config.data
    features = I3DFeatures(protocol)

    source = make_source(data, seed=_SEED.value)

    def real_clips(start: int) -> np.ndarray:
        clips = np.stack([source[i]["video"] for i in range(start, min(len(source), start + protocol.num_clips))])
        check_clips(protocol, clips)
        return clips

    path = stats_path(real_stats_dir(data), dataset_name(data), data.split, protocol.name, _SEED.value)
    real_stats = cached_stats(path, lambda: video_stats(features, real_clips(0)))
    if _REAL_BASELINE.value:
        baseline = fvd(real_stats, video_stats(features, real_clips(protocol.num_clips)))
        return {"eval/fvd_real_baseline": baseline, "protocol": protocol.name}
    videos, _ = sample_in_chunks(run, protocol.num_clips, _BATCH.value, _SEED.value)
    check_clips(protocol, videos)
    return {"eval/fvd": fvd(real_stats, video_stats(features, videos)), "protocol": protocol.name}


def shape_report(run) -> dict:
    from pyoco_jax.evaluate.shape_report import check_shape_model, format_shape_metrics, shape_metrics

    check_shape_model(run.config)
    videos, labels = sample_in_chunks(run, _NUM.value, min(_BATCH.value, _NUM.value), _SEED.value)
    metrics = shape_metrics(run.config, videos, labels)
    print(format_shape_metrics(metrics, len(videos), run.config.model.num_classes))
    return {f"eval/{name}": value for name, value in metrics.items()} | {"clips": len(videos)}


def main() -> None:
    from pyoco_jax.sample.run_sampler import load_run_sampler

    workdir = absolute(_WORKDIR.value)
    run = load_run_sampler(workdir, _STEP.value, overrides=config_overrides())
    results = fvd_metrics(run) if _METRIC.value == "fvd" else shape_report(run)
    results = {"step": run.step, "seed": _SEED.value, **results}
    print(json.dumps(results))
    out = epath.Path(workdir) / "eval" / f"step_{run.step:07d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps(previous | results, indent=2))


def run() -> None:
    run_cli("pyoco-eval", main)


if __name__ == "__main__":
    run()
