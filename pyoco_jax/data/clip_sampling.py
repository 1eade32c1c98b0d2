"""Which frames and which pixels a clip takes from a video: pure arithmetic, no decoding.

A clip is `num_frames` frames `frame_stride` native frames apart (or spaced at
`target_fps`), starting at a random or the centred position of the usable window,
resized so the short side covers the output and cropped (random or centred) to
height x width, optionally flipped. Every random choice comes from `ClipDraws`,
a function of (seed, index, epoch) alone, so a clip does not depend on which
process or thread decodes it.
"""

import dataclasses
import math

import numpy as np

CROPS = ("random", "center")
TEMPORAL_SAMPLINGS = ("random", "center")
_EPS = 1e-6


class VideoTooShortError(ValueError):
    """The video (or its start/end window) has fewer frames than one clip needs."""


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    num_frames: int
    height: int
    width: int
    frame_stride: int = 1
    target_fps: float = 0.0  # > 0: space frames 1/target_fps apart instead of by frame_stride.
    temporal: str = "random"  # random | center: where the clip starts in the usable window.
    crop: str = "center"  # random | center
    flip: bool = False  # Random horizontal flip (probability 1/2).

    def __post_init__(self):
        if self.num_frames < 1 or self.height < 1 or self.width < 1:
            raise ValueError(f"a clip needs num_frames, height and width >= 1, got {self}")
        if self.frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {self.frame_stride}")
        if not self.target_fps >= 0:
            raise ValueError(f"target_fps must be >= 0 (0: use frame_stride), got {self.target_fps}")
        if self.crop not in CROPS or self.temporal not in TEMPORAL_SAMPLINGS:
            raise ValueError(f"crop must be one of {CROPS} and temporal one of {TEMPORAL_SAMPLINGS}, got {self}")


@dataclasses.dataclass(frozen=True)
class ClipDraws:
    """Uniform [0, 1) numbers that fix a clip's random choices.

    A random start falls in part `part` of `parts` equal parts of the possible starts, so `parts`
    clips of one video with parts 0..parts-1 start at distinct frames whenever the video has that many.
    """

    start: float = 0.5
    top: float = 0.5
    left: float = 0.5
    flip: float = 1.0
    part: int = 0
    parts: int = 1

    @classmethod
    def for_example(cls, seed: int, index: int, epoch: int) -> "ClipDraws":
        """Draws for example `index` in `epoch`: new augmentation every epoch, identical in any worker."""
        start, top, left, flip = np.random.default_rng([seed % 2**64, index, epoch]).random(4)
        return cls(float(start), float(top), float(left), float(flip))


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a video's header says (`decode.probe_video`): enough to plan clips without decoding."""

    width: int
    height: int
    fps: float  # Native frame rate.
    frame_count: int  # From the header (or duration x rate); decoding a clip corrects an over-count.


@dataclasses.dataclass(frozen=True)
class ClipTimes:
    times: np.ndarray  # (F,) seconds from the stream's start: when each output frame is shown.
    fps: float  # Frame rate of the clip as sampled (for fps conditioning).
    first_frame: int  # Native index of the first frame.


@dataclasses.dataclass(frozen=True)
class CropBox:
    resized_height: int
    resized_width: int
    top: int
    left: int
    flip: bool


def frame_step(spec: ClipSpec, native_fps: float) -> tuple[float, float]:
    """(native frames between output frames, output fps). A target_fps above the native rate keeps every frame."""
    if spec.target_fps > 0:
        fps = min(spec.target_fps, native_fps)
        return native_fps / fps, fps
    return float(spec.frame_stride), native_fps / spec.frame_stride


def clip_times(
    spec: ClipSpec,
    draws: ClipDraws,
    native_fps: float,
    frame_count: int,
    *,
    start: float = 0.0,
    end: float | None = None,
) -> ClipTimes:
    """Times of the clip's frames in a constant-rate video of `frame_count` frames, within [start, end) seconds."""
    step, fps = frame_step(spec, native_fps)
    first = max(0, math.ceil(start * native_fps - _EPS))
    last = frame_count - 1 if end is None else min(frame_count, math.ceil(end * native_fps - _EPS)) - 1
    span = (spec.num_frames - 1) * step
    latest = math.floor(last - span + _EPS)
    if latest < first:
        needed = (span + 1) / native_fps
        have = max(0, last - first + 1) / native_fps
        raise VideoTooShortError(
            f"too short: {spec.num_frames} frames at {fps:.3g} fps need {needed:.2f} s of video, "
            f"the usable part has {have:.2f} s ({max(0, last - first + 1)} frames at {native_fps:.3g} fps)"
        )
    choices = latest - first + 1
    if spec.temporal == "random":
        low, high = draws.part * choices // draws.parts, (draws.part + 1) * choices // draws.parts
        offset = min(low + int(draws.start * (high - low)), choices - 1)
    else:
        offset = (choices - 1) // 2
    first_frame = first + offset
    times = (first_frame + np.arange(spec.num_frames) * step) / native_fps
    return ClipTimes(times=times, fps=fps, first_frame=first_frame)


def crop_box(spec: ClipSpec, draws: ClipDraws, height: int, width: int) -> CropBox:
    """Resize (keeping the aspect ratio) so the frame covers height x width, then a random or centred window."""
    scale = max(spec.height / height, spec.width / width)
    resized_height = max(spec.height, round(height * scale))
    resized_width = max(spec.width, round(width * scale))
    spare_y, spare_x = resized_height - spec.height, resized_width - spec.width
    if spec.crop == "random":
        top, left = min(int(draws.top * (spare_y + 1)), spare_y), min(int(draws.left * (spare_x + 1)), spare_x)
    else:
        top, left = spare_y // 2, spare_x // 2
    return CropBox(resized_height, resized_width, top, left, flip=spec.flip and draws.flip < 0.5)
