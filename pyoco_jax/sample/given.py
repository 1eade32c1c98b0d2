"""Frames a user gives a conditioned run (`pyoco-sample --given FILE`): image-to-video, extension, and a cascade
stage applied to the user's own clip.

What the file's frames become follows the run's `condition` section (a `random`-trained run is told which
use by `--config.condition.frames=first|last|interpolation`):
  first          the clip starts with the file's last `given_frames` frames (image-to-video with an image;
                 a continuation of a video);
  last           the clip ends with the file's first `given_frames` frames (what led up to them);
  interpolation  the file's frames are keyframes, filled in as a cascade's interpolation stage fills them;
  low-res        a super-resolution stage sharpens the file's frames, taken at its input size.
Frames are scaled to cover the model's square frame (bicubic) and centre-cropped.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pyoco_jax.data.video_io import read_video
from pyoco_jax.errors import UserError
from pyoco_jax.sample.cascade import run_stage
from pyoco_jax.sample.inputs import default_labels
from pyoco_jax.sample.run_sampler import RunSampler

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def read_frames(path: str) -> np.ndarray:
    """uint8 (F, H, W, 3) frames of an image (one frame) or a video file."""
    if not Path(path).is_file():
        raise UserError(f"--given {path}: no such file")
    try:
        if Path(path).suffix.lower() in IMAGE_SUFFIXES:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))[None]
        return read_video(path)[0]
    except (OSError, ValueError) as err:
        raise UserError(f"--given {path}: cannot read it as an image or a video ({err})") from None


def square_frames(frames: np.ndarray, side: int) -> np.ndarray:
    """(F, H, W, 3) -> (F, side, side, 3): scaled to cover side x side, then the centre."""
    height, width = frames.shape[1:3]
    scale = side / min(height, width)
    size = (max(side, round(width * scale)), max(side, round(height * scale)))
    top, left = (size[1] - side) // 2, (size[0] - side) // 2
    out = [np.asarray(Image.fromarray(frame).resize(size, Image.BICUBIC)) for frame in frames]
    return np.stack(out)[:, top : top + side, left : left + side]


def _placed(run: RunSampler, frames: np.ndarray) -> np.ndarray:
    """One clip of the model's length with the file's frames where `condition.frames` puts given frames."""
    condition, data = run.config.condition, run.config.data
    count = condition.given_frames
    if len(frames) < count:
        raise UserError(
            f"this run is given {count} frames (condition.given_frames) and the file has {len(frames)}; "
            f"give a longer video or --config.condition.given_frames={len(frames)}"
        )
    clip = np.zeros((data.num_frames, *frames.shape[1:]), np.uint8)
    if condition.frames == "first":
        clip[:count] = frames[len(frames) - count :]
    else:
        clip[-count:] = frames[:count]
    return clip


def sample_given(
    run: RunSampler,
    path: str,
    *,
    num: int,
    seed: int,
    labels: np.ndarray | None = None,
    prompts: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray | None]:
    """(`num` clips the run samples from the frames in `path`, in its model space; their labels)."""
    condition, data = run.config.condition, run.config.data
    if condition.frames and condition.low_res_factor > 1:
        raise UserError("--given serves runs given either frames or a low-res clip; this run takes both")
    if not condition.frames and condition.low_res_factor <= 1:
        raise UserError("--given needs a conditioned run (its config's condition section is empty)")
    if data.channels != 3 and not run.is_latent:
        raise UserError(f"--given reads RGB frames; this run models {data.channels} channels")
    labels = default_labels(run.config, num) if labels is None else labels
    frames = square_frames(read_frames(path), run.pixel_side // max(condition.low_res_factor, 1))
    if condition.frames in ("first", "last"):
        clips = np.broadcast_to(_placed(run, frames), (num, data.num_frames, *frames.shape[1:]))
        condition_clips = run.from_pixels(clips)
        videos, _ = run.sample(
            num, seed=seed, labels=labels, prompts=prompts, condition_clips=condition_clips, pixels=False
        )
        return videos, labels
    inputs = run.from_pixels(np.broadcast_to(frames, (num, *frames.shape)))
    return run_stage(run, inputs, labels, seed, prompts), labels
