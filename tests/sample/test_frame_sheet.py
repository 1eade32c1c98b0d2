"""The PNG sheet pyoco-sample writes: a row per clip, frames left to right, small frames enlarged pixel for pixel."""

import numpy as np
from PIL import Image

from pyoco_jax.sample.output import frame_sheet, write_frame_sheet


def test_a_sheet_has_a_row_per_clip_and_enlarges_small_frames_by_whole_pixels():
    videos = np.random.default_rng(0).integers(0, 256, (6, 3, 16, 16, 3), np.uint8)
    sheet = frame_sheet(videos)  # 16 -> 64 pixels (x4); 4 of the 6 clips; 1-pixel black gaps.
    assert sheet.shape == (4 * 64 + 3, 3 * 64 + 2, 3)
    np.testing.assert_array_equal(sheet[:64, :64], videos[0, 0].repeat(4, 0).repeat(4, 1))
    np.testing.assert_array_equal(sheet[65:129, 130:194], videos[1, 2].repeat(4, 0).repeat(4, 1))
    assert not sheet[64].any() and not sheet[:, 64].any()


def test_the_sheet_is_written_as_a_png_that_reads_back_unchanged(tmp_path):
    videos = np.random.default_rng(1).integers(0, 256, (2, 2, 80, 96, 3), np.uint8)  # Large enough: no scaling.
    path = write_frame_sheet(videos, tmp_path / "sheet.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), frame_sheet(videos))
    assert np.asarray(Image.open(path)).shape == (2 * 80 + 1, 2 * 96 + 1, 3)
