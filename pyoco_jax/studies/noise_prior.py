"""PYoCo's central claim, in small: an image model fine-tuned on video with a correlated noise prior (mixed,
progressive) against i.i.d. noise per frame, at equal compute, plus a from-scratch video baseline.

The runs (`study_runs`, for `configs/sweeps/noise_prior_study.py`), in the order they must train:
  1. image pretraining per seed: the same U-Net without temporal layers, on single frames, with as many
     frames per step as a video step has (`video_batch * num_frames`);
  2. video fine-tuning from each seed's image run (temporal layers added as the identity): one run per
     arm and seed, same steps, batch, learning rate and seeds;
  3. a from-scratch video model per seed, trained `image_steps + video_steps` steps: the same number of
     frames through the network as pretraining plus fine-tuning (the image steps are a little cheaper:
     no temporal layers), with i.i.d. noise.
`noise_prior_report.write_report` evaluates them (`study_records`) and writes the report.
"""

import dataclasses

from pyoco_jax.sweep import run_name

ARMS_PRIOR_ALPHA = (("iid", 0.0), ("mixed", 1.0), ("mixed", 4.0), ("progressive", 1.0), ("progressive", 2.0))
SHORT_NAMES = {
    "data.num_frames": "frames",
    "train.num_steps": "steps",
    "noise.prior": "prior",
    "noise.alpha": "alpha",
    "seed": "seed",
    # Set by every run of a stage, so the named keys above already tell the runs apart.
    "data.global_batch_size": "",
    "model.temporal.levels": "",
    "model.temporal.mid": "",
    "model.temporal.adaptor": "",
    "train.init_from": "",
    "diffusion.edm.pretrained_prediction": "",
    "train.checkpoint_every": "",
    "train.keep_every": "",
}


@dataclasses.dataclass(frozen=True)
class Study:
    """The study's sizes. `num_frames` and `video_batch` must be the base config's (every run sets them)."""

    image_steps: int = 600
    video_steps: int = 300
    seeds: tuple[int, ...] = (0, 1, 2)
    arms: tuple[tuple[str, float], ...] = ARMS_PRIOR_ALPHA  # (prior, alpha) per fine-tune arm; iid comes first.
    num_frames: int = 8
    video_batch: int = 8
    curve_points: int = 3  # Checkpoints per video run (every video_steps / curve_points steps) on the curves.
    eval_clips: int = 88  # Sampled per run and sampling prior: shape accuracy and colour drift ...
    fvd_clips: int = 44  # ... of which the first this many are featurised for the final FVD ...
    curve_clips: int = 22  # ... and this many at each curve point (FVD vs step).
    sample_batch: int = 44  # Clips sampled at once (one compiled size).
    report: str = "docs/noise_prior_study.md"  # Relative to the repository, or absolute.

    def __post_init__(self) -> None:
        if self.video_steps % self.curve_points or (self.image_steps + self.video_steps) % self.curve_points:
            raise ValueError(f"curve_points={self.curve_points} must divide video_steps and image + video steps")
        if not self.curve_clips <= self.fvd_clips <= self.eval_clips:
            raise ValueError("need curve_clips <= fvd_clips <= eval_clips")
        if not self.arms or self.arms[0][0] != "iid":
            raise ValueError("the first arm must be iid: every other arm is compared with it")

    def fvd_protocol(self, clips_per_run: int) -> str:
        """The protocol of an arm's FVD: clips pooled over the seeds."""
        return f"fvd{clips_per_run * len(self.seeds)}_{self.num_frames}f"


def image_run(study: Study, seed: int) -> dict:
    """Stage 1: the U-Net as an image model, `video_batch * num_frames` single frames per step."""
    return {
        "data.num_frames": 1,
        "train.num_steps": study.image_steps,
        "seed": seed,
        "data.global_batch_size": study.video_batch * study.num_frames,
        "model.temporal.levels": (),
        "model.temporal.mid": False,
        "model.temporal.adaptor": False,
        "train.checkpoint_every": study.image_steps,
    }


def video_run(study: Study, seed: int, prior: str, alpha: float, *, from_image: bool) -> dict:
    """Stage 2 (from that seed's image run) or the from-scratch baseline (as many frames seen in all)."""
    steps = study.video_steps if from_image else study.image_steps + study.video_steps
    run = {
        "data.num_frames": study.num_frames,
        "train.num_steps": steps,
        "noise.prior": prior,
        **({} if prior == "iid" else {"noise.alpha": alpha}),
        "seed": seed,
        "data.global_batch_size": study.video_batch,
        "train.checkpoint_every": steps // study.curve_points,
        "train.keep_every": steps // study.curve_points,
    }
    if from_image:
        image = run_name(image_run(study, seed), SHORT_NAMES)
        run |= {"train.init_from": "{sweep}/" + image, "diffusion.edm.pretrained_prediction": "edm"}
    return run


def study_runs(study: Study) -> list[dict]:
    """Every run, in training order: image runs, then fine-tunes (arm-major), then the scratch baselines."""
    images = [image_run(study, seed) for seed in study.seeds]
    fine_tunes = [
        video_run(study, seed, prior, alpha, from_image=True) for prior, alpha in study.arms for seed in study.seeds
    ]
    scratch = [video_run(study, seed, "iid", 0.0, from_image=False) for seed in study.seeds]
    return images + fine_tunes + scratch
