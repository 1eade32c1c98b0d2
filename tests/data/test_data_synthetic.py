"""The embedded moving-shapes dataset: deterministic, moving, in frame, labelled by shape."""

import hashlib
import pathlib

import ml_collections
import numpy as np
import pytest
from pyoco_jax.configs import default

from pyoco_jax.config import ConfigError, load_config
from pyoco_jax.data import synthetic
from pyoco_jax.data.loader import make_source
from pyoco_jax.data.synthetic import BACKGROUNDS, SHAPES, SyntheticVideoSource

TINY = str(pathlib.Path(__file__).parents[2] / "configs" / "tiny.py")


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


# Clips rendered before the background / camera / occluder options existed: the defaults must keep them byte for byte.
RENDERED_BEFORE_THE_OPTIONS = [
    (
        dict(num_examples=64, num_frames=8, resolution=32),
        (0, 5, 63),
        "c5d0a4d2c6abd0fa2cc1e73f9c71c60b9415abbaffbf859b8d6458716f702d06",
    ),
    (
        dict(num_examples=64, num_frames=16, resolution=64, num_classes=6, max_objects=3, seed=7),
        (1, 2, 40),
        "6e75c277c8ae80ab297f2b449193e62ca610d15f84714917669449f9722b8704",
    ),
    (
        dict(num_examples=64, num_frames=5, resolution=(17, 29), num_classes=4, shape_size=(0.25, 0.38), seed=3),
        (0, 9),
        "a81ac21c817284838e37a17cb829eef11bd73765cab99a86ca032ccb5d5bc3b7",
    ),
]
ALL_OPTIONS = dict(background="texture", camera_speed=1.5, occluder=True)


@pytest.mark.parametrize("kwargs,indices,digest", RENDERED_BEFORE_THE_OPTIONS)
def test_default_clips_are_unchanged(kwargs, indices, digest):
    source = SyntheticVideoSource(**kwargs)
    sha = hashlib.sha256()
    for index in indices:
        element = source[index]
        sha.update(element["video"].tobytes())
        sha.update(element["label"].tobytes())
    assert sha.hexdigest() == digest


def test_options_are_deterministic_and_valid_for_any_frames_and_resolution():
    first, again = (SyntheticVideoSource(20, 6, (24, 40), num_classes=6, **ALL_OPTIONS) for _ in range(2))
    read_late = [again[i]["video"] for i in (7, 3)]  # Access order must not matter.
    for video, index in zip(read_late, (7, 3), strict=True):
        np.testing.assert_array_equal(video, first[index]["video"])
        assert video.shape == (6, 24, 40, 3) and video.dtype == np.uint8
    assert not np.array_equal(first[3]["video"], SyntheticVideoSource(20, 6, (24, 40), num_classes=6)[3]["video"])
    assert "camera_speed=1.5" in repr(first)


def test_each_option_leaves_the_rest_of_the_clip_unchanged():
    plain = SyntheticVideoSource(30, 8, 32, num_classes=6, max_objects=3)
    texture, occluded, panned = (
        SyntheticVideoSource(30, 8, 32, num_classes=6, max_objects=3, **options)
        for options in (dict(background="texture"), dict(occluder=True), dict(camera_speed=2.0))
    )
    for index in range(0, 30, 7):
        scenes = [source.scene(index) for source in (plain, texture, occluded, panned)]
        for field in ("shapes", "sizes", "angles", "colours"):
            for scene in scenes[1:]:
                np.testing.assert_array_equal(getattr(scene, field), getattr(scenes[0], field))
        np.testing.assert_array_equal(scenes[1].centres, scenes[0].centres)
        np.testing.assert_array_equal(scenes[2].centres, scenes[0].centres)
        np.testing.assert_array_equal(scenes[2].background, scenes[0].background)
        assert scenes[0].occluder is None and scenes[2].occluder is not None


