"""VideoUNet: shapes, inflation identity, directed (causal) frames, remat equivalence, input errors."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pyoco_jax.convert.merge import merge_params
from pyoco_jax.models.layers import Precision
from pyoco_jax.models.temporal import TemporalSpec
from pyoco_jax.models.unet import VideoUNet
from pyoco_jax.models.unet.stages import DownStage, StageOptions
from tests.models.model_testing import make_rngs, perturb, tiny_model_config

FRAMES = 3
ALL_LAYERS = dict(levels=(0, 1), mid=True, attention=True, conv=True, adaptor=True)
DIRECTED = dict(ALL_LAYERS, directed=True, position_encoding="relative", arrangement="sequential")
BIDIRECTIONAL = dict(ALL_LAYERS, directed=False, position_encoding="sinusoidal", arrangement="parallel")

_forward = nnx.jit(lambda model, *args: model(*args))


@pytest.fixture(scope="module")
def image_model():
    return VideoUNet(tiny_model_config(), num_frames=1, rngs=make_rngs(0))


@pytest.fixture(scope="module")
def inflate(image_model):
    """inflate(**temporal) -> a fresh video model with those layers and the image model's 2D weights."""
    built = {}

    def make(**temporal) -> VideoUNet:
        key = repr(sorted(temporal.items()))
        if key not in built:
            m = tiny_model_config(**temporal)
            m.fps_conditioning = True
            built[key] = nnx.split(VideoUNet(m, num_frames=FRAMES, rngs=make_rngs(1)))
        graphdef, state = built[key]
        merged, report = merge_params(state, image_model)
        assert report.new and all(("temporal_" in n or "adaptor" in n or "fps_" in n) for n in report.new)
        return nnx.merge(graphdef, merged)

    return make


def _per_frame(image_model, x, t, context, labels):
    """The image model on every frame: frames folded into the batch."""
    b, f = x.shape[:2]
    rep = lambda a: np.repeat(a, f, axis=0)
    out = _forward(image_model, x.reshape(b * f, 1, *x.shape[2:]), rep(t), rep(context), rep(labels), None)
    return out.reshape(x.shape[:-1] + out.shape[-1:])


def test_output_shape_and_dtype(image_model, inputs):
    x, t, context, labels, _ = inputs
    out = _forward(image_model, x, t, context, labels, None)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert np.isfinite(np.asarray(out)).all()


@pytest.mark.parametrize("temporal", [DIRECTED, BIDIRECTIONAL], ids=["directed", "bidirectional"])
def test_inflation_is_identity_at_init(image_model, inflate, inputs, temporal):
    """Every temporal layer on (attention, positions, conv, adaptor, fps): video = image per frame."""
    x, t, context, labels, fps = inputs
    expected = _per_frame(image_model, x, t, context, labels)
    np.testing.assert_allclose(_forward(inflate(**temporal), x, t, context, labels, fps), expected, atol=2e-5)


def test_directed_model_is_causal_in_frames(inflate, inputs):
    x, t, context, labels, fps = inputs
    video = inflate(**DIRECTED)
    perturb(video)  # Make every temporal layer active (zero-init outputs, adaptor, relative bias).
    k = 1
    changed = x.copy()
    changed[:, k] += np.random.default_rng(7).standard_normal(x[:, k].shape, np.float32)
    before, after = _forward(video, x, t, context, labels, fps), _forward(video, changed, t, context, labels, fps)
    np.testing.assert_allclose(after[:, :k], before[:, :k], atol=1e-6)
    assert np.abs(np.asarray(after[:, k:] - before[:, k:])).max(axis=(0, 2, 3, 4)).min() > 1e-3


def test_bidirectional_model_mixes_frames(inflate, inputs):
    x, t, context, labels, fps = inputs
    video = inflate(**BIDIRECTIONAL)
    perturb(video)
    changed = x.copy()
    changed[:, 2] += np.random.default_rng(8).standard_normal(x[:, 2].shape, np.float32)
    before, after = _forward(video, x, t, context, labels, fps), _forward(video, changed, t, context, labels, fps)
    assert np.abs(np.asarray(after[:, 0] - before[:, 0])).max() > 1e-3


