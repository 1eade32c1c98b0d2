"""pyoco-export of DiT runs: a diffusers WanTransformer3DModel folder without a class embedding, Orbax with one."""

import jax
import numpy as np
import pytest
from flax import nnx

from pyoco_jax.config import load_config
from pyoco_jax.convert.export import EXPERIMENT_CONFIG_NAME, export, load_exported
from pyoco_jax.convert.merge import ConversionError
from pyoco_jax.train.build import build_run
from pyoco_jax.train.checkpoint import Checkpointer
from pyoco_jax.train.weights import checkpoint_weights, model_from_weights
from tests.convert.test_export import _random_like
from tests.models.test_wan_transformer import _diffusers_forward, _from_pretrained
from tests.train.helpers import REPO

SMALL_DIT = ["data.num_frames=4", "model.dit.num_layers=2", "model.dit.ffn_dim=32", "model.dit.freq_dim=16"]
TEXT_FREE = ["model.num_classes=0", "data.num_classes=0"]
_forward = nnx.jit(lambda model, x, t, kwargs: model(x, t, **kwargs))


def _dit_run(workdir, *overrides: str):
    """A workdir with one checkpoint of random DiT weights; returns (config, EMA weights by name)."""
    config = load_config(str(REPO / "configs" / "tiny_dit.py"), [*SMALL_DIT, *overrides])
    abstract = build_run(config).abstract_state
    state = _random_like(abstract, 0).replace(ema=_random_like(abstract.ema, 1), rng=jax.random.PRNGKey(0))
    checkpointer = Checkpointer(str(workdir), config.train)
    checkpointer.save(3, state, {"position": 0}, config)
    checkpointer.wait()
    checkpointer.close()
    return checkpoint_weights(str(workdir), ema=True)[::2]


def _inputs(config):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, config.data.num_frames, 16, 16, 3), np.float32)
    return x, np.array([20.0, 900.0], np.float32)


def test_text_free_dit_exports_a_diffusers_transformer(tmp_path, monkeypatch):
    """diffusers on the export, given the one zero token, equals our model; load_exported reads it back exactly."""
    config, weights = _dit_run(tmp_path / "run", *TEXT_FREE)
    out = tmp_path / "export"
    files = export(weights, config, out, fmt="safetensors", dtype="float32")
    assert {f.name for f in files} == {"config.json", "diffusion_pytorch_model.safetensors", EXPERIMENT_CONFIG_NAME}
    reference, info = _from_pretrained(out, monkeypatch)
    assert not any(info.values()), info
    x, t = _inputs(config)
    ours = np.asarray(_forward(model_from_weights(config, weights), x, t, {}))
    theirs = _diffusers_forward(reference, x, t, np.zeros((2, 1, 1), np.float32), None)
    assert np.abs(ours - theirs).max() < 1e-4 * np.abs(ours).max()
    loaded, loaded_config = load_exported(out)
    assert loaded_config.model.backbone == "dit"
    np.testing.assert_array_equal(np.asarray(_forward(loaded, x, t, {})), ours)


def test_class_conditional_dit_exports_to_orbax_only(tmp_path):
    config, weights = _dit_run(tmp_path / "run")
    with pytest.raises(ConversionError, match=r"^the DiT has a class embedding .* --format orbax$"):
        export(weights, config, tmp_path / "refused", fmt="safetensors", dtype="float32")
    assert not (tmp_path / "refused").exists()
    export(weights, config, tmp_path / "orbax", fmt="orbax", dtype="float32")
    loaded, _ = load_exported(tmp_path / "orbax")
    x, t = _inputs(config)
    labels = {"labels": np.array([0, 3])}
    expected = np.asarray(_forward(model_from_weights(config, weights), x, t, labels))
    np.testing.assert_array_equal(np.asarray(_forward(loaded, x, t, labels)), expected)