def test_texture_background_varies_more_and_keeps_shapes_apart():
    graded = SyntheticVideoSource(40, 2, 32)
    texture = SyntheticVideoSource(40, 2, 32, background="texture")

    def variation(source):
        backgrounds = np.stack([source.scene(i).background for i in range(len(source))])
        spread = backgrounds.var(axis=(1, 2)).mean()  # Spatial variance per clip and channel.
        detail = np.square(np.diff(backgrounds, axis=2)).mean()  # Neighbour differences: finer structure.
        return spread, detail, backgrounds.max()

    (graded_spread, graded_detail, _), (texture_spread, texture_detail, texture_max) = map(variation, (graded, texture))
    assert texture_spread > 4 * graded_spread and texture_detail > 10 * graded_detail
    assert texture_max <= 0.5  # Every shape has a channel >= 0.75: it stands out from the texture everywhere.


@pytest.mark.parametrize("background", BACKGROUNDS)
def test_camera_pan_moves_the_background_by_whole_pixels(background):
    speed, frames, (height, width) = 1.7, 8, (24, 40)
    source = SyntheticVideoSource(12, frames, (height, width), max_objects=2, background=background, camera_speed=speed)
    rows, cols = np.mgrid[:height, :width] + 0.5
    for index in range(len(source)):
        scene = source.scene(index)
        video = source.render(scene).astype(np.int16)
        # A straight line at `speed`, rounded to whole pixels (0.5 per axis; 0.75 with the fitted direction's error).
        path, t = scene.camera - scene.camera[0], np.arange(frames)[:, None]
        step = (t * path).sum(axis=0) / np.square(t).sum()
        assert path.dtype.kind == "i" and np.linalg.norm(step) == pytest.approx(speed, rel=0.05), index
        assert np.abs(path - t * speed * step / np.linalg.norm(step)).max() <= 0.75, index
        for f in range(frames - 1):
            dx, dy = scene.camera[f + 1] - scene.camera[f]
            assert abs(dx) + abs(dy) >= 1, index  # 1.7 pixels per frame: moves every frame.
            # Frame f + 1 at (x, y) shows what frame f showed at (x + dx, y + dy), wherever no shape covers either.
            ys, xs = slice(max(0, -dy), min(height, height - dy)), slice(max(0, -dx), min(width, width - dx))
            later = video[f + 1, ys, xs]
            earlier = video[f, ys.start + dy : ys.stop + dy, xs.start + dx : xs.stop + dx]
            free = _no_shape(scene, f + 1, rows, cols)[ys, xs] & _no_shape(scene, f, rows + dy, cols + dx)[ys, xs]
            assert free.sum() > 0.3 * free.size, index
            np.testing.assert_array_equal(later[free], earlier[free])  # Exact: every frame crops one canvas.
            if background == "texture":  # Not vacuous: an unshifted comparison differs.
                assert not np.array_equal(later[free], video[f, ys, xs][free]), index


