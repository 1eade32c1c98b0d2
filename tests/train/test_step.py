"""The jitted train step: accumulation, freezing, non-finite skipping, EMA."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pyoco_jax.config import ConfigError
from pyoco_jax.train.build import build_run
from pyoco_jax.train.state import param_path
from pyoco_jax.train.step import ema_decay, example_keys, make_loss_and_grads, make_train_step
from tests.train.helpers import fast_config


def _batch(config, seed=0):
    rng = np.random.default_rng(seed)
    d = config.data
    shape = (d.global_batch_size, d.num_frames, d.resolution, d.resolution, d.channels)
    return {
        "video": jnp.asarray(rng.integers(0, 256, shape, dtype=np.uint8)),
        "label": jnp.asarray(rng.integers(0, d.num_classes, (d.global_batch_size,)), jnp.int32),
        "fps": jnp.full((d.global_batch_size,), d.fps, jnp.float32),
    }


@functools.cache
def _compiled(*overrides):
    """(config, initial state, jitted step) per override set, shared by the tests that use it."""
    config = fast_config(*overrides)
    parts = build_run(config)
    state = jax.jit(lambda: parts.init_state(config))()
    return config, state, jax.jit(make_train_step(parts.graphdef, parts.formulation, parts.optimizer, config))


def _run_steps(overrides=(), num_steps=2, batch=None):
    config, state, step = _compiled(*overrides)
    batch = _batch(config) if batch is None else batch
    history = []
    for _ in range(num_steps):
        state, metrics = step(state, batch)
        history.append(jax.device_get(metrics))
    return state, history


def test_gradient_accumulation_equals_one_big_step():
    """k interleaved micro-batches give the full batch's loss and gradients (per-example keys)."""
    config, state, _ = _compiled()
    parts = build_run(config)
    batch = _batch(config)
    keys = example_keys(state.rng, state.step, config.data.global_batch_size)
    results = []
    for accum in (1, 4):
        accum_config = fast_config(f"optim.accum_steps={accum}")
        loss_and_grads = jax.jit(make_loss_and_grads(parts.graphdef, parts.formulation, accum_config))
        results.append(loss_and_grads(state.params, state.frozen, batch, keys))
    (loss1, grads1), (loss4, grads4) = results
    np.testing.assert_allclose(loss1, loss4, rtol=1e-5)
    scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads1))
    for a, b in zip(jax.tree.leaves(grads1), jax.tree.leaves(grads4), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)
    _, history = _run_steps(("optim.accum_steps=4",), num_steps=1)
    np.testing.assert_allclose(history[0]["loss"], loss1, rtol=1e-5)


def test_regex_freezing_leaves_frozen_params_bit_identical():
    overrides = ("optim.trainable=temporal|adaptor",)
    _, initial, _ = _compiled(*overrides)
    state, _ = _run_steps(overrides, num_steps=2)
    paths = ["/".join(map(str, p)) for p, _ in jax.tree_util.tree_flatten_with_path(state.params)[0]]
    assert paths and all("temporal" in p or "adaptor" in p for p in paths)
    for a, b in zip(jax.tree.leaves(initial.frozen), jax.tree.leaves(state.frozen), strict=True):
        np.testing.assert_array_equal(a, b)
    pairs = zip(jax.tree.leaves(initial.params), jax.tree.leaves(state.params), strict=True)
    assert any(not np.array_equal(a, b) for a, b in pairs)


def test_lr_scale_multiplies_the_update_of_matching_params_only():
    base = ("optim.warmup_steps=0",)
    _, initial, _ = _compiled(*base)
    plain, _ = _run_steps(base, num_steps=1)
    scaled, _ = _run_steps((*base, "optim.lr_scale=10.0", "optim.lr_scale_pattern=temporal"), num_steps=1)
    matched = 0
    leaves = (jax.tree_util.tree_leaves_with_path(t.params) for t in (initial, plain, scaled))
    for (path, p0), (_, p1), (_, p2) in zip(*leaves, strict=True):
        step_plain, step_scaled = np.asarray(p1 - p0), np.asarray(p2 - p0)
        if "temporal" in param_path(path):
            matched += 1
            np.testing.assert_allclose(step_scaled, 10.0 * step_plain, rtol=1e-4, atol=1e-9)
        else:
            np.testing.assert_array_equal(step_scaled, step_plain)
    assert matched > 0


def test_lr_scale_pattern_that_matches_nothing_fails_before_compiling():
    with pytest.raises(ConfigError, match="matches no path"):
        build_run(fast_config("optim.lr_scale=3.0", "optim.lr_scale_pattern=no_such_layer"))
    with pytest.raises(ConfigError, match="not a regular expression"):
        fast_config("optim.lr_scale_pattern=temporal(")


def test_non_finite_loss_skips_the_update_and_counts():
    config, initial, _ = _compiled()
    batch = _batch(config)
    batch["video"] = jnp.full(batch["video"].shape, jnp.nan, jnp.float32)
    state, history = _run_steps(num_steps=3, batch=batch)
    assert [int(m["nonfinite_streak"]) for m in history] == [1, 2, 3]
    assert int(state.step) == 3
    for a, b in zip(jax.tree.leaves(initial.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_ema_update_inside_the_step():
    assert float(ema_decay(jnp.asarray(0), 0.999)) == pytest.approx(0.1)
    assert float(ema_decay(jnp.asarray(10**6), 0.999)) == pytest.approx(0.999)
    _, initial, _ = _compiled()
    state, _ = _run_steps(num_steps=1)
    # Step 0 uses the warmed-up decay 0.1: ema = 0.1 * initial params + 0.9 * updated params.
    for e, p0, p1 in zip(*(jax.tree.leaves(t) for t in (state.ema, initial.params, state.params)), strict=True):
        np.testing.assert_allclose(e, 0.1 * p0 + 0.9 * p1, rtol=1e-6, atol=1e-7)
