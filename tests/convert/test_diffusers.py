"""diffusers UNet2DConditionModel -> VideoUNet: numerical parity, inflation, reports, errors, cache."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import safetensors.numpy
import torch
from diffusers import UNet2DConditionModel
from flax import nnx
from pyoco_jax.configs import default

from pyoco_jax.convert.diffusers import (
    ConversionError,
    load_unet,
    load_unet_params,
    load_unet_with_report,
    model_config_from_diffusers,
)
from pyoco_jax.convert.merge import merge_params
from pyoco_jax.models.unet import VideoUNet

PARITY_CONFIGS = {
    "conv-proj-8-heads": dict(
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
    ),
    "linear-proj-per-level-heads-classes": dict(
        block_out_channels=(16, 32),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(2, 4),
        cross_attention_dim=24,
        use_linear_projection=True,
        norm_num_groups=8,
        flip_sin_to_cos=False,
        freq_shift=1,
        num_class_embeds=5,
    ),
    "three-levels-plain-mid": dict(
        in_channels=3,
        out_channels=5,
        block_out_channels=(16, 16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"),
        mid_block_type="UNetMidBlock2D",
        attention_head_dim=4,
        transformer_layers_per_block=(1, 1, 2),
        cross_attention_dim=20,
        norm_num_groups=8,
    ),
}
SD15_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

_forward = nnx.jit(lambda model, *args: model(*args))


def _save_unet(folder, seed=0, **config) -> UNet2DConditionModel:
    """A random diffusers U-Net (weights perturbed so no norm is the identity), saved to `folder`."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=16, **config).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    unet.save_pretrained(folder)
    return unet


def _inputs(unet: UNet2DConditionModel, frames: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    c = unet.config
    x = rng.standard_normal((2, frames, 16, 16, c.in_channels), np.float32)
    t = rng.uniform(0, 1000, 2).astype(np.float32)
    context = rng.standard_normal((2, 7, c.cross_attention_dim), np.float32)
    labels = np.array([1, 4]) if c.num_class_embeds else None
    return x, t, context, labels


def _reference(unet, x, t, context, labels) -> np.ndarray:
    """diffusers on each frame of (B, F, H, W, C) -> (B, F, H, W, C')."""
    b, f = x.shape[:2]
    frames = torch.from_numpy(x.reshape(b * f, *x.shape[2:])).permute(0, 3, 1, 2)
    rep = lambda a: torch.from_numpy(np.repeat(a, f, axis=0))
    with torch.no_grad():
        out = unet(frames, rep(t), rep(context), class_labels=None if labels is None else rep(labels)).sample
    return out.permute(0, 2, 3, 1).numpy().reshape(b, f, *x.shape[2:4], -1)


@pytest.fixture(scope="module")
def tiny_unet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unet")
    return _save_unet(folder, **PARITY_CONFIGS["conv-proj-8-heads"]), folder


@pytest.mark.parametrize("name", list(PARITY_CONFIGS))
def test_parity_with_diffusers(tmp_path, name):
    unet = _save_unet(tmp_path, **PARITY_CONFIGS[name])
    model, report = load_unet_with_report(tmp_path)
    assert report.new == [] and report.loaded_count == sum(p.numel() for p in unet.parameters())
    x, t, context, labels = _inputs(unet)
    out = np.asarray(_forward(model, x, t, context, labels, None))
    ref = _reference(unet, x, t, context, labels)
    error = np.abs(out - ref).max()
    print(f"{name}: max abs error {error:.2e} (output scale {np.abs(ref).max():.2f})")
    assert error < 1e-4


def test_inflated_model_equals_diffusers_on_every_frame(tiny_unet):
    unet, folder = tiny_unet
    config = default.get_config()
    config.data.num_frames = 3
    config.model.fps_conditioning = True
    config.model.temporal.update(
        dict(levels=(0, 1), mid=True, attention=True, conv=True, adaptor=True, position_encoding="relative")
    )
    model, report = load_unet_with_report(folder, config)
    assert report.loaded_count == sum(p.numel() for p in unet.parameters())
    assert report.new and all(("temporal_" in n or "adaptor" in n or "fps_embedding" in n) for n in report.new)
    assert any("temporal_convs" in n for n in report.new) and any("relative_bias" in n for n in report.new)
    x, t, context, _ = _inputs(unet, frames=3)
    fps = np.array([8.0, 24.0], np.float32)
    out = np.asarray(_forward(model, x, t, context, None, fps))
    np.testing.assert_allclose(out, _reference(unet, x, t, context, None), atol=1e-4)


def _rewrite_weights(folder, edit) -> None:
    file = folder / "diffusion_pytorch_model.safetensors"
    tensors = dict(safetensors.numpy.load_file(file))
    edit(tensors)
    safetensors.numpy.save_file(tensors, file)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.update({"conv_in.bias": np.zeros(33, np.float32)}), r"shape mismatch for conv_in\.bias"),
        (lambda t: t.update({"extra_head.weight": np.zeros((2, 2), np.float32)}), "no place in the model"),
        (lambda t: t.pop("conv_out.bias"), r"missing from the checkpoint: conv_out\.bias"),
    ],
    ids=["shape", "unused", "missing"],
)
def test_mismatched_weights_fail_clearly(tmp_path, tiny_unet, edit, message):
    unet, folder = tiny_unet
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    _rewrite_weights(tmp_path, edit)
    with pytest.raises(ConversionError, match=message):
        load_unet(tmp_path)


