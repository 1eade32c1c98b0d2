"""VisionEncoder against transformers.CLIPVisionModel (random tiny configs): last hidden state and pooled output."""

import numpy as np
import pytest
import torch
from flax import nnx
from transformers import CLIPVisionConfig, CLIPVisionModel

from pyoco_jax.convert.clip import filled_model, read_weights
from pyoco_jax.convert.clip_model import convert_vision_state_dict
from pyoco_jax.models import axes
from pyoco_jax.models.text.clip import VisionEncoder, VisionEncoderConfig
from tests.models.clip_testing import randomise

CONFIGS = {
    # ViT-B/32-like layout, scaled down: 4 x 4 patches.
    "quick-gelu-divisible": dict(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        hidden_act="quick_gelu",
    ),
    # 30 // 7 = 4 patches a side: the conv drops the last 2 pixel rows/columns.
    "gelu-remainder": dict(
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=30,
        patch_size=7,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
    ),
    "tanh-gelu-one-channel": dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_channels=1,
        image_size=12,
        patch_size=4,
        hidden_act="gelu_new",
    ),
}
# As the text tower's parity tests: float32 on both sides.
TOLERANCE = 1e-4


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parity_with_transformers(tmp_path, name):
    config = CONFIGS[name]
    torch.manual_seed(len(name))
    reference = randomise(CLIPVisionModel(CLIPVisionConfig(**config)))
    reference.save_pretrained(tmp_path)
    ours_config = VisionEncoderConfig.from_dict(reference.config.to_dict())
    params = convert_vision_state_dict(read_weights(tmp_path, allow_pickle=False))
    encoder = filled_model(lambda: VisionEncoder(ours_config, rngs=nnx.Rngs(0)), params, "vision encoder")

    size, channels = config["image_size"], config.get("num_channels", 3)
    images = np.random.default_rng(0).normal(size=(3, size, size, channels)).astype(np.float32)
    with torch.no_grad():
        expected = reference(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)))
    ours = nnx.jit(lambda model, x: model(x))(encoder, images)
    error = lambda a, b: float(np.abs(np.asarray(a) - b.numpy()).max())
    grid = size // config["patch_size"]
    assert ours.last_hidden_state.shape == (3, grid * grid + 1, config["hidden_size"])
    assert error(ours.last_hidden_state, expected.last_hidden_state) < TOLERANCE
    assert error(ours.pooled, expected.pooler_output) < TOLERANCE
    # Non-causal: the class token (position 0) sees every patch, so changing the last patch moves it.
    images[:, -config["patch_size"] :, -config["patch_size"] :] += 1.0
    moved = nnx.jit(lambda model, x: model(x))(encoder, images)
    assert float(np.abs(np.asarray(moved.pooled - ours.pooled)).max()) > 1e-2


def test_config_and_axis_names():
    config = VisionEncoderConfig.from_dict({**CONFIGS["quick-gelu-divisible"], "projection_dim": 7, "dropout": 0.0})
    assert config.image_size == 32 and config.grid == 4 and config.num_channels == 3
    with pytest.raises(ValueError, match="hidden_act"):
        VisionEncoderConfig(hidden_act="relu6")
    with pytest.raises(ValueError, match="num_attention_heads"):
        VisionEncoderConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="patch_size"):
        VisionEncoderConfig(image_size=16, patch_size=32)
    with pytest.raises(ValueError, match="vision_config"):
        VisionEncoderConfig.from_dict({"vision_config": {}})

    model = nnx.eval_shape(lambda: VisionEncoder(config, rngs=nnx.Rngs(0)))
    specs = {
        ".".join(map(str, path)): v.get_metadata().get("out_sharding")
        for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    assert specs["embeddings.patch_embedding.kernel"] == (axes.CONV_WINDOW, axes.CONV_WINDOW, axes.CONV_IN, axes.EMBED)
    assert specs["embeddings.class_embedding"] == (axes.EMBED,)
    assert specs["embeddings.position_embedding.embedding"] == (None, axes.EMBED)
    assert specs["encoder.layers.1.self_attn.q_proj.kernel"] == (axes.EMBED, axes.HEADS)
    assert specs["pre_layrnorm.scale"] == specs["post_layernorm.scale"] == (axes.NORM,)
    with pytest.raises(ValueError, match="takes images"):
        model(np.zeros((1, 32, 32, 4), np.float32))
