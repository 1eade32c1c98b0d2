"""Sampled videos to files: one grid as mp4 and GIF, local or on a bucket."""

import os

import numpy as np
from etils import epath


def write_videos(videos: np.ndarray, path: str | os.PathLike, fps: float) -> list[epath.Path]:
    """Writes the samples side by side as `path` (mp4, local or gs://) and the same grid as a GIF next to it."""
    from pyoco_jax.data.video_io import video_grid, write_gif, write_mp4  # PyAV is the optional `video` extra.

    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = video_grid(videos, cols=min(len(videos), 4))
    write_mp4(path, grid, fps)
    gif = path.with_suffix(".gif")
    write_gif(gif, grid, fps)
    return [path, gif]
