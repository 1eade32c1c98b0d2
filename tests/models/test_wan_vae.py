"""Wan 2.1's VAE against diffusers' AutoencoderKLWan: chunked encode/decode parity, conversion errors,
pickle refusal, latent normalisation."""

import json
import shutil

import jax
import numpy as np
import pytest
import safetensors.numpy
import torch
from diffusers import AutoencoderKLWan
from flax import nnx

from pyoco_jax.convert.merge import ConversionError, flat_params
from pyoco_jax.convert.wan_vae import convert_state_dict, load_wan_vae, read_wan_vae_config
from pyoco_jax.models import axes
from pyoco_jax.models.vae.wan import WanVAE
from pyoco_jax.models.vae.wan_config import WanVAEConfig

WEIGHTS = "diffusion_pytorch_model.safetensors"
# Three levels of 2x spatial downsampling, the last two also temporal: Wan 2.1's 8x / 4x in small.
TINY = dict(
    base_dim=8,
    z_dim=4,
    dim_mult=[1, 2, 2, 2],
    num_res_blocks=1,
    latents_mean=[0.5, -0.25, 1.0, 0.0],
    latents_std=[2.0, 0.5, 1.5, 1.0],
)
TOLERANCE = 1e-4  # Relative to the largest output magnitude.


def to_torch(x: np.ndarray) -> torch.Tensor:
    """(B, F, H, W, C) -> diffusers' (B, C, F, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3)))


def to_ours(x: torch.Tensor) -> np.ndarray:
    return x.detach().numpy().transpose(0, 2, 3, 4, 1)


def run_compiled(vae: WanVAE, method: str, x: np.ndarray):
    """`vae.<method>(x)` jit-compiled."""
    graphdef, state = nnx.split(vae)
    fn = jax.jit(lambda state, x: getattr(nnx.merge(graphdef, state), method)(x))
    return fn(state, x)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A saved tiny AutoencoderKLWan whose weights are moved off their init (norm gammas off 1, biases off 0)."""
    folder = tmp_path_factory.mktemp("wan_vae")
    torch.manual_seed(0)
    model = AutoencoderKLWan(**TINY).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tiny_folder):
    return AutoencoderKLWan.from_pretrained(tiny_folder).eval(), load_wan_vae(tiny_folder)


@pytest.mark.parametrize("frames", [1, 5, 9])
def test_chunked_encode_and_decode_match_diffusers(models, frames):
    """Posterior mean/logvar and decoded frames equal diffusers' for the first chunk alone and 1-2 more chunks."""
    reference, ours = models
    rng = np.random.default_rng(frames)
    video = rng.uniform(-1, 1, (2, frames, 16, 24, 3)).astype(np.float32)
    with torch.no_grad():
        posterior = reference.encode(to_torch(video)).latent_dist
        mean, logvar = to_ours(posterior.mean), to_ours(posterior.logvar)
        latents = rng.standard_normal(mean.shape).astype(np.float32)
        decoded = to_ours(reference.decode(to_torch(latents)).sample)
    assert mean.shape == (2, 1 + (frames - 1) // 4, 2, 3, 4) and decoded.shape == video.shape

    ours_posterior, ours_decoded = run_compiled(ours, "encode", video), run_compiled(ours, "decode", latents)
    errors = {
        "mean": np.abs(np.asarray(ours_posterior.mean) - mean).max() / np.abs(mean).max(),
        "logvar": np.abs(np.asarray(ours_posterior.logvar) - logvar).max() / np.abs(logvar).max(),
        "decoded": np.abs(np.asarray(ours_decoded) - decoded).max() / np.abs(decoded).max(),
    }
    print(f"{frames} frames: max errors relative to the output scale {errors}")
    assert max(errors.values()) < TOLERANCE, errors
    assert np.abs(mean).max() > 0.3 and (np.abs(decoded) < 1).mean() > 0.5  # Non-trivial, mostly unclipped.


def test_real_wan21_architecture_maps_one_to_one():
    """Every tensor of diffusers' full-size Wan 2.1 VAE (built on the meta device) finds our parameter of the
    converted shape, none is left over, and every parameter carries logical axis names."""
    with torch.device("meta"):
        reference = AutoencoderKLWan()
    fake = {name: np.broadcast_to(np.float32(0), tuple(p.shape)) for name, p in reference.state_dict().items()}
    converted = {name: value.shape for name, value in convert_state_dict(fake).items()}
    ours = nnx.eval_shape(lambda: WanVAE(WanVAEConfig(), rngs=nnx.Rngs(0)))
    params = flat_params(ours)
    assert converted == {name: variable.get_value().shape for name, variable in params.items()}
    for name, variable in params.items():
        names = variable.get_metadata().get("out_sharding")
        assert names is not None and len(names) == variable.get_value().ndim, name
        assert set(names) <= set(axes.VOCABULARY), name
    print(f"Wan 2.1 VAE: {sum(np.prod(shape) for shape in converted.values()):,} params")


def _edit_weights(source, target, edit) -> None:
    shutil.copytree(source, target)
    tensors = safetensors.numpy.load_file(target / WEIGHTS)
    edit(tensors)
    safetensors.numpy.save_file(tensors, target / WEIGHTS)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.pop("decoder.up_blocks.1.upsamplers.0.time_conv.weight"), "up_blocks.1.upsampler.time_conv"),
        (lambda t: t.pop("encoder.mid_block.attentions.0.norm.gamma"), "encoder.mid_block.attentions.0.norm.scale"),
        (lambda t: t.update({"encoder.down_blocks.9.conv1.bias": np.zeros(8, np.float32)}), "down_blocks.9.conv1"),
        (lambda t: t.update({"quant_conv.bias": np.zeros(3, np.float32)}), "quant_conv.bias"),
    ],
    ids=["missing-weight", "missing-gamma", "extra-tensor", "wrong-shape"],
)
def test_mismatched_weights_name_the_tensor(tmp_path, tiny_folder, edit, message):
    _edit_weights(tiny_folder, tmp_path / "vae", edit)
    with pytest.raises(ConversionError, match=message.replace(".", r"\.")):
        load_wan_vae(tmp_path / "vae")


