"""The flicker metric on videos whose answer is known by hand, and against a plain loop."""

import numpy as np
import pytest

from pyoco_jax.evaluate.flicker import flicker, frame_differences


def _moving_gradient(frames: int = 4, step: float = 0.1) -> np.ndarray:
    """(1, F, 4, 4, 3): a horizontal ramp sliding right by `step` per frame (values change by `step`)."""
    ramp = np.linspace(-0.5, 0.5, 4, dtype=np.float32)[None, :, None]
    return np.stack([np.broadcast_to(ramp + f * step, (4, 4, 3)) for f in range(frames)])[None]


def test_static_reconstruction_of_a_static_video_has_no_flicker():
    video = np.broadcast_to(np.random.default_rng(0).uniform(-1, 1, (2, 1, 4, 4, 3)), (2, 5, 4, 4, 3))
    assert float(flicker(video, video)) == 0.0


def test_errors_that_stay_put_do_not_count():
    """A constant offset or a fixed per-pixel error pattern is not flicker."""
    video = _moving_gradient()
    pattern = np.random.default_rng(1).uniform(-0.3, 0.3, (1, 1, 4, 4, 3)).astype(np.float32)
    assert float(flicker(video + 0.25, video)) == pytest.approx(0.0, abs=1e-7)
    assert float(flicker(video + pattern, video)) == pytest.approx(0.0, abs=1e-7)


def test_known_values():
    video = _moving_gradient(frames=4, step=0.1)
    # Alternating +0.2 / -0.2 per frame: every frame difference is off by 0.4.
    dither = np.array([0.2, -0.2, 0.2, -0.2], np.float32)[None, :, None, None, None]
    assert float(flicker(video + dither, video)) == pytest.approx(0.4, abs=1e-6)
    # A frozen reconstruction of a video changing by 0.1 per frame misses 0.1 per difference.
    frozen = np.broadcast_to(video[:, :1], video.shape)
    assert float(flicker(frozen, video)) == pytest.approx(0.1, abs=1e-6)
    # Offsets 0, 1, 1, 4 on one of two clips: mean of |1|, |0|, |3| = 4/3 on that clip, 0 on the other.
    both = np.concatenate([video, video])
    offsets = np.zeros((2, 4, 1, 1, 1), np.float32)
    offsets[0, :, 0, 0, 0] = [0, 1, 1, 4]
    assert float(flicker(both + offsets, both)) == pytest.approx(4 / 3 / 2, abs=1e-6)


def test_matches_a_loop_over_frames_and_any_frame_axis():
    rng = np.random.default_rng(2)
    reconstruction, target = rng.normal(size=(2, 6, 3, 5, 2)), rng.normal(size=(2, 6, 3, 5, 2))
    gaps = [
        np.abs((reconstruction[:, f + 1] - reconstruction[:, f]) - (target[:, f + 1] - target[:, f])) for f in range(5)
    ]
    assert float(flicker(reconstruction, target)) == pytest.approx(float(np.mean(gaps)), rel=1e-5)
    moved = lambda x: np.moveaxis(x, 1, -1)  # Frames last.
    assert float(flicker(moved(reconstruction), moved(target), frame_axis=-1)) == pytest.approx(
        float(np.mean(gaps)), rel=1e-5
    )
    np.testing.assert_allclose(frame_differences(target), target[:, 1:] - target[:, :-1], atol=1e-6)


def test_refuses_mismatched_or_single_frame_inputs():
    with pytest.raises(ValueError, match="differ in shape"):
        flicker(np.zeros((1, 4, 2, 2, 3)), np.zeros((1, 3, 2, 2, 3)))
    with pytest.raises(ValueError, match="at least 2 frames"):
        flicker(np.zeros((1, 1, 2, 2, 3)), np.zeros((1, 1, 2, 2, 3)))
