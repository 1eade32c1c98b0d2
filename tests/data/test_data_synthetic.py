"""The embedded moving-shapes dataset: deterministic, moving, in frame, labelled by shape."""

import ml_collections
import numpy as np
import pytest
from pyoco_jax.configs import default

from pyoco_jax.data.loader import make_source
from pyoco_jax.data.synthetic import SHAPES, SyntheticVideoSource


def test_element_format_for_any_frames_and_resolution():
    source = SyntheticVideoSource(10, 3, (17, 29), num_classes=3, fps=12.5)
    element = source[4]
    assert element["video"].shape == (3, 17, 29, 3) and element["video"].dtype == np.uint8
    assert element["label"].shape == () and element["label"].dtype == np.int32
    assert element["fps"].shape == () and element["fps"].dtype == np.float32 and element["fps"] == 12.5
    assert len(source) == 10


def test_deterministic_per_seed_and_index():
    first, again, other_seed = (SyntheticVideoSource(50, 8, 32, seed=s) for s in (0, 0, 1))
    read_late = [again[i]["video"] for i in (7, 3, 5)]  # Access order must not matter.
    for video, index in zip(read_late, (7, 3, 5), strict=True):
        np.testing.assert_array_equal(video, first[index]["video"])
    assert not np.array_equal(first[3]["video"], first[4]["video"])
    assert not np.array_equal(first[3]["video"], other_seed[3]["video"])
    with pytest.raises(IndexError):
        first[50]


def test_shapes_move_and_stay_in_frame():
    source = SyntheticVideoSource(200, 16, (40, 56), num_classes=6, max_objects=3)
    for index in range(len(source)):
        scene = source.scene(index)
        video = source.render(scene)
        assert (np.abs(np.diff(video.astype(np.int16), axis=0)).sum(axis=(1, 2, 3)) > 0).all(), index
        x, y, r = scene.centres[..., 0], scene.centres[..., 1], scene.bounds[:, None]
        assert (x - r >= 0).all() and (x + r <= 56).all() and (y - r >= 0).all() and (y + r <= 40).all(), index
        top = len(scene.shapes) - 1  # Drawn last, so its centre pixel shows its own colour (rings are hollow).
        if scene.shapes[top] != "ring":
            cols = np.floor(scene.centres[top, :, 0]).astype(int)
            rows = np.floor(scene.centres[top, :, 1]).astype(int)
            centre_pixels = video[np.arange(16), rows, cols].astype(float)
            np.testing.assert_allclose(centre_pixels, np.broadcast_to(scene.colours[top] * 255, (16, 3)), atol=2)


def test_labels_in_range_balanced_and_equal_to_shape():
    source = SyntheticVideoSource(400, 2, 16, num_classes=4)
    labels = np.array([int(source[i]["label"]) for i in range(len(source))])
    assert labels.min() == 0 and labels.max() == 3
    np.testing.assert_array_equal(np.bincount(labels), [100, 100, 100, 100])
    for index in range(0, 400, 37):
        assert set(source.scene(index).shapes) == {SHAPES[labels[index]]}
    unconditional = SyntheticVideoSource(60, 2, 16, num_classes=0)
    assert {int(unconditional[i]["label"]) for i in range(60)} == {0}
    assert len({unconditional.scene(i).shapes[0] for i in range(60)}) == len(SHAPES)


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticVideoSource(10, 4, 32, num_classes=len(SHAPES) + 1)
    with pytest.raises(ValueError, match="resolution"):
        SyntheticVideoSource(10, 4, 2)
    with pytest.raises(ValueError, match="shape_size"):
        SyntheticVideoSource(10, 4, 32, shape_size=(0.2, 0.5))


def test_shape_sizes_follow_the_configured_range():
    large = SyntheticVideoSource(100, 4, (40, 56), max_objects=3, shape_size=(0.25, 0.3))
    sizes = np.concatenate([large.scene(i).sizes for i in range(len(large))])
    assert sizes.min() >= 0.25 * 40 and sizes.max() <= 0.3 * 40
    assert sizes.max() - sizes.min() > 1.0  # Drawn from the range, not one value.
    for index in range(0, 100, 9):  # Still inside the frame while they move.
        scene = large.scene(index)
        x, y, r = scene.centres[..., 0], scene.centres[..., 1], scene.bounds[:, None]
        assert (x - r >= 0).all() and (x + r <= 56).all() and (y - r >= 0).all() and (y + r <= 40).all(), index


def _data_config(**changes) -> ml_collections.ConfigDict:
    data = default.get_config().data
    data.update(changes)
    return data


def test_make_source_dispatch():
    source = make_source(_data_config(num_frames=5, resolution=24, num_classes=2, num_examples=33, fps=6.0))
    element = source[0]
    assert len(source) == 33 and element["video"].shape == (5, 24, 24, 3) and element["fps"] == 6.0
    np.testing.assert_array_equal(element["video"], SyntheticVideoSource(33, 5, 24, num_classes=2, seed=0)[0]["video"])
    reseeded = make_source(_data_config(num_frames=5, resolution=24, num_classes=2, num_examples=33), seed=9)
    assert not np.array_equal(reseeded[0]["video"], element["video"])
    with pytest.raises(ValueError, match="unknown data.source"):
        make_source(_data_config(source="youtube"))
    with pytest.raises(ValueError, match="channels"):
        make_source(_data_config(channels=4))
