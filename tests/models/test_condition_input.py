"""The U-Net's conditioning input: an unconditioned checkpoint loads into a conditioned model, which computes
exactly what the unconditioned one did until its new (zero-initialised) parameters train; once they do,
the condition and its augmentation level change the output."""

import re

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pyoco_jax.convert.merge import flat_params, merge_params
from pyoco_jax.models.unet import VideoUNet
from tests.models.model_testing import make_rngs, perturb, tiny_model_config

FRAMES, SIDE = 3, 8


def _model(**condition) -> VideoUNet:
    config = tiny_model_config(levels=(0, 1), attention=True, adaptor=True)
    config.update(condition)
    return VideoUNet(config, num_frames=FRAMES, rngs=make_rngs(0))


def _inputs(channels: int):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, FRAMES, SIDE, SIDE, 3)), jnp.float32)
    condition = jnp.asarray(rng.normal(size=(2, FRAMES, SIDE, SIDE, channels)), jnp.float32)
    context = jnp.asarray(rng.normal(size=(2, 5, 12)), jnp.float32)
    return x, jnp.asarray([0.3, 1.7]), context, jnp.asarray([0, 2]), condition, jnp.asarray([0.1, 2.0])


@pytest.fixture(scope="module")
def models():
    plain = _model()
    perturb(plain)  # Temporal layers away from their identity init: the check covers them too.
    conditioned = _model(condition_channels=4, condition_augmentation=True)
    state = nnx.state(conditioned, nnx.Param)
    weights = {name: np.asarray(v.get_value()) for name, v in flat_params(plain).items()}
    merged, report = merge_params(state, weights)
    nnx.update(conditioned, merged)
    return plain, conditioned, report


def test_an_unconditioned_checkpoint_loads_with_only_the_condition_layers_new(models):
    _, _, report = models
    assert report.new and all("conv_in_condition" in n or "augmentation_embedding" in n for n in report.new)


def test_the_conditioned_model_computes_the_unconditioned_one_at_init(models):
    plain, conditioned, _ = models
    x, t, context, labels, condition, level = _inputs(4)
    expected = plain(x, t, context=context, labels=labels)
    got = conditioned(x, t, context=context, labels=labels, condition=condition, augmentation=level)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_trained_condition_layers_make_the_condition_and_its_level_matter(models):
    _, conditioned, _ = models
    perturb(conditioned, pattern=re.compile("conv_in_condition|augmentation_embedding"), seed=1)
    x, t, context, labels, condition, level = _inputs(4)
    base = np.asarray(conditioned(x, t, context=context, labels=labels, condition=condition, augmentation=level))
    other_condition = conditioned(x, t, context=context, labels=labels, condition=-condition, augmentation=level)
    other_level = conditioned(x, t, context=context, labels=labels, condition=condition, augmentation=level + 1.0)
    assert np.abs(base - np.asarray(other_condition)).max() > 1e-3
    assert np.abs(base - np.asarray(other_level)).max() > 1e-3


def test_a_missing_or_unexpected_condition_is_refused(models):
    plain, conditioned, _ = models
    x, t, context, labels, condition, level = _inputs(4)
    with pytest.raises(ValueError, match=r"takes a condition \(B, F, H, W, 4\), got None"):
        conditioned(x, t, context=context, labels=labels, augmentation=level)
    with pytest.raises(ValueError, match="model.condition_augmentation"):
        conditioned(x, t, context=context, labels=labels, condition=condition)
    with pytest.raises(ValueError, match="model.condition_channels = 0"):
        plain(x, t, context=context, labels=labels, condition=condition)
