"""TextEncoder against transformers.CLIPTextModel (random tiny configs): outputs, pooling, hidden states, clip skip."""

import numpy as np
import pytest
import torch
from flax import nnx

from pyoco_jax.convert.clip import load_text_encoder
from pyoco_jax.models import axes
from pyoco_jax.models.text import TextEncoderConfig
from tests.models.clip_testing import save_text_encoder

VOCAB = 1000
CONFIGS = {
    # SD 1.x/2.x config.json style: eos_token_id=2, so transformers pools at the argmax of the ids.
    "quick-gelu-legacy-eos": dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    ),
    # Current transformers style: pools at the first eos_token_id.
    "gelu-first-eos": dict(
        vocab_size=VOCAB,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=80,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        bos_token_id=VOCAB - 2,
        eos_token_id=VOCAB - 1,
        pad_token_id=VOCAB - 1,
    ),
    "tanh-gelu-one-layer": dict(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act="gelu_new",
        bos_token_id=0,
        eos_token_id=VOCAB - 1,
    ),
}


def _token_ids(config: dict, seed: int = 0) -> np.ndarray:
    """Rows like a tokenizer's (start, words, end, padding), plus an end token mid-row and a row without one."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, VOCAB - 2, size=(4, 77))
    bos, eos = config.get("bos_token_id", 0), config["eos_token_id"]
    ids[:, 0] = bos
    ids[0, 9:] = eos  # padded with the end token
    ids[1, 30] = eos  # a second end token further on
    ids[1, 50:] = eos
    ids[2, 76] = eos  # full row
    return ids  # row 3: no end token at all


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parity_with_transformers(tmp_path, name):
    config = CONFIGS[name]
    reference = save_text_encoder(tmp_path, seed=len(name), **config)
    encoder = load_text_encoder(tmp_path)
    ids = _token_ids(config)
    with torch.no_grad():
        expected = reference(torch.from_numpy(ids), output_hidden_states=True)
    skips = range(1, config["num_hidden_layers"])

    @nnx.jit
    def run(model, x):  # one compile per config: the full outputs and every clip-skip output
        return model(x, output_hidden_states=True), [model(x, skip_last_layers=k).last_hidden_state for k in skips]

    ours, skipped = run(encoder, ids)
    error = lambda a, b: float(np.abs(np.asarray(a) - b.numpy()).max())
    assert error(ours.last_hidden_state, expected.last_hidden_state) < 1e-4
    assert error(ours.pooled, expected.pooler_output) < 1e-4
    assert len(ours.hidden_states) == len(expected.hidden_states) == config["num_hidden_layers"] + 1
    for got, want in zip(ours.hidden_states, expected.hidden_states, strict=True):
        assert error(got, want) < 1e-4
    # The pooled rows differ from each other and from position 0: the end-token choice is being tested.
    assert float(expected.pooler_output.std(0).min()) > 1e-2

    # Clip skip = diffusers' `clip_skip`: hidden_states[-1 - k] with the final LayerNorm applied.
    for k, got in zip(skips, skipped, strict=True):
        with torch.no_grad():
            want = reference.final_layer_norm(expected.hidden_states[-1 - k])
        assert error(got, want) < 1e-4


def test_config_and_axis_names():
    config = TextEncoderConfig.from_dict({**CONFIGS["quick-gelu-legacy-eos"], "projection_dim": 7, "dropout": 0.0})
    assert config.hidden_size == 32 and config.eos_token_id == 2
    with pytest.raises(ValueError, match="hidden_act"):
        TextEncoderConfig(hidden_act="relu6")
    with pytest.raises(ValueError, match="num_attention_heads"):
        TextEncoderConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="CLIPModel"):
        TextEncoderConfig.from_dict({"text_config": {}})

    from pyoco_jax.models.text import TextEncoder

    model = nnx.eval_shape(lambda: TextEncoder(config, rngs=nnx.Rngs(0)))
    specs = {
        ".".join(map(str, path)): v.get_metadata().get("out_sharding")
        for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    assert specs["embeddings.token_embedding.embedding"] == (None, axes.EMBED)
    assert specs["encoder.layers.1.self_attn.q_proj.kernel"] == (axes.EMBED, axes.HEADS)
    assert specs["encoder.layers.0.mlp.fc2.kernel"] == (axes.MLP, axes.EMBED)
    assert specs["final_layer_norm.scale"] == (axes.NORM,)
    with pytest.raises(ValueError, match="skip_last_layers"):
        model(np.zeros((1, 4), np.int32), skip_last_layers=2)
    with pytest.raises(ValueError, match="positions"):
        model(np.zeros((1, 78), np.int32))
