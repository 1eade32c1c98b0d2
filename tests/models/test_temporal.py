"""Temporal layers: identity at init, directed (causal) frames, the frame-wise adaptor."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pyoco_jax.models.adaptor import FrameAdaptor
from pyoco_jax.models.layers import Conv2d, Precision
from pyoco_jax.models.temporal import TemporalAttention, TemporalConv, TemporalSpec
from pyoco_jax.models.unet.stages import DownStage, StageOptions
from tests.models.model_testing import make_rngs, perturb

B, F, H, W, C = 2, 5, 2, 3, 8
TEMB = 16
PARALLEL_TOL = 1e-5
ALL = re.compile(r".")


_apply = nnx.jit(lambda layer, x: layer(x, F))


def _video(seed: int = 0) -> jax.Array:
    return np.random.default_rng(seed).standard_normal((B * F, H, W, C), np.float32)


def _attention(directed: bool, position_encoding: str) -> TemporalAttention:
    return TemporalAttention(
        C,
        num_heads=2,
        num_frames=F,
        directed=directed,
        position_encoding=position_encoding,
        backend="xla",
        precision=Precision(),
        rngs=make_rngs(0),
    )


def _conv(causal: bool) -> TemporalConv:
    return TemporalConv(C, groups=2, eps=1e-5, causal=causal, precision=Precision(), rngs=make_rngs(0))


def _frame_change(layer, k: int) -> np.ndarray:
    """Max |change| of each output frame when input frame k changes."""
    x = _video()
    noise = np.random.default_rng(9).standard_normal((B, H, W, C), np.float32)
    changed = x.reshape(B, F, H, W, C).copy()
    changed[:, k] += noise
    delta = (_apply(layer, changed.reshape(x.shape)) - _apply(layer, x)).reshape(B, F, H, W, C)
    return np.abs(np.asarray(delta)).max(axis=(0, 2, 3, 4))


@pytest.mark.parametrize("position_encoding", ["none", "sinusoidal", "relative"])
def test_temporal_attention_is_zero_at_init_and_directed(position_encoding):
    layer = _attention(True, position_encoding)
    np.testing.assert_array_equal(_apply(layer, _video()), 0.0)  # Zero-init output: the block is the identity.
    perturb(layer, ALL)
    change = _frame_change(layer, k=2)
    np.testing.assert_array_equal(change[:2], 0.0)
    assert (change[2:] > 1e-3).all()


@pytest.mark.parametrize("position_encoding", ["sinusoidal", "relative"])
def test_bidirectional_temporal_attention_sees_later_frames(position_encoding):
    layer = _attention(False, position_encoding)
    perturb(layer, ALL)
    assert (_frame_change(layer, k=2) > 1e-3).all()


def test_relative_bias_changes_attention():
    layer = _attention(False, "relative")
    perturb(layer, re.compile(r"attn\.to_out"))
    before = _apply(layer, _video())
    perturb(layer, re.compile(r"relative_bias"))
    assert np.abs(np.asarray(_apply(layer, _video()) - before)).max() > 1e-4


@pytest.mark.parametrize("causal", [True, False])
def test_temporal_conv_zero_at_init_and_causal_when_directed(causal):
    layer = _conv(causal)
    np.testing.assert_array_equal(_apply(layer, _video()), 0.0)
    perturb(layer, ALL)
    change = _frame_change(layer, k=2)
    assert (change[2:] > 1e-3).all() if causal else (change[1:4] > 1e-3).all()
    assert change[1] == 0.0 if causal else change[0] == 0.0 and change[4] == 0.0


def test_adaptor_gives_each_frame_its_own_scale_and_bias():
    adaptor = FrameAdaptor(F, C, param_dtype=jnp.float32, rngs=make_rngs(0))
    z = np.broadcast_to(np.random.default_rng(1).standard_normal((B, 1, H, W, C), np.float32), (B, F, H, W, C))
    np.testing.assert_array_equal(adaptor(z), z)  # S = 1, B = 0 at init.
    perturb(adaptor, ALL)
    s, b = adaptor.scale.get_value(), adaptor.bias.get_value()
    out = adaptor(z)
    for i in range(F):
        np.testing.assert_allclose(out[:, i], z[:, i] * s[i] + b[i], rtol=1e-6)
    assert np.abs(np.asarray(out[:, 0] - out[:, 1])).max() > 1e-3
    np.testing.assert_allclose(adaptor(z[:, :2]), out[:, :2])  # Shorter clips use the first rows.


def test_gradients_reach_adaptor_scale_and_bias():
    conv = Conv2d(C, C, adaptor_frames=F, precision=Precision(), rngs=make_rngs(0))
    target = np.random.default_rng(2).standard_normal((B * F, H, W, C), np.float32)
    grads = nnx.grad(lambda m: jnp.sum(m(_video(), F) * target))(conv)
    for g in (grads.adaptor.scale.get_value(), grads.adaptor.bias.get_value()):
        assert g.shape == (F, C)
        assert (np.abs(np.asarray(g)).sum(axis=1) > 0).all()  # Every frame's row gets a gradient.


def _stage(arrangement: str) -> DownStage:
    """One unit (ResNet, spatial transformer, temporal attention) at one level, no resampling."""
    spec = TemporalSpec(levels=(0,), attention=True, directed=False, num_heads=2, arrangement=arrangement)
    options = StageOptions(
        temb_channels=TEMB,
        groups=2,
        eps=1e-5,
        context_dim=0,
        backend="xla",
        remat="none",
        num_frames=F,
        temporal=spec,
        precision=Precision(),
    )
    return DownStage(
        C,
        C,
        num_layers=1,
        add_downsample=False,
        attention=True,
        heads=2,
        transformer_layers=1,
        level=0,
        options=options,
        rngs=make_rngs(0),
    )


def test_parallel_arrangement_adds_spatial_and_temporal_attention_of_the_same_input():
    """MagicVideo's z = S-Attn(z) + T-Attn(z): both branches read the ResNet's output z, where the sequential
    arrangement feeds temporal attention the spatial output. Checked against the sub-layers' own outputs to
    PARALLEL_TOL = 1e-5 (float32; the stage and its layers run as separate programs), with every weight perturbed
    so the temporal branch is non-zero and the two arrangements differ by more than 100x the tolerance."""
    parallel_stage, sequential_stage = _stage("parallel"), _stage("sequential")
    perturb(parallel_stage, ALL)
    nnx.update(sequential_stage, nnx.state(parallel_stage))
    x = _video()
    temb = np.random.default_rng(3).standard_normal((B * F, TEMB), np.float32)

    z = parallel_stage.resnets[0](x, temb, F)
    spatial = parallel_stage.attentions[0](z, None, F)  # z + S(z): the spatial transformer adds its own residual.
    temporal = parallel_stage.temporal_attentions[0]
    assert np.abs(np.asarray(temporal(z, F))).max() > 0.1  # The temporal branch is not the zero of its init.
    expected_parallel = np.asarray(z + (spatial - z) + temporal(z, F))
    expected_sequential = np.asarray(spatial + temporal(spatial, F))

    parallel = np.asarray(parallel_stage(x, temb, None, F)[0])
    np.testing.assert_allclose(parallel, expected_parallel, atol=PARALLEL_TOL, rtol=0)
    assert np.abs(parallel - expected_sequential).max() > 100 * PARALLEL_TOL
    sequential = np.asarray(sequential_stage(x, temb, None, F)[0])  # The same weights, the other arrangement.
    np.testing.assert_allclose(sequential, expected_sequential, atol=PARALLEL_TOL, rtol=0)


def test_temporal_spec_checks_choices_and_levels():
    with pytest.raises(ValueError, match="position_encoding"):
        TemporalSpec(position_encoding="rope")
    with pytest.raises(ValueError, match="arrangement"):
        TemporalSpec(arrangement="interleaved")
    spec = TemporalSpec(levels=(1,), mid=True)
    assert spec.active(1) and spec.active(None) and not spec.active(0)