def _no_shape(scene, frame: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Pixels (centres rows, cols) more than a pixel outside every shape's bounding circle in `frame`."""
    distance = np.hypot(
        cols[None] - scene.centres[:, frame, 0, None, None], rows[None] - scene.centres[:, frame, 1, None, None]
    )
    return (distance > scene.bounds[:, None, None] + 1.0).all(axis=0)


def test_camera_pan_carries_the_shapes_and_keeps_them_in_frame():
    plain = SyntheticVideoSource(300, 2, (40, 56), max_objects=1)
    panned = SyntheticVideoSource(300, 2, (40, 56), max_objects=1, camera_speed=3.0)
    carried = 0
    for index in range(len(plain)):
        a, b = plain.scene(index), panned.scene(index)
        assert _inside(b.centres, b.bounds[0], 40, 56, margin=0.0), index
        # A shape moves at most 0.06 * 40 pixels per frame, so one this far from the walls has not bounced ...
        own = a.centres[0, 1] - a.centres[0, 0]
        expected = b.centres[0, 0] + own - (b.camera[1] - b.camera[0])
        if _inside(a.centres, a.bounds[0], 40, 56, margin=2.5) and _inside(expected, b.bounds[0], 40, 56):
            np.testing.assert_allclose(b.centres[0, 1], expected, atol=1e-9)  # ... and on screen, it moves by its
            carried += 1  # own motion minus the camera's, like the background.
    assert carried > 100


def _inside(centres: np.ndarray, radius: float, height: int, width: int, margin: float = 1e-6) -> bool:
    """Whether circles of `radius` at `centres` (..., 2) lie in the frame, `margin` clear of the borders."""
    x, y = centres[..., 0], centres[..., 1]
    low, high_x, high_y = radius + margin, width - radius - margin, height - radius - margin
    return bool((x >= low).all() and (x <= high_x).all() and (y >= low).all() and (y <= high_y).all())


def test_occluder_hides_parts_of_shapes_but_never_a_whole_shape():
    kwargs = dict(num_classes=6, max_objects=1, shape_size=(0.2, 0.3))
    plain = SyntheticVideoSource(60, 8, 32, **kwargs)
    occluded = SyntheticVideoSource(60, 8, 32, occluder=True, **kwargs)
    overlapping = 0
    for index in range(len(plain)):
        scene = plain.scene(index)
        before, after = plain.render(scene).astype(np.int16), occluded[index]["video"].astype(np.int16)
        bar = (after != before).any(axis=-1)
        shape = (np.abs(before - np.round(scene.background * 255)) > 40).any(axis=-1)  # Fixed camera: frame = canvas.
        assert bar.any(axis=(1, 2)).sum() >= 4, index  # The bar is in view in most frames.
        assert (shape & ~bar).any(axis=(1, 2)).all(), index  # Every frame still shows part of the shape.
        overlapping += (shape & bar).any(axis=(1, 2)).any()
        bar_scene = occluded.scene(index).occluder
        assert bar_scene.width <= 0.6 * synthetic._NARROWEST * scene.sizes.min() + 1e-9, index
    assert overlapping > 15  # It does hide parts of shapes, in a fair share of clips.


def test_no_shape_is_narrower_than_the_occluder_bound():
    """The occluder's guarantee rests on _NARROWEST: every shape is at least this wide, across any band."""
    size = 40.0
    grid = np.arange(-60.0, 60.0, 0.25, dtype=np.float32)
    u, v = np.meshgrid(grid, grid)
    angles = np.linspace(0.0, np.pi, 181)
    widths = {}
    for kind in SHAPES:
        inside = synthetic._signed_distance(kind, u, v, np.float32(size)) < 0
        across = np.cos(angles)[:, None] * u[inside] + np.sin(angles)[:, None] * v[inside]
        widths[kind] = (across.max(axis=1) - across.min(axis=1)).min() / size
    assert min(widths.values()) >= synthetic._NARROWEST - 0.02
    assert widths["rhombus"] == pytest.approx(synthetic._NARROWEST, abs=0.02)


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="background"):
        SyntheticVideoSource(10, 4, 32, background="noise")
    for speed in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="camera_speed"):
            SyntheticVideoSource(10, 4, 32, camera_speed=speed)


@pytest.mark.parametrize(
    "override,key",
    [
        ("data.background=noise", "data.background"),
        ("data.camera_speed=-1.0", "data.camera_speed"),
        ("data.camera_speed=nan", "data.camera_speed"),
        ("data.camera_speed=inf", "data.camera_speed"),
    ],
)
def test_bad_option_values_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(TINY, [override])


def test_make_source_passes_the_options():
    config = load_config(TINY, ["data.background=texture", "data.camera_speed=2.5", "data.occluder=True"])
    source = make_source(config.data, seed=4)
    assert (source.background, source.camera_speed, source.occluder) == ("texture", 2.5, True)
    expected = SyntheticVideoSource(
        config.data.num_examples,
        config.data.num_frames,
        config.data.resolution,
        num_classes=config.data.num_classes,
        max_objects=config.data.max_objects,
        shape_size=tuple(config.data.shape_size),
        background="texture",
        camera_speed=2.5,
        occluder=True,
        seed=4,
    )
    np.testing.assert_array_equal(source[1]["video"], expected[1]["video"])
