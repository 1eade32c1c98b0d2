"""The conditioning mechanism: which frames are given, the low-res round trip, the condition's channels and
noise, and `enforce`, which makes samples keep what they were given."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from pyoco_jax.conditioning import (
    augmentation_level,
    build_condition,
    downsample,
    enforce,
    frame_mask,
    training_condition,
    training_masks,
    upsample,
)


def _condition(**values) -> ml_collections.ConfigDict:
    defaults = dict(frames="", interpolation_factor=2, given_frames=1, low_res_factor=0, augment_sigma_max=0.0)
    return ml_collections.ConfigDict({**defaults, **values})


def _video(frames=5, side=8, seed=0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (2, frames, side, side, 3)), jnp.float32)


def test_frame_masks_give_keyframes_first_or_last_frames():
    assert frame_mask("interpolation", 7, factor=3, given=1).tolist() == [1, 0, 0, 1, 0, 0, 1]
    assert frame_mask("first", 4, factor=3, given=1).tolist() == [1, 0, 0, 0]
    assert frame_mask("last", 4, factor=3, given=2).tolist() == [0, 0, 1, 1]


def test_random_masks_draw_each_mode_per_example():
    masks = np.asarray(training_masks(_condition(frames="random"), 300, 5, jax.random.PRNGKey(0)))
    seen = {tuple(row) for row in masks.tolist()}
    assert seen == {(1, 0, 1, 0, 1), (1, 0, 0, 0, 0), (0, 0, 0, 0, 1)}


def test_downsampling_undoes_upsampling_exactly_and_averages_blocks():
    video = _video()
    np.testing.assert_array_equal(downsample(upsample(video, 4), 4), video)
    np.testing.assert_allclose(downsample(video, 2)[0, 0, 0, 0], video[0, 0, :2, :2].mean(axis=(0, 1)), rtol=1e-6)


def test_the_condition_has_masked_frames_a_mask_and_the_upsampled_low_res_clip():
    video = _video(side=8)
    mask = jnp.asarray([[1, 0, 0, 0, 1]] * 2, jnp.float32)
    condition = _condition(frames="interpolation", low_res_factor=2)
    built = build_condition(condition, video, mask, downsample(video, 2), jnp.zeros(2), jax.random.PRNGKey(0))
    assert built.shape == (2, 5, 8, 8, 7)
    np.testing.assert_array_equal(built[:, 0, ..., :3], video[:, 0])
    np.testing.assert_array_equal(built[:, 1, ..., :4], 0.0)  # Not given: no values, mask 0.
    np.testing.assert_array_equal(built[:, 4, ..., 3], 1.0)
    np.testing.assert_array_equal(downsample(built[..., 4:], 2), downsample(video, 2))


def test_training_noise_has_the_drawn_level_and_the_level_is_embedded_bounded():
    video = jnp.zeros((4000, 2, 2, 2, 3))
    built, level = training_condition(_condition(frames="first", augment_sigma_max=0.5), video, jax.random.PRNGKey(1))
    sigma = np.asarray(level) / (1000.0 - np.asarray(level))  # Inverse of augmentation_level.
    noise = np.asarray(built[:, 0, ..., :3]).reshape(4000, -1)  # The given (first) frame: pure noise here.
    assert 0 <= sigma.min() and sigma.max() <= 0.5
    np.testing.assert_allclose(noise.std(axis=1).mean(), np.mean(sigma) * 0.92, rtol=0.1)  # E|std| of 12 draws.
    assert float(augmentation_level(jnp.asarray(1e6))) < 1000.0


def test_enforce_keeps_given_frames_and_the_low_res_clip():
    video, sample = _video(seed=0), _video(seed=1)
    mask = jnp.asarray([[1, 0, 1, 0, 1]] * 2, jnp.float32)
    kept = enforce(_condition(frames="interpolation"), sample, video, mask, None)
    np.testing.assert_array_equal(kept[:, ::2], video[:, ::2])
    np.testing.assert_array_equal(kept[:, 1::2], sample[:, 1::2])
    low_res = downsample(video, 4)
    wild = 3.0 * sample  # Far out of range: the projection alternates with clipping.
    sharp = enforce(_condition(low_res_factor=4), wild, None, None, low_res)
    np.testing.assert_allclose(downsample(sharp, 4), low_res, atol=1e-5)
    assert float(jnp.abs(sharp).max()) <= 1.0 + 1e-5
    calm = 0.1 * sample  # Detail small enough to stay in range: it is kept as it is.
    kept = enforce(_condition(low_res_factor=4), calm, None, None, 0.5 * low_res)
    detail = calm - upsample(downsample(calm, 4), 4)
    np.testing.assert_allclose(kept - upsample(0.5 * low_res, 4), detail, atol=1e-6)


def test_latents_are_unbounded_so_enforce_keeps_their_detail_without_clipping():
    sample, low_res = 3.0 * _video(seed=1), 4.0 * downsample(_video(seed=0), 4)
    kept = enforce(_condition(low_res_factor=4), sample, None, None, low_res, bounded=False)
    np.testing.assert_allclose(downsample(kept, 4), low_res, atol=1e-5)
    np.testing.assert_allclose(kept - upsample(low_res, 4), sample - upsample(downsample(sample, 4), 4), atol=1e-5)
    assert float(jnp.abs(kept).max()) > 2.0


@pytest.mark.parametrize("mode", ["bad", "random"])
def test_frame_mask_refuses_what_is_not_a_single_mode(mode):
    with pytest.raises(ValueError, match="not one of"):
        frame_mask(mode, 4, factor=2, given=1)
