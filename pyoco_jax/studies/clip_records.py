"""Per-clip measurements of one checkpoint's samples, cached in the run, so a report can pool them across seeds.

For `clips` samples (classes cycled, sampling seed fixed, so every arm starts from the same draws): the
requested label, whether the shape classifier names it, the colour drift, and the I3D features of the
first `featurised` clips. Sampling uses the run's own noise prior (`prior`) or i.i.d. noise (`iid`,
`noise.in_sampling=False`). A record is written once (atomically) and read back on every later report.
"""

import time
from pathlib import Path

import numpy as np

from pyoco_jax.evaluate.colour_drift import clip_colour_drift
from pyoco_jax.evaluate.run_eval import Evaluator, sample_in_chunks
from pyoco_jax.evaluate.shape_accuracy import ShapeClassifier
from pyoco_jax.paths import write_atomically

SAMPLINGS = ("prior", "iid")
SAMPLING_SEED = 0


def record_path(workdir: str, step: int, sampling: str, clips: int, featurised: int) -> Path:
    return Path(workdir) / "study" / f"step_{step:07d}_{sampling}_{clips}clips_{featurised}featurised.npz"


def clip_records(
    workdir: str,
    step: int,
    *,
    sampling: str,
    clips: int,
    featurised: int,
    batch: int,
    classifier: ShapeClassifier,
    fvd: Evaluator,
) -> dict[str, np.ndarray]:
    """{labels, correct, drift, features, seconds} of `clips` samples of the checkpoint at `step` (cached)."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling {sampling!r} is not one of {SAMPLINGS}")
    path = record_path(workdir, step, sampling, clips, featurised)
    if path.exists():
        with np.load(path, allow_pickle=False) as data:
            return dict(data)
    from pyoco_jax.sample.run_sampler import load_run_sampler

    begin = time.perf_counter()
    run = load_run_sampler(workdir, step, overrides=["noise.in_sampling=False"] if sampling == "iid" else ())

    def sample(num: int, seed: int):
        videos, inputs = run.sample(num, seed=seed)
        return videos, inputs["labels"]

    videos, labels = sample_in_chunks(sample, clips, batch, SAMPLING_SEED)
    records = {
        "labels": labels,
        "correct": classifier.clip_predictions(videos) == labels,
        "drift": clip_colour_drift(videos),
        "features": fvd.features(videos[:featurised]),
    }
    records["seconds"] = np.float64(time.perf_counter() - begin)
    write_atomically(path, lambda file: np.savez(file, **records))
    return records