def test_refuses_pickle_weights_and_finds_the_vae_subfolder(tmp_path, tiny_folder, models):
    vae = tmp_path / "pipeline" / "vae"
    models[0].save_pretrained(vae, safe_serialization=False)
    assert not (vae / WEIGHTS).exists()
    with pytest.raises(ConversionError, match="pickle.*save_pretrained") as error:
        load_wan_vae(tmp_path / "pipeline")
    assert "\n" not in str(error.value)
    (vae / "diffusion_pytorch_model.bin").unlink()
    shutil.copy(tiny_folder / WEIGHTS, vae / WEIGHTS)
    assert read_wan_vae_config(tmp_path / "pipeline") == models[1].config
    loaded, reference = flat_params(load_wan_vae(tmp_path / "pipeline")), flat_params(models[1])
    for name, value in reference.items():
        np.testing.assert_array_equal(loaded[name].get_value(), value.get_value(), err_msg=name)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"is_residual": True}, "is_residual"),
        ({"patch_size": 2}, "patch_size"),
        ({"attn_scales": [0.5]}, "attn_scales"),
        ({"_class_name": "AutoencoderKL"}, "AutoencoderKL,"),
        ({"temperal_downsample": [True]}, "temperal_downsample"),
        ({"latents_mean": [0.0] * 16}, "latents_mean"),
    ],
)
def test_unsupported_configs_are_refused(tmp_path, change, message):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLWan", **TINY, **change}))
    with pytest.raises(ConversionError, match=message):
        read_wan_vae_config(tmp_path)


def test_config_and_inputs_are_checked(models):
    _, ours = models
    assert ours.config == WanVAEConfig.from_diffusers({**TINY, "temperal_downsample": [False, True, True]})
    assert (ours.config.spatial_factor, ours.config.temporal_factor) == (8, 4)
    with pytest.raises(ValueError, match="1 \\+ 4k frames, got 4"):
        ours.encode(np.zeros((1, 4, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="divisible by 8"):
        ours.encode(np.zeros((1, 1, 12, 16, 3), np.float32))
    with pytest.raises(ValueError, match="\\(B, F, H, W, 4\\)"):
        ours.decode(np.zeros((1, 2, 2, 2, 16), np.float32))


def test_latent_normalisation_is_wans():
    """(z - mean) / std, as Wan's pipeline computes it ((z - mean) * (1 / std)), and back."""
    config = WanVAEConfig(**{**TINY, "dim_mult": tuple(TINY["dim_mult"])})
    z = np.random.default_rng(0).standard_normal((2, 3, 4, 5, 4)).astype(np.float32)
    mean, std = np.array(TINY["latents_mean"], np.float32), np.array(TINY["latents_std"], np.float32)
    normalized = np.asarray(config.normalize_latents(z))
    np.testing.assert_allclose(normalized, (z - mean) * (1.0 / std), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(config.denormalize_latents(normalized)), z, rtol=1e-5, atol=1e-6)
    default = WanVAEConfig()
    assert default.latents_mean[0] == -0.7571 and default.latents_std[-1] == 1.9160
