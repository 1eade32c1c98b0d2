"""The papers' cascades: a base model's clips, then temporal interpolation, then super-resolution, each stage a
conditioned run (`pyoco_jax.conditioning`) sampled with its own prior and sampler.

A stage is told apart by its config: `condition.frames` interpolation (or random) makes it an interpolation
stage, `condition.low_res_factor` a super-resolution one.
  interpolation  a stage trained on clips of (K - 1) k + 1 frames with every k-th given fills in windows of
                 K consecutive input frames; windows share their end keyframes, so F frames become
                 (F - 1) k + 1, and every input frame comes out unchanged.
  super-res      a stage trained on clips of H x W from (H/f) x (W/f) ones takes windows of its clip length
                 (the last one overlapping); its output downsampled by f is its input.
Labels and prompts travel down the cascade, so a conditional cascade keeps its class or text. Stages hand on
clips in their own space: a latent stage after a latent stage gets the latents themselves (MagicVideo's latent
frame interpolation: the keyframes' latents are kept exactly); any other stage gets the uint8 frames the stage
before it shows (decoded if latent), encoded if it is latent itself.
"""

from collections.abc import Sequence

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


def _window_prompts(prompts: Sequence[str], count: int, windows: int) -> list[str]:
    """Each clip's prompt (prompts cycled over `count` clips) for every window of every clip, window-major."""
    return [prompts[clip % len(prompts)] for _ in range(windows) for clip in range(count)] if prompts else []


def hand_over(previous: RunSampler, stage: RunSampler, videos: np.ndarray) -> np.ndarray:
    """`previous`'s output (its model space) in `stage`'s model space."""
    if previous.is_latent and stage.is_latent:
        if previous.config.vae.path != stage.config.vae.path:
            raise UserError(
                f"latent stages hand latents on, so they need one VAE: vae.path is {previous.config.vae.path!r} "
                f"before and {stage.config.vae.path!r} after; train the stages with the same VAE"
            )
        return videos
    return stage.from_pixels(previous.to_pixels(videos))  # As written to video: quantised to uint8.


def interpolate(
    run: RunSampler, videos: np.ndarray, labels: np.ndarray | None, seed: int, prompts: Sequence[str] = ()
) -> np.ndarray:
    """(N, F, H, W, C) -> (N, (F - 1) k + 1, H, W, C) in the stage's model space (uint8 input is read as pixels),
    the input frames kept at every k-th position."""
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
    windows = np.zeros((len(starts), count, data.num_frames, *videos.shape[2:]), videos.dtype)
    for w, start in enumerate(starts):
        windows[w, :, ::factor] = videos[:, start : start + keyframes]
    clips = windows.reshape(-1, *windows.shape[2:])
    window_labels = None if labels is None else np.tile(labels, len(starts))
    window_prompts = _window_prompts(prompts, count, len(starts))
    filled, _ = run.sample(
        len(clips), seed=seed, labels=window_labels, prompts=window_prompts, condition_clips=clips, pixels=False
    )
    filled = filled.reshape(len(starts), count, *filled.shape[1:])
    step = (keyframes - 1) * factor  # Output frames each window adds.
    out = np.concatenate([filled[w, :, :step] for w in range(len(starts))], axis=1)
    return np.concatenate([out, filled[-1, :, step:]], axis=1)


def super_resolve(
    run: RunSampler, videos: np.ndarray, labels: np.ndarray | None, seed: int, prompts: Sequence[str] = ()
) -> np.ndarray:
    """(N, F, h, w, C) -> (N, F, h f, w f, C) in the stage's model space, in windows of the stage's clip length."""
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
    window_prompts = _window_prompts(prompts, count, len(starts))
    sharp, _ = run.sample(
        len(clips), seed=seed, labels=window_labels, prompts=window_prompts, condition_clips=clips, pixels=False
    )
    sharp = sharp.reshape(len(starts), count, *sharp.shape[1:])
    out = np.zeros((count, frames, *sharp.shape[3:]), sharp.dtype)
    for w, start in enumerate(starts):
        out[:, start : start + length] = sharp[w]
    return out


def run_stage(run: RunSampler, videos: np.ndarray, labels: np.ndarray | None, seed: int, prompts=()) -> np.ndarray:
    """One cascade stage on `videos` in its model space: interpolation or super-resolution, by its config."""
    step = interpolate if stage_kind(run) == "interpolation" else super_resolve
    return step(run, videos, labels, seed, prompts)


def continue_cascade(
    previous: RunSampler,
    videos: np.ndarray,
    stages: Sequence[RunSampler],
    *,
    seed: int,
    labels: np.ndarray | None,
    prompts: Sequence[str] = (),
) -> list[np.ndarray]:
    """Each stage's uint8 output, the stages run in order on `previous`'s `videos` (in its model space)."""
    outputs = []
    for index, stage in enumerate(stages, 1):
        videos = run_stage(stage, hand_over(previous, stage, videos), labels, seed + index, prompts)
        outputs.append(stage.to_pixels(videos))
        previous = stage
    return outputs


def run_cascade(
    base: RunSampler,
    stages: Sequence[RunSampler],
    *,
    num: int,
    seed: int,
    labels: np.ndarray | None = None,
    prompts: Sequence[str] = (),
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """(every stage's uint8 output, the base's first and the final last; the labels they show) of `num` clips."""
    videos, inputs = base.sample(num, seed=seed, labels=labels, prompts=prompts, pixels=False)
    labels = inputs["labels"]
    stage_outputs = continue_cascade(base, videos, stages, seed=seed, labels=labels, prompts=prompts)
    return [base.to_pixels(videos), *stage_outputs], labels
