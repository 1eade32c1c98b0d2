"""Sampled videos to files: one grid as mp4 and GIF, local or on a bucket, and a sheet of every frame as PNG."""

import io
import math
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


SHEET_MIN_SIDE = 64  # Frames smaller than this are enlarged (nearest neighbour) so a sheet stays legible.
SHEET_MAX_CLIPS = 4


def frame_sheet(videos: np.ndarray, *, min_side: int = SHEET_MIN_SIDE, max_clips: int = SHEET_MAX_CLIPS) -> np.ndarray:
    """uint8 (N, F, H, W, C) -> one image: a row per clip (the first `max_clips`), its frames left to right,
    1 black pixel apart; small frames are repeated up to `min_side` pixels, so each pixel stays visible."""
    from pyoco_jax.data.video_io import video_grid

    clips = np.asarray(videos)[:max_clips]
    scale = max(1, math.ceil(min_side / clips.shape[2]))
    clips = clips.repeat(scale, axis=2).repeat(scale, axis=3)
    rows = [video_grid(clip[:, None], cols=clip.shape[0])[0] for clip in clips]  # Frames of a clip side by side.
    return video_grid(np.stack(rows)[:, None], cols=1)[0]


def write_frame_sheet(videos: np.ndarray, path: str | os.PathLike) -> epath.Path:
    """`frame_sheet(videos)` as a PNG at `path` (local or gs://)."""
    from PIL import Image

    sheet = frame_sheet(videos)
    buffer = io.BytesIO()
    Image.fromarray(sheet if sheet.shape[-1] == 3 else sheet[..., 0]).save(buffer, format="PNG")
    path = epath.Path(path)
    path.write_bytes(buffer.getvalue())
    return path
