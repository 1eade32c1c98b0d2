"""Colour drift is 0 for the dataset's clips and measures a shape that changes colour mid-clip."""

import dataclasses

import numpy as np
import pytest

from pyoco_jax.data.synthetic import SyntheticVideoSource
from pyoco_jax.evaluate.colour_drift import colour_drift, object_colours

SOURCE = SyntheticVideoSource(64, 8, 16, num_classes=4, max_objects=1, shape_size=(0.25, 0.38), seed=5)


def test_dataset_clips_keep_their_colour():
    videos = np.stack([SOURCE[i]["video"] for i in range(32)])
    assert colour_drift(videos) < 0.01
    colours = object_colours(videos)
    truth = np.stack([SOURCE.scene(i).colours[0] for i in range(32)])
    # The farthest pixels are the shape's interior: its own colour, to uint8 rounding.
    np.testing.assert_allclose(colours, np.broadcast_to(truth[:, None], colours.shape), atol=0.01)


def test_a_shape_that_flips_colour_every_other_frame_drifts_by_half_the_colour_gap():
    gaps, clips = [], []
    for i in range(16):
        scene = SOURCE.scene(i)
        other = scene.colours[:, [1, 2, 0]]  # Same brightness and saturation, another hue.
        flipped = SOURCE.render(dataclasses.replace(scene, colours=other))
        video = SOURCE.render(scene)
        video[1::2] = flipped[1::2]
        clips.append(video)
        gaps.append(np.linalg.norm(scene.colours[0] - other[0]))
    # Each frame sits at half the gap from the clip's mean colour.
    assert colour_drift(np.stack(clips)) == pytest.approx(np.mean(gaps) / 2, abs=0.01)


def test_rejects_videos_that_are_not_rgb_clips():
    with pytest.raises(ValueError, match="clips, frames, height, width, 3"):
        colour_drift(np.zeros((8, 16, 16, 3), np.uint8))
