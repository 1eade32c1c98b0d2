"""The papers' cascades: a base model's clips, then temporal interpolation, then super-resolution, each stage a
conditioned run (`pyoco_jax.conditioning`) sampled with its own prior and sampler.

A stage is told apart by its config: `condition.frames` interpolation (or random) makes it an interpolation
stage, `condition.low_res_factor` a super-resolution one.
  interpolation  a stage trained on clips of (K - 1) k + 1 frames with every k-th given fills in windows of
                 K consecutive input frames; windows share their end keyframes, so F frames become
                 (F - 1) k + 1, and every input frame comes out unchanged.
  super-res      a stage trained on clips of H x W from (H/f) x (W/f) ones takes windows of its clip length
                 (the last one overlapping); its output downsampled by f is its input.
Labels travel down the cascade, so a class-conditional cascade keeps its class.
"""

import numpy as np

from pyoco_jax.conditioning import upsample
from pyoco_jax.errors import UserError
from pyoco_jax.sample.run_sampler import RunSampler


def stage_kind(run: RunSampler) -> str:
    """'interpolation' or 'super_resolution', from the stage's condition config."""
    condition = run.config.condition
    if condition.frames in ("interpolation", "random"):
        return "interpolation"
    if condition.low_res_factor > 1:
        return "super_resolution"
    raise UserError(
        f"run at step {run.step} is not a cascade stage: its condition.frames is {condition.frames!r} and "
        f"condition.low_res_factor {condition.low_res_factor} (train it with one of them set)"
    )


def _check_fits(run: RunSampler, videos: np.ndarray, side: int) -> None:
    data = run.config.data
    if videos.shape[-1] != data.channels or videos.shape[2] != side:
        raise UserError(
            f"this {stage_kind(run)} stage takes {side}x{side}x{data.channels} frames, the stage before it gives "
            f"{videos.shape[2]}x{videos.shape[3]}x{videos.shape[-1]}"
        )


def interpolate(run: RunSampler, videos: np.ndarray, labels: np.ndarray | None, seed: int) -> np.ndarray:
    """uint8 (N, F, H, W, C) -> (N, (F - 1) k + 1, H, W, C), the input frames kept at every k-th position."""
    data, factor = run.config.data, run.config.condition.interpolation_factor
    _check_fits(run, videos, data.resolution)
    keyframes = (data.num_frames - 1) // factor + 1  # Per window.
    count, frames = videos.shape[:2]
    if (frames - 1) % (keyframes - 1):
        raise UserError(
            f"this interpolation stage fills windows of {keyframes} keyframes; {frames} input frames do not split "
            f"into such windows sharing their ends (need (frames - 1) divisible by {keyframes - 1})"
        )
    starts = range(0, frames - 1, keyframes - 1)
    windows = np.zeros((len(starts), count, data.num_frames, *videos.shape[2:]), np.uint8)
    for w, start in enumerate(starts):
        windows[w, :, ::factor] = videos[:, start : start + keyframes]
    clips = windows.reshape(-1, *windows.shape[2:])
    window_labels = None if labels is None else np.tile(labels, len(starts))
    filled, _ = run.sample(len(clips), seed=seed, labels=window_labels, condition_clips=clips)
    filled = filled.reshape(len(starts), count, *filled.shape[1:])
    step = (keyframes - 1) * factor  # Output frames each window adds.
    out = np.concatenate([filled[w, :, :step] for w in range(len(starts))], axis=1)
    return np.concatenate([out, filled[-1, :, step:]], axis=1)


def super_resolve(run: RunSampler, videos: np.ndarray, labels: np.ndarray | None, seed: int) -> np.ndarray:
    """uint8 (N, F, h, w, C) -> (N, F, h f, w f, C), in windows of the stage's clip length."""
    data, factor = run.config.data, run.config.condition.low_res_factor
    _check_fits(run, videos, data.resolution // factor)
    count, frames = videos.shape[:2]
    length = data.num_frames
    if frames < length:
        raise UserError(f"this super-resolution stage takes clips of {length} frames; the input has {frames}")
    starts = sorted({*range(0, frames - length + 1, length), frames - length})
    windows = np.stack([videos[:, s : s + length] for s in starts]).reshape(-1, length, *videos.shape[2:])
    clips = np.asarray(upsample(windows, factor))  # Downsampled again by the stage, exactly: the given low-res.
    window_labels = None if labels is None else np.tile(labels, len(starts))
    sharp, _ = run.sample(len(clips), seed=seed, labels=window_labels, condition_clips=clips)
    sharp = sharp.reshape(len(starts), count, *sharp.shape[1:])
    out = np.zeros((count, frames, *sharp.shape[3:]), np.uint8)
    for w, start in enumerate(starts):
        out[:, start : start + length] = sharp[w]
    return out


def run_cascade(
    base: RunSampler, stages: list[RunSampler], *, num: int, seed: int, labels: np.ndarray | None = None
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """(every stage's uint8 output, the base's first and the final last; the labels they show) of `num` clips."""
    videos, inputs = base.sample(num, seed=seed, labels=labels)
    labels = inputs["labels"]
    outputs = [videos]
    for index, stage in enumerate(stages, 1):
        step = interpolate if stage_kind(stage) == "interpolation" else super_resolve
        videos = step(stage, videos, labels, seed + index)
        outputs.append(videos)
    return outputs, labels
