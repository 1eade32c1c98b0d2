"""`train.init_from` a diffusers Wan transformer folder: the run's DiT then computes what diffusers does (with or
without LoRA adapters on top), and a folder of another architecture, or a run that is not flow matching, is
refused with the keys to change."""

import jax
import numpy as np
import pytest
from flax import nnx

from pyoco_jax.config import load_config
from pyoco_jax.convert.merge import ConversionError, flat_params
from pyoco_jax.errors import ConfigError
from pyoco_jax.models.lora import is_adapter
from pyoco_jax.train.build import build_run
from pyoco_jax.train.pretrained import init_from_pretrained
from tests.models.test_wan_transformer import _diffusers_forward, _saved_reference
from tests.train.helpers import REPO

# A tiny Wan transformer, and the tiny DiT run that has its architecture.
WAN = dict(
    patch_size=(1, 4, 4),  # tiny_dit's
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=3,
    out_channels=3,
    text_dim=16,
    freq_dim=16,
    ffn_dim=48,
    num_layers=2,
    cross_attn_norm=True,
    eps=1e-6,
)
RUN = [
    "data.num_frames=4",
    "model.dit.num_attention_heads=2",
    "model.dit.attention_head_dim=12",
    "model.dit.freq_dim=16",
    "model.dit.ffn_dim=48",
    "model.dit.num_layers=2",
    "model.cross_attention_dim=16",
    "model.num_classes=0",
    "data.num_classes=0",
]
_forward = nnx.jit(lambda model, x, t, text: model(x, t, context=text))


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wan")
    return folder, _saved_reference(folder, WAN)


def _started(folder, *overrides: str):
    """The run's model after init_from: the trainer's own fresh state, then the folder's weights."""
    config = load_config(
        str(REPO / "configs" / "tiny_dit.py"), [*RUN, f"train.init_from={folder}", *overrides], reads_data=False
    )
    parts = build_run(config)
    state = init_from_pretrained(jax.jit(lambda: parts.init_state(config))(), parts, config)
    return state, nnx.merge(parts.graphdef, state.params, state.frozen)


@pytest.mark.parametrize("lora", [False, True])
def test_a_run_started_from_a_wan_folder_computes_what_diffusers_does(wan_folder, lora):
    folder, reference = wan_folder
    state, model = _started(folder, *(["model.lora.rank=2"] if lora else []))
    trained = flat_params(state.params)
    assert all(is_adapter(name) for name in trained) if lora else not any(is_adapter(name) for name in trained)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 8, 8, 3), np.float32)
    t = np.array([5.0, 600.0], np.float32)
    text = rng.standard_normal((2, 7, 16), np.float32)
    expected = _diffusers_forward(reference, x, t, text, None)
    error = np.abs(np.asarray(_forward(model, x, t, text)) - expected).max() / np.abs(expected).max()
    assert error < 1e-4, error


def test_another_architecture_or_formulation_or_folder_is_refused(wan_folder, tmp_path):
    folder, _ = wan_folder
    with pytest.raises(ConversionError, match=r"is not a diffusers WanTransformer3DModel folder \(no config.json\)$"):
        _started(tmp_path)
    with pytest.raises(ConfigError, match=r"^config key 'model.dit': .* num_layers 3 \(the folder: 2\)"):
        _started(folder, "model.dit.num_layers=3")
    with pytest.raises(ConfigError, match=r"^config key 'diffusion.formulation': is 'ddpm', .* set it to 'flow'$"):
        _started(folder, "diffusion.formulation=ddpm")
