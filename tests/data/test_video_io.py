"""MP4/GIF writing and reading, and sample grids."""

import numpy as np
import pytest

from pyoco_jax.data.synthetic import SyntheticVideoSource
from pyoco_jax.data.video_io import read_video, video_grid, write_gif, write_mp4


def _clip(height: int, width: int, index: int = 0) -> np.ndarray:
    return SyntheticVideoSource(8, 10, (height, width), num_classes=4)[index]["video"]


def _mean_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_mp4_round_trip(tmp_path):
    clip = _clip(32, 48)
    write_mp4(tmp_path / "clip.mp4", clip, fps=12.0)
    frames, fps = read_video(tmp_path / "clip.mp4")
    assert frames.shape == clip.shape and frames.dtype == np.uint8 and fps == pytest.approx(12.0)
    assert _mean_error(frames, clip) < 5.0  # Chroma subsampling blurs the coloured edges a little.
    assert _mean_error(frames, _clip(32, 48, index=1)) > 4 * _mean_error(frames, clip)


def test_mp4_odd_sides_are_padded_with_edge_pixels(tmp_path):
    clip = _clip(21, 35)
    write_mp4(tmp_path / "odd.mp4", clip, fps=29.97)
    frames, fps = read_video(tmp_path / "odd.mp4")
    assert frames.shape == (10, 22, 36, 3) and fps == pytest.approx(29.97)
    assert _mean_error(frames[:, :21, :35], clip) < 5.0
    assert _mean_error(frames[:, 21, :35], clip[:, 20]) < 8.0 and _mean_error(frames[:, :21, 35], clip[:, :, 34]) < 8.0


def test_gif_round_trip(tmp_path):
    clip = _clip(24, 40)
    write_gif(tmp_path / "clip.gif", clip, fps=10.0)
    frames, fps = read_video(tmp_path / "clip.gif")
    assert frames.shape == clip.shape and fps == pytest.approx(10.0)
    assert _mean_error(frames, clip) < 2.0  # One adaptive palette for a few hundred colours.


def test_bad_frames_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.float32), fps=8)
    with pytest.raises(ValueError, match=r"\(F, H, W, 3\)"):
        write_gif(tmp_path / "x.gif", np.zeros((8, 8, 3), np.uint8), fps=8)


def test_video_grid_places_clips_row_major():
    videos = np.stack([np.full((2, 3, 4, 3), i + 1, np.uint8) for i in range(5)])
    grid = video_grid(videos, cols=3, padding=1)
    assert grid.shape == (2, 2 * 3 + 1, 3 * 4 + 2, 3)
    assert (grid[:, 0:3, 0:4] == 1).all() and (grid[:, 0:3, 5:9] == 2).all() and (grid[:, 0:3, 10:14] == 3).all()
    assert (grid[:, 4:7, 0:4] == 4).all() and (grid[:, 4:7, 5:9] == 5).all()
    assert (grid[:, 4:7, 10:14] == 0).all() and (grid[:, 3] == 0).all() and (grid[:, :, 4] == 0).all()
