"""The DiT as a backbone: built from the config's model section, its class embedding (zero at init), the text-free
model's zero token, the trainer's inputs it refuses, and a diffusers export refused when it has a class embedding."""

import jax
import numpy as np
import pytest
from flax import nnx

from pyoco_jax.config import load_config
from pyoco_jax.convert.merge import ConversionError, flat_params
from pyoco_jax.convert.wan_transformer import diffusers_state_dict
from pyoco_jax.models.dit import WanTransformer, dit_from_config, wan_config
from tests.train.helpers import REPO

TINY_DIT = str(REPO / "configs" / "tiny_dit.py")
SMALL = ["model.dit.num_layers=2", "model.dit.ffn_dim=32", "model.dit.freq_dim=16"]
_forward = nnx.jit(lambda model, x, t, kwargs: model(x, t, **kwargs))


def _model(*overrides: str, seed: int = 0) -> WanTransformer:
    config = load_config(TINY_DIT, [*SMALL, *overrides], reads_data=False)
    return dit_from_config(config.model, rngs=nnx.Rngs(seed))


def _perturb(model: nnx.Module, skip: str = "") -> None:
    """Every parameter moved off its init (the zero head would hide everything else), `skip` left alone."""
    rng = np.random.default_rng(1)
    for name, variable in flat_params(model).items():
        if skip and name.startswith(skip):
            continue
        value = np.asarray(variable.get_value())
        variable.set_value(jax.numpy.asarray(value + 0.1 * rng.standard_normal(value.shape), value.dtype))


def _inputs(batch: int = 2):
    rng = np.random.default_rng(0)
    return rng.standard_normal((batch, 4, 8, 8, 3), np.float32), np.array([30.0, 800.0], np.float32)


def test_config_maps_onto_wan_keys():
    config = load_config(TINY_DIT, SMALL, reads_data=False)
    wan = wan_config(config.model)
    assert (wan.in_channels, wan.out_channels, wan.num_layers) == (3, 3, 2)
    assert wan.text_dim == 1  # No text: one zero token of width 1.
    model = nnx.eval_shape(lambda: dit_from_config(config.model, rngs=nnx.Rngs(0)))
    assert model.class_embedding.embedding.get_value().shape == (config.model.num_classes + 1, wan.inner_dim)


def test_class_embedding_changes_nothing_until_it_trains():
    """The class table starts at zero and is drawn last: the same seed gives the same other parameters, and every
    label (and the null label) gives the output of the model without labels; once it moves, labels matter."""
    labelled, plain = _model(), _model("model.num_classes=0", "data.num_classes=0")
    ours, theirs = flat_params(labelled), flat_params(plain)
    assert set(ours) - set(theirs) == {"class_embedding.embedding"}
    assert not np.any(np.asarray(ours["class_embedding.embedding"].get_value()))
    for name, variable in theirs.items():
        np.testing.assert_array_equal(ours[name].get_value(), variable.get_value(), err_msg=name)
    _perturb(plain)
    nnx.update(labelled, nnx.state(plain))
    x, t = _inputs()
    expected = np.asarray(_forward(plain, x, t, {}))
    assert np.abs(expected).max() > 0
    for labels in (np.array([0, 3]), None):
        np.testing.assert_array_equal(np.asarray(_forward(labelled, x, t, {"labels": labels})), expected)
    _perturb(labelled)
    first, second = (np.asarray(_forward(labelled, x, t, {"labels": np.array([k, k])})) for k in (0, 1))
    assert np.abs(first - second).max() > 1e-3


def test_text_free_model_reads_one_zero_token():
    model = _model()
    _perturb(model)
    x, t = _inputs()
    labels = np.array([1, 2])
    with_token = WanTransformer(model.config, num_classes=4, with_text=True, rngs=nnx.Rngs(0))
    nnx.update(with_token, nnx.state(model))
    zero_token = np.zeros((2, 1, 1), np.float32)
    np.testing.assert_array_equal(
        np.asarray(_forward(model, x, t, {"labels": labels})),
        np.asarray(_forward(with_token, x, t, {"labels": labels, "context": zero_token})),
    )
    with pytest.raises(ValueError, match="built without text"):
        model(x, t, context=zero_token)


def test_unet_only_inputs_and_stray_labels_are_refused():
    model = _model()
    x, t = _inputs()
    with pytest.raises(ValueError, match="takes no fps, augmentation"):
        model(x, t, fps=np.ones(2), augmentation=np.ones(2))
    with pytest.raises(ValueError, match="no class embedding"):
        _model("model.num_classes=0", "data.num_classes=0")(x, t, labels=np.array([0, 1]))


def test_diffusers_export_refuses_a_class_embedding():
    with pytest.raises(ConversionError, match="class embedding .* --format orbax"):
        diffusers_state_dict(_model())
    assert "class_embedding" not in " ".join(diffusers_state_dict(_model("model.num_classes=0", "data.num_classes=0")))