def test_refuses_pickle_and_unsupported_configs(tmp_path, tiny_unet):
    _, folder = tiny_unet
    (tmp_path / "config.json").write_bytes((folder / "config.json").read_bytes())
    (tmp_path / "diffusion_pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ConversionError, match="Pickle"):
        load_unet(tmp_path)
    with pytest.raises(ConversionError, match="act_fn"):
        model_config_from_diffusers({**SD15_CONFIG, "act_fn": "gelu"})
    with pytest.raises(ConversionError, match="mirror"):
        model_config_from_diffusers({**SD15_CONFIG, "up_block_types": SD15_CONFIG["down_block_types"]})


def test_model_config_from_sd_configs():
    sd15 = model_config_from_diffusers(SD15_CONFIG)
    assert sd15.block_out_channels == (320, 640, 1280, 1280)
    assert sd15.attention_levels == (True, True, True, False) and sd15.num_attention_heads == 8
    assert sd15.cross_attention_dim == 768 and not sd15.use_linear_projection and sd15.mid_block_attention
    sd2 = {**SD15_CONFIG, "attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024}
    sd2 = model_config_from_diffusers({**sd2, "use_linear_projection": True})
    assert sd2.num_attention_heads == (5, 10, 20, 20) and sd2.use_linear_projection
    base = default.get_config().model
    base.remat, base.temporal.directed = "full", False
    kept = model_config_from_diffusers(SD15_CONFIG, base=base)
    assert kept.remat == "full" and not kept.temporal.directed and base.block_out_channels == (32, 64)


def test_converted_weights_cache(tmp_path, tiny_unet):
    _, folder = tiny_unet
    cache = tmp_path / "cache"
    first, report = load_unet_with_report(folder, cache_dir=cache)
    assert not report.from_cache and len(list(cache.iterdir())) == 1
    second, report = load_unet_with_report(folder, cache_dir=cache)
    assert report.from_cache
    for a, b in zip(jax.tree.leaves(nnx.state(first)), jax.tree.leaves(nnx.state(second)), strict=True):
        np.testing.assert_array_equal(a, b)
    weights = folder / "diffusion_pytorch_model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # "Edited": a new entry.
    assert not load_unet_with_report(folder, cache_dir=cache)[1].from_cache
    assert len(list(cache.iterdir())) == 2


def test_loading_does_not_import_torch(tiny_unet):
    _, folder = tiny_unet
    code = (
        "import sys; from pyoco_jax.convert.diffusers import load_unet; "
        f"load_unet({str(folder)!r}); assert 'torch' not in sys.modules, 'torch was imported'"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_sd15_config_json_round_trip(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(SD15_CONFIG))
    with pytest.raises(ConversionError, match="no diffusion_pytorch_model.safetensors"):
        load_unet(tmp_path)


def test_trainer_path_params_merge_into_a_video_state(tiny_unet):
    """Converted tensors merge into a video model's (here abstract) state; a wrong architecture fails."""
    _, folder = tiny_unet
    json_dict, params = load_unet_params(folder)
    config = default.get_config()
    config.model.temporal.update(dict(levels=(0, 1), mid=True, attention=True, adaptor=True))
    model_config = model_config_from_diffusers(json_dict, base=config.model)
    _, state = nnx.split(nnx.eval_shape(lambda: VideoUNet(model_config, num_frames=4, rngs=nnx.Rngs(0))))
    merged, report = merge_params(state, params)
    assert sorted(report.loaded) == sorted(params)
    assert report.new and all(("temporal_" in n or "adaptor" in n) for n in report.new)
    _, other = nnx.split(nnx.eval_shape(lambda: VideoUNet(config.model, num_frames=4, rngs=nnx.Rngs(0))))
    with pytest.raises(ConversionError, match="shape mismatch"):
        merge_params(other, params)
