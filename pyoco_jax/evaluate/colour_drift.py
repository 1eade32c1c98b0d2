"""Colour drift: whether a sampled clip keeps its object's colour from frame to frame.

A shape of the embedded dataset keeps one colour for the whole clip. A video model whose
frames do not talk to each other picks that colour anew in every frame, so the shape
changes colour while it moves. Per frame, the object's colour is the mean of the pixels
farthest (in RGB) from the background, estimated as the median of the frame's border;
a clip's drift is the mean distance of its frames' object colours from their average,
in RGB units of [0, 1] (0 for the dataset's own clips; sqrt(3) is the largest possible).
"""

import numpy as np


def object_colours(videos: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """(N, F, H, W, 3) uint8 clips -> (N, F, 3) colour of each frame's object, in [0, 1].

    The object is the `fraction` of a frame's pixels that differ most from its border's median.
    """
    if videos.ndim != 5 or videos.shape[-1] != 3:
        raise ValueError(f"expected (clips, frames, height, width, 3) RGB videos, got shape {videos.shape}")
    frames = videos.astype(np.float32) / 255.0
    clips, count, height, width, _ = frames.shape
    border = np.concatenate([frames[:, :, 0], frames[:, :, -1], frames[:, :, 1:-1, 0], frames[:, :, 1:-1, -1]], axis=2)
    background = np.median(border, axis=2)[:, :, None, None]
    pixels = frames.reshape(clips, count, height * width, 3)
    distance = np.linalg.norm(frames - background, axis=-1).reshape(clips, count, -1)
    keep = max(1, round(fraction * height * width))
    farthest = np.argpartition(-distance, keep - 1, axis=-1)[..., :keep]
    return np.take_along_axis(pixels, farthest[..., None], axis=2).mean(axis=2)


def clip_colour_drift(videos: np.ndarray) -> np.ndarray:
    """(N,) per clip: the mean over frames of |object colour - the clip's mean object colour| (see module doc)."""
    colours = object_colours(videos)
    return np.linalg.norm(colours - colours.mean(axis=1, keepdims=True), axis=-1).mean(axis=1)


def colour_drift(videos: np.ndarray) -> float:
    """Mean over clips of `clip_colour_drift`."""
    return float(clip_colour_drift(videos).mean())