def test_fps_and_labels_condition_the_output(inflate, inputs):
    x, t, context, labels, fps = inputs
    video = inflate(**DIRECTED)
    perturb(video, re.compile(r"fps_embedding"))
    base = _forward(video, x, t, context, labels, fps)
    assert np.abs(np.asarray(_forward(video, x, t, context, labels, fps * 2) - base)).max() > 1e-4
    assert np.abs(np.asarray(_forward(video, x, t, context, labels[::-1], fps) - base)).max() > 1e-4
    table = video.class_embedding.embedding.get_value()
    assert table.shape[0] == 3 + 1  # num_classes + the null label
    np.testing.assert_array_equal(video.class_embedding(None, 2), np.stack([table[-1]] * 2))


@pytest.mark.slow
def test_remat_modes_give_same_loss_and_grads():
    """Per-block remat on a down stage with ResNet, temporal conv/attention and adaptor blocks (4 grad compiles)."""
    rng = np.random.default_rng(0)
    x, temb = rng.standard_normal((2 * FRAMES, 8, 8, 8), np.float32), rng.standard_normal((2 * FRAMES, 16), np.float32)
    results = {}
    for mode in ("none", "full", "dots", "offload"):
        options = StageOptions(
            temb_channels=16,
            groups=4,
            eps=1e-5,
            context_dim=0,
            backend="xla",
            remat=mode,
            num_frames=FRAMES,
            temporal=TemporalSpec(levels=(0,), attention=True, conv=True, adaptor=True),
            precision=Precision(),
        )
        stage = DownStage(
            8,
            8,
            num_layers=1,
            add_downsample=True,
            attention=False,
            heads=2,
            transformer_layers=1,
            level=0,
            options=options,
            rngs=make_rngs(3),
        )
        perturb(stage)

        @nnx.jit
        def loss_and_grads(stage):
            def objective(s):
                out, skips = s(x, temb, None, FRAMES)
                return jnp.mean(out**2) + sum(jnp.mean(k**2) for k in skips)

            return nnx.value_and_grad(objective)(stage)

        loss, grads = loss_and_grads(stage)
        results[mode] = (loss, jax.tree.leaves(nnx.state(grads)))
    loss0, grads0 = results["none"]
    assert all(np.abs(np.asarray(g)).max() > 0 for g in grads0)
    for mode, (loss, grads) in results.items():
        np.testing.assert_allclose(loss, loss0, rtol=1e-6, err_msg=mode)
        for g, g0 in zip(grads, grads0, strict=True):
            np.testing.assert_allclose(g, g0, rtol=1e-4, atol=1e-5, err_msg=mode)


def test_bfloat16_compute_runs(inputs):
    x, t, context, labels, _ = inputs
    m = tiny_model_config(levels=(0,), attention=True)
    m.block_out_channels, m.attention_levels, m.dtype = (16,), (True,), "bfloat16"
    model = VideoUNet(m, num_frames=FRAMES, rngs=make_rngs(0))
    assert model.conv_in.kernel.get_value().dtype == jnp.float32
    out = _forward(model, x, t, context, labels, None)
    assert out.dtype == jnp.float32 and np.isfinite(np.asarray(out)).all()


def test_clear_errors_for_bad_inputs(image_model, inputs):
    x, t, context, labels, _ = inputs
    with pytest.raises(ValueError, match="pass context"):
        image_model(x, t)
    with pytest.raises(ValueError, match="downsampling factor"):
        image_model(x[:, :, :7], t, context)
    with pytest.raises(ValueError, match=r"\(B, F, H, W, C\)"):
        image_model(x[:, 0], t, context)
    with pytest.raises(ValueError, match="built for 1 frames"):
        VideoUNet(tiny_model_config(levels=(0,), adaptor=True), num_frames=1, rngs=make_rngs(0))(x, t, context)
